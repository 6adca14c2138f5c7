"""``provmint dashboard``: the operator's read-only web pages."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from provmint.cli._common import (
    ConfigOpt,
    ScanLogOpt,
    StoreOpt,
    handle_errors,
    settings,
    stderr,
)


@handle_errors
def dashboard(
    host: Annotated[
        str,
        typer.Option(
            "--host", help="Address to listen on (beyond this machine only with a token)."
        ),
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="Port (0 picks a free one).")
    ] = 8090,
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            metavar="FILE",
            help="A file holding the token (one line, 16 or more characters) "
            "[env: PROVMINT_DASHBOARD_TOKEN; default on 127.0.0.1: a new one each start]",
            show_default=False,
        ),
    ] = None,
    since: Annotated[
        str,
        typer.Option(
            "--since",
            metavar="AGE",
            help="The scans the pages show unless a page's ?since= says otherwise: a whole "
            "number of h, d or w (24h, 7d, 4w).",
        ),
    ] = "30d",
    access_log: Annotated[bool, typer.Option("--access-log", help="Log every request.")] = False,
    scan_log: ScanLogOpt = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Serve the operator's dashboard (read-only): batches and their anchors, scans per
    day (a chart), the verdict mix, suspect codes and why they are flagged, anchors with
    links to the block explorer ([brand] explorer), and /stats.json.

    Apart from provmint serve, on 127.0.0.1 by default. Every request needs the token:
    open the page with ?token=TOKEN once (a session cookie is set), or send
    Authorization: Bearer TOKEN. On 127.0.0.1 without --token-file or
    PROVMINT_DASHBOARD_TOKEN, a new token is made and printed at start. Listening
    anywhere else needs a token given (put a TLS proxy in front). Works with either
    scan log (SQLite in the store, or PostgreSQL with --scan-log).

    Examples:

      provmint dashboard

      provmint dashboard --port 8090 --since 7d

      provmint dashboard --host 0.0.0.0 --token-file /etc/provmint/dashboard.token
    """
    from provmint.dashboard import resolve_token, serve

    token = resolve_token(host, token_file, os.environ)
    cfg = settings(store, None, config, scan_log=scan_log)
    err = stderr()

    def ready(bound: tuple[str, int]) -> None:
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        url = f"http://{shown}:{bound[1]}/"
        err.print(
            f"Dashboard of {cfg.store} on {url} (read-only; Ctrl-C to stop)",
            markup=False,
        )
        if token.generated:
            err.print(f"Sign in: {url}?token={token.text}", markup=False)
            err.print(
                "(a new token each start: give one with --token-file or "
                "PROVMINT_DASHBOARD_TOKEN to keep it)",
                markup=False,
            )
        else:
            err.print(f"Sign in with the token from {token.origin}.", markup=False)

    serve(cfg, token, host=host, port=port, since=since, access_log=access_log, on_ready=ready)
