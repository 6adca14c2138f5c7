"""The dashboard's pages: HTML and inline SVG made on the server, nothing loaded from
elsewhere, no script.

Every value shown is escaped (:func:`_e`) where it is put into the page, whatever it is:
scan places are text strangers typed into a link (``?loc=``), labels and file names are
the operator's, and a number costs nothing to escape. Links to the block explorer are
the configured ``[brand] explorer`` with the transaction hash percent-encoded. Colours
come from :mod:`provmint.publicpage.palette`, in the text/background pairs listed in
:data:`PAIRS` (each checked for WCAG AA contrast by the tests).
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import quote

from provmint.publicpage.palette import COLOURS, TONES, VERDICT_TONES
from provmint.stats import (
    BatchStanding,
    DayScans,
    Standing,
    StoreStats,
    SuspectCode,
    Tally,
    format_eth,
)
from provmint.store.anchors import AnchorRecord

__all__ = ["LISTED_ROWS", "PAGES", "PAIRS", "Page", "View", "render_error", "render_login"]

LISTED_ROWS = 500
"""The most batches or anchors a page lists (the newest)."""

PAGES = (
    ("/", "Overview"),
    ("/batches", "Batches"),
    ("/scans", "Scans"),
    ("/suspects", "Suspect codes"),
    ("/anchors", "Anchors"),
)
"""The pages, in the order the navigation lists them."""

STANDING_TONES = {
    Standing.ANCHORED: TONES["green"],
    Standing.ANCHORING: TONES["blue"],
    Standing.PENDING: TONES["grey"],
}

PAIRS: tuple[tuple[str, str, str], ...] = (
    ("body text on the page", COLOURS["text"], COLOURS["page"]),
    ("text on a card", COLOURS["text"], COLOURS["card"]),
    ("muted text on a card", COLOURS["muted"], COLOURS["card"]),
    ("muted text on the page", COLOURS["muted"], COLOURS["page"]),
    ("links on a card", COLOURS["link"], COLOURS["card"]),
    ("links on the page", COLOURS["link"], COLOURS["page"]),
    ("the current page in the navigation", COLOURS["on_tone"], COLOURS["text"]),
    ("navigation links", COLOURS["on_tone"], COLOURS["text"]),
    ("the flagged mark", COLOURS["stop"], COLOURS["card"]),
    ("notice text", COLOURS["text"], COLOURS["notice"]),
    *((f"a badge on {name}", COLOURS["on_tone"], tone) for name, tone in TONES.items()),
)
"""(where, text colour, background colour) of every pair the dashboard shows text in."""

_CSS_TEMPLATE = (
    "*{box-sizing:border-box}"
    "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;"
    "background:%(page)s;color:%(text)s;line-height:1.45}"
    "header{background:%(text)s;color:%(on_tone)s;padding:.6rem 1rem}"
    "header b{margin-right:1.5rem}"
    "nav{display:inline-flex;flex-wrap:wrap;gap:.25rem 1rem}"
    "nav a{color:%(on_tone)s;text-decoration:none;padding:.1rem 0}"
    "nav a[aria-current]{border-bottom:2px solid %(on_tone)s;font-weight:600}"
    "main{max-width:72rem;margin:0 auto;padding:1rem}"
    "h1{font-size:1.4rem;margin:.5rem 0 1rem}h2{font-size:1.1rem;margin:0 0 .75rem}"
    ".cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(10rem,1fr));gap:1rem}"
    ".card{background:%(card)s;border:1px solid %(rule)s;border-radius:10px;padding:1rem;"
    "margin:0 0 1rem;overflow-x:auto}"
    ".figure{font-size:1.6rem;font-weight:600}.detail{color:%(muted)s;font-size:.85rem}"
    "table{border-collapse:collapse;width:100%%;font-size:.9rem}"
    "th{color:%(muted)s;font-weight:600;text-align:left}"
    "th,td{padding:.35rem .6rem;border-bottom:1px solid %(rule)s;vertical-align:top}"
    "td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}"
    ".code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;"
    "overflow-wrap:anywhere}.nowrap{white-space:nowrap}"
    ".badge{display:inline-block;color:%(on_tone)s;border-radius:6px;padding:0 .45rem;"
    "font-size:.8rem;font-weight:600}"
    ".flag{color:%(stop)s;font-weight:700}"
    ".mix{display:flex;height:1.25rem;border-radius:6px;overflow:hidden;margin:.25rem 0 .75rem}"
    ".key{display:inline-block;width:.8rem;height:.8rem;border-radius:2px;margin-right:.35rem;"
    "vertical-align:-1px}"
    ".notice{background:%(notice)s;border:1px solid %(notice_rule)s;border-radius:10px;"
    "padding:.75rem 1rem;margin:0 0 1rem}"
    "a{color:%(link)s}svg{display:block;max-width:100%%;height:auto}svg.chart{width:100%%}"
    "footer{color:%(muted)s;font-size:.85rem;margin:1rem 0}"
    "form input{font:inherit;padding:.4rem;margin:.5rem .5rem .5rem 0;width:22rem;"
    "max-width:100%%}form button{font:inherit;padding:.4rem .9rem}"
)
"""The one stylesheet (inline: the page loads no file), filled with the palette."""
_CSS = _CSS_TEMPLATE % COLOURS


def _e(value: object) -> str:
    """``value`` as HTML text or an attribute value (quotes escaped too)."""
    return html.escape(str(value), quote=True)


@dataclass(frozen=True, slots=True)
class View:
    """What every page is made from: the statistics, the window as asked (``?since=``,
    kept in the navigation's links), the block explorer's URL, if any, and a notice for
    the top of the page (older figures shown while the store is busy)."""

    stats: StoreStats
    since: str
    explorer: str | None = None
    notice: str | None = None

    def link(self, path: str) -> str:
        """A page's link, keeping the window."""
        return f"{path}?since={quote(self.since, safe='')}"


@dataclass(frozen=True, slots=True)
class Page:
    """One page: its path and what it shows."""

    path: str
    title: str
    body: str


def _layout(view: View | None, current: str, title: str, body: str) -> str:
    links = "".join(
        f'<a href="{_e(view.link(path) if view else path)}"'
        f"{' aria-current=page' if path == current else ''}>{_e(name)}</a>"
        for path, name in PAGES
    )
    footer = ""
    if view is not None and view.notice:
        body = f'<div class="notice" role="status"><p>{_e(view.notice)}</p></div>' + body
    if view is not None:
        at = view.stats.to_json()["at"][:16].replace("T", " ")
        footer = (
            f"<footer>Read-only. As of {_e(at)} UTC; scans since "
            f"{_e(_since_text(view.stats))} (UTC). Scan log: {_e(view.stats.scan_log)}."
            "</footer>"
        )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{_e(title)} · provmint dashboard</title><style>{_CSS}</style></head>"
        f"<body><header><b>provmint dashboard</b><nav>{links}</nav></header>"
        f"<main><h1>{_e(title)}</h1>{body}{footer}</main></body></html>\n"
    )


def _since_text(stats: StoreStats) -> str:
    return stats.since.isoformat() if stats.since else "the first day"


def render(view: View, path: str) -> Page | None:
    """The page at ``path`` (None: no such page)."""
    makers = {
        "/": ("Overview", _overview),
        "/batches": ("Batches", _batches_page),
        "/scans": ("Scans", _scans_page),
        "/suspects": ("Suspect codes", _suspects_page),
        "/anchors": ("Anchors", _anchors_page),
    }
    found = makers.get(path)
    if found is None:
        return None
    title, make = found
    return Page(path, title, _layout(view, path, title, make(view)))


def render_login(message: str) -> str:
    """The page asking for the dashboard's token (401, 403): a form that sends it as
    ``?token=`` (the answer sets a cookie and leads to the page without it)."""
    body = (
        f'<div class="card"><p>{_e(message)}</p>'
        '<form method="get" action="/"><label for="token">Dashboard token</label><br>'
        '<input id="token" name="token" type="password" autocomplete="current-password" '
        'required><button type="submit">Open</button></form>'
        '<p class="detail">Or send it as a header: Authorization: Bearer TOKEN.</p></div>'
    )
    return _layout(None, "", "Sign in", body)


def render_error(status: int, message: str) -> str:
    """An error page (bad query, no such page, the store or scan log unreadable)."""
    body = f'<div class="notice" role="alert"><p>{_e(message)}</p></div>'
    return _layout(None, "", f"Error {status}", body)


# --------------------------------------------------------------------------- pages


def _card(title: str, figure: str, detail: str) -> str:
    return (
        f'<div class="card"><h2>{_e(title)}</h2><div class="figure">{_e(figure)}</div>'
        f'<div class="detail">{_e(detail)}</div></div>'
    )


def _standings(tally: Tally) -> str:
    return f"{tally.anchored:,} anchored, {tally.anchoring:,} anchoring, {tally.pending:,} pending"


def _overview(view: View) -> str:
    stats = view.stats
    costs = stats.anchors
    suspects = len(stats.suspects)
    cards = "".join(
        (
            _card("Batches", f"{stats.batches.total:,}", _standings(stats.batches)),
            _card("Products", f"{stats.products.total:,}", _standings(stats.products)),
            _card(
                "Anchors",
                f"{costs.total:,}",
                f"{format_eth(costs.fee_wei)} ETH in fees, {costs.gas_used:,} gas",
            ),
            _card("Scans", f"{stats.scans:,}", f"since {_since_text(stats)}"),
            _card(
                "Suspect codes",
                f"{suspects:,}{'' if stats.suspects_complete else '+'}",
                "latest scan judged a possible copy",
            ),
            _card("On disk", _size(stats.disk.total), "store and SQLite scan log"),
        )
    )
    listed = stats.suspects[:10]
    more = f'<p><a href="{_e(view.link("/suspects"))}">All suspect codes</a></p>' if listed else ""
    return (
        f'<div class="cards">{cards}</div>'
        f'<div class="card"><h2>Scans per day</h2>{chart(stats.days)}</div>'
        f'<div class="card"><h2>Verdict mix</h2>{_mix(stats.verdicts)}</div>'
        f'<div class="card"><h2>Suspect codes</h2>{_suspect_table(listed)}{more}</div>'
    )


def _size(total: int) -> str:
    size = float(total)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000:
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1000
    return f"{size:,.1f} TB"


def _table(head: Sequence[tuple[str, bool]], rows: Iterable[str], empty: str) -> str:
    """A table: ``head`` as (name, numeric) pairs; ``rows`` already made."""
    body = "".join(rows)
    if not body:
        return f'<p class="detail">{_e(empty)}</p>'
    cells = "".join(f'<th scope="col"{_num(n)}>{_e(name)}</th>' for name, n in head)
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>"


def _num(numeric: bool) -> str:
    return ' class="n"' if numeric else ""


def _badge(text: str, tone: str) -> str:
    return f'<span class="badge" style="background:{tone}">{_e(text)}</span>'


def _tx(view: View, tx_hash: str | None) -> str:
    """A transaction hash, linked to the block explorer when one is configured."""
    if not tx_hash:
        return ""
    shown = f'<span class="code">{_e(tx_hash)}</span>'
    if not view.explorer:
        return shown
    href = view.explorer.replace("{tx}", quote(tx_hash, safe=""))
    return f'<a class="tx" href="{_e(href)}" rel="noreferrer">{shown}</a>'


def _batches_page(view: View) -> str:
    batches = view.stats.catalog.batches
    newest = list(reversed(batches))[:LISTED_ROWS]
    note = (
        f'<p class="detail">The newest {LISTED_ROWS:,} of {len(batches):,} batches.</p>'
        if len(batches) > LISTED_ROWS
        else ""
    )
    rows = (_batch_row(view, b) for b in newest)
    head = (
        ("batch", False),
        ("created (UTC)", False),
        ("label", False),
        ("products", True),
        ("anchor", False),
        ("transaction", False),
    )
    table = _table(head, rows, "No batches yet: provmint batch create FILE mints one.")
    return f'<div class="card">{note}{table}</div>'


def _batch_row(view: View, b: BatchStanding) -> str:
    anchor = b.anchor
    state = _badge(b.standing.value, STANDING_TONES[b.standing])
    if anchor is not None:
        state += f" #{_e(anchor.anchor_id)} {_e(anchor.state.value)}"
    return (
        f'<tr><td class="code nowrap">{_e(b.batch_id)}</td>'
        f'<td class="nowrap">{_e(_when(b.created_at))}</td>'
        f'<td>{_e(b.label or "")}</td><td class="n">{b.products:,}</td>'
        f"<td>{state}</td><td>{_tx(view, anchor.tx_hash if anchor else None)}</td></tr>"
    )


def _when(stamp: str | None) -> str:
    return "" if not stamp else stamp[:16].replace("T", " ")


def _scans_page(view: View) -> str:
    stats = view.stats
    names = list(stats.days[0].verdicts) if stats.days else []
    rows = (
        "<tr><td>"
        + _e(day.day.isoformat())
        + "</td>"
        + "".join(f'<td class="n">{day.verdicts[n]:,}</td>' for n in names)
        + f'<td class="n">{day.total:,}</td></tr>'
        for day in reversed(stats.days)
        if day.total
    )
    head = (("day (UTC)", False), *((n, True) for n in names), ("total", True))
    return (
        f'<div class="card"><h2>Scans per day</h2>{chart(stats.days)}</div>'
        f'<div class="card"><h2>Verdict mix</h2>{_mix(stats.verdicts)}</div>'
        f'<div class="card"><h2>Days with scans, latest first</h2>'
        f"{_table(head, rows, 'No scans in this window.')}</div>"
    )


def _suspects_page(view: View) -> str:
    stats = view.stats
    note = (
        ""
        if stats.suspects_complete
        else '<p class="detail">The latest flagged codes; more exist.</p>'
    )
    return (
        '<div class="card"><p class="detail">Codes whose latest scan in this window was judged '
        "a possible copy, and what the copy signal rests on now. Places are what visitors "
        "typed into the link. provmint scans show CODE says more; provmint scans clear CODE "
        f"clears one.</p>{note}{_suspect_table(stats.suspects)}</div>"
    )


def _suspect_table(suspects: Sequence[SuspectCode]) -> str:
    rows = (
        f'<tr><td class="code">{_e(s.code)}</td>'
        f'<td class="nowrap">{_e(_when(s.last_suspect_at))}</td>'
        f'<td class="n">{s.suspect_scans:,}</td><td>{_flag(s)}</td></tr>'
        for s in suspects
    )
    head = (("code", False), ("last suspect scan (UTC)", False), ("scans", True), ("why", False))
    return _table(head, rows, "No suspect codes in this window.")


def _flag(s: SuspectCode) -> str:
    if s.reason is not None:
        return f'<span class="flag">flagged:</span> <span class="reason">{_e(s.reason)}</span>'
    if s.cleared_at:
        return f"not flagged now: cleared at {_e(_when(s.cleared_at))} UTC"
    return "not flagged now: its evidence is older than the copy signal's window"


def _anchors_page(view: View) -> str:
    anchors = view.stats.catalog.anchors
    costs = view.stats.anchors
    summary = (
        f'<p class="detail">{costs.total:,} anchor{"" if costs.total == 1 else "s"}; '
        f"{costs.gas_used:,} gas and "
        f"{_e(format_eth(costs.fee_wei))} ETH in fees.</p>"
    )
    newest = list(reversed(anchors))[:LISTED_ROWS]
    head = (
        ("#", True),
        ("state", False),
        ("chain", True),
        ("batches", True),
        ("transaction", False),
        ("block", True),
        ("gas", True),
        ("fee (ETH)", True),
        ("created (UTC)", False),
    )
    rows = (_anchor_row(view, a) for a in newest)
    table = _table(head, rows, "No anchors yet: provmint anchor anchors the pending batches.")
    return f'<div class="card">{summary}{table}</div>'


_ANCHOR_TONES = {
    "confirmed": TONES["green"],
    "included": TONES["green"],
    "failed": TONES["red"],
}


def _anchor_row(view: View, a: AnchorRecord) -> str:
    state = _badge(a.state.value, _ANCHOR_TONES.get(a.state.value, TONES["blue"]))
    if a.error:
        state += f' <span class="detail">{_e(a.error)}</span>'
    fee = format_eth(int(a.fee_wei)) if a.fee_wei else ""
    return (
        f'<tr><td class="n">{a.anchor_id}</td><td>{state}</td><td class="n">{a.chain_id}</td>'
        f'<td class="n">{len(a.batches):,}</td><td>{_tx(view, a.tx_hash)}</td>'
        f'<td class="n">{_e(a.block_number if a.block_number is not None else "")}</td>'
        f'<td class="n">{_e(f"{a.gas_used:,}" if a.gas_used is not None else "")}</td>'
        f'<td class="n">{_e(fee)}</td><td class="nowrap">{_e(_when(a.created_at))}</td></tr>'
    )


# --------------------------------------------------------------------------- graphics


def _tone(verdict: str) -> str:
    return TONES[VERDICT_TONES.get(verdict, "grey")]


def _mix(verdicts: dict[str, int]) -> str:
    """The verdicts' shares: a bar of proportional parts, and the numbers in words."""
    total = sum(verdicts.values())
    if not total:
        return '<p class="detail">No scans in this window.</p>'
    parts = "".join(
        f'<span title="{_e(name)}" style="width:{100 * n / total:.3f}%;background:{_tone(name)}">'
        "</span>"
        for name, n in verdicts.items()
        if n
    )
    items = "".join(
        f'<li><span class="key" style="background:{_tone(name)}"></span>{_e(name)}: '
        f"{n:,} ({100 * n / total:.1f}%)</li>"
        for name, n in verdicts.items()
    )
    return f'<div class="mix" aria-hidden="true">{parts}</div><ul class="verdicts">{items}</ul>'


CHART_WIDTH, CHART_HEIGHT = 720, 240
_LEFT, _BOTTOM, _TOP = 48, 28, 10


def chart(days: Sequence[DayScans]) -> str:
    """Scans per day as stacked bars, one colour per verdict, as inline SVG (a title on
    each bar gives its numbers; the legend names the colours)."""
    if not days:
        return '<p class="detail">No days to show.</p>'
    names = list(days[0].verdicts)
    peak = _nice(max(day.total for day in days))
    plot_w = CHART_WIDTH - _LEFT - 8
    plot_h = CHART_HEIGHT - _BOTTOM - _TOP
    step = plot_w / len(days)
    bar = max(1.0, step * 0.8)
    parts = [_grid(peak, plot_w, plot_h)]
    for i, day in enumerate(days):
        x = _LEFT + i * step + (step - bar) / 2
        parts.append(_bar(day, names, x, bar, peak, plot_h))
    parts.append(_x_labels(days, step))
    total = sum(day.total for day in days)
    label = f"Scans per day from {days[0].day} to {days[-1].day}: {total:,} in all"
    legend = "".join(
        f'<span class="key" style="background:{_tone(n)}"></span>{_e(n)} ' for n in names
    )
    return (
        f'<svg class="chart" role="img" aria-label="{_e(label)}" '
        f'viewBox="0 0 {CHART_WIDTH} {CHART_HEIGHT}" width="{CHART_WIDTH}" '
        f'height="{CHART_HEIGHT}" xmlns="http://www.w3.org/2000/svg" '
        f'font-family="system-ui,sans-serif" font-size="11">'
        f"<title>{_e(label)}</title>{''.join(parts)}</svg>"
        f'<p class="detail legend">{legend}</p>'
    )


def _nice(peak: int) -> int:
    """A round top for the scale, at least ``peak`` (1, 2 or 5 times a power of ten)."""
    power = 1
    while True:
        for factor in (1, 2, 5):
            if power * factor >= peak:
                return power * factor
        power *= 10


def _grid(peak: int, plot_w: float, plot_h: float) -> str:
    lines = []
    for share in (0, 0.5, 1):
        y = _TOP + plot_h * (1 - share)
        value = peak * share
        text = f"{value:,.0f}" if value == int(value) else f"{value:,.1f}"
        lines.append(
            f'<line x1="{_LEFT}" x2="{_LEFT + plot_w:.1f}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="{COLOURS["rule"]}"/>'
            f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" '
            f'fill="{COLOURS["muted"]}">{_e(text)}</text>'
        )
    return "".join(lines)


def _bar(day: DayScans, names: Sequence[str], x: float, width: float, peak: int, h: float) -> str:
    words = ", ".join(f"{day.verdicts[n]:,} {n}" for n in names if day.verdicts[n]) or "no scans"
    rects = []
    y = _TOP + h
    for name in names:
        count = day.verdicts[name]
        if not count:
            continue
        height = h * count / peak
        y -= height
        rects.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{height:.1f}" '
            f'fill="{_tone(name)}"/>'
        )
    return f'<g class="day"><title>{_e(day.day)}: {_e(words)}</title>{"".join(rects)}</g>'


def _x_labels(days: Sequence[DayScans], step: float) -> str:
    """The first and last day, and about six between, under the bars."""
    every = max(1, len(days) // 6)
    shown = sorted({0, len(days) - 1, *range(0, len(days), every)})
    if len(shown) > 2 and shown[-1] - shown[-2] < every / 2:
        del shown[-2]  # too close to the last label to be read
    y = CHART_HEIGHT - 8
    return "".join(
        f'<text x="{_LEFT + (i + 0.5) * step:.1f}" y="{y}" text-anchor="middle" '
        f'fill="{COLOURS["muted"]}">{_e(days[i].day.strftime("%m-%d"))}</text>'
        for i in shown
    )
