"""FORMAT-CRITICAL: the RFC 9162 (= RFC 6962) SHA-256 Merkle tree hash and inclusion proofs.

Profile ``rfc9162-sha256``, frozen:

* ``leaf = SHA-256(0x00 || data)``, ``node = SHA-256(0x01 || left || right)``;
* ``MTH(D[n])`` splits at the largest power of two strictly below ``n``; a lone right
  node is promoted, never duplicated (no CVE-2012-2459 ambiguity);
* the empty tree hashes to ``SHA-256("")``.

The tree is kept as *level arrays*: level 0 holds the leaf hashes, level ``L+1`` the hashes
of adjacent pairs of level ``L``, an odd last node promoted. Node ``j`` of level ``L`` is
exactly ``MTH(D[j*2^L : min((j+1)*2^L, n)])``, so any aligned power-of-two chunk of leaves
can be reduced independently (in another process) and its levels written in place; the
inclusion path of leaf ``i`` is the existing siblings ``(i >> L) ^ 1`` of each level.

Verification follows RFC 9162 section 2.1.3.2 and is pinned by the transparency-dev test
vectors. It binds the tree size only through the proof's shape: callers must also check
the size against a commitment (see :func:`provmint.canonical.batch_commitment`).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MAX_PATH",
    "MAX_TREE_SIZE",
    "PROFILE",
    "InclusionProofError",
    "build_levels",
    "inclusion_path",
    "leaf_hash",
    "level_sizes",
    "mth",
    "node_hash",
    "reduce_level",
    "root_from_path",
    "verify_inclusion",
]

PROFILE = "rfc9162-sha256"
HASH_SIZE = 32
MAX_TREE_SIZE = 2**63 - 1
"""Largest tree size accepted (sizes are committed as u64; leaf indexes fit int64)."""
MAX_PATH = 63
"""Longest possible inclusion path for ``MAX_TREE_SIZE``; anything longer is hostile."""
EMPTY_ROOT = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256
_NODE_PREFIX = _sha256(b"\x01")

_UNLOADED: Any = object()
_native_reduce: Callable[[bytes], bytes] | None = _UNLOADED
"""The same reduction in C (see provmint/_native.c; None without a C compiler), loaded
on the first :func:`reduce_level`: a process that never reduces a level (the audit,
which must not share the minting engine's kernel) never loads it."""


def _native() -> Callable[[bytes], bytes] | None:
    global _native_reduce
    if _native_reduce is _UNLOADED:
        found: Callable[[bytes], bytes] | None
        try:
            from provmint._native import reduce_level as found
        except ImportError:  # pragma: no cover - machines without a C compiler
            found = None
        _native_reduce = found
    return _native_reduce


class InclusionProofError(ValueError):
    """An inclusion proof is structurally impossible (bad index, size, length or hash)."""


def leaf_hash(data: bytes) -> bytes:
    """``SHA-256(0x00 || data)``."""
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``."""
    return _sha256(b"\x01" + left + right).digest()


def mth(leaf_hashes: Sequence[bytes]) -> bytes:
    """Reference ``MTH`` over already-hashed leaves, straight from the RFC's recursion.

    Quadratic-free but recursive: for tests and small trees. Use :func:`build_levels` for
    real batches.
    """
    n = len(leaf_hashes)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaf_hashes[0]
    k = 1 << ((n - 1).bit_length() - 1)
    return node_hash(mth(leaf_hashes[:k]), mth(leaf_hashes[k:]))


def level_sizes(n: int) -> list[int]:
    """Number of nodes on each level of a tree of ``n`` leaves, leaves first, root last."""
    if n < 1:
        raise ValueError("a tree has at least one leaf")
    sizes = [n]
    while sizes[-1] > 1:
        sizes.append((sizes[-1] + 1) // 2)
    return sizes


def reduce_level(level: bytes) -> bytes:
    """Hash adjacent pairs of a level (contiguous 32-byte nodes); promote an odd last node."""
    if len(level) % HASH_SIZE:
        raise ValueError("a level is a run of 32-byte hashes")
    native = _native()
    if native is not None:
        return bytes(native(level))
    return _reduce_level_py(level)


def _reduce_level_py(level: bytes) -> bytes:
    count = len(level) // HASH_SIZE
    view = memoryview(level)
    copy = _NODE_PREFIX.copy
    out: list[bytes] = []
    append = out.append
    for offset in range(0, (count - count % 2) * HASH_SIZE, 2 * HASH_SIZE):
        h = copy()
        h.update(view[offset : offset + 2 * HASH_SIZE])
        append(h.digest())
    if count % 2:
        append(bytes(view[-HASH_SIZE:]))
    return b"".join(out)


def build_levels(leaves: bytes, *, stop_at: int = 1) -> list[bytes]:
    """Level arrays above contiguous leaf hashes, up to a level of at most ``stop_at`` nodes.

    With the default the last level is the root. A chunk of ``2^k`` aligned leaves (or the
    last, shorter chunk) reduced with ``stop_at=1`` yields exactly the nodes of the full
    tree that lie above it.
    """
    if not leaves or len(leaves) % HASH_SIZE:
        raise ValueError("leaves must be a non-empty run of 32-byte hashes")
    levels = [leaves]
    while len(levels[-1]) > stop_at * HASH_SIZE:
        levels.append(reduce_level(levels[-1]))
    return levels


def inclusion_path(node: Callable[[int, int], bytes], index: int, size: int) -> list[bytes]:
    """Inclusion path of leaf ``index`` in a tree of ``size`` leaves, leaf side first.

    ``node(level, j)`` returns node ``j`` of a level; only O(log n) nodes are read.
    """
    if not 0 <= index < size:
        raise InclusionProofError(f"leaf index {index} is outside a tree of {size}")
    path = []
    i = index
    for level, count in enumerate(level_sizes(size)[:-1]):
        sibling = i ^ 1
        if sibling < count:
            path.append(node(level, sibling))
        i >>= 1
    return path


def root_from_path(leaf: bytes, index: int, size: int, path: Sequence[bytes]) -> bytes:
    """The root an inclusion proof leads to (RFC 9162 section 2.1.3.2, steps 1-4).

    Raises InclusionProofError when the proof cannot belong to a tree of ``size`` leaves:
    index out of range, path too long or too short, a hash that is not 32 bytes.
    """
    if not 0 < size <= MAX_TREE_SIZE:
        raise InclusionProofError(f"tree size {size} is out of range")
    if not 0 <= index < size:
        raise InclusionProofError(f"leaf index {index} is not below tree size {size}")
    if len(path) > MAX_PATH:
        raise InclusionProofError(f"inclusion path has {len(path)} hashes; at most {MAX_PATH}")
    if len(leaf) != HASH_SIZE or any(len(p) != HASH_SIZE for p in path):
        raise InclusionProofError("every hash in a proof is 32 bytes")
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            raise InclusionProofError("inclusion path is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise InclusionProofError("inclusion path is shorter than the tree is deep")
    return r


def verify_inclusion(
    leaf: bytes, index: int, size: int, path: Sequence[bytes], root: bytes
) -> bool:
    """True iff ``path`` proves leaf hash ``leaf`` at ``index`` in the tree with ``root``."""
    try:
        computed = root_from_path(leaf, index, size, path)
    except InclusionProofError:
        return False
    return len(root) == HASH_SIZE and hmac.compare_digest(computed, root)
