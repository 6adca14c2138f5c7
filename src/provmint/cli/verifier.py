"""``provmint verifier-page``: write the browser verifier for a brand to host anywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from provmint.cli._common import JsonOpt, handle_errors, print_json, stderr

OutOpt = Annotated[
    Path,
    typer.Option(
        "--out",
        "-o",
        help="Output file (- for standard output)",
        show_default=False,
    ),
]
RpcOpt = Annotated[
    str | None,
    typer.Option(
        "--rpc",
        help="Default node the page reads the chain from (https, or http to localhost); "
        "public: it must hold no key you would not publish",
        show_default=False,
    ),
]
IssuerOpt = Annotated[
    str | None,
    typer.Option(
        "--issuer",
        help="Default expected issuer: the brand's anchoring address",
        show_default=False,
    ),
]
ConfirmationsOpt = Annotated[
    int,
    typer.Option("--confirmations", min=1, max=1_000_000, help="Default confirmations required"),
]


@handle_errors
def verifier_page(
    out: OutOpt,
    rpc: RpcOpt = None,
    issuer: IssuerOpt = None,
    confirmations: ConfirmationsOpt = 1,
    json: JsonOpt = False,
) -> None:
    """Write the browser verifier: one HTML file, no install, no server code.

    Anyone opens it, picks or drops a proof.json, and gets the receipt and verdict of
    provmint verify, computed in the browser with WebCrypto. With a node URL (the
    page's default, or one the user types) it also reads the anchor transaction.
    provmint serve offers the same page at /verify.

    Examples:

      provmint verifier-page -o verify.html

      provmint verifier-page -o verify.html --rpc https://rpc.example.org

      provmint verifier-page -o verify.html --issuer "$ISSUER" --confirmations 12

    Host it with the Content-Security-Policy --json prints (its script and style by
    hash); the page also carries it as a meta tag.
    """
    from provmint.errors import ConfigError
    from provmint.outfile import is_stdout, write_output
    from provmint.verifier import verifier_page as build

    if json and is_stdout(out):
        raise ConfigError("--json prints a summary: write the page to a file (-o FILE)")
    page = build(rpc_url=rpc, issuer=issuer, confirmations=confirmations)
    write_output(out, page.html.encode("utf-8"))
    if json:
        print_json({"out": str(out), "bytes": len(page.html.encode()), "policy": page.policy})
    elif not is_stdout(out):
        stderr().print(f"Wrote the verifier page to {out}")
