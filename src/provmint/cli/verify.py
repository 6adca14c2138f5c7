"""``provmint verify``: check a proof offline and print what was checked, like a receipt."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

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
    from collections.abc import Iterable

    from provmint.anchor.check import ChainCheck
    from provmint.anchoring import AnchorSection
    from provmint.audit import AuditReport
    from provmint.config import Settings
    from provmint.verify import AnchorChecker, Check, Verdict, VerificationReport


ProofArg = Annotated[
    Path | None,
    typer.Argument(help="Proof file (provmint-proof/1 JSON); - for stdin.", show_default=False),
]
TokenOpt = Annotated[
    str | None, typer.Option("--token", help="Also check the token printed on the label.")
]
AuditBatchOpt = Annotated[
    str | None,
    typer.Option(
        "--batch",
        help="Audit a stored batch instead: recompute it from its files and check "
        "manifest, tree, commitment and anchor.",
        show_default=False,
    ),
]
RpcUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--rpc-url",
        help="Check the anchor on chain through this node [env: PROVMINT_RPC_URL]",
        show_default=False,
        rich_help_panel="Chain",
    ),
]
ChainOpt = Annotated[
    str | None,
    typer.Option(
        "--chain",
        help="Chain profile (node, expected chain id, confirmations)",
        show_default=False,
        rich_help_panel="Chain",
    ),
]
ConfirmationsOpt = Annotated[
    int | None,
    typer.Option(
        "--confirmations",
        min=1,
        help="Confirmations required (profile default, else 1)",
        show_default=False,
        rich_help_panel="Chain",
    ),
]
OfflineOpt = Annotated[
    bool,
    typer.Option(
        "--offline",
        help="Check everything up to the anchor digest, without any node (exit 12 when "
        "all of that holds; the anchor is not checked on chain)",
        rich_help_panel="Chain",
    ),
]
IssuerOpt = Annotated[
    str | None,
    typer.Option(
        "--issuer",
        help="Expected sender address of the anchor transaction",
        show_default=False,
        rich_help_panel="Chain",
    ),
]


@handle_errors
def verify(
    proof: ProofArg = None,
    token: TokenOpt = None,
    batch: AuditBatchOpt = None,
    rpc_url: RpcUrlOpt = None,
    chain: ChainOpt = None,
    confirmations: ConfirmationsOpt = None,
    issuer: IssuerOpt = None,
    offline: OfflineOpt = False,
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
    7 no such proof file, 12 checked offline (--offline: everything up to the anchor
    digest holds; the anchor is not checked on chain).

    A pending proof whose batch the store (if any) now holds anchored gets a hint to run
    provmint proof upgrade.

    Examples:

      provmint verify proof.json

      provmint verify proof.json --rpc-url http://127.0.0.1:8545 --issuer 0xf39F...2266

      provmint verify --offline proof.json

      provmint verify --batch 20261128-4884 --rpc-url http://127.0.0.1:8545
    """
    from provmint.errors import ConfigError

    # The chain options are checked first: a bad --issuer is a usage error whatever
    # is to be verified.
    if offline and (rpc_url is not None or chain is not None):
        raise ConfigError("--offline checks without a node: leave out --rpc-url and --chain")
    if offline and batch is not None:
        raise ConfigError("--offline is for a proof file, not --batch")
    checker = None if offline else _checker(chain, rpc_url, config, confirmations, issuer)
    if batch is not None:
        if proof is not None:
            raise ConfigError("give a proof file or --batch ID, not both")
        raise typer.Exit(_audit(settings(store, key_file, config), batch, checker, json=json))
    if proof is None:
        raise ConfigError("give a proof file (or - for standard input), or --batch ID")
    cfg = settings(store, key_file, config)
    raise typer.Exit(_verify_file(proof, token, checker, json=json, offline=offline, cfg=cfg))


def _audit(cfg: Settings, batch: str, checker: AnchorChecker | None, *, json: bool) -> int:
    """``--batch``: audit a stored batch, print the result; its exit code. Tokens are
    checked only when the issuer key file is there (an auditor may not have it)."""
    from provmint.audit import audit_batch

    audit = audit_batch(cfg, batch, anchor_checker=checker, check_tokens=cfg.key_file.exists())
    if json:
        print_json(audit.to_json())
    else:
        _audit_receipt(audit)
    return audit.verdict.exit_code


def _verify_file(
    proof: Path,
    token: str | None,
    checker: AnchorChecker | None,
    *,
    json: bool,
    offline: bool = False,
    cfg: Settings | None = None,
) -> int:
    """Verify one proof file (or standard input), print the result; its exit code."""
    from provmint.verify import verify_proof

    report = verify_proof(_read_proof(proof), token=token, anchor_checker=checker, offline=offline)
    hint = _upgrade_hint(proof, report, cfg)
    if json:
        print_json({**report.to_json(), **({"hint": hint} if hint else {})})
    else:
        _receipt(report)
        if hint:
            stdout().print(f"hint: {escape(hint)}")
    return report.verdict.exit_code


def _upgrade_hint(proof: Path, report: VerificationReport, cfg: Settings | None) -> str | None:
    """For a pending proof (no anchor section) whose batch the configured store holds
    anchored now: the command that upgrades it. None otherwise, and when there is no
    store (or it is busy: verification does not wait for it)."""
    import shlex

    from provmint.products import upgrade_available
    from provmint.verify import Verdict

    if cfg is None or report.verdict is not Verdict.PENDING or report.anchor is not None:
        return None
    if not upgrade_available(replace(cfg, lock_timeout=1.0), report.batch_id, report.commitment):
        return None
    name = "proof.json" if str(proof) == "-" else shlex.quote(str(proof))
    return f"this batch is anchored now: provmint proof upgrade {name}"


def _read_proof(proof: Path) -> bytes:
    """The proof's bytes: ``-`` is standard input. One byte more than a proof may have
    is read, so that an oversized document is refused by parsing, not cut short."""
    import sys

    from provmint.proofs import MAX_PROOF_BYTES
    from provmint.verify import load_proof_file

    if str(proof) == "-":
        return sys.stdin.buffer.read(MAX_PROOF_BYTES + 1)
    return load_proof_file(proof)


def _checker(
    chain: str | None,
    rpc_url: str | None,
    config: Path | None,
    confirmations: int | None,
    issuer: str | None,
) -> AnchorChecker | None:
    """An on-chain anchor checker when a node is configured (web3 loads only then).
    Raises ConfigError for an --issuer that is not an address."""
    from provmint.config import resolve_chain
    from provmint.errors import ConfigError

    if issuer is not None and not re.fullmatch(r"0x[0-9a-fA-F]{40}", issuer):
        raise ConfigError(f"--issuer {issuer[:50]!r} is not an address (0x + 40 hex digits)")
    chain_cfg = resolve_chain(
        chain=chain, rpc_url=rpc_url, config_file=config, confirmations=confirmations
    )
    if not chain_cfg.rpc_url:
        return None
    url, poa, expected = chain_cfg.rpc_url, chain_cfg.poa, chain_cfg.chain_id
    required = chain_cfg.confirmations

    def check(section: AnchorSection) -> ChainCheck:
        from provmint.anchor.check import check_anchor_on_chain
        from provmint.chain import connect

        node, _ = connect(replace(chain_cfg, rpc_url=url, poa=poa, chain_id=expected))
        return check_anchor_on_chain(section, node, required_confirmations=required, issuer=issuer)

    return check


def _audit_receipt(audit: AuditReport) -> None:
    """People's form of an audit: the batch, each check, the verdict."""
    out = stdout()
    out.print(f"Audit of batch {audit.batch_id} ({audit.products:,} products)")
    _print_outcome(out, audit.checks, audit.verdict, audit.reason)


def _receipt(report: VerificationReport) -> None:
    """People's form of a verification, like a receipt: what the proof claims (product,
    leaf, roots, batch, anchor), each check, the verdict."""
    from rich.table import Table

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
    grid.add_row("anchor", escape(_anchor_line(report)))
    out.print(grid)
    _print_outcome(out, report.checks, report.verdict, report.reason)


def _anchor_line(report: VerificationReport) -> str:
    """Where the proof says the batch is anchored, and whether that was checked on chain
    (an anchor the proof states but nobody looked up is a claim, not a fact)."""
    if report.anchor is None:
        return "none yet"
    a = report.anchor
    anchor = f"chain {a['chain_id']} tx {a['tx_hash']} block {a['block_number']} ({a['method']})"
    if report.chain is None:
        anchor += "  [not checked on chain]"
    return anchor


def _print_outcome(out: Any, checks: Iterable[Check], verdict: Verdict, reason: str) -> None:
    """Each check (ok or FAIL) and the verdict line, the same for a proof and an audit:
    green when valid, red when invalid, yellow for pending or could not check."""
    from provmint.verify import Verdict

    for c in checks:
        mark = "[green]ok[/]  " if c.ok else "[red]FAIL[/]"
        out.print(f"  {mark} {c.name}: {escape(c.detail)}")
    style = {
        Verdict.VALID: "bold green",
        Verdict.INVALID: "bold red",
        Verdict.PENDING: "bold yellow",
        Verdict.UNCHECKED: "bold yellow",
        Verdict.OFFLINE: "bold yellow",
    }[verdict]
    out.print(f"[{style}]{verdict.value.upper()}[/]: {escape(reason)}")
