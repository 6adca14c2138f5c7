"""``provmint scans``: look after the scan log (retention) and the copy signal (why a
code is flagged, clearing it)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from provmint.cli._common import (
    Column,
    ConfigOpt,
    JsonOpt,
    ScanLogOpt,
    StoreOpt,
    TokenArgCommand,
    escape,
    handle_errors,
    minute,
    print_json,
    print_table,
    settings,
    stdout,
)
from provmint.cli.consumer import ThresholdOpt
from provmint.store.scanlog import MAX_LISTED_SCANS

if TYPE_CHECKING:
    from provmint.config import Settings
    from provmint.scan import CopySignal

app = typer.Typer(
    rich_markup_mode=None,
    help="Look after the scan log (SQLite in the store, or PostgreSQL with --scan-log) "
    "and the copy signal.",
    no_args_is_help=True,
)


@app.command("prune")
@handle_errors
def prune(
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than",
            metavar="AGE",
            help="Delete scans older than this: a whole number of h (hours), d (days) "
            "or w (weeks), as in 365d, 12h or 52w.",
            show_default=False,
        ),
    ],
    scan_log: ScanLogOpt = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
    json: JsonOpt = False,
) -> None:
    """Delete old scans from the scan log and recount the codes they belonged to.

    Clone detection then counts only the scans that remain. Deletes in chunks, so
    provmint serve and provmint scan keep logging meanwhile; safe to run again (from
    cron, say). Works on both backends.

    Examples:

      provmint scans prune --older-than 365d

      provmint scans prune --older-than 52w --json

      provmint scans prune --older-than 90d --scan-log postgresql://provmint@db.example.com/provmint
    """
    from datetime import UTC, datetime

    from provmint.config import checked_age
    from provmint.store import Store
    from provmint.store.scanlog import open_scan_log, stamp

    age = checked_age(older_than, "--older-than")
    cfg = settings(store, None, config, scan_log=scan_log)
    if cfg.scan_log is None:
        Store.open(cfg.store)  # the default log lives in the store: it must be one
    before = datetime.now(UTC) - age
    with open_scan_log(cfg, pool_size=0) as log:
        removed = log.prune(before)
        where = log.where
    if json:
        print_json(
            {"removed": removed, "older_than": older_than, "before": stamp(before), "log": where}
        )
        return

    noun = "scan" if removed == 1 else "scans"
    stdout().print(
        f"Removed {removed:,} {noun} older than {escape(older_than)} "
        f"(before {before:%Y-%m-%d %H:%M} UTC) from {escape(where)}"
    )


CodeArg = Annotated[
    str,
    typer.Argument(
        help="The code: its verification URL or path as printed on the label "
        "(01/GTIN/21/SERIAL...), or its bare token.",
        show_default=False,
    ),
]


def _signal_settings(
    store: Path | None, config: Path | None, scan_log: str | None, code: str
) -> Settings:
    """The settings of ``scans show`` and ``clear``: the default log lives in the store
    (and a bare token is looked up there), so then the store must exist."""
    from provmint.store import Store

    cfg: Settings = settings(store, None, config, scan_log=scan_log)
    if cfg.scan_log is None or ("/01/" not in code and not code.strip().startswith("01/")):
        Store.open(cfg.store)
    return cfg


@app.command("show", cls=TokenArgCommand)
@handle_errors
def show(
    code: CodeArg,
    clone_threshold: ThresholdOpt = None,
    scan_log: ScanLogOpt = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
    json: JsonOpt = False,
) -> None:
    """Show why a code is, or is not, flagged as a possible copy.

    The copy signal counts clients (a salted hash of the network prefix and user agent;
    each machine running provmint scan is one) within the [copy_signal] window, from the
    code's last clear on: more than max_clients of them (default 5), or more than
    max_places places (default 1) given by more than max_places clients, flag the code.
    Shows the window, the clients counted, the places with their scans (the operator's
    data: what visitors gave as ?loc=), first and last scan, and the last clear.

    Exit codes: 0 not flagged (or never scanned), 11 flagged.

    Examples:

      provmint scans show "https://id.example.com/01/09520123450014/21/546CAWQDCR56?t=..."

      provmint scans show 01/09520123450014/21/546CAWQDCR56 --json

      provmint scans show 01/09520123450014/21/546CAWQDCR56 --scan-log postgresql://provmint@db.example.com/provmint
    """
    from provmint.errors import EXIT_SUSPECT
    from provmint.scan import copy_signal

    cfg = _signal_settings(store, config, scan_log, code)
    signal = copy_signal(cfg, code, clone_threshold=clone_threshold)
    if json:
        print_json(signal.to_json())
    else:
        _render_signal(signal)
    if signal.flagged:
        raise typer.Exit(EXIT_SUSPECT)


@app.command("clear", cls=TokenArgCommand)
@handle_errors
def clear(
    code: CodeArg,
    clone_threshold: ThresholdOpt = None,
    scan_log: ScanLogOpt = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
    json: JsonOpt = False,
) -> None:
    """Clear a code's copy signal: the evidence logged until now stops counting.

    For provmint serve and provmint scan alike (every replica sharing the log): clients
    and places seen before the clear no longer count; a client seen again afterwards
    counts again. The scans themselves stay in the log. Prints what was cleared. Exit
    7 when the log has no scan of the code.

    Examples:

      provmint scans clear 01/09520123450014/21/546CAWQDCR56

      provmint scans clear "https://id.example.com/01/09520123450014/21/546CAWQDCR56?t=..." --json
    """
    from provmint.scan import clear_copy_signal, describe_window

    cfg = _signal_settings(store, config, scan_log, code)
    signal = clear_copy_signal(cfg, code, clone_threshold=clone_threshold)
    if json:
        print_json(signal.to_json())
        return
    evidence = signal.evidence
    assert evidence is not None
    out = stdout()
    out.print(
        f"Cleared the copy signal of {signal.code} at {signal.cleared_at}: scans before it "
        "no longer count"
    )
    within = describe_window(signal.rule.window)
    out.print(
        f"  {'cleared':<14} {evidence.clients:,} {_plural(evidence.clients, 'client')} and "
        f"{evidence.window_places:,} {_plural(evidence.window_places, 'place')} seen since "
        f"{evidence.since} (within {within})"
    )
    was = f"flagged: {signal.reason}" if signal.reason else "not flagged"
    out.print(f"  {'it was':<14} {escape(was)}")


def _plural(count: int, noun: str) -> str:
    return noun if count == 1 else noun + "s"


def _render_signal(signal: CopySignal) -> None:
    from provmint.scan import describe_window

    out = stdout()
    rule = signal.rule
    evidence = signal.evidence
    if evidence is None:
        out.print(f"{signal.code}: not flagged; the scan log has no scans of it")
        return
    if signal.reason is not None:
        out.print(
            f"{signal.code}: [bold red]FLAGGED[/] as a possible copy: {escape(signal.reason)}"
        )
    else:
        out.print(f"{signal.code}: not flagged")
    within = describe_window(rule.window)
    out.print(
        f"  {'rule':<14} more than {rule.max_clients} {_plural(rule.max_clients, 'client')}, "
        f"or more than {rule.max_places} {_plural(rule.max_places, 'place')} given by more "
        f"than {rule.max_places} {_plural(rule.max_places, 'client')}, within {within}"
    )
    since = f"since {evidence.since}"
    if evidence.cleared_at is not None and evidence.cleared_at == evidence.since:
        since += " (the last clear)"
    else:
        since += f" (the window's start; until {evidence.at})"
    out.print(f"  {'evidence':<14} {since}")
    out.print(f"  {'clients':<14} {evidence.clients:,} (distinct, link-preview bots not counted)")
    out.print(
        f"  {'places':<14} {evidence.window_places:,}, given by {evidence.placing_clients:,} "
        f"{_plural(evidence.placing_clients, 'client')}"
    )
    for place in evidence.places:
        out.print(
            f"    {escape(place.location)}: {place.scans:,} {_plural(place.scans, 'scan')}, "
            f"last {place.last_at}"
        )
    if evidence.window_places > len(evidence.places):
        out.print(f"    ... and {evidence.window_places - len(evidence.places):,} more")
    out.print(f"  {'first seen':<14} {evidence.first_seen or '-'}")
    out.print(f"  {'last seen':<14} {evidence.last_seen or '-'}")
    out.print(
        f"  {'scans':<14} {evidence.genuine_scans:,} with the real token, "
        f"{evidence.all_scans:,} in all"
    )
    out.print(f"  {'cleared':<14} {evidence.cleared_at or 'never'}")


class _Verdict(StrEnum):
    """A verdict to list (what the scan log records)."""

    genuine = "genuine"
    pending = "pending"
    suspect = "suspect"
    forged = "forged"


@app.command("list")
@handle_errors
def list_(
    code: Annotated[
        str | None,
        typer.Option(
            "--code",
            help="Only this code: its URL or path as printed (01/GTIN/21/SERIAL...), or "
            "its bare token.",
            show_default=False,
        ),
    ] = None,
    verdict: Annotated[
        _Verdict | None,
        typer.Option("--verdict", help="Only scans with this verdict.", show_default=False),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            metavar="AGE",
            help="Only scans of the last AGE: a whole number of h, d or w (12h, 7d, 4w).",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[
        int,
        typer.Option("--limit", min=1, max=MAX_LISTED_SCANS, help="The most scans to list."),
    ] = 50,
    scan_log: ScanLogOpt = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
    json: JsonOpt = False,
) -> None:
    """List the newest scans in the log, newest first: when, which code, the verdict,
    the place given (the operator's data: what visitors sent as ?loc=), where from
    (serve or scan), and whether it counted (link-preview bots do not). Tab-separated
    when piped.

    Examples:

      provmint scans list --since 24h

      provmint scans list --verdict forged --limit 200 --json

      provmint scans list --code 01/09520123450014/21/546CAWQDCR56
    """
    from datetime import UTC, datetime

    from provmint.config import checked_age
    from provmint.scan import Verdict, list_scans
    from provmint.store import Store

    cfg = settings(store, None, config, scan_log=scan_log)
    if cfg.scan_log is None:
        Store.open(cfg.store)  # the default log lives in the store: it must be one
    start = None if since is None else datetime.now(UTC) - checked_age(since, "--since")
    scans = list_scans(
        cfg,
        code=code,
        verdict=None if verdict is None else Verdict(verdict.value),
        since=start,
        limit=limit,
    )
    if json:
        print_json({"scans": [s.to_json() for s in scans]})
        return
    print_table(
        "Scans, newest first",
        [
            Column("at", whole=True, brief=minute),
            Column("gtin", whole=True),
            Column("serial", whole=True),
            Column("verdict"),
            Column("place"),
            Column("source"),
            Column("counted"),
        ],
        [
            [
                s.at,
                s.gtin,
                s.serial,
                s.verdict,
                s.location or "",
                s.source,
                "yes" if s.counted else "no (bot)",
            ]
            for s in scans
        ],
    )
