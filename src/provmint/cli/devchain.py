"""``provmint devchain``: a local development chain with a funded key, in one command."""

from __future__ import annotations

import json as jsonlib
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer

from provmint.cli._common import JsonOpt, escape, handle_errors, stderr


@handle_errors
def devchain(
    port: Annotated[
        int | None,
        typer.Option(
            "--port",
            min=1,
            max=65535,
            help="Port on 127.0.0.1 (default: a free one)",
            show_default=False,
        ),
    ] = None,
    block_time: Annotated[
        float | None,
        typer.Option(
            "--block-time",
            metavar="SECONDS",
            min=0.1,
            max=3600,
            help="Mine a block every SECONDS (default: one block per transaction, at once)",
            show_default=False,
        ),
    ] = None,
    anvil: Annotated[
        Path | None,
        typer.Option(
            "--anvil",
            metavar="PATH",
            help="The anvil to run (default: node_modules/.bin/anvil of the provmint "
            "checkout, else anvil on PATH)",
            show_default=False,
        ),
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Start a local chain (anvil, chain 31337) with a funded dev key, and wait.

    Prints the two export lines that point provmint at it (the RPC URL and the key of
    anvil's first dev account: a PUBLIC test key, for this local chain only), then waits
    until Ctrl-C or SIGTERM, which stop the node. With --json, one JSON line instead.

    \b
    Example:
      provmint devchain --block-time 2
      # in another shell, paste the two export lines, then:
      provmint anchor
    """
    from provmint.cli._signals import stop_on_signals
    from provmint.devchain import start_devchain

    err = stderr()
    stop = threading.Event()
    with (
        stop_on_signals(stop) as received,
        start_devchain(port=port, block_time=block_time, anvil=anvil) as chain,
    ):
        if json:
            sys.stdout.write(jsonlib.dumps(chain.to_json()) + "\n")
        else:
            for name, value in chain.environment.items():
                sys.stdout.write(f"export {name}={value}\n")
        sys.stdout.flush()
        mining = (
            f"a block every {chain.block_time:g} s"
            if chain.block_time
            else "a block per transaction"
        )
        err.print(
            escape(
                f"anvil (pid {chain.pid}) on {chain.url}, chain {chain.chain_id}, {mining}; "
                f"funded dev account {chain.address}."
            )
        )
        err.print(
            "[yellow]note:[/] PROVMINT_CHAIN_KEY is anvil's well-known dev key: it is "
            "public, for this local test chain only; never send real funds to it."
        )
        err.print("Ctrl-C stops the chain (its state is not kept).")
        chain.wait(stop)
    why = f" on {received[0]}" if received else ""
    err.print(f"anvil stopped{why}")
