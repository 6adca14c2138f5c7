"""``provmint store``: look after the product store itself."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from provmint.cli._common import (
    ConfigOpt,
    JsonOpt,
    LockTimeoutOpt,
    StoreOpt,
    counting_progress,
    escape,
    handle_errors,
    print_json,
    settings,
    stderr,
    stdout,
)

if TYPE_CHECKING:
    from provmint.repair import RepairReport

app = typer.Typer(rich_markup_mode=None, help="Look after the product store.", no_args_is_help=True)


@app.command("repair")
@handle_errors
def repair(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be restored; change nothing.")
    ] = False,
    store: StoreOpt = None,
    config: ConfigOpt = None,
    lock_timeout: LockTimeoutOpt = None,
    json: JsonOpt = False,
) -> None:
    """Rebuild the catalog from the batch directories and anchor records.

    For a store whose catalog.duckdb is missing (deleted, not restored from a backup),
    damaged, or older than its batch files. Every batch directory is read back (manifest,
    tree file, the products' lookup keys); a new catalog is written beside the old one,
    which is kept as catalog.duckdb.before-repair-<time>. A directory that is not a whole
    batch is moved to quarantine/, never deleted. Audit the batches afterwards with
    provmint verify --batch ID.

    Examples:

      provmint store repair --dry-run

      provmint store repair --store /srv/provmint/store --json
    """
    from provmint.repair import repair_store

    cfg = settings(store, None, config, lock_timeout=lock_timeout)
    with counting_progress(stderr(), enabled=not json) as update:
        report = repair_store(cfg, dry_run=dry_run, progress=update)
    if json:
        print_json(report.to_json())
    else:
        _show(report)


def _show(r: RepairReport) -> None:

    out = stdout()
    verb = "Would restore" if r.dry_run else "Restored"
    out.print(
        f"[bold green]{verb} {len(r.batches):,} batch{'es' if len(r.batches) != 1 else ''}[/] "
        f"({r.products:,} products) and {r.anchors:,} anchor{'s' if r.anchors != 1 else ''} "
        f"in {escape(r.store)}"
    )
    for q in r.quarantined:
        where = f"moved to {escape(q.moved_to)}" if q.moved_to else "would be moved to quarantine/"
        out.print(f"[yellow]not restored:[/] {escape(q.directory)}: {escape(q.reason)} ({where})")
    for note in r.notes:
        out.print(f"note: {escape(note)}")
    if r.previous_catalog:
        out.print(f"The previous catalog is kept as {escape(r.previous_catalog)}.")
