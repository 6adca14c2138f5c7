"""``verify_proof``: check a proof document offline and say what was checked.

The verdicts and their exit codes (stable, documented in the README):

=========  ====  ==============================================================
valid      0     every check passed, including the anchor
invalid    3     a check failed: the proof does not prove what it claims
pending    4     the offline checks passed; the batch is not anchored yet
unchecked  5     the offline checks passed but the anchor could not be checked
=========  ====  ==============================================================

A malformed proof raises :class:`~provmint.errors.ProofError` (exit 3) from parsing.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from provmint import merkle
from provmint.anchoring import AnchorSection
from provmint.canonical import (
    batch_commitment,
    encode_record,
    manifest_digest,
    token_commitment,
)
from provmint.errors import (
    EXIT_INVALID,
    EXIT_OK,
    EXIT_PENDING,
    EXIT_UNCHECKED,
    MissingFileError,
    ProofError,
)
from provmint.proofs import MAX_PROOF_BYTES, Proof, parse_proof
from provmint.tokens import parse_token

__all__ = [
    "AnchorChecker",
    "Check",
    "Verdict",
    "VerificationReport",
    "load_proof_file",
    "on_chain_verdict",
    "verify_proof",
]


class Verdict(StrEnum):
    """Outcome of a verification."""

    VALID = "valid"
    INVALID = "invalid"
    PENDING = "pending"
    UNCHECKED = "unchecked"

    @property
    def exit_code(self) -> int:
        """The process exit code of this verdict."""
        return {
            Verdict.VALID: EXIT_OK,
            Verdict.INVALID: EXIT_INVALID,
            Verdict.PENDING: EXIT_PENDING,
            Verdict.UNCHECKED: EXIT_UNCHECKED,
        }[self]


@dataclass(frozen=True, slots=True)
class Check:
    """One step of a verification: what was compared and whether it held."""

    name: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class VerificationReport:
    """Everything a verification established, for printing as a receipt or JSON."""

    verdict: Verdict
    reason: str
    checks: tuple[Check, ...]
    record: dict[str, str]
    batch_id: str
    leaf_index: int
    tree_size: int
    leaf_hash: str
    computed_root: str
    expected_root: str
    commitment: str
    anchor: dict[str, Any] | None = field(default=None)
    chain: dict[str, Any] | None = field(default=None)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "verdict": self.verdict.value,
            "reason": self.reason,
            "record": self.record,
            "batch_id": self.batch_id,
            "leaf_index": self.leaf_index,
            "tree_size": self.tree_size,
            "leaf_hash": self.leaf_hash,
            "computed_root": self.computed_root,
            "expected_root": self.expected_root,
            "commitment": self.commitment,
            "anchor": self.anchor,
            "chain": self.chain,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
        }


class ProofUnreadableError(ProofError):
    """The proof file could not be read at all: nothing was checked."""

    exit_code = EXIT_UNCHECKED


def load_proof_file(path: Path) -> bytes:
    """Read a proof file, refusing anything larger than a proof can be."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_PROOF_BYTES + 1)
    except FileNotFoundError:
        raise MissingFileError(path, "proof file") from None
    except IsADirectoryError:
        raise ProofUnreadableError(f"{path}: is a directory") from None
    except OSError as exc:
        raise ProofUnreadableError(f"{path}: cannot read: {exc.strerror}") from exc
    if len(data) > MAX_PROOF_BYTES:
        raise ProofError(f"{path}: larger than {MAX_PROOF_BYTES} bytes; not a provmint proof")
    return data


def _eq(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


AnchorChecker = Callable[[AnchorSection], Any]
"""Checks an anchor section on chain; returns a :class:`provmint.onchain.ChainCheck`."""


def verify_proof(
    proof: bytes | str | dict[str, Any] | Proof,
    *,
    token: str | None = None,
    anchor_checker: AnchorChecker | None = None,
) -> VerificationReport:
    """Verify a proof: leaf -> root, root and size -> manifest -> commitment, commitment
    -> anchor root and digest; then, with ``anchor_checker``, the anchor on chain.

    ``token`` (the printed token from the label) is checked against the proof's token
    commitment when given. Raises ProofError if the document is malformed; every other
    outcome is a report.
    """
    p = proof if isinstance(proof, Proof) else parse_proof(proof)
    checks: list[Check] = []
    failure = ""

    def check(name: str, ok: bool, detail: str, otherwise: str | None = None) -> None:
        """Record a check; ``otherwise`` is the detail when it fails, if it differs."""
        nonlocal failure
        if not ok and otherwise is not None:
            detail = otherwise
        checks.append(Check(name, ok, detail))
        if not ok and not failure:
            failure = f"{name}: {detail}"

    try:
        leaf = merkle.leaf_hash(encode_record(p.record) + p.token_commitment)
    except ValueError as exc:
        raise ProofError(f"proof record cannot be encoded: {exc}") from exc
    try:
        computed = merkle.root_from_path(leaf, p.leaf_index, p.size, p.path)
        check(
            "inclusion",
            _eq(computed, p.root),
            f"leaf {p.leaf_index} of {p.size} leads to root {computed.hex()[:16]}…, "
            f"proof says {p.root.hex()[:16]}…",
        )
    except merkle.InclusionProofError as exc:
        computed = b""
        check("inclusion", False, str(exc))

    try:
        digest = manifest_digest(p.manifest)
    except (ValueError, UnicodeEncodeError) as exc:
        raise ProofError(f"proof field batch.manifest cannot be hashed: {exc}") from None
    check(
        "manifest",
        _eq(digest, p.manifest_digest),
        "manifest digest matches",
        "the manifest does not hash to batch.manifest_digest",
    )
    tree = p.manifest.get("tree")
    expected_tree = {"profile": p.profile, "size": p.size, "root": p.root.hex()}
    check(
        "manifest binds tree",
        tree == expected_tree,
        "manifest names this tree (profile, size, root)",
        f"manifest tree {tree!r} differs from the proof's tree",
    )
    check(
        "manifest binds batch",
        p.manifest.get("batch_id") == p.batch_id,
        "manifest names this batch",
        "manifest batch_id differs from batch.id",
    )
    check(
        "record fields",
        p.manifest.get("columns") == sorted(p.record),
        "record has exactly the batch's columns",
        "record fields differ from the batch's committed columns",
    )
    check(
        "record version",
        p.manifest.get("record_version") == p.record_version,
        p.record_version,
        "manifest and proof disagree on record version",
    )
    commitment = batch_commitment(p.batch_id, p.size, p.root, p.manifest_digest)
    check(
        "batch commitment",
        _eq(commitment, p.commitment),
        "binds batch id, tree size, root and manifest",
        "recomputed commitment differs from batch.commitment",
    )
    if token is not None:
        try:
            check(
                "token",
                _eq(token_commitment(parse_token(token)), p.token_commitment),
                "the token matches the committed token",
                "the token is not the one committed for this product",
            )
        except ValueError as exc:
            check("token", False, str(exc))

    chain: dict[str, Any] | None = None
    section = p.anchor_section
    if section is not None:
        ok, detail = section.check_offline(p.commitment)
        check("anchor tree", ok, detail)
    if failure:
        verdict, reason = Verdict.INVALID, failure
    elif section is None:
        verdict, reason = Verdict.PENDING, "valid, but the batch is not anchored yet"
    elif anchor_checker is None:
        verdict, reason = Verdict.UNCHECKED, "offline checks passed, anchor not checked"
    else:
        verdict, reason, chain = on_chain_verdict(section, anchor_checker, check)
    return VerificationReport(
        verdict=verdict,
        reason=reason,
        checks=tuple(checks),
        record=p.record,
        batch_id=p.batch_id,
        leaf_index=p.leaf_index,
        tree_size=p.size,
        leaf_hash=leaf.hex(),
        computed_root=computed.hex(),
        expected_root=p.root.hex(),
        commitment=p.commitment.hex(),
        anchor=p.anchor,
        chain=chain,
    )


def on_chain_verdict(
    section: AnchorSection, checker: AnchorChecker, check: Callable[[str, bool, str], None]
) -> tuple[Verdict, str, dict[str, Any] | None]:
    """Run ``checker`` on an anchor section; record the check; return the verdict, the
    attested reason ("anchored in block N of chain C at T, k confirmations") and facts."""
    from provmint.errors import ProvmintError

    try:
        result = checker(section)
    except ProvmintError as exc:  # node unreachable, wrong chain...: nothing was checked
        return Verdict.UNCHECKED, f"offline checks passed, anchor not checked: {exc}", None
    facts = {
        "chain_id": result.chain_id,
        "block_number": result.block_number,
        "block_time": result.block_time,
        "confirmations": result.confirmations,
    }
    check("on chain", result.ok, result.detail)
    if not result.ok:
        return Verdict.INVALID, f"on chain: {result.detail}", facts
    when = ""
    if result.block_time:
        when = " at " + datetime.fromtimestamp(result.block_time, UTC).strftime(
            "%Y-%m-%d %H:%M:%S UTC"
        )
    depth = ""
    if result.confirmations:
        plural = "s" if result.confirmations != 1 else ""
        depth = f", {result.confirmations} confirmation{plural}"
    attested = f"{result.detail}{when}{depth}"
    if not result.final:
        return Verdict.PENDING, f"{attested}; not enough confirmations yet", facts
    return Verdict.VALID, attested, facts
