"""``provmint verify``: check a proof offline and print what was checked, like a receipt."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from provmint.cli._common import (
    ConfigOpt,
    JsonOpt,
    KeyFileOpt,
    StoreOpt,
    escape,
    handle_errors,
    print_json,
    settings,
    stdout,
)

if TYPE_CHECKING:
    from provmint.anchoring import AnchorSection
    from provmint.audit import AuditReport
    from provmint.onchain import ChainCheck
    from provmint.verify import AnchorChecker, VerificationReport


@handle_errors
def verify(
    proof: Annotated[
        Path | None,
        typer.Argument(help="Proof file (provmint-proof/1 JSON); - for stdin.", show_default=False),
    ] = None,
    token: Annotated[
        str | None, typer.Option("--token", help="Also check the token printed on the label.")
    ] = None,
    batch: Annotated[
        str | None,
        typer.Option(
            "--batch",
            help="Audit a stored batch instead: recompute it from its files and check "
            "manifest, tree, commitment and anchor.",
            show_default=False,
        ),
    ] = None,
    rpc_url: Annotated[
        str | None,
        typer.Option(
            "--rpc-url",
            help="Check the anchor on chain through this node [env: PROVMINT_RPC_URL]",
            show_default=False,
            rich_help_panel="Chain",
        ),
    ] = None,
    chain: Annotated[
        str | None,
        typer.Option(
            "--chain",
            help="Chain profile (node, expected chain id, confirmations)",
            show_default=False,
            rich_help_panel="Chain",
        ),
    ] = None,
    confirmations: Annotated[
        int | None,
        typer.Option(
            "--confirmations",
            min=1,
            help="Confirmations required (profile default, else 1)",
            show_default=False,
            rich_help_panel="Chain",
        ),
    ] = None,
    issuer: Annotated[
        str | None,
        typer.Option(
            "--issuer",
            help="Expected sender address of the anchor transaction",
            show_default=False,
            rich_help_panel="Chain",
        ),
    ] = None,
    store: StoreOpt = None,
    key_file: KeyFileOpt = None,
    config: ConfigOpt = None,
    json: JsonOpt = False,
) -> None:
    """Verify a product's proof: leaf -> root -> batch commitment -> anchor -> chain.

    Offline first; with --rpc-url (or a chain profile) the anchor transaction is checked
    on chain: chain id, success, payload, canonical block, confirmations, sender.
    Exit codes: 0 valid, 3 invalid, 4 pending (not yet anchored, or too few
    confirmations), 5 could not check (no node, node unreachable, unreadable file),
    7 no such proof file.

    Examples:

      provmint verify proof.json

      provmint verify proof.json --rpc-url http://127.0.0.1:8545 --issuer 0xf39F...2266

      provmint verify --batch 20261128-4884 --rpc-url http://127.0.0.1:8545
    """
    import sys

    from provmint.errors import ConfigError
    from provmint.verify import load_proof_file, verify_proof

    if issuer is not None and not re.fullmatch(r"0x[0-9a-fA-F]{40}", issuer):
        raise ConfigError(f"--issuer {issuer[:50]!r} is not an address (0x + 40 hex digits)")
    checker = _checker(chain, rpc_url, config, confirmations, issuer)
    if batch is not None:
        if proof is not None:
            raise ConfigError("give a proof file or --batch ID, not both")
        from provmint.audit import audit_batch

        cfg = settings(store, key_file, config)
        audit = audit_batch(cfg, batch, anchor_checker=checker, check_tokens=cfg.key_file.exists())
        if json:
            print_json(audit.to_json())
        else:
            _audit_receipt(audit)
        raise typer.Exit(audit.verdict.exit_code)
    if proof is None:
        raise ConfigError("give a proof file (or - for standard input), or --batch ID")
    data = sys.stdin.buffer.read((1 << 20) + 1) if str(proof) == "-" else load_proof_file(proof)
    report = verify_proof(data, token=token, anchor_checker=checker)
    if json:
        print_json(report.to_json())
    else:
        _receipt(report)
    raise typer.Exit(report.verdict.exit_code)


def _checker(
    chain: str | None,
    rpc_url: str | None,
    config: Path | None,
    confirmations: int | None,
    issuer: str | None,
) -> AnchorChecker | None:
    """An on-chain anchor checker when a node is configured (web3 loads only then)."""
    from provmint.config import resolve_chain

    chain_cfg = resolve_chain(
        chain=chain, rpc_url=rpc_url, config_file=config, confirmations=confirmations
    )
    if not chain_cfg.rpc_url:
        return None
    url, poa, expected = chain_cfg.rpc_url, chain_cfg.poa, chain_cfg.chain_id
    required = chain_cfg.confirmations

    def check(section: AnchorSection) -> ChainCheck:
        from provmint.anchor import connect
        from provmint.onchain import check_anchor_on_chain

        node, _ = connect(replace(chain_cfg, rpc_url=url, poa=poa, chain_id=expected))
        return check_anchor_on_chain(section, node, required_confirmations=required, issuer=issuer)

    return check


def _audit_receipt(audit: AuditReport) -> None:

    from provmint.verify import Verdict

    out = stdout()
    out.print(f"Audit of batch {audit.batch_id} ({audit.products:,} products)")
    for c in audit.checks:
        mark = "[green]ok[/]  " if c.ok else "[red]FAIL[/]"
        out.print(f"  {mark} {c.name}: {escape(c.detail)}")
    style = (
        "bold green"
        if audit.verdict == Verdict.VALID
        else ("bold red" if audit.verdict == Verdict.INVALID else "bold yellow")
    )
    out.print(f"[{style}]{audit.verdict.value.upper()}[/]: {escape(audit.reason)}")


def _receipt(report: VerificationReport) -> None:
    from rich.table import Table

    from provmint.verify import Verdict

    out = stdout()
    rec = report.record
    lot = f" lot {rec['lot']}" if rec.get("lot") else ""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("product", escape(f"GTIN {rec['gtin']} serial {rec['serial']}{lot}"))
    grid.add_row("leaf", f"{report.leaf_hash}  (#{report.leaf_index} of {report.tree_size})")
    grid.add_row("computed root", report.computed_root or "-")
    grid.add_row("expected root", report.expected_root)
    grid.add_row("batch", f"{escape(report.batch_id)}  commitment {report.commitment}")
    if report.anchor is None:
        anchor = "none yet"
    else:
        a = report.anchor
        anchor = (
            f"chain {a['chain_id']} tx {a['tx_hash']} block {a['block_number']} ({a['method']})"
        )
        if report.chain is None:
            anchor += "  [not checked on chain]"
    grid.add_row("anchor", escape(anchor))
    out.print(grid)
    for c in report.checks:
        mark = "[green]ok[/]  " if c.ok else "[red]FAIL[/]"
        out.print(f"  {mark} {c.name}: {escape(c.detail)}")
    style = {
        Verdict.VALID: "bold green",
        Verdict.INVALID: "bold red",
        Verdict.PENDING: "bold yellow",
        Verdict.UNCHECKED: "bold yellow",
    }[report.verdict]
    out.print(f"[{style}]{report.verdict.value.upper()}[/]: {escape(report.reason)}")
