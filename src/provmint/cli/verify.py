"""``provmint verify``: check a proof offline and print what was checked, like a receipt."""

from __future__ import annotations

import itertools
import re
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from provmint.cli._common import (
    Column,
    ConfigOpt,
    JsonOpt,
    KeyFileOpt,
    Lines,
    StoreOpt,
    counting_progress,
    escape,
    handle_errors,
    print_json,
    print_table,
    settings,
    stderr,
    stdout,
)
from provmint.errors import ProvmintError

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from provmint.audit import AuditReport
    from provmint.config import Settings
    from provmint.verify import (
        AnchorChecker,
        Check,
        ProofOutcome,
        Verdict,
        VerificationReport,
    )


ProofArg = Annotated[
    list[Path] | None,
    typer.Argument(
        help="Proof files (provmint-proof/1 JSON), or JSON-lines files of proofs "
        "(proof export --all); - for stdin.",
        show_default=False,
    ),
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
    proofs: ProofArg = None,
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

    Several proofs (files, or JSON lines from proof export --all) are checked one by
    one, each anchor looked up once; the output lists the proofs that are not valid
    (every proof when piped or with --json) and counts them, and the exit code is the
    worst of theirs (invalid, then not found, unchecked, pending, offline, valid).
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

      provmint verify proofs.jsonl --rpc-url http://127.0.0.1:8545

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
        if proofs:
            raise ConfigError("give a proof file or --batch ID, not both")
        raise typer.Exit(_audit(settings(store, key_file, config), batch, checker, json=json))
    if not proofs:
        raise ConfigError("give a proof file (or - for standard input), or --batch ID")
    cfg = settings(store, key_file, config)
    documents = _documents(proofs)
    first = next(documents)
    second = next(documents, None)
    if second is None and first[0] == str(proofs[0]):
        raise typer.Exit(
            _verify_one(proofs[0], first[1], token, checker, json=json, offline=offline, cfg=cfg)
        )
    if token is not None:
        raise ConfigError("--token checks one proof: give one proof file")
    head = [first] if second is None else [first, second]
    rest = itertools.chain(head, documents)
    raise typer.Exit(_verify_many(rest, checker, json=json, offline=offline))


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


def _documents(proofs: list[Path]) -> Iterator[tuple[str, bytes | ProvmintError]]:
    """Every proof the arguments hold (``-``: standard input, one proof), in order."""
    from provmint.verify import proof_documents

    for path in proofs:
        if str(path) == "-":
            yield "-", _read_stdin()
        else:
            yield from proof_documents(path)


def _verify_one(
    proof: Path,
    data: bytes | ProvmintError,
    token: str | None,
    checker: AnchorChecker | None,
    *,
    json: bool,
    offline: bool = False,
    cfg: Settings | None = None,
) -> int:
    """Verify one proof file (or standard input), print the result; its exit code."""
    from provmint.verify import verify_proof

    if isinstance(data, ProvmintError):
        raise data
    report = verify_proof(data, token=token, anchor_checker=checker, offline=offline)
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


def _read_stdin() -> bytes:
    """A proof on standard input. One byte more than a proof may have is read, so that
    an oversized document is refused by parsing, not cut short."""
    import sys

    from provmint.proofs import MAX_PROOF_BYTES

    return sys.stdin.buffer.read(MAX_PROOF_BYTES + 1)


def _verify_many(
    documents: Iterable[tuple[str, bytes | ProvmintError]],
    checker: AnchorChecker | None,
    *,
    json: bool,
    offline: bool,
) -> int:
    """Verify several proofs; print the ones that are not valid (all of them when piped
    or with --json) and a count of each verdict; the worst exit code."""
    from provmint.verify import verify_many

    with counting_progress(stderr(), enabled=not json) as update:
        report = verify_many(
            documents,
            anchor_checker=checker,
            offline=offline,
            progress=lambda done: update(done, 0) if done % 256 == 0 else None,
        )
    if json:
        print_json(report.to_json())
        return report.exit_code
    piped = isinstance(stdout(), Lines)
    shown = [o for o in report.outcomes if piped or o.verdict != "valid"]
    if shown:
        print_table(
            "Proofs",
            [Column("proof", whole=True), Column("product"), Column("verdict"), Column("reason")],
            [[o.source, _product(o), o.verdict, o.reason] for o in shown],
        )
    counts = ", ".join(f"{n:,} {verdict}" for verdict, n in sorted(report.counts().items()))
    stderr().print(f"{len(report.outcomes):,} proofs: {counts}")
    return report.exit_code


def _product(outcome: ProofOutcome) -> str:
    """A proof's product (GTIN and serial), or "-" when it could not be read."""
    if outcome.report is None:
        return "-"
    return f"{outcome.report.record['gtin']} {outcome.report.record['serial']}"


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
    from provmint.anchor.check import node_checker

    return node_checker(
        chain_cfg.rpc_url,
        expected_chain_id=chain_cfg.chain_id,
        required_confirmations=chain_cfg.confirmations,
        issuer=issuer,
    )


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
