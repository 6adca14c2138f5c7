"""provmint.store.keyindex: the ``provmint-keyrun/1`` format and every operation on runs.

``tests/vectors/keyrun.json`` was generated once by :func:`build_vectors` below, which
builds each file byte by byte from the format in keyindex.py's docstring (it never calls
provmint.store.keyindex). To regenerate (only for a new, versioned format):
``python tests/test_keyindex.py > tests/vectors/keyrun.json``.

Every operation is compared with a plain reference (sorted lists, dicts, Counters) on
generated inputs with duplicates, empty runs, single keys and the u64 extremes, and with
small block sizes so that block boundaries fall everywhere.
"""

from __future__ import annotations

import collections
import itertools
import json
import math
import random
import struct
import subprocess
import sys
import tempfile
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import LOCAL_VECTORS
from helpers import count_index_reads
from hypothesis import given, settings
from hypothesis import strategies as st

from provmint.errors import OutputError, StoreCorruptError
from provmint.store import keyindex
from provmint.store.keyindex import (
    KeyIndex,
    KeyRun,
    RunKind,
    RunWriter,
    SpillSorter,
    common_keys,
    common_keys_split,
    equal_keys,
    merge_runs,
    plan_merge,
)

VECTOR_FILE = LOCAL_VECTORS / "keyrun.json"
U64 = 2**64 - 1
U32 = 2**32 - 1

# --------------------------------------------------------------------------- independent spec


def spec_run(kind: int, entries: list[tuple[int, int]]) -> bytes:
    """``provmint-keyrun/1``: "PMKRUN01" || u64le count || u32le kind || 44 zero bytes,
    then the keys (u64le), then the rows (u32le), entries sorted by (key, row)."""
    ordered = sorted(entries)
    out = bytearray(b"PMKRUN01")
    out += len(ordered).to_bytes(8, "little") + kind.to_bytes(4, "little") + bytes(44)
    for key, _ in ordered:
        out += key.to_bytes(8, "little")
    for _, row in ordered:
        out += row.to_bytes(4, "little")
    return bytes(out)


VECTOR_RUNS: list[tuple[int, list[tuple[int, int]]]] = [
    (1, []),
    (1, [(0x0123456789ABCDEF, 7)]),
    # duplicates (ties by row), both extremes of key and row, given out of order
    (1, [(U64, U32), (5, 2), (0, 0), (5, 1), (U64, 0), (2**63, 3), (5, U32), (1, 9)]),
    (2, [(0xFEDCBA9876543210, 0), (0x8000000000000001, 1), (42, 2)]),
]


def build_vectors() -> dict[str, Any]:
    return {
        "description": "provmint-keyrun/1 files, built independently of provmint.store.keyindex",
        "runs": [
            {
                "kind": kind,
                "entries": [[k, r] for k, r in entries],
                "hex": spec_run(kind, entries).hex(),
            }
            for kind, entries in VECTOR_RUNS
        ],
    }


def load_vectors() -> dict[str, Any]:
    return json.loads(VECTOR_FILE.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """An empty directory of the test's own (tmp_path also holds the isolated config)."""
    path = tmp_path / "work"
    path.mkdir()
    return path


@contextmanager
def scratch() -> Iterator[Path]:
    """A temporary directory for one hypothesis example."""
    with tempfile.TemporaryDirectory() as name:
        yield Path(name)


MERGE_KERNELS = ["numpy", *(["native"] if keyindex._native_merger() is not None else [])]
"""How a merge merges its blocks: numpy always, and the C merge where it is built."""


@contextmanager
def merge_kernel(name: str) -> Iterator[None]:
    """Merges inside use the named kernel (hypothesis tests cannot take monkeypatch)."""
    built = keyindex._native_merger()
    keyindex._native_merge = built if name == "native" else None
    try:
        yield
    finally:
        keyindex._native_merge = built


def arrays(entries: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    keys = np.array([k for k, _ in entries], dtype=np.uint64)
    rows = np.array([r for _, r in entries], dtype=np.uint32)
    return keys, rows


def write_run(path: Path, entries: list[tuple[int, int]], kind: RunKind = RunKind.KEY) -> KeyRun:
    keys, rows = arrays(sorted(entries))
    with RunWriter(path, kind, count=len(entries)) as writer:
        writer.append(keys, rows)
    return KeyRun.open(path)


def contents(run: KeyRun, block_rows: int = 3) -> list[tuple[int, int]]:
    return [
        (int(k), int(r))
        for keys, rows in run.blocks(block_rows)
        for k, r in zip(keys, rows, strict=True)
    ]


def leftovers(directory: Path, *keep: str) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name not in keep)


# Keys from a small range give many duplicates; the extremes are always possible.
KEYS = st.one_of(st.integers(0, 12), st.integers(0, U64), st.sampled_from([0, 1, U64 - 1, U64]))
ROWS = st.one_of(st.integers(0, 20), st.integers(0, U32), st.sampled_from([0, U32]))
ENTRIES = st.lists(st.tuples(KEYS, ROWS), max_size=60)
BLOCK = st.integers(1, 9)


# --------------------------------------------------------------------------- vectors


def test_vector_file_matches_independent_builder() -> None:
    assert load_vectors() == build_vectors()


@pytest.mark.parametrize("index", range(len(VECTOR_RUNS)))
def test_writers_produce_the_vector_bytes(workdir: Path, index: int) -> None:
    case = load_vectors()["runs"][index]
    entries = [(k, r) for k, r in case["entries"]]
    kind = RunKind(case["kind"])
    keys, rows = arrays(sorted(entries))
    expected = bytes.fromhex(case["hex"])

    with RunWriter(workdir / "known.run", kind, count=len(entries)) as writer:
        writer.append(keys, rows)
    with RunWriter(workdir / "unknown.run", kind) as writer:  # rows via the side file
        for i in range(len(keys)):
            writer.append(keys[i : i + 1], rows[i : i + 1])
    with SpillSorter(workdir, kind, memory_rows=2) as sorter:
        shuffled = list(entries)
        random.Random(index).shuffle(shuffled)
        sorter.add(*arrays(shuffled))
        sorter.finish(workdir / "sorted.run").close()
    halves = [write_run(workdir / f"half{i}.run", entries[i::2], kind) for i in range(2)]
    merge_runs(halves, workdir / "merged.run", memory_rows=1).close()

    for name in ("known.run", "unknown.run", "sorted.run", "merged.run"):
        assert (workdir / name).read_bytes() == expected, name


@pytest.mark.parametrize("index", range(len(VECTOR_RUNS)))
def test_reader_reads_the_vector_bytes(workdir: Path, index: int) -> None:
    case = load_vectors()["runs"][index]
    path = workdir / "v.run"
    path.write_bytes(bytes.fromhex(case["hex"]))
    with KeyRun.open(path) as run:
        assert run.kind == case["kind"] and run.count == len(case["entries"])
        assert contents(run) == sorted((k, r) for k, r in case["entries"])
        run.check()
        for key, _ in case["entries"]:
            assert run.find(key).tolist() == sorted(r for k, r in case["entries"] if k == key)


def test_frozen_constants() -> None:
    assert keyindex.MAGIC == b"PMKRUN01" and keyindex.HEADER_SIZE == 64
    assert keyindex.KEYRUN_VERSION == "provmint-keyrun/1"
    assert (int(RunKind.KEY), int(RunKind.TOKEN)) == (1, 2)


# --------------------------------------------------------------------------- round trips


@settings(max_examples=150, deadline=None)
@given(entries=ENTRIES, block=BLOCK, stride=st.integers(1, 7))
def test_run_round_trip_and_lookups(
    entries: list[tuple[int, int]], block: int, stride: int
) -> None:
    with scratch() as d:
        write_run(d / "r.run", entries).close()
        with KeyRun.open(d / "r.run", kind=RunKind.KEY, fence_stride=stride) as run:
            assert contents(run, block) == sorted(entries)
            run.check(rows_below=max([r for _, r in entries], default=0) + 1)
            by_key = collections.defaultdict(list)
            for k, r in entries:
                by_key[k].append(r)
            probes = [k for k, _ in entries] + [0, 1, U64, 7, 2**63]
            for key in probes:
                assert run.find(key).tolist() == sorted(by_key.get(key, []))
            positions, rows = run.find_many(np.array(probes, dtype=np.uint64), chunk_rows=block)
            expected = sorted((i, r) for i, k in enumerate(probes) for r in by_key.get(k, []))
            assert list(zip(positions.tolist(), rows.tolist(), strict=True)) == expected
            assert positions.dtype == np.int64 and rows.dtype == np.uint32


@pytest.mark.parametrize("stride", [1, 2, 3, 5, 7, 8, 64])
@pytest.mark.parametrize("count", [0, 1, 6, 7, 8, 55, 56, 57, 100])
def test_fences_read_in_steps(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, stride: int, count: int
) -> None:
    """Fences are collected a few keys at a time (8 MiB in real use): every step size
    against every stride gives every stride-th key, and lookups through them work."""
    monkeypatch.setattr(keyindex, "_FENCE_READ_ENTRIES", 8)
    entries = [(3 * i // 2, i) for i in range(count)]  # some keys twice
    write_run(workdir / "f.run", entries).close()
    with KeyRun.open(workdir / "f.run", fence_stride=stride) as run:
        keys = [k for k, _ in entries]
        assert run._fences.tolist() == keys[::stride]
        for key in range(-(-3 * count // 2) + 2):
            assert run.find(key).tolist() == [r for k, r in entries if k == key]


@pytest.mark.parametrize("stride", [4, 5, 8, 64])
@pytest.mark.parametrize("count", [0, 1, 4, 5, 63, 64, 65, 300])
def test_sparse_fences_read_key_by_key(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, stride: int, count: int
) -> None:
    """At a sparse stride each fence is read on its own: opening reads the header and
    8 bytes a fence, not the keys between them; the fences and lookups are the same."""
    monkeypatch.setattr(keyindex, "_SPARSE_FENCE_STRIDE", 4)
    entries = [(3 * i // 2, i) for i in range(count)]  # some keys twice
    write_run(workdir / "s.run", entries).close()
    reads = count_index_reads(monkeypatch)
    with KeyRun.open(workdir / "s.run", fence_stride=stride) as run:
        assert sum(reads.values()) == keyindex.HEADER_SIZE + 8 * -(-count // stride)
        keys = [k for k, _ in entries]
        assert run._fences.tolist() == keys[::stride]
        for key in range(-(-3 * count // 2) + 2):
            assert run.find(key).tolist() == [r for k, r in entries if k == key]


@settings(max_examples=60, deadline=None)
@given(store=ENTRIES, probes=ENTRIES, stride=st.integers(1, 9))
def test_common_keys_same_at_any_fence_stride(
    store: list[tuple[int, int]], probes: list[tuple[int, int]], stride: int
) -> None:
    """A merge-join against a run opened with sparse fences (read key by key) finds what
    it finds with dense ones."""
    with scratch() as d:
        write_run(d / "store.run", store).close()
        with write_run(d / "probe.run", probes) as probe:

            def joined(fence_stride: int) -> list[tuple[int, ...]]:
                with KeyRun.open(d / "store.run", fence_stride=fence_stride) as other:
                    return [
                        (int(k), int(r), int(o), int(orow))
                        for m in common_keys(probe, [other], block_rows=2)
                        for k, r, o, orow in zip(m.keys, m.rows, m.other, m.other_rows, strict=True)
                    ]

            dense = joined(1)
            original = keyindex._SPARSE_FENCE_STRIDE
            keyindex._SPARSE_FENCE_STRIDE = 1  # every stride takes the sparse path
            try:
                assert joined(stride) == dense
            finally:
                keyindex._SPARSE_FENCE_STRIDE = original


@settings(max_examples=80, deadline=None)
@given(
    stores=st.lists(ENTRIES, min_size=1, max_size=3),
    # A run's entries are distinct (a row is one product). Two equal probe entries have
    # the same matches, whose order among themselves then depends on where the blocks
    # are cut: the join is sorted by (key, row, other, other row), which ties there.
    probes=st.lists(st.tuples(KEYS, ROWS), max_size=60, unique=True),
    cuts=st.lists(KEYS, max_size=4),
    block=st.integers(1, 5),
    stride=st.integers(1, 4),
)
def test_common_keys_split_by_key_range_equals_whole(
    stores: list[list[tuple[int, int]]],
    probes: list[tuple[int, int]],
    cuts: list[int],
    block: int,
    stride: int,
) -> None:
    """Joining key ranges that cover the key space, one after the other, finds exactly
    what one whole join finds (in the same order): the store's duplicate check may split
    it among processes."""
    with scratch() as d:
        for i, store in enumerate(stores):
            write_run(d / f"s{i}.run", store).close()
        with write_run(d / "p.run", probes) as probe:
            others = [KeyRun.open(d / f"s{i}.run", fence_stride=stride) for i in range(len(stores))]
            try:

                def flat(matches: Iterator[Any]) -> list[tuple[int, ...]]:
                    return [
                        (int(k), int(r), int(o), int(orow))
                        for m in matches
                        for k, r, o, orow in zip(m.keys, m.rows, m.other, m.other_rows, strict=True)
                    ]

                whole = flat(common_keys(probe, others, block_rows=block))
                bounds = [0, *sorted(set(cuts)), None]
                split = []
                for low, high in itertools.pairwise(bounds):
                    if high is not None and high <= low:
                        continue
                    found = flat(common_keys(probe, others, block_rows=block, low=low, high=high))
                    assert all(low <= k and (high is None or k < high) for k, *_ in found)
                    split += found
                assert split == whole
                for parts in (1, 2, 3, 5):
                    threaded = common_keys_split(probe, others, parts=parts, block_rows=block)
                    assert flat(threaded) == whole
            finally:
                for other in others:
                    other.close()


def test_common_keys_split_stops_its_threads_and_passes_their_errors_on(workdir: Path) -> None:
    """A reader that stops early stops the threads (each is held a few blocks ahead); a
    run that fails to read in a thread raises in the reader."""
    import threading

    entries = [(k, k) for k in range(0, 40_000, 2)]
    probe = write_run(workdir / "p.run", entries)
    store = write_run(workdir / "s.run", entries)
    before = threading.active_count()
    matches = common_keys_split(probe, [store], parts=3, block_rows=100, ahead=1)
    assert len(next(matches)) >= 100
    assert threading.active_count() == before + 3
    matches.close()
    assert threading.active_count() == before
    with open(workdir / "s.run", "r+b") as fh:  # cut short after it was opened
        fh.truncate(keyindex.HEADER_SIZE + 4 * len(entries))
    with pytest.raises(StoreCorruptError, match="shorter"):
        list(common_keys_split(probe, [store], parts=3, block_rows=100))
    assert threading.active_count() == before
    probe.close()
    store.close()


@settings(max_examples=100, deadline=None)
@given(entries=ENTRIES, memory=st.integers(1, 12), adds=st.integers(1, 5))
def test_spill_sorter_equals_sorting(
    entries: list[tuple[int, int]], memory: int, adds: int
) -> None:
    with scratch() as d:
        with SpillSorter(d, RunKind.TOKEN, memory_rows=memory) as sorter:
            keys, rows = arrays(entries)
            for piece in np.array_split(np.arange(len(entries)), adds):
                sorter.add(keys[piece], rows[piece])
            assert sorter.count == len(entries)
            expected_spills = len(entries) // memory if len(entries) > memory else 0
            assert len(sorter.spills) >= expected_spills
            with sorter.finish(d / "out.run") as run:
                assert run.kind == RunKind.TOKEN
                assert contents(run) == sorted(entries)
        assert leftovers(d) == ["out.run"]  # spills removed


@pytest.mark.parametrize("kernel", MERGE_KERNELS)
@settings(max_examples=150, deadline=None)
@given(
    parts=st.lists(ENTRIES, min_size=1, max_size=12),
    offsets=st.lists(st.integers(0, 1000), min_size=12, max_size=12),
    memory=st.integers(1, 20),
    fan_in=st.integers(2, 13),
)
def test_merge_runs_equals_sorted_concatenation(
    kernel: str, parts: list[list[tuple[int, int]]], offsets: list[int], memory: int, fan_in: int
) -> None:
    # Up to fan_in runs are merged at once; more go through levels of scratch runs,
    # which are removed.
    parts = [[(k, min(r, U32 - 1000)) for k, r in part] for part in parts]
    offsets = offsets[: len(parts)]
    with scratch() as d, merge_kernel(kernel):
        runs = [write_run(d / f"in{i}.run", part) for i, part in enumerate(parts)]
        with merge_runs(
            runs, d / "out.run", row_offsets=offsets, memory_rows=memory, fan_in=fan_in
        ) as merged:
            expected = sorted(
                (k, r + o) for part, o in zip(parts, offsets, strict=True) for k, r in part
            )
            assert contents(merged) == expected
            merged.check()
        for run in runs:
            run.close()
        assert sorted(p.name for p in d.iterdir()) == sorted(
            ["out.run", *(f"in{i}.run" for i in range(len(parts)))]
        )


def test_a_merge_in_levels_that_fails_leaves_no_scratch(workdir: Path) -> None:
    runs = [write_run(workdir / f"in{i}.run", [(i, U32 - 1)]) for i in range(5)]
    offsets = [0, 0, 0, 0, 2]  # the last run's row passes 2^32 - 1: found in a later group
    with pytest.raises(ValueError, match="2\\^32"):
        merge_runs(runs, workdir / "m.run", row_offsets=offsets, fan_in=2)
    for run in runs:
        run.close()
    assert sorted(p.name for p in workdir.iterdir()) == [f"in{i}.run" for i in range(5)]
    with pytest.raises(ValueError, match="two runs"):
        merge_runs(runs, workdir / "m.run", fan_in=1)


@settings(max_examples=120, deadline=None)
@given(entries=ENTRIES, block=BLOCK)
def test_equal_keys_equals_counting(entries: list[tuple[int, int]], block: int) -> None:
    counts = collections.Counter(k for k, _ in entries)
    expected = sorted((k, r) for k, r in entries if counts[k] >= 2)
    with scratch() as d, write_run(d / "r.run", entries) as run:
        blocks = list(equal_keys(run, block_rows=block))
        got = [(int(k), int(r)) for b in blocks for k, r in zip(b.keys, b.rows, strict=True)]
        assert got == expected
        # whole groups per block, unless a group is longer than a block
        for b in blocks:
            assert len(b.keys) > 0
            for key in {int(k) for k in b.keys}:
                in_block = int((b.keys == key).sum())
                assert in_block == counts[key] or counts[key] > block


@settings(max_examples=120, deadline=None)
@given(probe=ENTRIES, others=st.lists(ENTRIES, max_size=4), block=BLOCK)
def test_common_keys_equals_dict_join(
    probe: list[tuple[int, int]], others: list[list[tuple[int, int]]], block: int
) -> None:
    expected = sorted(
        (k, r, j, r2)
        for j, other in enumerate(others)
        for k, r in probe
        for k2, r2 in other
        if k == k2
    )
    with scratch() as d, write_run(d / "p.run", probe) as run:
        other_runs = [write_run(d / f"o{j}.run", other) for j, other in enumerate(others)]
        got = []
        for matches in common_keys(run, other_runs, block_rows=block):
            assert len(matches) > 0
            block_matches = list(
                zip(
                    matches.keys.tolist(),
                    matches.rows.tolist(),
                    matches.other.tolist(),
                    matches.other_rows.tolist(),
                    strict=True,
                )
            )
            assert block_matches == sorted(block_matches)
            got += block_matches
        assert sorted(got) == expected
        assert [m[:2] for m in got] == sorted(m[:2] for m in got)
        for other_run in other_runs:
            other_run.close()


def test_common_keys_skips_with_fences(workdir: Path) -> None:
    """A few probe keys against a big run: the matches are found, and the others are not
    read front to back (the fences skip the gaps)."""
    rng = np.random.default_rng(3)
    big_keys = np.sort(rng.integers(0, U64, size=200_000, dtype=np.uint64))
    with RunWriter(workdir / "big.run", RunKind.KEY, count=len(big_keys)) as writer:
        writer.append(big_keys, np.arange(len(big_keys), dtype=np.uint32))
    picks = np.sort(rng.choice(len(big_keys), size=5, replace=False))
    probe = write_run(workdir / "p.run", [(int(big_keys[i]), 0) for i in picks])
    big = KeyRun.open(workdir / "big.run", fence_stride=512)
    reads: dict[str, int] = {"keys": 0, "rows": 0}
    read_keys, read_rows = big.read_keys, big.read_rows

    def counting_keys(start: int, stop: int) -> Any:
        keys = read_keys(start, stop)
        reads["keys"] += len(keys)
        return keys

    def counting_rows(start: int, stop: int) -> Any:
        rows = read_rows(start, stop)
        reads["rows"] += len(rows)
        return rows

    big.read_keys = counting_keys  # type: ignore[method-assign]
    big.read_rows = counting_rows  # type: ignore[method-assign]
    found = [m for m in common_keys(probe, [big], block_rows=1000)]
    assert sorted(int(r) for m in found for r in m.other_rows) == picks.tolist()
    assert 0 < reads["keys"] < 20_000  # 5 windows of a few blocks, not 200,000 entries
    assert 0 < reads["rows"] <= 5  # the rows of the matches alone


@settings(max_examples=80, deadline=None)
@given(parts=st.lists(ENTRIES, max_size=5), probes=st.lists(KEYS, max_size=20))
def test_key_index_equals_dict(parts: list[list[tuple[int, int]]], probes: list[int]) -> None:
    by_key = collections.defaultdict(list)
    for part in parts:
        for k, r in part:
            by_key[k].append(r)
    probes += [k for part in parts for k, _ in part[:3]]
    with scratch() as d:
        paths = []
        for i, part in enumerate(parts):
            write_run(d / f"{i}.run", part).close()
            paths.append(d / f"{i}.run")
        with KeyIndex.open(paths, kind=RunKind.KEY) as index:
            assert index.count == sum(len(p) for p in parts)
            for key in probes:
                assert index.find(key).tolist() == sorted(by_key.get(key, []))
            positions, rows = index.find_many(probes)
            expected = sorted((i, r) for i, k in enumerate(probes) for r in by_key.get(k, []))
            assert list(zip(positions.tolist(), rows.tolist(), strict=True)) == expected


def test_big_random_run_against_numpy(workdir: Path) -> None:
    """A larger run through the fast paths: sort, lookups and find_many against numpy."""
    rng = np.random.default_rng(11)
    keys = rng.integers(0, U64, size=300_000, dtype=np.uint64)
    keys[:1000] = keys[1000:2000]  # some duplicates
    rows = rng.permutation(len(keys)).astype(np.uint32)
    with SpillSorter(workdir, RunKind.KEY, memory_rows=70_000) as sorter:
        sorter.add(keys, rows)
        assert len(sorter.spills) == 4
        run = sorter.finish(workdir / "r.run")
    order = np.lexsort((rows, keys))
    got = list(run.blocks(65_536))
    assert np.array_equal(np.concatenate([b.keys for b in got]), keys[order])
    assert np.array_equal(np.concatenate([b.rows for b in got]), rows[order])
    probes = np.concatenate(
        [keys[rng.integers(0, len(keys), 5000)], rng.integers(0, U64, 5000, dtype=np.uint64)]
    )
    positions, found = run.find_many(probes, chunk_rows=3000)
    index = collections.defaultdict(list)
    for k, r in zip(keys.tolist(), rows.tolist(), strict=True):
        index[k].append(r)
    expected = sorted((i, r) for i, k in enumerate(probes.tolist()) for r in index.get(k, []))
    assert list(zip(positions.tolist(), found.tolist(), strict=True)) == expected
    for i in range(0, 10_000, 97):
        assert run.find(probes[i]).tolist() == sorted(index.get(int(probes[i]), []))
    run.close()


# --------------------------------------------------------------------------- bounded memory


def _traced_peak(work: Any) -> int:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        work()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def test_sorter_and_merge_memory_is_bounded(workdir: Path) -> None:
    """3M entries (36 MB of data) through a 100k-entry budget: the sorter spills, and the
    peak of traced allocations (numpy's included) stays near the budget, not the data."""
    total, budget = 3_000_000, 100_000
    made: list[KeyRun] = []

    def work() -> None:
        rng = np.random.default_rng(5)
        with SpillSorter(workdir, RunKind.KEY, memory_rows=budget) as sorter:
            for start in range(0, total, 50_000):
                sorter.add(
                    rng.integers(0, U64, 50_000, dtype=np.uint64),
                    np.arange(start, start + 50_000, dtype=np.uint32),
                )
            assert len(sorter.spills) == total // budget
            made.append(sorter.finish(workdir / "sorted.run", memory_rows=budget))
        dupes = sum(len(b.keys) for b in equal_keys(made[0], block_rows=budget))
        assert dupes == 0
        matches = sum(len(m) for m in common_keys(made[0], [made[0]], block_rows=budget))
        assert matches == total

    peak = _traced_peak(work)
    assert made[0].count == total
    made[0].check()
    # 14.5 MB measured; the entries alone are 36 MB
    assert peak < 20e6, f"peak {peak / 1e6:.1f} MB for a {budget}-entry budget"
    assert leftovers(workdir) == ["sorted.run"]
    made[0].close()


# --------------------------------------------------------------------------- damaged files


def _good_file(workdir: Path) -> bytes:
    return spec_run(1, [(5, 1), (5, 2), (9, 0), (U64, 3)])


def test_every_truncation_is_reported(workdir: Path) -> None:
    data = _good_file(workdir)
    path = workdir / "t.run"
    for length in range(len(data)):
        path.write_bytes(data[:length])
        with pytest.raises(StoreCorruptError) as info:
            KeyRun.open(path)
        assert str(path) in str(info.value) and str(info.value).startswith("damaged: ")
    path.write_bytes(data + b"\0")
    with pytest.raises(StoreCorruptError, match="bytes where its header says"):
        KeyRun.open(path)


@pytest.mark.parametrize(
    ("offset", "value", "reason"),
    [
        (0, b"X", "bad magic"),
        (7, b"2", "bad magic"),
        (8, struct.pack("<Q", 5), "header says"),
        (8, struct.pack("<Q", 3), "header says"),
        (8, struct.pack("<Q", U64), "header says"),
        (8, struct.pack("<Q", 2**60), "header says"),
        (16, struct.pack("<I", 0), "unknown index run kind"),
        (16, struct.pack("<I", 3), "unknown index run kind"),
        (16, struct.pack("<I", 2**32 - 1), "unknown index run kind"),
        (20, b"\x01", "padding"),
        (63, b"\x80", "padding"),
    ],
)
def test_header_damage_is_reported(workdir: Path, offset: int, value: bytes, reason: str) -> None:
    data = bytearray(_good_file(workdir))
    data[offset : offset + len(value)] = value
    path = workdir / "h.run"
    path.write_bytes(bytes(data))
    with pytest.raises(StoreCorruptError, match=reason) as info:
        KeyRun.open(path)
    assert str(path) in str(info.value)


def test_wrong_kind_missing_and_unreadable_files(workdir: Path) -> None:
    path = workdir / "k.run"
    path.write_bytes(_good_file(workdir))
    with pytest.raises(StoreCorruptError, match="kind 1, not 2"):
        KeyRun.open(path, kind=RunKind.TOKEN)
    with pytest.raises(StoreCorruptError, match="missing") as info:
        KeyRun.open(workdir / "nope.run")
    assert "nope.run" in str(info.value)
    with pytest.raises(StoreCorruptError):
        KeyRun.open(workdir)  # a directory
    with pytest.raises(StoreCorruptError, match="missing"):
        KeyIndex.open([path, workdir / "gone.run"])


def test_check_finds_disorder_and_rows_out_of_range(workdir: Path) -> None:
    data = bytearray(_good_file(workdir))
    keys_at = 64
    data[keys_at + 8 * 2 : keys_at + 8 * 3] = struct.pack("<Q", 4)  # 5, 5, 4, U64
    path = workdir / "d.run"
    path.write_bytes(bytes(data))
    with (
        KeyRun.open(path) as run,
        pytest.raises(StoreCorruptError, match=r"entry 2 .* out of order"),
    ):
        run.check()
    good = workdir / "g.run"
    good.write_bytes(_good_file(workdir))
    with KeyRun.open(good) as run:
        run.check(rows_below=4)
        with pytest.raises(StoreCorruptError, match="points at row 3"):
            run.check(rows_below=3)
    rows_at = 64 + 8 * 4
    data = bytearray(_good_file(workdir))
    data[rows_at : rows_at + 4] = struct.pack("<I", 7)  # (5, 7) before (5, 2)
    path.write_bytes(bytes(data))
    with KeyRun.open(path) as run, pytest.raises(StoreCorruptError, match="entry 1 "):
        run.check()


def test_lookups_and_joins_on_keys_out_of_order_name_the_damage(workdir: Path) -> None:
    """A flipped bit that puts keys out of order (found by the test below): a lookup or
    a join whose search ends before it starts raises StoreCorruptError naming the run,
    not numpy's ValueError."""
    entries = [(0, 0)] * 7 + [(1, 0)] * 6 + [(5, 0)]
    raw = bytearray(spec_run(1, entries))
    raw[1155 // 8] ^= 1 << (1155 % 8)  # a bit of the keys: one of them now sorts late
    path = workdir / "x.run"
    path.write_bytes(bytes(raw))
    probe = write_run(workdir / "p.run", [(0, 0), (5, 0)])
    with KeyRun.open(path) as run:
        with pytest.raises(StoreCorruptError, match="out of order") as found:
            run.find_many([0, U64, 5])
        assert str(path) in str(found.value)
        with pytest.raises(StoreCorruptError, match="out of order"):
            list(common_keys(probe, [run], block_rows=64))
    probe.close()


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_hostile_files_never_crash(data: st.DataObject) -> None:
    """Truncated, extended, bit-flipped or random files: opening, looking up, streaming
    and checking either work or raise StoreCorruptError, nothing else."""
    entries = data.draw(ENTRIES)
    raw = bytearray(spec_run(data.draw(st.sampled_from([1, 2])), entries))
    mutation = data.draw(st.sampled_from(["flip", "truncate", "extend", "random", "count"]))
    if mutation == "flip" and raw:
        bit = data.draw(st.integers(0, 8 * len(raw) - 1))
        raw[bit // 8] ^= 1 << (bit % 8)
    elif mutation == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    elif mutation == "extend":
        raw += data.draw(st.binary(min_size=1, max_size=30))
    elif mutation == "random":
        raw = bytearray(data.draw(st.binary(max_size=200)))
    else:
        raw[8:16] = struct.pack("<Q", data.draw(st.integers(0, U64)))
    with scratch() as d:
        path = d / "x.run"
        path.write_bytes(bytes(raw))
        try:
            run = KeyRun.open(path)
        except StoreCorruptError as exc:
            assert str(path) in str(exc)
            return
        with run:
            assert len(raw) == 64 + 12 * run.count
            try:  # keys out of order may be noticed by a lookup: damage, named
                for key, _ in entries[:5]:
                    run.find(key)
                run.find_many([0, U64, 5])
                list(equal_keys(run, block_rows=2))
                list(common_keys(run, [run], block_rows=2))
            except StoreCorruptError as exc:
                assert str(path) in str(exc)
            try:
                run.check()
            except StoreCorruptError as exc:
                assert str(path) in str(exc)


# --------------------------------------------------------------------------- writers


def test_writer_is_atomic_and_strict(workdir: Path) -> None:
    with pytest.raises(RuntimeError), RunWriter(workdir / "a.run", RunKind.KEY) as writer:
        writer.append([1, 2], [0, 0])
        raise RuntimeError("killed half-way")
    assert leftovers(workdir) == []
    with (
        pytest.raises(ValueError, match="2 entries written, 3 announced"),
        RunWriter(workdir / "b.run", RunKind.KEY, count=3) as writer,
    ):
        writer.append([1, 2], [0, 0])
        with pytest.raises(ValueError, match="order"):
            writer.append([1], [5])  # goes back
        with pytest.raises(ValueError, match="order"):
            writer.append([3, 3], [2, 1])  # tie out of row order
        with pytest.raises(ValueError, match="announced"):
            writer.append([3, 4], [0, 0])
        with pytest.raises(ValueError):
            writer.append([3], [-1])
        with pytest.raises(ValueError):
            writer.append([3], [2**32])
        with pytest.raises(ValueError):
            writer.append([-3], [1])
        with pytest.raises(ValueError):
            writer.append([3.5], [1])
    # closing with too few entries discards the file
    assert leftovers(workdir) == []
    with RunWriter(workdir / "c.run", RunKind.KEY, count=2) as writer:
        writer.append(np.array([U64, U64], dtype=np.uint64), np.array([0, 1], dtype=np.int64))
    assert (workdir / "c.run").read_bytes() == spec_run(1, [(U64, 0), (U64, 1)])
    assert oct((workdir / "c.run").stat().st_mode & 0o777) == "0o644"
    assert leftovers(workdir, "c.run") == []


def test_writer_replaces_an_existing_run_whole(workdir: Path) -> None:
    path = workdir / "r.run"
    write_run(path, [(1, 1)]).close()
    old = path.read_bytes()
    with pytest.raises(ValueError), RunWriter(path, RunKind.KEY, count=5) as writer:
        writer.append([7], [7])
    assert path.read_bytes() == old
    write_run(path, [(2, 2), (3, 3)]).close()
    assert path.read_bytes() == spec_run(1, [(2, 2), (3, 3)])


def test_write_failures_are_output_errors(workdir: Path) -> None:
    with pytest.raises(OutputError) as info:
        RunWriter(workdir / "missing" / "r.run", RunKind.KEY)
    assert "missing" in str(info.value)


def test_file_size_limit_is_an_output_error(workdir: Path) -> None:
    """A real EFBIG (RLIMIT_FSIZE) while writing: OutputError, nothing left behind."""
    script = f"""
import resource, signal, sys
import numpy as np
sys.path.insert(0, {str(Path(__file__).parent)!r})
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
from provmint.errors import OutputError
from provmint.store.keyindex import RunKind, SpillSorter
try:
    with SpillSorter({str(workdir)!r}, RunKind.KEY, memory_rows=5000) as s:
        s.add(np.arange(50_000, dtype=np.uint64), np.zeros(50_000, dtype=np.uint32))
        s.finish({str(workdir / "out.run")!r})
except OutputError as exc:
    print("OutputError", exc)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("OutputError file too large writing") and "out.run" in done.stdout
    assert leftovers(workdir) == []


def test_merge_rejects_bad_inputs(workdir: Path) -> None:
    a = write_run(workdir / "a.run", [(1, U32 - 1)])
    b = write_run(workdir / "b.run", [(1, 0)], RunKind.TOKEN)
    with pytest.raises(ValueError, match="kinds"):
        merge_runs([a, b], workdir / "m.run")
    with pytest.raises(ValueError, match="2\\^32"):
        merge_runs([a], workdir / "m.run", row_offsets=[2])
    with pytest.raises(ValueError):
        merge_runs([a], workdir / "m.run", row_offsets=[1, 2])
    with pytest.raises(ValueError):
        merge_runs([], workdir / "m.run")
    with pytest.raises(ValueError):
        KeyIndex([a, b])
    assert leftovers(workdir, "a.run", "b.run") == []


def test_lookups_validate_keys_and_closed_runs(workdir: Path) -> None:
    run = write_run(workdir / "a.run", [(U64, 1), (0, 2)])
    assert run.find(U64).tolist() == [1] and run.find(np.uint64(0)).tolist() == [2]
    for bad in (-1, 2**64):
        with pytest.raises(ValueError):
            run.find(bad)
    with pytest.raises(ValueError):
        run.find_many([-1, 3])
    positions, rows = run.find_many([U64, 2**64 - 2, U64])
    assert positions.tolist() == [0, 2] and rows.tolist() == [1, 1]
    held = run.find(U64)
    run.close()
    run.close()
    assert held.tolist() == [1]  # results are copies, valid after close
    with pytest.raises(ValueError, match="closed"):
        run.find(0)


# --------------------------------------------------------------------------- merge policy


def simulate(batches: list[int], factor: float) -> tuple[int, int]:
    """Grow a store batch by batch with plan_merge: (most runs at once, entries rewritten)."""
    sizes: list[int] = []
    most = rewritten = 0
    for new in batches:
        absorbed = plan_merge(sizes, new, factor=factor)
        if absorbed:
            merged = new + sum(sizes[len(sizes) - absorbed :])
            del sizes[len(sizes) - absorbed :]
            rewritten += merged
            sizes.append(merged)
        else:
            sizes.append(new)
        assert all(a > factor * b for a, b in itertools.pairwise(sizes))
        most = max(most, len(sizes))
    return most, rewritten


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    factor=st.sampled_from([1.5, 2.0, 4.0]),
    shape=st.sampled_from(["uniform", "lognormal", "ones", "growing"]),
)
def test_plan_merge_keeps_runs_logarithmic(seed: int, factor: float, shape: str) -> None:
    rng = random.Random(seed)
    make = {
        "uniform": lambda i: rng.randint(1, 1_000_000),
        "lognormal": lambda i: max(1, int(rng.lognormvariate(10, 3))),
        "ones": lambda i: 1,
        "growing": lambda i: i + 1,
    }[shape]
    batches = [make(i) for i in range(2000)]
    total = sum(batches)
    most, rewritten = simulate(batches, factor)
    assert most <= math.log(total, factor) + 2
    assert rewritten <= 3 * total * math.log(total, 1 + 1 / factor)


def test_plan_merge_examples() -> None:
    assert plan_merge([], 5) == 0
    assert plan_merge([10], 5) == 1  # 10 <= 2 * 5
    assert plan_merge([11], 5) == 0
    assert plan_merge([100, 10, 5], 5) == 2  # 5 <= 10, 10 <= 20, 100 > 40
    assert plan_merge([100, 10, 5], 5, factor=4) == 2  # 100 > 4 * 20
    assert plan_merge([80, 10, 5], 5, factor=4) == 3
    assert plan_merge([7, 0, 0], 0) == 2
    with pytest.raises(ValueError):
        plan_merge([1], -1)
    with pytest.raises(ValueError):
        plan_merge([1], 1, factor=0)


if __name__ == "__main__":
    sys.stdout.write(json.dumps(build_vectors(), indent=1) + "\n")


def test_index_merges_read_each_input_once(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Folding a batch's run into the store's index reads each input whole once and the
    new run's header and one fence: no lookup fences are read first (a 64M-entry run's
    fences are half a gigabyte of keys read for nothing)."""
    from provmint.store.lookup import IndexMerge, merge_index_run

    rng = np.random.default_rng(9)
    stored = [(int(k), i) for i, k in enumerate(rng.integers(0, U64, 3000, dtype=np.uint64))]
    batch = [(int(k), i) for i, k in enumerate(rng.integers(0, U64, 700, dtype=np.uint64))]
    write_run(workdir / "stored.run", stored).close()
    write_run(workdir / "batch.run", batch).close()
    read = count_index_reads(monkeypatch)
    merge = IndexMerge(
        RunKind.KEY, (str(workdir / "stored.run"),), str(workdir / "batch.run"), 3000,
        str(workdir / "new.run"),
    )  # fmt: skip
    merge_index_run(merge)
    header, fence = keyindex.HEADER_SIZE, 8
    assert read == {
        "stored.run": header + fence + 12 * 3000,
        "batch.run": header + fence + 12 * 700,
        "new.run": header + fence,
    }
    with KeyRun.open(workdir / "new.run") as new:
        assert contents(new, 500) == sorted(stored + [(k, 3000 + r) for k, r in batch])
