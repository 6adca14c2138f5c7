"""``provmint scans``: look after the scan log (retention)."""

from __future__ import annotations

from typing import Annotated

import typer

from provmint.cli._common import (
    ConfigOpt,
    JsonOpt,
    ScanLogOpt,
    StoreOpt,
    escape,
    handle_errors,
    print_json,
    settings,
    stdout,
)

app = typer.Typer(
    rich_markup_mode=None,
    help="Look after the scan log (SQLite in the store, or PostgreSQL with --scan-log).",
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

    from provmint.store import Store
    from provmint.store.scanlog import open_scan_log, parse_age, stamp

    age = parse_age(older_than)
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
