"""``verify_proof``: check a proof document offline and say what was checked.

The verdicts and their exit codes (stable, documented in the README):

=========  ====  ==============================================================
valid      0     every check passed, including the anchor
invalid    3     a check failed: the proof does not prove what it claims
pending    4     the offline checks passed; the batch is not anchored yet
unchecked  5     the offline checks passed but the anchor could not be checked
offline    12    ``offline=True``: every check up to the anchor digest passed; the
                 anchor was not looked for on chain (by request)
=========  ====  ==============================================================

A malformed proof raises :class:`~provmint.errors.ProofError` (exit 3) from parsing.
"""

from __future__ import annotations

import hmac
import io
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, NamedTuple

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
    EXIT_NOT_FOUND,
    EXIT_OFFLINE,
    EXIT_OK,
    EXIT_PENDING,
    EXIT_UNCHECKED,
    MissingFileError,
    ProofError,
    ProofUnreadableError,
    ProvmintError,
)
from provmint.proofs import MAX_PROOF_BYTES, Proof, is_json_object, parse_proof
from provmint.tokens import parse_token

__all__ = [
    "JSONL_SUFFIXES",
    "AnchorChecker",
    "Check",
    "ManyReport",
    "Outcome",
    "ProofOutcome",
    "Verdict",
    "VerificationReport",
    "load_proof_file",
    "on_chain_verdict",
    "proof_documents",
    "verify_many",
    "verify_proof",
]


class Verdict(StrEnum):
    """Outcome of a verification."""

    VALID = "valid"
    INVALID = "invalid"
    PENDING = "pending"
    UNCHECKED = "unchecked"
    OFFLINE = "offline"

    @property
    def exit_code(self) -> int:
        """The process exit code of this verdict."""
        return {
            Verdict.VALID: EXIT_OK,
            Verdict.INVALID: EXIT_INVALID,
            Verdict.PENDING: EXIT_PENDING,
            Verdict.UNCHECKED: EXIT_UNCHECKED,
            Verdict.OFFLINE: EXIT_OFFLINE,
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
"""Checks an anchor section on chain; returns a :class:`provmint.anchor.check.ChainCheck`."""


class Outcome(NamedTuple):
    """A verification's verdict, the reason given for it, and the chain facts (chain id,
    block, time, confirmations) when the anchor was looked up on chain.

    A named tuple rather than a dataclass: the audit returns it from its own verdict
    step beside the plain tuples it builds there, and its callers unpack it.
    """

    verdict: Verdict
    reason: str
    chain: dict[str, Any] | None = None


@dataclass(slots=True)
class _CheckLog:
    """The checks made so far, in order, and the first failure.

    Every check runs even after one failed (the receipt lists them all), but only the
    first failure becomes the report's reason. Callable as ``log(name, ok, detail)`` so
    that :func:`on_chain_verdict`, shared with the audit, records its check the same way.
    """

    checks: list[Check] = field(default_factory=list)
    failure: str = ""

    def __call__(self, name: str, ok: bool, detail: str, otherwise: str | None = None) -> None:
        """Record a check; ``otherwise`` is the detail when it fails, if it differs."""
        if not ok and otherwise is not None:
            detail = otherwise
        self.checks.append(Check(name, ok, detail))
        if not ok and not self.failure:
            self.failure = f"{name}: {detail}"


def verify_proof(
    proof: bytes | str | dict[str, Any] | Proof,
    *,
    token: str | None = None,
    anchor_checker: AnchorChecker | None = None,
    offline: bool = False,
) -> VerificationReport:
    """Verify a proof: leaf -> root, root and size -> manifest -> commitment, commitment
    -> anchor root and digest; then, with ``anchor_checker``, the anchor on chain.

    ``token`` (the printed token from the label) is checked against the proof's token
    commitment when given. With ``offline`` the anchor is not looked for on chain (any
    checker is ignored): a proof whose checks all pass up to the anchor digest is
    :attr:`Verdict.OFFLINE`; a pending one stays pending. Raises ProofError if the
    document is malformed; every other outcome is a report.
    """
    p = proof if isinstance(proof, Proof) else parse_proof(proof)
    log = _CheckLog()
    leaf = _leaf(p)
    computed = _check_inclusion(p, leaf, log)
    _check_manifest(p, log)
    _check_commitment(p, log)
    if token is not None:
        _check_token(p, token, log)
    section = p.anchor_section
    if section is not None:
        ok, detail = section.check_offline(p.commitment)
        log("anchor tree", ok, detail)
    outcome = _verdict(section, None if offline else anchor_checker, log, offline=offline)
    return VerificationReport(
        verdict=outcome.verdict,
        reason=outcome.reason,
        checks=tuple(log.checks),
        record=p.record,
        batch_id=p.batch_id,
        leaf_index=p.leaf_index,
        tree_size=p.size,
        leaf_hash=leaf.hex(),
        computed_root=computed.hex(),
        expected_root=p.root.hex(),
        commitment=p.commitment.hex(),
        anchor=p.anchor,
        chain=outcome.chain,
    )


def _leaf(p: Proof) -> bytes:
    """The leaf hash of the proof's record and token commitment. A record that cannot
    be encoded is a malformed document (ProofError), not a failed check."""
    try:
        return merkle.leaf_hash(encode_record(p.record) + p.token_commitment)
    except ValueError as exc:
        raise ProofError(f"proof record cannot be encoded: {exc}") from exc


def _check_inclusion(p: Proof, leaf: bytes, log: _CheckLog) -> bytes:
    """Follow the inclusion path from the leaf to a root and compare it with the proof's.
    Returns the computed root, or ``b""`` when the path itself is malformed (the receipt
    then shows "-")."""
    try:
        computed = merkle.root_from_path(leaf, p.leaf_index, p.size, p.path)
    except merkle.InclusionProofError as exc:
        log("inclusion", False, str(exc))
        return b""
    log(
        "inclusion",
        _eq(computed, p.root),
        f"leaf {p.leaf_index} of {p.size} leads to root {computed.hex()[:16]}…, "
        f"proof says {p.root.hex()[:16]}…",
    )
    return computed


_DIGESTS: dict[str, bytes] = {}
"""Manifest digests by the manifest's JSON text: the proofs of one batch share their
manifest, whose canonical form is the costliest part of checking one (many-proof runs
check thousands)."""
_DIGESTS_KEPT = 64


def _manifest_digest(manifest: dict[str, Any]) -> bytes:
    """The manifest's digest (RFC 8785), remembered for the next proof of its batch. The
    key is Python's JSON of the parsed value: equal texts are equal values, and equal
    values have one canonical form, so a remembered digest is always the right one."""
    try:
        key = json.dumps(manifest)
    except (TypeError, ValueError):
        key = None  # a document given as a dict may hold anything: no shortcut
    found = _DIGESTS.get(key) if key is not None else None
    if found is not None:
        return found
    try:
        digest = manifest_digest(manifest)
    except (ValueError, UnicodeEncodeError) as exc:
        raise ProofError(f"proof field batch.manifest cannot be hashed: {exc}") from None
    if key is not None:
        if len(_DIGESTS) >= _DIGESTS_KEPT:
            _DIGESTS.clear()
        _DIGESTS[key] = digest
    return digest


def _same_json(a: Any, b: Any) -> bool:
    """Equal as JSON values, types included: Python's ``True == 1`` must not let a
    manifest say ``"size": true`` for a tree of one (docs/FORMATS.md)."""
    try:
        return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    except (TypeError, ValueError):  # a document given as a dict may hold anything
        return False


def _check_manifest(p: Proof, log: _CheckLog) -> None:
    """The manifest must hash to the committed digest and name this tree, this batch,
    the record's columns and its version: otherwise a valid path could be paired with
    another batch's description."""
    digest = _manifest_digest(p.manifest)
    log(
        "manifest",
        _eq(digest, p.manifest_digest),
        "manifest digest matches",
        "the manifest does not hash to batch.manifest_digest",
    )
    tree = p.manifest.get("tree")
    expected_tree = {"profile": p.profile, "size": p.size, "root": p.root.hex()}
    log(
        "manifest binds tree",
        _same_json(tree, expected_tree),
        "manifest names this tree (profile, size, root)",
        f"manifest tree {tree!r} differs from the proof's tree",
    )
    log(
        "manifest binds batch",
        p.manifest.get("batch_id") == p.batch_id,
        "manifest names this batch",
        "manifest batch_id differs from batch.id",
    )
    log(
        "record fields",
        _same_json(p.manifest.get("columns"), sorted(p.record)),
        "record has exactly the batch's columns",
        "record fields differ from the batch's committed columns",
    )
    log(
        "record version",
        p.manifest.get("record_version") == p.record_version,
        p.record_version,
        "manifest and proof disagree on record version",
    )


def _check_commitment(p: Proof, log: _CheckLog) -> None:
    """The batch commitment (what is anchored) must bind the batch id, tree size, root
    and manifest digest that the proof states."""
    commitment = batch_commitment(p.batch_id, p.size, p.root, p.manifest_digest)
    log(
        "batch commitment",
        _eq(commitment, p.commitment),
        "binds batch id, tree size, root and manifest",
        "recomputed commitment differs from batch.commitment",
    )


def _check_token(p: Proof, token: str, log: _CheckLog) -> None:
    """The printed token must be the one committed in the leaf. A token that does not
    even parse is a failed check (it is what the label says), not an error."""
    try:
        matches = _eq(token_commitment(parse_token(token)), p.token_commitment)
    except ValueError as exc:
        log("token", False, str(exc))
        return
    log(
        "token",
        matches,
        "the token matches the committed token",
        "the token is not the one committed for this product",
    )


def _verdict(
    section: AnchorSection | None,
    anchor_checker: AnchorChecker | None,
    log: _CheckLog,
    *,
    offline: bool = False,
) -> Outcome:
    """The verdict once the offline checks are done: invalid at the first failure, else
    as far as the anchor could be followed (none yet, not checked, or on chain)."""
    if log.failure:
        return Outcome(Verdict.INVALID, log.failure)
    if section is None:
        return Outcome(Verdict.PENDING, "valid, but the batch is not anchored yet")
    if offline:
        return Outcome(
            Verdict.OFFLINE,
            "offline checks passed up to the anchor digest; anchor not checked on chain",
        )
    if anchor_checker is None:
        return Outcome(Verdict.UNCHECKED, "offline checks passed, anchor not checked")
    return on_chain_verdict(section, anchor_checker, log)


def on_chain_verdict(
    section: AnchorSection, checker: AnchorChecker, check: Callable[[str, bool, str], None]
) -> Outcome:
    """Run ``checker`` on an anchor section; record the check; return the verdict, the
    attested reason ("anchored in block N of chain C at T, k confirmations") and facts."""
    try:
        result = checker(section)
    except ProvmintError as exc:  # node unreachable, wrong chain...: nothing was checked
        return Outcome(Verdict.UNCHECKED, f"offline checks passed, anchor not checked: {exc}")
    facts = {
        "chain_id": result.chain_id,
        "block_number": result.block_number,
        "block_time": result.block_time,
        "confirmations": result.confirmations,
    }
    check("on chain", result.ok, result.detail)
    if not result.ok:
        return Outcome(Verdict.INVALID, f"on chain: {result.detail}", facts)
    attested = _attestation(result)
    if not result.final:
        return Outcome(Verdict.PENDING, f"{attested}; not enough confirmations yet", facts)
    return Outcome(Verdict.VALID, attested, facts)


def _attestation(result: Any) -> str:
    """What the chain attests, in words: the checker's detail, the block's time (UTC)
    and the confirmations, when the node told them. ``result`` is a ChainCheck."""
    when = ""
    if result.block_time:
        when = " at " + datetime.fromtimestamp(result.block_time, UTC).strftime(
            "%Y-%m-%d %H:%M:%S UTC"
        )
    depth = ""
    if result.confirmations:
        plural = "s" if result.confirmations != 1 else ""
        depth = f", {result.confirmations} confirmation{plural}"
    return f"{result.detail}{when}{depth}"


# ----------------------------------------------------------------- many proofs

_SEVERITY = (EXIT_INVALID, EXIT_NOT_FOUND, EXIT_UNCHECKED, EXIT_PENDING, EXIT_OFFLINE, EXIT_OK)
"""Exit codes from the worst to the best: what several proofs exit with is the worst of
theirs (one invalid proof makes the run invalid; one not checked makes it unchecked)."""

JSONL_SUFFIXES = (".jsonl", ".ndjson")
"""File names read as one proof per line (what ``proof export --all`` writes)."""


@dataclass(frozen=True, slots=True)
class ProofOutcome:
    """One proof of several: where it came from (a file, or a file and line), and its
    report, or the error that kept it from being checked (malformed, missing)."""

    source: str
    report: VerificationReport | None = None
    error: ProvmintError | None = None

    @property
    def exit_code(self) -> int:
        """This proof's exit code, as ``provmint verify`` of it alone would give."""
        if self.report is not None:
            return self.report.verdict.exit_code
        assert self.error is not None
        return self.error.exit_code

    @property
    def verdict(self) -> str:
        """The verdict's name; ``invalid`` for a malformed proof, ``error`` for one that
        could not be read."""
        if self.report is not None:
            return self.report.verdict.value
        return Verdict.INVALID.value if self.exit_code == EXIT_INVALID else "error"

    @property
    def reason(self) -> str:
        """Why, in one line."""
        if self.report is not None:
            return self.report.reason
        return str(self.error)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form: the report's fields, or an ``error``."""
        head = {"source": self.source, "verdict": self.verdict, "exit": self.exit_code}
        if self.report is not None:
            return {**head, **self.report.to_json()}
        assert self.error is not None
        return {**head, "reason": self.reason, "error": self.error.to_json()}


@dataclass(frozen=True, slots=True)
class ManyReport:
    """The verification of several proofs."""

    outcomes: tuple[ProofOutcome, ...]

    @property
    def exit_code(self) -> int:
        """The worst of the proofs' exit codes (0 when there are none)."""
        codes = {o.exit_code for o in self.outcomes}
        return min(codes, key=_rank, default=EXIT_OK)

    def counts(self) -> dict[str, int]:
        """How many proofs got each verdict."""
        found: dict[str, int] = {}
        for o in self.outcomes:
            found[o.verdict] = found.get(o.verdict, 0) + 1
        return found

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form: every proof, and the summary."""
        return {
            "proofs": [o.to_json() for o in self.outcomes],
            "summary": {"proofs": len(self.outcomes), **self.counts()},
            "exit": self.exit_code,
        }


def _rank(code: int) -> int:
    return _SEVERITY.index(code) if code in _SEVERITY else 0


def proof_documents(path: Path) -> Iterator[tuple[str, bytes | ProvmintError]]:
    """The proofs in a file, each with where it is: the file itself, or, for a
    JSON-lines file (a ``.jsonl`` name, or a first line that is a whole JSON object),
    ``FILE:LINE`` for each line that is not blank. A line longer than a proof can be,
    or a file that cannot be read, gives its error in place of the proof's bytes."""

    try:
        fh = open(path, "rb")  # noqa: SIM115 (closed below, read line by line)
    except OSError:
        try:
            yield str(path), load_proof_file(path)  # the one place that words the error
        except ProvmintError as exc:
            yield str(path), exc
        return
    with fh:
        first = fh.readline(MAX_PROOF_BYTES + 1)
        rest = fh.read(MAX_PROOF_BYTES + 1 - len(first))
        lines = path.suffix.lower() in JSONL_SUFFIXES
        if not lines and rest.strip() and first.lstrip().startswith(b"{"):
            # A whole object on the first line, and more after it: one proof per line.
            lines = is_json_object(first)
        if lines:
            yield from _lines(path, io.BufferedReader(_Joined(first + rest, fh)))
            return
        data = first + rest
        if len(data) > MAX_PROOF_BYTES:
            yield (
                str(path),
                ProofError(f"{path}: larger than {MAX_PROOF_BYTES} bytes; not a provmint proof"),
            )
        else:
            yield str(path), data


class _Joined(io.RawIOBase):
    """Bytes already read, then the rest of the file."""

    def __init__(self, head: bytes, rest: Any) -> None:
        self._head = memoryview(head)
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _lines(path: Path, fh: Any) -> Iterator[tuple[str, bytes | ProvmintError]]:
    """The non-blank lines of a JSON-lines file, each bounded."""
    number, line = 1, fh.readline(MAX_PROOF_BYTES + 1)
    while line:
        where = f"{path}:{number}"
        if len(line) > MAX_PROOF_BYTES and not line.endswith(b"\n"):
            while line and not line.endswith(b"\n"):  # skip the rest of the long line
                line = fh.readline(1 << 20)
            yield where, ProofError(f"{where}: longer than {MAX_PROOF_BYTES} bytes")
        elif line.strip():
            yield where, line
        number += 1
        line = fh.readline(MAX_PROOF_BYTES + 1)


def verify_many(
    documents: Iterable[tuple[str, bytes | ProvmintError]],
    *,
    anchor_checker: AnchorChecker | None = None,
    offline: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ManyReport:
    """Verify each proof (see :func:`verify_proof`); a malformed one is an outcome with
    its error, not a stop. Give a checker that remembers the anchors it looked up
    (:func:`provmint.anchor.check.node_checker`) and the proofs of one anchor cost one
    lookup."""
    outcomes = []
    for source, data in documents:
        if isinstance(data, ProvmintError):
            outcomes.append(ProofOutcome(source, error=data))
        else:
            try:
                report = verify_proof(data, anchor_checker=anchor_checker, offline=offline)
            except ProofError as exc:
                outcomes.append(ProofOutcome(source, error=ProofError(f"{source}: {exc}")))
            else:
                outcomes.append(ProofOutcome(source, report=report))
        if progress is not None:
            progress(len(outcomes))
    return ManyReport(tuple(outcomes))
