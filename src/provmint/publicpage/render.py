"""The page itself: built from parts made once per brand and language, so that a request
only adds what is its own (the record's rows, the time, its links).

Nothing on the page comes from elsewhere (no script, font, stylesheet or image from
another site; the logo is served by the service at :data:`LOGO_PATH`) and nothing needs
JavaScript. Every value from the record is HTML-escaped; the one text a visitor supplies
that is shown, the scanned code's own path in the report link, is shown only to that
visitor, percent-encoded and escaped. Text other visitors supplied (``loc``) never
reaches the page.
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from provmint.config import BrandSettings
from provmint.publicpage.i18n import LANGUAGES, choose_language, translations
from provmint.publicpage.icons import icon
from provmint.publicpage.palette import COLOURS, ERROR_TONES, TONES, VERDICT_TONES
from provmint.publicpage.texts import ERRORS, FIELD_LABELS, VERDICTS, Page, Wording, field_label

__all__ = ["LOGO_PATH", "PublicPages", "VerdictView", "short_hash"]

LOGO_PATH = "/brand/logo"
"""Where the service serves the brand's logo."""
CODE_COLUMNS = frozenset({"gtin", "serial", "lot"})
"""Record columns that are codes, not words: the only values allowed to break anywhere."""
FIRST_COLUMNS = ("gtin", "serial", "lot", "production_date", "expiry")
"""The record's columns shown first, in this order (the rest follow as stored)."""

_CSS = (
    "*{box-sizing:border-box}"
    "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;"
    "background:%(page)s;color:%(text)s;line-height:1.45;overflow-wrap:break-word}"
    ".brand{background:%(card)s;border-bottom:4px solid %(accent)s;padding:.75rem 1rem}"
    ".brand div{max-width:32rem;margin:0 auto;display:flex;align-items:center;gap:.75rem}"
    ".brand img{display:block;max-height:2.5rem;max-width:10rem;width:auto;height:auto}"
    ".brand span{color:%(accent)s;font-weight:600;font-size:1.1rem;min-width:0}"
    "main{max-width:32rem;margin:0 auto;padding:1rem}"
    ".product{font-size:1.3rem;font-weight:600;margin:.25rem 0 0}"
    ".verdict{display:grid;grid-template-columns:2.5rem minmax(0,1fr);gap:.35rem .75rem;"
    "align-items:start;color:%(on_tone)s;border-radius:12px;padding:1.25rem;margin:1rem 0}"
    ".verdict .icon{grid-column:1;grid-row:1/span 2;width:2.5rem;height:2.5rem}"
    ".verdict h1{grid-column:2;grid-row:1;margin:0;font-size:1.5rem;line-height:1.2}"
    ".verdict p{grid-column:2;grid-row:2;margin:0}"
    "%(tones)s"
    ".card{background:%(card)s;border-radius:12px;padding:1rem;margin:1rem 0}"
    ".card h2{font-size:1.05rem;margin:0 0 .5rem}.card p{margin:.5rem 0 0}"
    ".stop{color:%(stop)s;font-weight:700}"
    ".button{display:inline-block;margin-top:.75rem;background:%(accent)s;color:%(on_tone)s;"
    "text-decoration:none;font-weight:600;padding:.65rem 1rem;border-radius:8px}"
    "table,tbody,tr,th,td{display:block}table{width:100%%;border-collapse:collapse}"
    "tr{padding:.5rem 0;border-bottom:1px solid %(rule)s}tr:last-child{border-bottom:0}"
    "th{color:%(muted)s;font-weight:500;font-size:.85rem;text-align:left}"
    ".code td{overflow-wrap:anywhere;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"
    "monospace;font-size:.95rem}"
    "a{color:%(link)s}.detail{color:%(muted)s;font-size:.85rem}"
    ".notice{background:%(notice)s;color:%(text)s;border:1px solid %(notice_rule)s;"
    "border-radius:12px;padding:.75rem 1rem;margin:1rem 0}"
    "footer{color:%(muted)s;font-size:.85rem;margin:1rem 0}"
)
"""The page's one stylesheet (inline: the page loads no file), filled per brand."""


@dataclass(frozen=True, slots=True)
class VerdictView:
    """What a code's page shows: the verdict, the scanned path (and its token, for the
    proof link) and, for a code that showed its real token, the product."""

    verdict: str
    link_path: str
    token: str = ""
    record: Mapping[str, str] | None = None
    """The product's record; None hides the details and the proof link."""
    batch_id: str | None = None
    anchor: Mapping[str, Any] | None = None
    scans: int | None = None
    """This code's scan count (None: not shown)."""
    logged: bool | None = None
    """False when this scan could not be logged: the page says so."""


def short_hash(value: str) -> str:
    """A transaction hash as people read it: ``0x1234…cdef``."""
    return f"{value[:6]}…{value[-4:]}" if len(value) > 14 else value


_MEMO_LIMIT = 256
"""Entries a page memo keeps (labels of unlisted columns, anchors' rows) before it starts
again: anchors and columns are few, and a memo must not grow without bound."""


_e = html.escape
"""``text`` escaped for HTML text and attribute values (quotes too)."""


class _Clock:
    """The time a page says it was checked, formatted once a minute (not per request)."""

    __slots__ = ("_minute", "_text")

    def __init__(self) -> None:
        self._minute = -1
        self._text = ""

    def now(self) -> str:
        """The current minute, ``YYYY-MM-DD HH:MM UTC``."""
        moment = datetime.now(UTC)
        minute = int(moment.timestamp()) // 60
        if minute != self._minute:
            self._minute, self._text = minute, moment.strftime("%Y-%m-%d %H:%M UTC")
        return self._text


_CLOCK = _Clock()


class _Parts:
    """One language's fixed parts of every page, escaped and ready to join."""

    def __init__(self, language: str, brand: BrandSettings, css: str, logo_url: str) -> None:
        catalog = translations(language)
        t = catalog.gettext
        page = Page()
        self.language = language
        self.words = {name: t(getattr(page, name)) for name in Page.__dataclass_fields__}
        self.html = {name: _e(word) for name, word in self.words.items()}
        self.labels = {column: _e(t(label)) for column, label in FIELD_LABELS.items()}
        self.anchors: dict[tuple[Any, ...], str] = {}
        """An anchor's rows, by the anchor's values (few anchors, many scans)."""
        header = _header(brand, logo_url, t(page.logo))
        self.top: dict[str, str] = {}
        self.block: dict[str, str] = {}
        self.steps: dict[str, str] = {}
        self.subject: dict[str, str] = {}
        """The report mail's subject, percent-encoded."""
        self.body: dict[str, str] = {}
        """The report mail's body, ``{code}`` still to fill."""
        for key, wording, tone in _kinds():
            title = t(wording.title)
            full_title = f"{title} · {brand.name}" if brand.name else title
            self.top[key] = (
                f'<!doctype html>\n<html lang="{language}"><head><meta charset="utf-8">\n'
                '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
                f"<title>{_e(full_title)}</title>\n<style>{css}</style></head>\n"
                f'<body>{header}<main class="t-{tone}">\n'
            )
            verdict = "error" if key.isdigit() else key
            self.block[key] = (
                f'<div class="verdict" id="verdict" data-verdict="{verdict}"><h1>{_e(title)}</h1>'
                f"{icon(verdict)}<p>{_e(t(wording.meaning))}</p></div>\n"
            )
            self.steps[key] = self._steps(wording, t, has_contact=brand.contact is not None)
            subject = self.words["mail_subject"].replace("{verdict}", title)
            self.subject[key] = quote(subject, safe="")
            self.body[key] = self.words["mail_body"].replace("{verdict}", title)
        self.notice = f'<p class="notice" id="not-logged">{_e(self.words["not_logged"])}</p>\n'

    def _steps(self, wording: Wording, t: Callable[[str], str], *, has_contact: bool) -> str:
        """The start of the "what to do" card, open: the report link, if any, is added
        per request, then ``</section>``. Empty when there is nothing to do."""
        if not wording.warning and not wording.steps:
            return ""
        w = self.words
        parts = [f'<section class="card" id="next-step"><h2>{_e(w["what_to_do"])}</h2>']
        if wording.warning:
            parts.append(f'<p class="stop">{_e(w["do_not_use"])}</p>')
            report = w["report_to_us"] if has_contact else w["report_to_seller"]
            parts.append(f"<p>{_e(report)}</p>")
        parts.extend(f"<p>{_e(t(step))}</p>" for step in wording.steps)
        return "".join(parts)


def _kinds() -> list[tuple[str, Wording, str]]:
    """Every page kind: (key, wording, tone), verdicts by name and errors by status."""
    kinds = [(verdict, wording, VERDICT_TONES[verdict]) for verdict, wording in VERDICTS.items()]
    kinds += [(str(status), w, ERROR_TONES.get(status, "grey")) for status, w in ERRORS.items()]
    return kinds


def _header(brand: BrandSettings, logo_url: str, logo_alt: str) -> str:
    """The brand's header: its logo and name (nothing when neither is set)."""
    if brand.name is None and not brand.logo_data:
        return ""
    parts = []
    if brand.logo_data:
        alt = "" if brand.name else logo_alt  # beside the name, the logo adds no words
        parts.append(f'<img src="{_e(logo_url)}" alt="{_e(alt)}">')
    if brand.name:
        parts.append(f"<span>{_e(brand.name)}</span>")
    return f'<header class="brand" id="brand"><div>{"".join(parts)}</div></header>\n'


def _css(accent: str) -> str:
    tones = "".join(f".t-{name} .verdict{{background:{colour}}}" for name, colour in TONES.items())
    return _CSS % {**COLOURS, "accent": accent, "tones": tones}


def _label(labels: dict[str, str], column: str) -> str:
    """The escaped label of a column the labels do not list, remembered."""
    if len(labels) >= len(FIELD_LABELS) + _MEMO_LIMIT:
        return _e(field_label(column))
    label = labels[column] = _e(field_label(column))
    return label


def _row(label: str, cell: str, code: bool) -> str:
    """One row of the details table (``label`` and ``cell`` already escaped)."""
    start = '<tr class="code">' if code else "<tr>"
    return f"{start}<th>{label}</th><td>{cell}</td></tr>"


class PublicPages:
    """The public pages of one brand, in every language of :data:`LANGUAGES`: built once
    (a serving process makes one), then each page costs a join of prepared parts and the
    few values that are the request's own."""

    def __init__(self, brand: BrandSettings) -> None:
        self.brand = brand
        self.logo_url = LOGO_PATH
        if brand.logo_data:
            # A new logo gets a new address, so that browsers may keep the old one cached.
            self.logo_url += "?v=" + hashlib.sha256(brand.logo_data).hexdigest()[:12]
        self.css = _css(brand.colour)
        """The page's stylesheet (the same on every page of this brand)."""
        self._parts = {lang: _Parts(lang, brand, self.css, self.logo_url) for lang in LANGUAGES}
        self._column = brand.product_name

    @staticmethod
    def language(asked: str | None, accept_language: str) -> str:
        """The language of a page: see :func:`~provmint.publicpage.i18n.choose_language`."""
        return choose_language(asked, accept_language)

    def verdict(self, view: VerdictView, language: str) -> str:
        """The page of a code's answer, in ``language`` (English if not one of ours)."""
        parts = self._parts.get(language) or self._parts[LANGUAGES[0]]
        key = view.verdict
        out = [parts.top[key]]
        record = view.record
        if record is not None:
            name = record.get(self._column) or parts.words["product"]
            out.append(f'<p class="product" id="product">{_e(name)}</p>\n')
        out.append(parts.block[key])
        if view.logged is False:
            out.append(parts.notice)
        if parts.steps[key]:
            out.append(parts.steps[key])
            if VERDICTS[key].warning:
                out.append(self._report(parts, key, view.link_path))
            out.append("</section>\n")
        if record is not None:
            out.append(self._details(parts, view, record))
        proof = ""
        if record is not None:
            href = f"/proof{view.link_path}?t={quote(view.token, safe='')}"
            # The service's browser verifier, given this proof's address (its own site).
            check = f"/verify?proof={quote(href, safe='/')}"
            proof = (
                f' <a id="proof" href="{_e(href)}">{parts.html["proof"]}</a>'
                f' · <a id="verify" href="{_e(check)}">{parts.html["verify"]}</a>'
            )
        out.append(_footer(parts, proof))
        return "".join(out)

    def error(self, status: int, detail: str, language: str) -> str:
        """The page of an error answer (``detail``: what went wrong, in English, about
        this visitor's own request)."""
        parts = self._parts.get(language) or self._parts[LANGUAGES[0]]
        key = str(status) if status in ERRORS else "400"
        out = [parts.top[key], parts.block[key]]
        line = ""
        if detail:
            line = f'<p class="detail">{parts.html["detail"].replace("{detail}", _e(detail))}</p>'
        if parts.steps[key]:
            out.append(f"{parts.steps[key]}{line}</section>\n")
        elif line:
            out.append(line + "\n")
        out.append(_footer(parts, ""))
        return "".join(out)

    def _report(self, parts: _Parts, key: str, link_path: str) -> str:
        """The report button: a mail with the scanned code's path in it, or the brand's
        report form (``{code}`` in its URL replaced by the path). The path is this
        visitor's own request: percent-encoded for the link, escaped for the page."""
        contact = self.brand.contact
        if contact is None:
            return ""
        if contact.startswith("mailto:"):
            body = parts.body[key].replace("{code}", link_path)
            href = f"{contact}?subject={parts.subject[key]}&body={quote(body, safe='')}"
            rel = ""
        else:
            href = contact.replace("{code}", quote(link_path, safe=""))
            rel = ' rel="noreferrer"'  # the page's address holds the code's token
        button = parts.html["report_button"]
        return f'<a class="button" id="report" href="{_e(href)}"{rel}>{button}</a>'

    def _details(self, parts: _Parts, view: VerdictView, record: Mapping[str, str]) -> str:
        """The product's details: its record (but the headline), batch, anchor, scans."""
        labels = parts.labels
        columns = [c for c in FIRST_COLUMNS if c in record]
        columns += [c for c in record if c not in FIRST_COLUMNS]
        rows = [
            _row(labels.get(c) or _label(labels, c), _e(record[c]), c in CODE_COLUMNS)
            for c in columns
            if c != self._column
        ]
        if view.batch_id is not None:
            rows.append(_row(labels["batch"], _e(view.batch_id), True))
        if view.anchor:
            rows.append(self._anchor_rows(parts, view.anchor))
        if view.scans is not None:
            rows.append(_row(labels["scans"], str(int(view.scans)), False))
        return (
            f'<section class="card" id="details"><h2>{parts.html["details"]}</h2>'
            f"<table>{''.join(rows)}</table></section>\n"
        )

    def _anchor_rows(self, parts: _Parts, anchor: Mapping[str, Any]) -> str:
        """The anchor's rows, made once per anchor and language (thousands of products
        share one anchor)."""
        key = (anchor["tx_hash"], anchor["block_number"], anchor["chain_id"], anchor["block_time"])
        found = parts.anchors.get(key)
        if found is None:
            if len(parts.anchors) >= _MEMO_LIMIT:
                parts.anchors.clear()
            found = parts.anchors[key] = self._anchor_cells(parts, anchor)
        return found

    def _anchor_cells(self, parts: _Parts, anchor: Mapping[str, Any]) -> str:
        """When the record was registered, where on the ledger, and its transaction
        (shortened, linked to the block explorer when one is configured)."""
        labels = parts.labels
        when = datetime.fromtimestamp(int(anchor["block_time"]), UTC)
        entry = parts.html["ledger_entry"].replace("{block}", str(int(anchor["block_number"])))
        entry = entry.replace("{chain}", str(int(anchor["chain_id"])))
        tx = str(anchor["tx_hash"])
        shown = _e(short_hash(tx))
        if self.brand.explorer:
            href = self.brand.explorer.replace("{tx}", quote(tx, safe=""))
            cell = f'<a id="transaction" href="{_e(href)}" rel="noreferrer">{shown}</a>'
        else:
            cell = f'<span id="transaction" title="{_e(tx)}">{shown}</span>'
        return (
            _row(labels["registered"], f"{when:%Y-%m-%d %H:%M} UTC", False)
            + _row(labels["ledger"], entry, False)
            + _row(labels["transaction"], cell, True)
        )


def _footer(parts: _Parts, proof: str) -> str:
    """The footer: when the code was checked, and the proof link (already built)."""
    checked = parts.html["checked"].replace("{time}", _CLOCK.now())
    return f"<footer>{checked}{proof}</footer>\n</main></body></html>\n"
