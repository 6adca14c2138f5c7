"""FORMAT-CRITICAL: ``provmint-anchor/1``, how batches are committed to a chain.

One anchor covers any number of batches in one transaction:

* the *anchor tree* is the RFC 9162 tree (profile ``rfc9162-sha256``) over the batches'
  commitments (:func:`provmint.canonical.batch_commitment`), sorted bytewise, each leaf
  ``SHA-256(0x00 || "PMAL" || commitment)``;
* the *anchor digest* binds the anchor tree's root to its size (a proof alone does not
  pin the size): ``SHA-256("PMAD" || u64 size || root)``;
* the digest goes on chain, either as the data of a 0-value transaction from the issuer
  to itself (``calldata``: ``"PMNT" || 0x01 || digest``, 37 bytes) or as the argument
  of ``AnchorRegistry.anchor(bytes32)`` (``registry``).

A proof's ``anchor`` section carries the batch's path in the anchor tree and the chain
record (chain id, transaction, block, sender, contract); :func:`check_anchor_offline`
recomputes everything that needs no node.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from provmint import merkle
from provmint.errors import ProofError

__all__ = [
    "ANCHOR_FORMAT",
    "CALLDATA_MAGIC",
    "CALLDATA_VERSION",
    "MAX_BATCHES_PER_ANCHOR",
    "METHODS",
    "AnchorSection",
    "AnchorTree",
    "anchor_digest",
    "anchor_leaf",
    "build_anchor_tree",
    "calldata_payload",
    "digest_from_calldata",
    "parse_anchor_section",
]

ANCHOR_FORMAT = "provmint-anchor/1"
LEAF_TAG = b"PMAL"
DIGEST_TAG = b"PMAD"
CALLDATA_MAGIC = b"PMNT"
CALLDATA_VERSION = 1
METHODS = ("calldata", "registry")
MAX_BATCHES_PER_ANCHOR = 4096
"""Batches per anchor transaction. The transaction's size does not grow with it (one
digest); the bound keeps anchor paths short and one run's work predictable. More pending
batches are anchored by the next run."""

_TX_HASH = re.compile(r"0x[0-9a-f]{64}")
_MAX_U63 = 2**63 - 1
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


def anchor_leaf(commitment: bytes) -> bytes:
    """Leaf hash of a batch commitment in an anchor tree."""
    if len(commitment) != 32:
        raise ValueError("a batch commitment is 32 bytes")
    return merkle.leaf_hash(LEAF_TAG + commitment)


def anchor_digest(size: int, root: bytes) -> bytes:
    """The 32 bytes that go on chain: the anchor tree's root bound to its size."""
    if not 0 < size < 2**64 or len(root) != 32:
        raise ValueError("bad anchor tree size or root")
    return hashlib.sha256(DIGEST_TAG + struct.pack(">Q", size) + root).digest()


def calldata_payload(digest: bytes) -> bytes:
    """Transaction data of a calldata anchor."""
    if len(digest) != 32:
        raise ValueError("an anchor digest is 32 bytes")
    return CALLDATA_MAGIC + bytes([CALLDATA_VERSION]) + digest


def digest_from_calldata(data: bytes) -> bytes | None:
    """The digest a transaction's data anchors, or None if it is not a provmint anchor."""
    if len(data) == 37 and data[:5] == CALLDATA_MAGIC + bytes([CALLDATA_VERSION]):
        return bytes(data[5:])
    return None


@dataclass(frozen=True, slots=True)
class AnchorTree:
    """The anchor tree over some batch commitments (sorted), with its digest."""

    commitments: tuple[bytes, ...]
    levels: tuple[bytes, ...]

    @property
    def size(self) -> int:
        """Number of batches covered."""
        return len(self.commitments)

    @property
    def root(self) -> bytes:
        """Root of the anchor tree."""
        return self.levels[-1]

    @property
    def digest(self) -> bytes:
        """What goes on chain."""
        return anchor_digest(self.size, self.root)

    def index_of(self, commitment: bytes) -> int:
        """Leaf index of a batch commitment."""
        return self.commitments.index(commitment)

    def path(self, index: int) -> list[bytes]:
        """Inclusion path of leaf ``index``."""
        levels = self.levels
        return merkle.inclusion_path(
            lambda level, j: levels[level][32 * j : 32 * j + 32], index, self.size
        )


def build_anchor_tree(commitments: Sequence[bytes]) -> AnchorTree:
    """The anchor tree over distinct batch commitments, in bytewise order."""
    ordered = tuple(sorted(commitments))
    if not ordered:
        raise ValueError("an anchor covers at least one batch")
    if len(set(ordered)) != len(ordered):
        raise ValueError("a batch cannot appear twice in one anchor")
    if len(ordered) > MAX_BATCHES_PER_ANCHOR:
        raise ValueError(f"an anchor covers at most {MAX_BATCHES_PER_ANCHOR} batches")
    leaves = b"".join(anchor_leaf(c) for c in ordered)
    return AnchorTree(ordered, tuple(merkle.build_levels(leaves)))


class OfflineCheck(NamedTuple):
    """Whether a batch commitment leads to an anchor's root and digest, and why."""

    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class AnchorSection:
    """A parsed ``anchor`` section of a proof (well-formed, not yet verified)."""

    size: int
    leaf_index: int
    path: tuple[bytes, ...]
    root: bytes
    digest: bytes
    chain_id: int
    method: str
    contract: str | None
    sender: str
    tx_hash: str
    block_number: int
    block_hash: str
    block_time: int

    def check_offline(self, commitment: bytes) -> OfflineCheck:
        """Does the batch commitment lead to this anchor's root and digest?"""
        try:
            root = merkle.root_from_path(
                anchor_leaf(commitment), self.leaf_index, self.size, self.path
            )
        except merkle.InclusionProofError as exc:
            return OfflineCheck(False, f"anchor path: {exc}")
        if not hmac.compare_digest(root, self.root):
            return OfflineCheck(False, "the batch commitment does not lead to the anchor root")
        if not hmac.compare_digest(anchor_digest(self.size, self.root), self.digest):
            return OfflineCheck(False, "the anchor digest does not bind this root and size")
        detail = f"batch is leaf {self.leaf_index} of {self.size} in the anchor tree"
        return OfflineCheck(True, detail)


def _field(doc: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    if key not in doc:
        raise ProofError(f"proof field anchor.{key} is missing")
    value = doc[key]
    if kind is int and (type(value) is not int or not 0 <= value <= _MAX_U63):
        raise ProofError(f"proof field anchor.{key} must be a whole number in [0, 2^63-1]")
    if kind is not int and not isinstance(value, kind):
        raise ProofError(f"proof field anchor.{key} has the wrong type")
    return value


def _hex32(value: Any, where: str) -> bytes:
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{64}", value):
        raise ProofError(f"proof field {where} must be 64 lowercase hex digits")
    return bytes.fromhex(value)


_SECTION_FIELDS = frozenset(
    {
        "format",
        "tree",
        "digest",
        "chain_id",
        "method",
        "contract",
        "sender",
        "tx_hash",
        "block_number",
        "block_hash",
        "block_time",
    }
)
_TREE_FIELDS = frozenset({"profile", "size", "leaf_index", "path", "root"})


def parse_anchor_section(doc: Any) -> AnchorSection:
    """Strictly parse a proof's ``anchor`` object (untrusted input)."""
    if not isinstance(doc, dict):
        raise ProofError("proof field anchor must be an object or null")
    if doc.get("format") != ANCHOR_FORMAT:
        raise ProofError(f"proof field anchor.format must be {ANCHOR_FORMAT!r}")
    missing = sorted(_SECTION_FIELDS - set(doc))
    if missing:
        raise ProofError(f"proof field anchor.{missing[0]} is missing")
    unknown = sorted(set(doc) - _SECTION_FIELDS)
    if unknown:
        key = unknown[0]
        plain = re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", key)
        name = f".{key}" if plain else f"[{json.dumps(key[:40])}]"
        raise ProofError(f"proof field anchor{name} is not part of {ANCHOR_FORMAT}")
    # In the documented order (docs/FORMATS.md), so the first fault is the one reported.
    tree = _field(doc, "tree", dict)
    size, index, raw_path = _tree_shape(tree)
    path = tuple(_hex32(p, f"anchor.tree.path[{i}]") for i, p in enumerate(raw_path))
    root = _hex32(tree["root"], "anchor.tree.root")
    digest = _hex32(_field(doc, "digest", str), "anchor.digest")
    chain_id = doc["chain_id"]
    if type(chain_id) is not int:
        raise ProofError("proof field anchor.chain_id must be a whole number")
    if not 0 < chain_id < 2**63:
        raise ProofError("proof field anchor.chain_id is out of range")
    method, contract = _method_and_contract(doc)
    sender = _field(doc, "sender", str)
    if not _ADDRESS.fullmatch(sender):
        raise ProofError("proof field anchor.sender must be an address (0x + 40 hex)")
    tx_hash = _field(doc, "tx_hash", str)
    if not _TX_HASH.fullmatch(tx_hash):
        raise ProofError("proof field anchor.tx_hash must be 0x + 64 lowercase hex digits")
    block_number = _field(doc, "block_number", int)
    block_hash = _field(doc, "block_hash", str)
    if not _TX_HASH.fullmatch(block_hash):
        raise ProofError("proof field anchor.block_hash must be 0x + 64 lowercase hex digits")
    return AnchorSection(
        size=size,
        leaf_index=index,
        path=path,
        root=root,
        digest=digest,
        chain_id=chain_id,
        method=method,
        contract=contract,
        sender=sender,
        tx_hash=tx_hash,
        block_number=block_number,
        block_hash=block_hash,
        block_time=_field(doc, "block_time", int),
    )


def _tree_shape(tree: dict[str, Any]) -> tuple[int, int, list[Any]]:
    """The anchor tree's size, leaf index and (unparsed) path, each within its limits."""
    if set(tree) != _TREE_FIELDS:
        missing = sorted(_TREE_FIELDS - set(tree))
        fault = f"{missing[0]} is missing" if missing else "it has other fields"
        raise ProofError(
            f"proof field anchor.tree must have profile, size, leaf_index, path, root; {fault}"
        )
    if tree["profile"] != merkle.PROFILE:
        raise ProofError(f"proof field anchor.tree.profile is not supported; only {merkle.PROFILE}")
    size, index = tree["size"], tree["leaf_index"]
    if type(size) is not int or not 0 < size <= MAX_BATCHES_PER_ANCHOR:
        raise ProofError(
            "proof field anchor.tree.size is out of range; "
            f"a whole number in [1, {MAX_BATCHES_PER_ANCHOR}]"
        )
    if type(index) is not int or not 0 <= index < size:
        raise ProofError(
            "proof field anchor.tree.leaf_index is out of range; a whole number below the size"
        )
    path = tree["path"]
    if not isinstance(path, list) or len(path) > merkle.MAX_PATH:
        raise ProofError(
            f"proof field anchor.tree.path must be a short list; at most {merkle.MAX_PATH} hashes"
        )
    return size, index, path


def _method_and_contract(doc: dict[str, Any]) -> tuple[str, str | None]:
    """The anchor method, and the registry's address (None for calldata anchors)."""
    method = _field(doc, "method", str)
    if method not in METHODS:
        raise ProofError(f"proof field anchor.method must be one of {', '.join(METHODS)}")
    contract = doc["contract"]
    if method == "registry" and not (isinstance(contract, str) and _ADDRESS.fullmatch(contract)):
        raise ProofError("proof field anchor.contract must be the registry address")
    if method == "calldata" and contract is not None:
        raise ProofError("proof field anchor.contract must be null for calldata anchors")
    return method, contract


def anchor_section(tree: AnchorTree, commitment: bytes, record: dict[str, Any]) -> dict[str, Any]:
    """The ``anchor`` object of a proof for one batch of an anchor."""
    index = tree.index_of(commitment)
    return {
        "format": ANCHOR_FORMAT,
        "tree": {
            "profile": merkle.PROFILE,
            "size": tree.size,
            "leaf_index": index,
            "path": [p.hex() for p in tree.path(index)],
            "root": tree.root.hex(),
        },
        "digest": tree.digest.hex(),
        "chain_id": record["chain_id"],
        "method": record["method"],
        "contract": record.get("contract"),
        "sender": record["sender"],
        "tx_hash": record["tx_hash"],
        "block_number": record["block_number"],
        "block_hash": record["block_hash"],
        "block_time": record["block_time"],
    }
