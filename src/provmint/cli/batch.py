"""``provmint batch``: mint a CSV, list and show batches, export label files."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from provmint.cli._common import (
    AllowPlaceholderOpt,
    BatchIdArg,
    Column,
    ConfigOpt,
    JsonOpt,
    KeyFileOpt,
    LockTimeoutOpt,
    PrintBaseOpt,
    RawOpt,
    StoreOpt,
    WorkersOpt,
    command_line,
    escape,
    handle_errors,
    minute,
    print_json,
    print_table,
    settings,
    short_hash,
    stderr,
    stdout,
)

if TYPE_CHECKING:
    from provmint.batch import MintSummary, Progress
    from provmint.config import Settings
    from provmint.errors import RowsRejectedError
    from provmint.store import BatchInfo
    from provmint.store.prints import PrintRecord

app = typer.Typer(
    rich_markup_mode=None, help="Mint, list, show and export batches.", no_args_is_help=True
)

SHOWN_REJECTS = 10

SkipInvalidOpt = Annotated[
    bool,
    typer.Option(
        "--skip-invalid",
        help="Mint the valid rows and list the rest in the rejects file, "
        "instead of refusing the whole batch.",
    ),
]
RejectsOpt = Annotated[
    Path | None,
    typer.Option(
        "--rejects",
        help="Where to write rejected rows, - for standard output "
        "[default: ./<FILE stem>.rejects.csv]",
        show_default=False,
    ),
]
UrlBaseOpt = Annotated[
    str | None,
    typer.Option(
        "--url-base",
        help="Verification URL base [env: PROVMINT_URL_BASE; default: https://id.example.com]",
        show_default=False,
    ),
]
LabelOpt = Annotated[str | None, typer.Option("--label", help="A note kept with the batch.")]


@contextmanager
def _mint_progress(console: Any, *, enabled: bool) -> Iterator[Progress | None]:
    """A rich display of the mint's phases on ``console`` while the block runs; yields the
    callback that feeds it, or None when disabled. Leaving the block, by an error too,
    clears the display, so that what is printed next is not drawn over."""
    if not enabled:
        yield None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description:<26}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    labels = {
        "read": "reading and validating",
        "check": "checking the store",
        "mint": "minting",
        "commit": "committing",
    }
    tasks: dict[str, Any] = {}

    def update(phase: str, done: int, total: int) -> None:
        # The display starts (and with it the thread that redraws it) on the first update,
        # not before: the minting process forks its workers only while it runs one thread
        # (provmint.minting.Runner), and the first update comes once they have started.
        if not tasks:
            progress.start()
        if phase not in tasks:
            tasks[phase] = progress.add_task(labels.get(phase, phase), total=total)
        progress.update(tasks[phase], completed=done, total=total)

    try:
        yield update
    finally:
        if tasks:
            progress.stop()


def _show_rejects(error: RowsRejectedError) -> None:

    console = stderr()
    for reject in error.rejects[:SHOWN_REJECTS]:
        console.print(escape(reject.describe(error.path)))
    more = len(error.rejects) - SHOWN_REJECTS
    if more > 0:
        console.print(f"… and {more} more")
    if error.rejects_path is not None:
        from provmint.outfile import is_stdout

        where = (
            "on standard output"
            if is_stdout(error.rejects_path)
            else f"in {escape(str(error.rejects_path))}"
        )
        console.print(f"All {len(error.rejects)} problems are listed {where}")


@app.command("create")
@handle_errors
def create(
    csv_file: Annotated[
        Path, typer.Argument(metavar="FILE", help="Products CSV to mint.", show_default=False)
    ],
    skip_invalid: SkipInvalidOpt = False,
    rejects: RejectsOpt = None,
    workers: WorkersOpt = None,
    url_base: UrlBaseOpt = None,
    label: LabelOpt = None,
    store: StoreOpt = None,
    key_file: KeyFileOpt = None,
    config: ConfigOpt = None,
    lock_timeout: LockTimeoutOpt = None,
    json: JsonOpt = False,
) -> None:
    """Validate FILE, mint a token and URL per product, build the Merkle tree, store it.

    Columns gtin and serial are required (any letter case; aliases such as EAN, UPC,
    "Serial Number", SN, 01 and 21 are accepted); every other column is kept and
    committed as given. Any invalid or already-minted row refuses the whole batch
    unless --skip-invalid. The rejects report is a CSV safe to open in a spreadsheet.
    Exit codes: 0 minted, 1 error (such as a full disk), 6 input rejected, 7 FILE or
    the key file not found, 8 store busy, 9 issuer key unreadable or not private.

    Examples:

      provmint batch create examples/products.csv

      provmint batch create big.csv --workers 2 --skip-invalid --json
    """
    _refuse_two_on_stdout(json, rejects)
    cfg = settings(
        store, key_file, config, workers=workers, url_base=url_base, lock_timeout=lock_timeout
    )
    summary = _mint(
        csv_file,
        cfg,
        skip_invalid=skip_invalid,
        rejects_path=rejects or Path.cwd() / f"{csv_file.stem}.rejects.csv",
        label=label,
        json=json,
    )
    if summary.placeholder_base:
        stderr().print(
            f"warning: no verification URL base is set ({summary.url_base} is a placeholder); "
            "labels and exports will need yours: export "
            "PROVMINT_URL_BASE=https://id.your-brand.com",
            markup=False,
            soft_wrap=True,
        )
    if json:
        print_json(_created_json(summary, cfg))
    else:
        _summary(summary)


def _created_json(summary: MintSummary, cfg: Settings) -> dict[str, Any]:
    """``batch create --json``: the batch as ``batch show`` gives it (read back from the
    catalog: one shape of a batch everywhere), and what this run did beside it."""
    from provmint.products import batch_json, show_batch

    # A new batch has no anchor and no labels yet.
    return {**batch_json(show_batch(cfg, summary.batch_id), None, []), **summary.to_json()}


def _refuse_two_on_stdout(json: bool, rejects: Path | None) -> None:
    """Refused before any work: the JSON summary and the rejects CSV on one stream would
    be neither valid JSON nor a valid CSV."""
    from provmint.errors import ConfigError
    from provmint.outfile import is_stdout

    if json and is_stdout(rejects):
        raise ConfigError("--json and --rejects - both write to standard output; pick one")


def _mint(
    csv_file: Path,
    cfg: Settings,
    *,
    skip_invalid: bool,
    rejects_path: Path,
    label: str | None,
    json: bool,
) -> MintSummary:
    """Mint ``csv_file`` with a progress display on a terminal (never with --json, whose
    reader wants the JSON only). A refused batch lists its first problems on standard
    error, after the display is gone, and the error goes on to ``handle_errors``."""
    from provmint.cli._tuning import for_batch_work

    for_batch_work()
    from provmint.batch import mint_batch
    from provmint.errors import RowsRejectedError

    err = stderr()
    try:
        with _mint_progress(err, enabled=not json and err.is_terminal) as update:
            return mint_batch(
                csv_file,
                settings=cfg,
                skip_invalid=skip_invalid,
                rejects_path=rejects_path,
                label=label,
                progress=update,
                on_wait=lambda who: err.print(f"waiting for the store: {who} holds it"),
            )
    except RowsRejectedError as exc:
        if not json:
            _show_rejects(exc)
        raise


def _summary(s: MintSummary) -> None:
    from rich.table import Table

    out = stdout()
    out.print(f"[bold green]Minted batch {s.batch_id}[/]")
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("products", f"{s.products:,} of {s.total_rows:,} rows")
    grid.add_row(
        "rejected",
        f"{s.rejected_rows:,}" + (f"  (see {escape(s.rejects_path)})" if s.rejects_path else ""),
    )
    grid.add_row("merkle root", s.root)
    grid.add_row("commitment", s.commitment)
    grid.add_row("key", s.key_id)
    grid.add_row(
        "elapsed",
        f"{s.elapsed:.2f} s  ({s.rate:,.0f} products/s, "
        f"{s.workers} worker{'s' if s.workers > 1 else ''})",
    )
    grid.add_row("store", escape(s.store))
    out.print(grid)


@app.command("list")
@handle_errors
def list_(
    store: StoreOpt = None,
    config: ConfigOpt = None,
    lock_timeout: LockTimeoutOpt = None,
    json: JsonOpt = False,
) -> None:
    """List the batches in the store, oldest first (tab-separated when piped).

    Example: provmint batch list --json
    """
    from provmint.products import (
        anchor_states,
        batch_json,
        batch_prints,
        describe_anchor,
        list_batches,
    )

    cfg = settings(store, None, config, lock_timeout=lock_timeout)
    batches = list_batches(cfg)
    anchors = anchor_states(cfg) if batches else {}
    if json:
        print_json(
            {
                "batches": [
                    batch_json(b, anchors.get(b.batch_id), batch_prints(cfg, b)) for b in batches
                ]
            }
        )
        return
    if not batches:
        stdout().print("No batches yet. Mint one with: provmint batch create FILE")
        return
    print_table(
        "Batches",
        [
            Column("batch", whole=True),
            Column("created", whole=True, brief=minute),
            Column("products", right=True, whole=True),
            Column("rejected", right=True, piped_only=True),
            Column("source"),
            Column("root", brief=short_hash),
            Column("anchor"),
        ],
        [
            [
                b.batch_id,
                b.created_at,
                f"{b.products:,}",
                f"{b.rejected:,}",
                b.source_name,
                b.root,
                describe_anchor(anchors.get(b.batch_id)).split(" (")[0],
            ]
            for b in batches
        ],
    )


def _show(b: BatchInfo, anchor: str, prints: list[PrintRecord]) -> None:
    from rich.table import Table

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    m = b.manifest
    rows = [
        ("batch", b.batch_id),
        ("created", b.created_at),
        ("label", b.label or ""),
        (
            "source",
            f"{m['source']['name']}  ({m['source']['rows']:,} rows, "
            f"sha256 {m['source']['sha256']})",
        ),
        ("products", f"{b.products:,}"),
        ("rejected", f"{b.rejected:,}"),
        ("columns", ", ".join(b.columns)),
        ("tree", f"{b.tree_profile}, {b.tree_size:,} leaves"),
        ("merkle root", b.root),
        ("manifest digest", b.manifest_digest),
        ("commitment", b.commitment),
        ("key", b.key_id),
        ("record format", m["record_version"]),
        ("token format", m["token_version"]),
        ("minted url base", m["url_base"]),
        ("provmint", m["provmint_version"]),
        ("anchor", anchor),
        *(("printed with", line) for line in _printed(prints)),
    ]
    for name, value in rows:
        grid.add_row(name, escape(value))
    stdout().print(grid)


def _printed(prints: list[PrintRecord]) -> list[str]:
    """One line per URL base the batch's labels were produced with, oldest first."""
    if not prints:
        return ["nothing yet (labels and batch export choose the URL base)"]
    by_base: dict[str, list[PrintRecord]] = {}
    for record in prints:
        by_base.setdefault(record.url_base, []).append(record)
    lines = []
    for base, records in by_base.items():
        last = records[-1]
        times = "once" if len(records) == 1 else f"{len(records)} times"
        note = ", the placeholder" if last.placeholder else ""
        lines.append(
            f"{base}  ({times}{note}; last {last.at}: {last.output} {last.format}, "
            f"{last.labels:,} labels)"
        )
    return lines


@app.command("show")
@handle_errors
def show(
    batch: BatchIdArg,
    store: StoreOpt = None,
    config: ConfigOpt = None,
    lock_timeout: LockTimeoutOpt = None,
    json: JsonOpt = False,
) -> None:
    """Show one batch: manifest, root, commitment, anchor state, and the URL bases its
    labels and exports were printed with.

    Example: provmint batch show 20261128-4884
    """
    from provmint.products import (
        anchor_states,
        batch_json,
        batch_prints,
        describe_anchor,
        show_batch,
    )

    cfg = settings(store, None, config, lock_timeout=lock_timeout)
    info = show_batch(cfg, batch)
    anchor = anchor_states(cfg).get(info.batch_id)
    prints = batch_prints(cfg, info)
    if json:
        print_json(batch_json(info, anchor, prints))
    else:
        _show(info, describe_anchor(anchor), prints)


@app.command("export")
@handle_errors
def export(
    batch: BatchIdArg,
    fmt: Annotated[str, typer.Option("--format", "-f", help="csv or parquet.")] = "csv",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Output file, - for standard output [default: standard output; Parquet needs -o]",
            show_default=False,
        ),
    ] = None,
    raw: RawOpt = False,
    url_base: PrintBaseOpt = None,
    allow_placeholder: AllowPlaceholderOpt = False,
    store: StoreOpt = None,
    config: ConfigOpt = None,
    lock_timeout: LockTimeoutOpt = None,
) -> None:
    """Export the label-printer file: gtin, serial, lot, expiry, token, url,
    element_string, human_readable, code_file (the columns of labels.csv).

    Each url is built on the URL base given here (--url-base, else PROVMINT_URL_BASE or
    url_base in the config file); without one, the export is refused (exit 2) unless
    --allow-placeholder. The base is recorded with the batch (batch show). The CSV is
    safe to open in a spreadsheet: a value starting with = + - @ tab or CR (serials
    such as -1+2, and one token in 64) gets a leading ' . Label printers and scripts
    need the values as stored: pass --raw (Parquet is always raw). A regular file is
    replaced atomically; devices, FIFOs and /dev/stdout are written in place.

    Examples:

      provmint batch export 20261128-4884 -o labels.csv

      provmint batch export 20261128-4884 --raw -o printer.csv

      provmint batch export 20261128-4884 --url-base https://id.your-brand.com

      provmint batch export 20261128-4884 --format parquet -o labels.parquet
    """
    from provmint.config import output_url_base
    from provmint.outfile import is_stdout
    from provmint.products import export_labels

    cfg = settings(store, None, config, url_base=url_base, lock_timeout=lock_timeout)
    given = [batch, *(["--format", fmt] if fmt != "csv" else []), *(["--raw"] if raw else [])]
    given += ["-o", str(out)] if out is not None else []
    base = output_url_base(
        cfg, allow_placeholder=allow_placeholder, command=command_line("batch export", given)
    )
    count = export_labels(cfg, batch, out, url_base=base, fmt=fmt, raw=raw)
    if out is not None and not is_stdout(out):
        stderr().print(f"Wrote {count:,} labels to {out}")
