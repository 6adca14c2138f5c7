"""provmint.merkle (RFC 9162 / RFC 6962 tree hash and inclusion proofs) and the
``provmint-tree/1`` tree file (provmint.store.treefile).

Pinned by the transparency-dev vectors in ``tests/vectors/rfc6962`` and by properties
against an independent, recursive model of RFC 9162's ``MTH`` and ``PATH``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from pathlib import Path

import pytest
from conftest import VECTORS
from hypothesis import given, settings
from hypothesis import strategies as st

from provmint import canonical, merkle
from provmint.errors import StoreCorruptError
from provmint.store import treefile

FAST = settings(max_examples=25, deadline=None)
INCLUSION_FILES = sorted((VECTORS / "inclusion").rglob("*.json"))


# --------------------------------------------------------------------------- reference model


def ref_leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def ref_node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def ref_mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 section 2.1.1, written out independently of provmint.merkle."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return ref_node(ref_mth(leaves[:k]), ref_mth(leaves[k:]))


def ref_path(m: int, leaves: list[bytes]) -> list[tuple[str, bytes]]:
    """RFC 9162 section 2.1.3.1 ``PATH(m, D[n])`` with each sibling's side, leaf side first."""
    n = len(leaves)
    if n <= 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*ref_path(m, leaves[:k]), ("R", ref_mth(leaves[k:]))]
    return [*ref_path(m - k, leaves[k:]), ("L", ref_mth(leaves[:k]))]


def ref_sides(index: int, size: int) -> str:
    """Sides (L/R) of the siblings on the audit path of ``index`` in a tree of ``size``.

    The root an RFC 9162 verifier computes from a path depends only on this sequence (and
    the hashes), so a path verifies for another size exactly when the sequences agree.
    """
    return "".join(side for side, _ in ref_path(index, [b""] * size))


def leaves_for(n: int, salt: bytes = b"") -> list[bytes]:
    return [ref_leaf(salt + i.to_bytes(4, "big")) for i in range(n)]


def levels_node(levels: list[bytes]):
    def node(level: int, j: int) -> bytes:
        return levels[level][32 * j : 32 * j + 32]

    return node


def tree(n: int, salt: bytes = b"") -> tuple[list[bytes], list[bytes]]:
    leaves = leaves_for(n, salt)
    return leaves, merkle.build_levels(b"".join(leaves))


# --------------------------------------------------------------------------- hasher vectors


def test_hasher_vectors() -> None:
    # transparency-dev/merkle rfc6962 hasher_test.go
    assert merkle.EMPTY_ROOT.hex() == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert merkle.mth([]) == merkle.EMPTY_ROOT
    assert merkle.leaf_hash(b"").hex() == (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )
    assert merkle.leaf_hash(b"L123456").hex() == (
        "395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56"
    )
    assert merkle.node_hash(b"N123", b"N456").hex() == (
        "aa217fe888e47007fa15edab33c2b492a722cb106c64667fc2b044444de66bbb"
    )
    assert merkle.HASH_SIZE == 32
    assert merkle.PROFILE == "rfc9162-sha256"


def test_node_hash_is_ordered_and_domain_separated() -> None:
    a, b = merkle.leaf_hash(b"a"), merkle.leaf_hash(b"b")
    assert merkle.node_hash(a, b) != merkle.node_hash(b, a)
    # leaf and node hashes of the same bytes differ (0x00 vs 0x01 prefix)
    assert merkle.leaf_hash(a + b) != merkle.node_hash(a, b)


# --------------------------------------------------------------------------- roots.json


def _roots() -> tuple[list[bytes], list[bytes]]:
    data = json.loads((VECTORS / "roots.json").read_text())
    inputs = [bytes.fromhex(h) for h in data["leaf_inputs_hex"]]
    roots = [bytes.fromhex(h) for h in data["root_by_size_hex"]]
    assert len(roots) == len(inputs) + 1
    return inputs, roots


@pytest.mark.parametrize("size", range(9))
def test_roots_json(size: int) -> None:
    inputs, roots = _roots()
    leaves = [merkle.leaf_hash(d) for d in inputs[:size]]
    assert merkle.mth(leaves) == roots[size]
    if size == 0:
        assert roots[0] == merkle.EMPTY_ROOT
        with pytest.raises(ValueError):
            merkle.build_levels(b"")
    else:
        levels = merkle.build_levels(b"".join(leaves))
        assert levels[0] == b"".join(leaves)
        assert levels[-1] == roots[size]
        assert [len(lv) // 32 for lv in levels] == merkle.level_sizes(size)


# --------------------------------------------------------------------------- inclusion vectors


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value or "")


def test_inclusion_vectors_present() -> None:
    files = INCLUSION_FILES
    assert len(files) >= 90
    cases = [json.loads(f.read_text()) for f in files]
    assert any(not c["wantErr"] for c in cases)
    assert any(c["wantErr"] for c in cases)


@pytest.mark.parametrize(
    "path",
    INCLUSION_FILES,
    ids=[str(p.relative_to(VECTORS / "inclusion")) for p in INCLUSION_FILES],
)
def test_inclusion_vector(path: Path) -> None:
    case = json.loads(path.read_text())
    proof = [_b64(p) for p in case["proof"] or []]
    ok = merkle.verify_inclusion(
        _b64(case["leafHash"]), case["leafIdx"], case["treeSize"], proof, _b64(case["root"])
    )
    assert ok is (not case["wantErr"]), case["desc"]


# --------------------------------------------------------------------------- properties


@FAST
@given(n=st.integers(1, 2000))
def test_every_leaf_path_verifies_and_matches_reference(n: int) -> None:
    leaves, levels = tree(n)
    root = levels[-1]
    assert root == ref_mth(leaves) == merkle.mth(leaves)
    node = levels_node(levels)
    for i in range(n):
        path = merkle.inclusion_path(node, i, n)
        assert merkle.root_from_path(leaves[i], i, n, path) == root
        assert merkle.verify_inclusion(leaves[i], i, n, path, root)


@pytest.mark.parametrize("n", [*range(1, 34), 63, 64, 65, 100, 127, 128, 129])
def test_inclusion_path_equals_rfc_path(n: int) -> None:
    leaves, levels = tree(n, b"p")
    node = levels_node(levels)
    for i in range(n):
        expected = ref_path(i, leaves)
        assert merkle.inclusion_path(node, i, n) == [h for _, h in expected]


@pytest.mark.parametrize("n", range(1, 21))
def test_any_single_byte_change_fails(n: int) -> None:
    """Exhaustive for small trees: every byte of every path element, the leaf and the root."""
    leaves, levels = tree(n, b"t")
    root = levels[-1]
    node = levels_node(levels)

    def flip(h: bytes, pos: int) -> bytes:
        return h[:pos] + bytes([h[pos] ^ (1 + pos)]) + h[pos + 1 :]

    for i in range(n):
        path = merkle.inclusion_path(node, i, n)
        assert merkle.verify_inclusion(leaves[i], i, n, path, root)
        for pos in range(32):
            assert not merkle.verify_inclusion(flip(leaves[i], pos), i, n, path, root)
            assert not merkle.verify_inclusion(leaves[i], i, n, path, flip(root, pos))
            for k in range(len(path)):
                bad = [*path[:k], flip(path[k], pos), *path[k + 1 :]]
                assert not merkle.verify_inclusion(leaves[i], i, n, bad, root)


@FAST
@given(data=st.data())
def test_random_tampering_fails(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 2000), label="n")
    i = data.draw(st.integers(0, n - 1), label="i")
    leaves, levels = tree(n, b"r")
    root = levels[-1]
    path = merkle.inclusion_path(levels_node(levels), i, n)
    assert merkle.verify_inclusion(leaves[i], i, n, path, root)

    pos = data.draw(st.integers(0, 31), label="byte")
    delta = data.draw(st.integers(1, 255), label="xor")

    def flip(h: bytes) -> bytes:
        return h[:pos] + bytes([h[pos] ^ delta]) + h[pos + 1 :]

    target = data.draw(st.integers(-2, len(path) - 1), label="target")
    if target == -2:
        assert not merkle.verify_inclusion(flip(leaves[i]), i, n, path, root)
    elif target == -1:
        assert not merkle.verify_inclusion(leaves[i], i, n, path, flip(root))
    else:
        bad = [*path[:target], flip(path[target]), *path[target + 1 :]]
        assert not merkle.verify_inclusion(leaves[i], i, n, bad, root)

    # any other index, in range or not, fails: for a fixed size the sides of the path
    # identify the leaf (read from the root down), so no other index shares them
    j = data.draw(st.integers(-5, n + 5).filter(lambda j: j != i), label="j")
    assert not merkle.verify_inclusion(leaves[i], j, n, path, root)

    # another size verifies exactly when the audit path has the same sides (RFC 9162 binds
    # the size only through the path's shape); with different sides it must fail
    m = data.draw(st.integers(0, 2 * n + 5).filter(lambda m: m != n), label="m")
    same_shape = m > i and ref_sides(i, m) == ref_sides(i, n)
    assert merkle.verify_inclusion(leaves[i], i, m, path, root) is same_shape


@pytest.mark.parametrize("n", range(1, 41))
def test_index_and_size_changes(n: int) -> None:
    """Exhaustive for small trees.

    * Any other index fails (the sides of a path identify a leaf within one tree size).
    * Any other size fails **unless** the audit path of the leaf has the same sequence of
      sibling sides in both sizes: the RFC 9162 verifier (section 2.1.3.2) sees the size only
      through the path's shape, so e.g. leaf 0's path in a tree of 5 also verifies as a tree
      of 6, 7 or 8. That is legitimate and documented (merkle and canonical.batch_commitment
      docstrings); provmint binds the size in the batch commitment instead (tested below).
    """
    leaves, levels = tree(n, b"s")
    root = levels[-1]
    node = levels_node(levels)
    for i in range(n):
        path = merkle.inclusion_path(node, i, n)
        for j in [*range(-2, n + 3)]:
            if j != i:
                assert not merkle.verify_inclusion(leaves[i], j, n, path, root)
        sides = ref_sides(i, n)
        for m in range(0, 2 * n + 3):
            if m == n:
                continue
            must_fail = m <= i or ref_sides(i, m) != sides
            assert merkle.verify_inclusion(leaves[i], i, m, path, root) is not must_fail, (i, m)


def test_size_is_not_bound_by_proof_shape_alone() -> None:
    """Document the RFC 9162 property the size commitment exists for."""
    leaves, levels = tree(5)
    path = merkle.inclusion_path(levels_node(levels), 0, 5)
    for m in (6, 7, 8):
        assert merkle.verify_inclusion(leaves[0], 0, m, path, levels[-1])
    for m in (1, 2, 3, 4, 9, 16):
        assert not merkle.verify_inclusion(leaves[0], 0, m, path, levels[-1])


@FAST
@given(n=st.integers(1, 10**6), m=st.integers(1, 10**6))
def test_batch_commitment_binds_size(n: int, m: int) -> None:
    root = hashlib.sha256(b"root").digest()
    digest = hashlib.sha256(b"manifest").digest()
    a = canonical.batch_commitment("b-1", n, root, digest)
    b = canonical.batch_commitment("b-1", m, root, digest)
    assert (a == b) is (n == m)


def test_root_from_path_structural_errors() -> None:
    leaves, levels = tree(10)
    path = merkle.inclusion_path(levels_node(levels), 3, 10)
    leaf = leaves[3]
    err = merkle.InclusionProofError
    assert issubclass(err, ValueError)
    for args in [
        (leaf, 3, 0, path),  # size 0
        (leaf, 3, merkle.MAX_TREE_SIZE + 1, path),
        (leaf, 10, 10, path),  # index == size
        (leaf, -1, 10, path),
        (leaf, 3, 10, path[:-1]),  # too short
        (leaf, 3, 10, [*path, path[0]]),  # too long
        (leaf, 3, 10, [*path[:-1], path[-1] + b"\x00"]),  # 33-byte hash
        (leaf[:31], 3, 10, path),
        (leaf, 3, merkle.MAX_TREE_SIZE, [leaf] * (merkle.MAX_PATH + 1)),
    ]:
        with pytest.raises(err):
            merkle.root_from_path(*args)
        assert not merkle.verify_inclusion(*args, levels[-1])
    # the root must be 32 bytes too
    assert not merkle.verify_inclusion(leaf, 3, 10, path, levels[-1] + b"\x00")
    assert not merkle.verify_inclusion(leaf, 3, 10, path, levels[-1][:31])
    with pytest.raises(err):
        merkle.inclusion_path(levels_node(levels), 10, 10)


def test_level_sizes() -> None:
    assert merkle.level_sizes(1) == [1]
    assert merkle.level_sizes(2) == [2, 1]
    assert merkle.level_sizes(5) == [5, 3, 2, 1]
    assert merkle.level_sizes(8) == [8, 4, 2, 1]
    with pytest.raises(ValueError):
        merkle.level_sizes(0)


@FAST
@given(n=st.integers(1, 2000), k=st.integers(0, 5))
def test_chunked_reduction_equals_whole_tree(n: int, k: int) -> None:
    """What engine + batch do: reduce aligned 2^k chunks, then build over the chunk roots."""
    leaves, levels = tree(n, b"c")
    chunk = 1 << k
    roots = []
    for start in range(0, n, chunk):
        sub = merkle.build_levels(b"".join(leaves[start : start + chunk]))
        roots.append(sub[-1])
        # every node of the chunk's subtree is the node of the whole tree above it; above
        # a short last chunk's height its root is promoted unchanged
        for level in range(min(k, len(levels) - 1) + 1):
            got = sub[level] if level < len(sub) else sub[-1]
            offset = 32 * (start >> level)
            assert levels[level][offset : offset + len(got)] == got
    assert merkle.build_levels(b"".join(roots))[-1] == levels[-1] == ref_mth(leaves)


@FAST
@given(count=st.integers(0, 300), seed=st.binary(min_size=1, max_size=8))
def test_reduce_level_native_equals_python(count: int, seed: bytes) -> None:
    level = b"".join(hashlib.sha256(seed + i.to_bytes(4, "big")).digest() for i in range(count))
    expected = b"".join(
        ref_node(level[o : o + 32], level[o + 32 : o + 64]) for o in range(0, count // 2 * 64, 64)
    ) + (level[-32:] if count % 2 else b"")
    assert merkle._reduce_level_py(level) == expected
    assert merkle.reduce_level(level) == expected
    native = pytest.importorskip("provmint._native")
    assert bytes(native.reduce_level(level)) == expected


def test_reduce_level_rejects_partial_hashes() -> None:
    with pytest.raises(ValueError):
        merkle.reduce_level(b"\x00" * 33)
    native = pytest.importorskip("provmint._native")
    with pytest.raises(ValueError):
        native.reduce_level(b"\x00" * 33)


def test_reduce_level_python_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(merkle, "_native_reduce", None)
    leaves, levels = tree(37)
    assert merkle.build_levels(b"".join(leaves)) == levels
    assert levels[-1] == ref_mth(leaves)


# --------------------------------------------------------------------------- tree file


def _write_whole(path: Path, levels: list[bytes]) -> None:
    n = len(levels[0]) // 32
    header = b"PMTREE01" + struct.pack(">QII", n, len(levels), 32) + bytes(40)
    path.write_bytes(header + b"".join(levels))


def _write_chunked(path: Path, leaves: list[bytes], chunk_level: int, order: list[int]) -> bytes:
    """Mirror minting with a small chunk size: chunks' levels spilled in any order, then
    the tree file assembled from them and the chunk roots."""
    n = len(leaves)
    spill = treefile.TreeSpill(path.parent / "levels", chunk_level, path)
    spill.create()
    chunk = 1 << chunk_level
    starts = list(range(0, n, chunk))
    roots = {}
    for start in [starts[i % len(starts)] for i in order] + starts:
        levels = merkle.build_levels(b"".join(leaves[start : start + chunk]))
        treefile.TreeSpill.write_chunk(spill.paths, start, levels)  # again: idempotent
        roots[start] = levels[-1]
    return spill.assemble(n, b"".join(roots[s] for s in starts))


def _check_tree_file(path: Path, leaves: list[bytes], levels: list[bytes]) -> None:
    n = len(leaves)
    tf = treefile.TreeFile(path)
    assert tf.size == n
    assert tf.level_count == len(levels)
    assert tf.root == levels[-1] == ref_mth(leaves)
    for level, data in enumerate(levels):
        assert tf.level(level) == data
    node = levels_node(levels)
    for i in range(n):
        assert tf.leaf(i) == leaves[i]
        path_ = tf.inclusion_path(i)
        assert path_ == merkle.inclusion_path(node, i, n)
        assert merkle.verify_inclusion(leaves[i], i, n, path_, tf.root)
    with pytest.raises(IndexError):
        tf.node(0, n)
    with pytest.raises(IndexError):
        tf.node(len(levels), 0)
    with pytest.raises(merkle.InclusionProofError):
        tf.inclusion_path(n)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13, 64, 100, 257])
def test_tree_file_round_trip(tmp_path: Path, n: int) -> None:
    leaves, levels = tree(n, b"f")
    path = tmp_path / "tree.bin"
    _write_whole(path, levels)
    total = 64 + 32 * sum(merkle.level_sizes(n))
    assert path.stat().st_size == total
    header = path.read_bytes()[:64]
    assert header == b"PMTREE01" + struct.pack(">QII", n, len(levels), 32) + bytes(40)
    _check_tree_file(path, leaves, levels)


@FAST
@given(
    n=st.integers(1, 600),
    chunk_level=st.integers(0, 5),
    order=st.lists(st.integers(0, 10**6), max_size=20),
)
def test_tree_file_written_in_chunks(
    tmp_path_factory: pytest.TempPathFactory, n: int, chunk_level: int, order: list[int]
) -> None:
    leaves, levels = tree(n, b"w")
    path = tmp_path_factory.mktemp("tree") / "tree.bin"
    assert _write_chunked(path, leaves, chunk_level, order) == levels[-1]
    _check_tree_file(path, leaves, levels)


@FAST
@given(
    first=st.integers(1, 300),
    fewer=st.integers(0, 299),
    chunk_level=st.integers(0, 4),
)
def test_tree_file_of_a_second_pass_holds_only_its_leaves(
    tmp_path_factory: pytest.TempPathFactory, first: int, fewer: int, chunk_level: int
) -> None:
    """A mint whose first pass wrote ``first`` leaves and whose second pass (rows
    refused) writes fewer, other ones into the same spill: the tree file is exactly the
    second pass's tree, nothing of the first left in it."""
    n = max(1, first - fewer)
    path = tmp_path_factory.mktemp("tree") / "tree.bin"
    spill = treefile.TreeSpill(path.parent / "levels", chunk_level, path)
    spill.create()
    chunk = 1 << chunk_level
    for label, count in ((b"first", first), (b"second", n)):
        leaves, _ = tree(count, label)
        roots = []
        for start in range(0, count, chunk):
            levels = merkle.build_levels(b"".join(leaves[start : start + chunk]))
            treefile.TreeSpill.write_chunk(spill.paths, start, levels)
            roots.append(levels[-1])
    leaves, levels = tree(n, b"second")
    assert spill.assemble(n, b"".join(roots)) == levels[-1]
    assert path.stat().st_size == 64 + 32 * sum(merkle.level_sizes(n))
    _check_tree_file(path, leaves, levels)


def test_tree_spill_refuses_missing_chunks(tmp_path: Path) -> None:
    leaves, _ = tree(10, b"m")
    spill = treefile.TreeSpill(tmp_path / "levels", 2, tmp_path / "tree.bin")
    spill.create()
    roots = []
    for start in (0, 4):  # the chunk at 8 never arrives
        chunk_levels = merkle.build_levels(b"".join(leaves[start : start + 4]))
        treefile.TreeSpill.write_chunk(spill.paths, start, chunk_levels)
        roots.append(chunk_levels[-1])
    with pytest.raises(StoreCorruptError, match="missing"):
        spill.assemble(10, b"".join(roots) + bytes(32))


def test_level_offsets() -> None:
    assert treefile.level_offsets(1) == (64,)
    assert treefile.level_offsets(5) == (64, 64 + 5 * 32, 64 + 8 * 32, 64 + 10 * 32)


def _good_file(tmp_path: Path, n: int = 6) -> tuple[Path, bytes]:
    _, levels = tree(n)
    path = tmp_path / "tree.bin"
    _write_whole(path, levels)
    return path, path.read_bytes()


@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(lambda b: b"PMTREE02" + b[8:], id="bad-magic"),
        pytest.param(lambda b: b[:40], id="short-header"),
        pytest.param(lambda b: b"", id="empty"),
        pytest.param(lambda b: b[:8] + struct.pack(">Q", 0) + b[16:], id="size-zero"),
        pytest.param(lambda b: b[:8] + struct.pack(">Q", 7) + b[16:], id="size-mismatch"),
        pytest.param(lambda b: b[:16] + struct.pack(">I", 5) + b[20:], id="level-count"),
        pytest.param(lambda b: b[:20] + struct.pack(">I", 64) + b[24:], id="hash-size"),
        pytest.param(lambda b: b + b"\x00", id="trailing-byte"),
        pytest.param(lambda b: b[:-1], id="truncated"),
        pytest.param(lambda b: b[:64], id="header-only"),
        pytest.param(lambda b: b[:8] + struct.pack(">Q", 2**64 - 1) + b[16:], id="huge-size"),
    ],
)
def test_tree_file_corruption(tmp_path: Path, corrupt) -> None:
    path, data = _good_file(tmp_path)
    treefile.TreeFile(path)  # the original is fine
    path.write_bytes(corrupt(data))
    with pytest.raises(StoreCorruptError):
        treefile.TreeFile(path)


def test_tree_file_missing(tmp_path: Path) -> None:
    with pytest.raises(StoreCorruptError):
        treefile.TreeFile(tmp_path / "absent.bin")
