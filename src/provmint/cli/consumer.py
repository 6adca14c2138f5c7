"""Consumer-side commands: ``provmint labels``, ``provmint scan``, ``provmint serve``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from provmint.cli._common import (
    BatchIdArg,
    ConfigOpt,
    JsonOpt,
    KeyFileOpt,
    LockTimeoutOpt,
    RawOpt,
    ScanLogOpt,
    StoreOpt,
    WorkersOpt,
    counting_progress,
    escape,
    handle_errors,
    print_json,
    settings,
    stderr,
    stdout,
)

if TYPE_CHECKING:
    from provmint.config import Settings
    from provmint.scan import ScanResult

ThresholdOpt = Annotated[
    int | None,
    typer.Option(
        "--clone-threshold",
        min=1,
        help="Flag a genuine code seen by more distinct clients than this within the copy "
        "signal's window as a possible copy [default: [copy_signal] max_clients, 5]",
        show_default=False,
    ),
]
ServeWorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers",
        "-j",
        min=1,
        max=256,
        help="Processes serving the port [env: PROVMINT_WORKERS; default: CPU count]",
        show_default=False,
    ),
]
"""``serve``'s --workers: ``WorkersOpt`` with help that says what its processes do."""


@handle_errors
def labels(
    batch: BatchIdArg,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Directory to write into.", show_default=False)
    ],
    raw: RawOpt = False,
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="svg, png, or none (the CSV only)")
    ] = "svg",
    error: Annotated[str, typer.Option("--error", help="QR error correction: L, M, Q or H")] = "M",
    scale: Annotated[int, typer.Option("--scale", help="Pixels (or SVG units) per module")] = 4,
    workers: WorkersOpt = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
    lock_timeout: LockTimeoutOpt = None,
    json: JsonOpt = False,
) -> None:
    """Render a QR code per product of a batch and write the label-printer CSV.

    Files go to OUT/part-NNNNN/{leaf}-{gtin14}-{serial}.svg; OUT/labels.csv has gtin,
    serial, lot, expiry, token, url and qr_file for every product. The quiet zone is
    kept. labels.csv is safe to open in a spreadsheet (a value starting with = + - @
    tab or CR gets a leading '); --raw writes the values as stored, for printer jobs.

    Examples:

      provmint labels 20261128-4884 --out labels/

      provmint labels 20261128-4884 --out labels/ --format png --error Q --scale 8

      provmint labels 20261128-4884 --out labels/ --format none
    """
    from provmint.labels import render_labels

    cfg = settings(store, None, config, workers=workers, lock_timeout=lock_timeout)
    with counting_progress(stderr(), enabled=not json) as update:
        summary = render_labels(
            cfg,
            batch,
            out,
            fmt=fmt,
            level=error,
            scale=scale,
            workers=cfg.workers,
            progress=update,
            raw=raw,
        )
    if json:
        print_json(summary.to_json())
    else:
        stdout().print(
            f"Wrote {summary.labels:,} labels ({summary.images:,} images) for batch "
            f"{summary.batch_id} to {summary.out_dir} in {summary.elapsed:.2f} s"
        )


@handle_errors
def scan(
    code: Annotated[
        str,
        typer.Argument(
            help="The scanned URL (GS1 Digital Link) or a bare token.", show_default=False
        ),
    ],
    location: Annotated[
        str | None,
        typer.Option(
            "--location",
            help="Where the code was scanned (kept in the scan log).",
            show_default=False,
        ),
    ] = None,
    clone_threshold: ThresholdOpt = None,
    scan_log: ScanLogOpt = None,
    store: StoreOpt = None,
    key_file: KeyFileOpt = None,
    config: ConfigOpt = None,
    lock_timeout: LockTimeoutOpt = None,
    json: JsonOpt = False,
) -> None:
    """Check a scanned code: genuine, not yet anchored, forged, unknown, or possibly copied.

    Exit codes: 0 genuine, 4 genuine but not anchored yet, 3 forged (token or lot
    mismatch), 7 unknown code, 11 suspect (seen by too many clients, or from several
    places by several clients, within the copy signal's window), 1 the scan could not
    be logged (a read-only store, the database down).

    The scan is logged where provmint serve logs them (--scan-log), so the clients and
    places behind "suspect" include the web service's scans; this machine counts as one
    client. provmint scans show CODE says why a code is flagged.

    Examples:

      provmint scan "https://id.example.com/01/09520123450014/10/L2406A/21/546CAWQDCR56?t=..."

      provmint scan 52VqMUmlXpKNjHggOl1ALg --location "Warehouse 3" --json

      provmint scan 52VqMUmlXpKNjHggOl1ALg --scan-log postgresql://provmint@db.example.com/provmint
    """
    from provmint.scan import scan_code

    result = scan_code(
        settings(store, key_file, config, lock_timeout=lock_timeout, scan_log=scan_log),
        code,
        location=location,
        clone_threshold=clone_threshold,
    )
    if json:
        print_json(result.to_json())
    else:
        _render_scan(result)
    raise typer.Exit(result.exit_code)


def _render_scan(result: ScanResult) -> None:
    from datetime import UTC, datetime

    out = stdout()
    style = {
        "genuine": "bold green",
        "pending": "bold yellow",
        "suspect": "bold red",
        "forged": "bold red",
        "unknown": "bold red",
    }[result.verdict]
    out.print(f"[{style}]{result.verdict.upper()}[/]: {escape(result.reason)}")
    if result.record:
        for name, value in result.record.items():
            out.print(f"  {name:<16} {escape(value)}")
        out.print(f"  {'batch':<16} {result.batch_id}")
    if result.anchor:
        when = datetime.fromtimestamp(result.anchor["block_time"], UTC)
        out.print(
            f"  {'anchor':<16} block {result.anchor['block_number']} of chain "
            f"{result.anchor['chain_id']} at {when:%Y-%m-%d %H:%M:%S} UTC"
        )
        out.print(f"  {'transaction':<16} {result.anchor['tx_hash']}")
    if result.stats:
        places = ", ".join(result.stats.locations) or "no location given"
        out.print(
            f"  {'scans':<16} {result.stats.count} (first {result.stats.first_seen}; "
            f"{escape(places)})"
        )


@handle_errors
def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="Port (0 picks a free one).")
    ] = 8080,
    clone_threshold: ThresholdOpt = None,
    access_log: Annotated[bool, typer.Option("--access-log", help="Log every request.")] = False,
    workers: ServeWorkersOpt = None,
    scan_log: ScanLogOpt = None,
    store: StoreOpt = None,
    key_file: KeyFileOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Serve the verification pages of the printed URLs (read-only).

    GET /01/{gtin}[/10/{lot}]/21/{serial}?t={token}: an HTML page (JSON with
    Accept: application/json); GET /proof/01/...?t={token}: the proof JSON;
    GET /healthz (503 while scans cannot be logged). Scans are logged like provmint
    scan does; a scan that cannot be logged is answered with its verdict, a notice
    that it was not logged, and status 503.

    --workers N processes share the port (SO_REUSEPORT); Ctrl-C or SIGTERM stops them
    all. A worker that dies is restarted; if workers die 5 times within a minute the
    service stops with exit 1. Replicas on several machines share clone detection
    through one PostgreSQL scan log (--scan-log).

    Examples:

      provmint serve --store /srv/provmint/store --host 127.0.0.1 --port 8080

      provmint serve --workers 4 --port 8080

      PGPASSWORD=... provmint serve --scan-log postgresql://provmint@db.example.com/provmint
    """
    from provmint.server import serve as run

    cfg = settings(store, key_file, config, workers=workers, scan_log=scan_log)
    err = stderr()
    run(
        cfg,
        host=host,
        port=port,
        clone_threshold=clone_threshold,  # None: [copy_signal] max_clients
        access_log=access_log,
        on_ready=_announce_ready(cfg, err),
        notify=lambda message: err.print(f"warning: {message}", markup=False),
    )


def _announce_ready(cfg: Settings, err: Any) -> Callable[[tuple[str, int]], None]:
    """The ``on_ready`` callback: one line on ``err`` once the port is bound, with the
    address actually bound (``--port 0`` picks one)."""

    def ready(bound: tuple[str, int]) -> None:
        many = f" with {cfg.workers} workers" if cfg.workers > 1 else ""
        err.print(f"Serving {cfg.store} on http://{bound[0]}:{bound[1]}{many} (Ctrl-C to stop)")

    return ready
