"""``provmint proof export``/``upgrade``/``calldata``, ``provmint product show`` and
``provmint token verify``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from provmint.cli._common import (
    ConfigOpt,
    JsonOpt,
    KeyFileOpt,
    LockTimeoutOpt,
    StoreOpt,
    TokenArgCommand,
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

app = typer.Typer(
    rich_markup_mode=None, help="Export, upgrade and encode inclusion proofs.", no_args_is_help=True
)
product_app = typer.Typer(rich_markup_mode=None, help="Look products up.", no_args_is_help=True)
token_app = typer.Typer(
    rich_markup_mode=None, help="Check printed tokens against the issuer key.", no_args_is_help=True
)

GtinOpt = Annotated[
    str | None, typer.Option("--gtin", help="GTIN-8/12/13/14 of the product.", show_default=False)
]
SerialOpt = Annotated[
    str | None, typer.Option("--serial", help="Serial number.", show_default=False)
]
TokenOpt = Annotated[
    str | None, typer.Option("--token", help="The product's printed token.", show_default=False)
]
ExportBatchOpt = Annotated[
    str | None,
    typer.Option(
        "--batch", help="With --all: the batch whose proofs to export.", show_default=False
    ),
]
AllOpt = Annotated[
    bool, typer.Option("--all", help="Export the proof of every product of --batch.")
]
FormatOpt = Annotated[str, typer.Option("--format", "-f", help="For --all: jsonl or parquet.")]
OutOpt = Annotated[
    Path | None,
    typer.Option(
        "--out",
        "-o",
        help="Output file, - for standard output [default: standard output; required with --all]",
        show_default=False,
    ),
]


@app.command("export")
@handle_errors
def export(
    gtin: GtinOpt = None,
    serial: SerialOpt = None,
    token: TokenOpt = None,
    batch: ExportBatchOpt = None,
    all_: AllOpt = False,
    fmt: FormatOpt = "jsonl",
    out: OutOpt = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
    lock_timeout: LockTimeoutOpt = None,
) -> None:
    """Export a self-contained proof (provmint-proof/1) for one product or a whole batch.

    Examples:

      provmint proof export --gtin 09520123450014 --serial 546CAWQDCR56 -o proof.json

      provmint proof export --token 52VqMUmlXpKNjHggOl1ALg

      provmint proof export --batch 20261128-4884 --all -o proofs.jsonl

      provmint proof export --batch 20261128-4884 --all -o - | gzip > proofs.jsonl.gz

    A regular file is replaced atomically; devices, FIFOs and /dev/stdout are written
    in place.
    """
    from provmint.errors import ConfigError

    cfg = settings(store, None, config, lock_timeout=lock_timeout)
    if all_:
        if batch is None or out is None:
            raise ConfigError("--all needs --batch ID and --out FILE")
        _export_all(cfg, batch, out, fmt)
        return
    if batch is not None:
        raise ConfigError("--batch is for --all; find one product by --gtin/--serial or --token")
    _export_one(cfg, gtin, serial, token, out)


def _export_one(
    cfg: Settings, gtin: str | None, serial: str | None, token: str | None, out: Path | None
) -> None:
    """One product's proof, to standard output (no file given) or to ``out``; the note
    that it was written goes to stderr, so that stdout holds nothing but the proof."""
    from provmint.proofs import proof_to_json

    doc = proof_to_json(_one(cfg, gtin, serial, token))
    if out is None:
        typer.echo(doc)
        return
    from provmint.outfile import is_stdout, write_output

    write_output(out, (doc + "\n").encode("utf-8"))
    if not is_stdout(out):
        stderr().print(f"Wrote proof to {out}")


def _one(
    cfg: Settings, gtin: str | None, serial: str | None, token: str | None
) -> dict[str, object]:
    """The proof document of the product found by --gtin/--serial or --token."""
    from provmint.products import export_proof

    return export_proof(cfg, gtin=gtin, serial=serial, token=token)


def _export_all(cfg: Settings, batch: str, out: Path, fmt: str) -> None:
    """``--all``: every proof of the batch to ``out``, with a count on stderr as it goes."""
    from provmint.outfile import is_stdout
    from provmint.products import export_batch_proofs

    err = stderr()
    with counting_progress(err, enabled=True) as update:
        info, count = export_batch_proofs(cfg, batch, out, fmt=fmt, progress=update)
    if not is_stdout(out):
        err.print(f"Wrote {count:,} proofs of batch {info.batch_id} to {out}")


UpgradeProofArg = Annotated[
    Path, typer.Argument(help="The proof file to upgrade in place.", show_default=False)
]
FromOpt = Annotated[
    str | None,
    typer.Option(
        "--from",
        help="Ask a running provmint serve (https://id.brand.com) instead of the local store; "
        "needs --token",
        show_default=False,
    ),
]
UpgradeTokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token", help="With --from: the token printed on the label.", show_default=False
    ),
]
NoBackupOpt = Annotated[
    bool, typer.Option("--no-backup", help="Do not keep the original as PROOF.bak.")
]


@app.command("upgrade")
@handle_errors
def upgrade(
    proof: UpgradeProofArg,
    source: FromOpt = None,
    token: UpgradeTokenOpt = None,
    no_backup: NoBackupOpt = False,
    store: StoreOpt = None,
    config: ConfigOpt = None,
    lock_timeout: LockTimeoutOpt = None,
    json: JsonOpt = False,
) -> None:
    """Fill in the anchor section of a proof exported before its batch was anchored.

    The anchor comes from the local store, or from the brand's verification service
    (--from, https; the printed --token is needed since the proof holds only its
    commitment). The source must hold this very batch (same id, commitment, record and
    path) and its anchor section is checked offline before anything is written; nothing
    else in the proof changes. The file is replaced atomically, the original kept as
    PROOF.bak unless --no-backup.

    Exit codes: 0 upgraded or already anchored, 3 invalid proof or another batch at the
    source, 4 the batch is still not anchored, 7 no such file or product.

    Examples:

      provmint proof upgrade proof.json

      provmint proof upgrade proof.json --from https://id.brand.com --token 52VqMUmlXpKNjHggOl1ALg
    """
    from provmint.errors import EXIT_PENDING
    from provmint.products import ALREADY_ANCHORED, STILL_PENDING, upgrade_proof_file

    cfg = settings(store, None, config, lock_timeout=lock_timeout)
    result = upgrade_proof_file(cfg, proof, source=source, token=token, backup=not no_backup)
    code = EXIT_PENDING if result.state == STILL_PENDING else 0
    if json:
        print_json(result.to_json())
        raise typer.Exit(code)
    out = stdout()
    if result.state == ALREADY_ANCHORED:
        out.print(f"{escape(str(proof))} is already anchored; nothing written")
    elif result.state == STILL_PENDING:
        out.print(
            f"[bold yellow]PENDING[/]: batch {escape(result.batch_id)} is not anchored yet "
            f"({escape(result.source)}); {escape(str(proof))} left as it was"
        )
    else:
        a = result.anchor or {}
        kept = f"; original kept as {result.backup}" if result.backup else ""
        out.print(
            f"[bold green]UPGRADED[/]: {escape(str(proof))}: batch {escape(result.batch_id)} "
            f"anchored in block {a.get('block_number')} of chain {a.get('chain_id')} "
            f"(tx {a.get('tx_hash')}){escape(kept)}"
        )
    raise typer.Exit(code)


CalldataProofArg = Annotated[
    Path, typer.Argument(help="The proof file (provmint-proof/1).", show_default=False)
]
IssuerOpt = Annotated[
    str | None,
    typer.Option(
        "--issuer",
        help="The issuer you trust, 0x address [default: the proof's anchor sender, which "
        "you must then check is the brand's]",
        show_default=False,
    ),
]
VerifierOpt = Annotated[
    str | None,
    typer.Option(
        "--verifier", help="The ProvmintVerifier's address, for --json's to.", show_default=False
    ),
]


@app.command("calldata")
@handle_errors
def calldata(
    proof: CalldataProofArg,
    issuer: IssuerOpt = None,
    verifier: VerifierOpt = None,
    json: JsonOpt = False,
) -> None:
    """Print the call that checks a proof on chain: ProvmintVerifier.verify, ABI-encoded.

    The contract (deployed with provmint anchor deploy-verifier) recomputes the leaf,
    roots, batch commitment and anchor digest, and asks its AnchorRegistry whether the
    issuer anchored that digest: the call returns true or false. Only proofs anchored
    through a registry can be checked on chain; the proof is not judged here. A
    contract passes the issuer it trusts, never the one a proof names: anyone can
    anchor digests of their own.

    Exit codes: 0 printed, 3 malformed proof, 5 pending or anchored by calldata (nothing
    a contract can read), 7 no such file.

    Examples:

      provmint proof calldata proof.json

      cast call 0xVERIFIER "$(provmint proof calldata proof.json)"

      provmint proof calldata proof.json --verifier 0xVERIFIER --json
    """
    from provmint.proofs import parse_proof
    from provmint.verifiercall import verifier_call
    from provmint.verify import load_proof_file

    call = verifier_call(parse_proof(load_proof_file(proof)), issuer=issuer, to=verifier)
    if json:
        print_json(call.to_json())
    else:
        typer.echo(call.data_hex)


@product_app.command("show")
@handle_errors
def show(
    gtin: GtinOpt = None,
    serial: SerialOpt = None,
    token: TokenOpt = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
    lock_timeout: LockTimeoutOpt = None,
    json: JsonOpt = False,
) -> None:
    """Show a product by --gtin and --serial, or by --token.

    Examples:

      provmint product show --gtin 09520123450014 --serial 546CAWQDCR56

      provmint product show --token 52VqMUmlXpKNjHggOl1ALg --json
    """
    from provmint.products import anchor_states, describe_anchor, find_product

    cfg = settings(store, None, config, lock_timeout=lock_timeout)
    product = find_product(cfg, gtin=gtin, serial=serial, token=token)
    anchor = anchor_states(cfg).get(product.batch.batch_id)
    if json:
        print_json({**product.to_json(), "anchor": anchor})
        return
    # Lines as `provmint scan` prints them (no table to draw: the command stays quick).
    out = stdout()
    out.print(f"[bold]Product #{product.leaf_index} of batch {product.batch.batch_id}[/]")
    rows = [*product.record.items(), ("token", product.token), ("url", product.url)]
    for name, value in [*rows, ("anchor", describe_anchor(anchor))]:
        out.print(f"  {name:<16} {escape(value)}")


# A token may start with "-" (base64url): it is read as the token, never as options.
@token_app.command("verify", cls=TokenArgCommand)
@handle_errors
def verify_token(
    token: Annotated[str, typer.Argument(help="The printed token.", show_default=False)],
    gtin: Annotated[str, typer.Option("--gtin", help="GTIN of the product.", show_default=False)],
    serial: Annotated[
        str, typer.Option("--serial", help="Serial of the product.", show_default=False)
    ],
    key_file: KeyFileOpt = None,
    config: ConfigOpt = None,
    json: JsonOpt = False,
) -> None:
    """Check a token against the issuer keys (any key in the key file, constant time).

    Exit codes: 0 genuine, 3 not a token of this product, 7 no key file.

    Example:

      provmint token verify 52VqMUmlXpKNjHggOl1ALg --gtin 09520123450014 --serial 546CAWQDCR56
    """
    from provmint.errors import EXIT_INVALID
    from provmint.products import verify_token as check

    result = check(settings(None, key_file, config), token, gtin, serial)
    if json:
        print_json(result.to_json())
    elif result.valid:
        stdout().print(
            f"[bold green]VALID[/]: token of GTIN {result.gtin} serial "
            f"{result.serial} (key {result.key_id})"
        )
    else:
        stdout().print(
            f"[bold red]INVALID[/]: not a token of GTIN {result.gtin} serial "
            f"{result.serial} under any issuer key"
        )
    raise typer.Exit(0 if result.valid else EXIT_INVALID)
