"""``provmint stats``: the store and its scans at a glance."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from provmint.cli._common import (
    Column,
    ConfigOpt,
    JsonOpt,
    Lines,
    LockTimeoutOpt,
    ScanLogOpt,
    StoreOpt,
    handle_errors,
    minute,
    print_json,
    print_table,
    settings,
    stdout,
)

if TYPE_CHECKING:
    from provmint.stats import StoreStats, Tally

SinceOpt = Annotated[
    str,
    typer.Option(
        "--since",
        metavar="AGE",
        help="Count the scans of the last AGE, from the start of that day (UTC): a whole "
        "number of h, d or w (24h, 7d, 4w).",
    ),
]


@handle_errors
def stats(
    since: SinceOpt = "30d",
    scan_log: ScanLogOpt = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
    lock_timeout: LockTimeoutOpt = None,
    json: JsonOpt = False,
) -> None:
    """Show the store and its scans at a glance: batches and products (anchored, being
    anchored, pending), anchors and their fees, scans per day by verdict, the codes
    flagged as possible copies and why, and the size on disk.

    Counts come from the catalog's rows and the scan log's day counters, so this answers
    at once at any size. Tab-separated when piped. provmint dashboard shows the same in
    a browser.

    Examples:

      provmint stats

      provmint stats --since 7d --json

      provmint stats --scan-log postgresql://provmint@db.example.com/provmint
    """
    from datetime import UTC, datetime

    from provmint.config import checked_age
    from provmint.stats import store_stats
    from provmint.store import Store

    age = checked_age(since, "--since")
    cfg = settings(store, None, config, scan_log=scan_log, lock_timeout=lock_timeout)
    Store.open(cfg.store)  # a typo in --store is an error, not an empty report
    now = datetime.now(UTC)
    report = store_stats(cfg, since=(now - age).date(), at=now)
    if json:
        print_json(report.to_json())
    else:
        _render(report)


def _count(value: str) -> str:
    return f"{int(value):,}"


def _bytes(value: str) -> str:
    """A size for people: 1.5 MB (decimal units, as disks are sold)."""
    if not value:
        return "-"
    size = float(value)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def _standings(tally: Tally) -> str:
    return f"{tally.anchored:,} anchored, {tally.anchoring:,} anchoring, {tally.pending:,} pending"


def _render(report: StoreStats) -> None:
    from provmint.stats import format_eth

    costs = report.anchors
    states = ", ".join(f"{n:,} {state}" for state, n in costs.states.items() if n) or "none"
    verdicts = ", ".join(f"{n:,} {name}" for name, n in report.verdicts.items() if n) or "none"
    since = report.since.isoformat() if report.since else "the first"
    disk = report.disk
    log_size = "-" if disk.scan_log is None else _bytes(str(disk.scan_log))
    print_table(
        f"provmint stats at {minute(report.to_json()['at'])} UTC",
        [Column("what"), Column("count", right=True, brief=_count), Column("detail")],
        [
            ["batches", str(report.batches.total), _standings(report.batches)],
            ["products", str(report.products.total), _standings(report.products)],
            [
                "anchors",
                str(costs.total),
                f"{states}; {costs.gas_used:,} gas, {format_eth(costs.fee_wei)} ETH in fees",
            ],
            ["scans", str(report.scans), f"since {since} (UTC): {verdicts}"],
            [
                "suspect codes",
                str(len(report.suspects)),
                "latest scan judged a possible copy"
                + ("" if report.suspects_complete else " (the latest listed; more exist)"),
            ],
            [
                "bytes on disk",
                str(disk.total),
                f"{_bytes(str(disk.total))}: batches {_bytes(str(disk.batches))}, "
                f"index {_bytes(str(disk.index))}, "
                f"catalog {_bytes(str(disk.catalog))}, anchors {_bytes(str(disk.anchors))}, "
                f"scan log {log_size}",
            ],
        ],
    )
    _gap()
    names = list(report.days[0].verdicts) if report.days else []
    # A pipe gets every day of the window (zeros too, for charts and spreadsheets); a
    # terminal the days that had scans.
    piped = isinstance(stdout(), Lines)
    days = [day for day in report.days if piped or day.total]
    print_table(
        "Scans per day (UTC)" + ("" if piped else ", days with scans"),
        [
            Column("day", whole=True),
            *(Column(name, right=True, brief=_count) for name in names),
            Column("total", right=True, brief=_count),
        ],
        [
            [day.day.isoformat(), *(str(day.verdicts[n]) for n in names), str(day.total)]
            for day in days
        ],
    )
    if report.suspects:
        _gap()
        print_table(
            "Suspect codes, latest first (provmint scans show CODE says more)",
            [
                Column("code", whole=True),
                Column("last suspect", whole=True, brief=minute),
                Column("scans", right=True),
                Column("flagged now"),
                Column("why"),
            ],
            [
                [
                    s.code,
                    s.last_suspect_at,
                    str(s.suspect_scans),
                    "yes" if s.flagged else ("no (cleared)" if s.cleared_at else "no"),
                    s.reason or "",
                ]
                for s in report.suspects
            ],
        )


def _gap() -> None:
    sys.stdout.write("\n")
    sys.stdout.flush()
