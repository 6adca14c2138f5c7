"""The ``provmint`` command line: parse, call one library function, render.

Only this package prints, prompts or exits. Heavy modules (pyarrow, duckdb) are imported
inside commands so that ``provmint --help`` stays fast.
"""

from __future__ import annotations

import typer

from provmint import __version__
from provmint.cli import anchor, batch, consumer, keys, proof, scans, store, verify
from provmint.cli._common import TokenArgCommand
from provmint.errors import EXIT_CODES

app = typer.Typer(
    rich_markup_mode=None,
    help=(
        "Mint product-authenticity records offline: tokens, verification URLs and Merkle "
        "proofs for a CSV of serialized products, checkable by anyone without our database."
    ),
    epilog=(
        "\b\nExamples:\n"
        "  provmint keys init\n"
        "  provmint batch create examples/products.csv\n"
        "  provmint proof export --gtin 09520123450014 --serial 546CAWQDCR56 -o proof.json\n"
        "  provmint verify proof.json\n"
        "  provmint anchor --rpc-url http://127.0.0.1:8545\n"
        "\n\b\nExit codes:\n"
        + "".join(f"  {code:<4}{meaning}\n" for code, meaning in EXIT_CODES.items())
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"provmint {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """provmint: offline batch minting of product-authenticity records."""


app.add_typer(keys.app, name="keys")
app.add_typer(batch.app, name="batch")
app.add_typer(proof.app, name="proof")
app.add_typer(proof.product_app, name="product")
app.add_typer(proof.token_app, name="token")
app.add_typer(anchor.app, name="anchor")
app.add_typer(store.app, name="store")
app.add_typer(scans.app, name="scans")
app.command("labels")(consumer.labels)
# A bare token may start with "-" (base64url): it is read as the code, never as options.
app.command("scan", cls=TokenArgCommand)(consumer.scan)
app.command("serve")(consumer.serve)
app.command("verify")(verify.verify)


def main() -> None:
    """Console-script entry point."""
    app()
