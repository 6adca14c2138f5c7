"""Consumer-side commands: ``provmint labels``, ``provmint scan``, ``provmint serve``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from provmint.cli._common import (
    AllowPlaceholderOpt,
    BatchIdArg,
    ConfigOpt,
    JsonOpt,
    KeyFileOpt,
    LockTimeoutOpt,
    PrintBaseOpt,
    RawOpt,
    ScanLogOpt,
    StoreOpt,
    WorkersOpt,
    command_line,
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
    from provmint.metrics import MetricsEndpoint
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
        str,
        typer.Option("--format", "-f", help="svg, png, zpl, pdf, or none (the CSV only)"),
    ] = "svg",
    symbol: Annotated[str, typer.Option("--symbol", help="qr or datamatrix")] = "qr",
    content: Annotated[
        str,
        typer.Option(
            "--content",
            help="url (the verification URL) or element-string (GS1: (01)(17)(10)(21))",
        ),
    ] = "url",
    error: Annotated[str, typer.Option("--error", help="QR error correction: L, M, Q or H")] = "M",
    scale: Annotated[
        int, typer.Option("--scale", help="Pixels (SVG units, ZPL dots) per module")
    ] = 4,
    text: Annotated[
        bool, typer.Option("--text/--no-text", help="Print the human-readable GS1 text")
    ] = True,
    size: Annotated[
        str, typer.Option("--size", help="ZPL label size, WIDTHxHEIGHT in mm")
    ] = "50x30",
    dpi: Annotated[int, typer.Option("--dpi", help="ZPL printer resolution: 203, 300, 600")] = 203,
    page: Annotated[str, typer.Option("--page", help="PDF sheet: a4 or letter")] = "a4",
    grid: Annotated[str, typer.Option("--grid", help="PDF labels per sheet, COLUMNSxROWS")] = "3x7",
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Skip the parts OUT's manifest lists as complete"),
    ] = False,
    url_base: PrintBaseOpt = None,
    allow_placeholder: AllowPlaceholderOpt = False,
    workers: WorkersOpt = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
    lock_timeout: LockTimeoutOpt = None,
    json: JsonOpt = False,
) -> None:
    """Draw a label per product of a batch and write the label-printer CSV.

    Each label has a QR code or DataMatrix (--symbol) with the verification URL or the
    GS1 element string (--content element-string: GS1 DataMatrix, GS1 QR), its quiet
    zone, and the human-readable GS1 text (--no-text: none). svg and png write
    OUT/part-NNNNN/{leaf}-{gtin14}-{serial}.svg; zpl one stream per part,
    OUT/part-NNNNN.zpl (the printer draws the symbol; --size, --dpi); pdf label sheets
    (--page, --grid). OUT/labels.csv has the columns of batch export (gtin, serial,
    lot, expiry, token, url, element_string, human_readable) and code_file for every
    product. labels.csv is safe to open in a spreadsheet (a value starting with = + -
    @ tab or CR gets a leading '); --raw writes the values as stored, for printer jobs.
    OUT/manifest.jsonl lists the parts complete: --resume draws only the rest.
    The codes point to the URL base given here (--url-base, else PROVMINT_URL_BASE or
    url_base in the config file): without one, labels are refused (exit 2) unless
    --allow-placeholder. The base is recorded with the batch (batch show).

    Examples:

      provmint labels 20261128-4884 --out labels/

      provmint labels 20261128-4884 -o out/ --url-base https://id.your-brand.com

      provmint labels 20261128-4884 --out labels/ --format png --error Q --scale 8

      provmint labels 20261128-4884 --out labels/ --format none

      provmint labels 20261128-4884 -o zpl/ -f zpl --symbol datamatrix --dpi 300

      provmint labels 20261128-4884 -o gs1/ --symbol datamatrix --content element-string

      provmint labels 20261128-4884 -o sheets/ -f pdf --page letter --grid 3x10

      provmint labels 20261128-4884 -o labels/ --resume
    """
    from provmint.config import output_url_base
    from provmint.labels import LabelOptions, render_labels

    options = LabelOptions.parse(
        fmt=fmt,
        symbol=symbol,
        content=content,
        level=error,
        scale=scale,
        text=text,
        size=size,
        dpi=dpi,
        page=page,
        grid=grid,
    )

    cfg = settings(
        store, None, config, url_base=url_base, workers=workers, lock_timeout=lock_timeout
    )
    given = command_line("labels", [batch, "--out", str(out)])
    base = output_url_base(cfg, allow_placeholder=allow_placeholder, command=given)
    with counting_progress(stderr(), enabled=not json, eta=True) as update:
        summary = render_labels(
            cfg,
            batch,
            out,
            url_base=base,
            options=options,
            resume=resume,
            workers=cfg.workers,
            progress=update,
            raw=raw,
        )
    if json:
        print_json(summary.to_json())
    else:
        kept = f", {summary.skipped:,} already complete" if summary.skipped else ""
        stdout().print(
            f"Wrote {summary.labels:,} labels ({summary.images:,} drawn{kept}) for batch "
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
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            min=1,
            max=65535,
            help="Serve Prometheus /metrics on this port of its own (off by default).",
        ),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option("--metrics-host", help="Address of the metrics port.")
    ] = "127.0.0.1",
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

    --metrics-port serves Prometheus metrics of the whole service (every worker) on
    a port of its own, on 127.0.0.1 unless --metrics-host; the public port never
    answers /metrics (docs/DEPLOY.md).

    Examples:

      provmint serve --store /srv/provmint/store --host 127.0.0.1 --port 8080

      provmint serve --workers 4 --port 8080

      provmint serve --port 8080 --metrics-port 9464

      PGPASSWORD=... provmint serve --scan-log postgresql://provmint@db.example.com/provmint
    """
    from provmint.metrics import MetricsEndpoint
    from provmint.server import serve as run

    cfg = settings(store, key_file, config, workers=workers, scan_log=scan_log)
    err = stderr()
    metrics = MetricsEndpoint(metrics_port, metrics_host) if metrics_port else None
    if metrics is not None and not metrics.local:
        err.print(
            f"warning: metrics on {metrics_host}, not loopback: whoever reaches port "
            f"{metrics_port} reads them; allow only your Prometheus (docs/DEPLOY.md)",
            markup=False,
        )
    run(
        cfg,
        host=host,
        port=port,
        clone_threshold=clone_threshold,  # None: [copy_signal] max_clients
        access_log=access_log,
        on_ready=_announce_ready(cfg, err, metrics),
        notify=lambda message: err.print(f"warning: {message}", markup=False),
        metrics=metrics,
    )


def _announce_ready(
    cfg: Settings, err: Any, metrics: MetricsEndpoint | None = None
) -> Callable[[tuple[str, int]], None]:
    """The ``on_ready`` callback: one line on ``err`` once the port is bound, with the
    address actually bound (``--port 0`` picks one); and one for the metrics."""

    def ready(bound: tuple[str, int]) -> None:
        many = f" with {cfg.workers} workers" if cfg.workers > 1 else ""
        err.print(f"Serving {cfg.store} on http://{bound[0]}:{bound[1]}{many} (Ctrl-C to stop)")
        if metrics is not None:
            err.print(f"Metrics at {metrics.url}", markup=False, soft_wrap=True)

    return ready
