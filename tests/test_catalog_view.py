"""The readers' catalog view and its snapshot (``catalog.view.json``), and the point index.

The snapshot is a cache: it must equal the catalog whenever it is used, be ignored (and
rebuilt) when it is stale or damaged, never be needed for correctness, and keep
one-shot lookups free of DuckDB, numpy and pyarrow.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import EXAMPLE_CSV
from helpers import count_index_reads, example_store
from hypothesis import given, settings
from hypothesis import strategies as st

from provmint.batch import mint_batch
from provmint.config import Settings
from provmint.products import export_proof, find_product, read_view
from provmint.store import Store
from provmint.store.keyindex import KeyIndex, PointIndex, RunKind, RunWriter
from provmint.store.view import SNAPSHOT_NAME, load_snapshot, read_catalog_view


def _catalog_view(cfg: Settings) -> Any:
    store = Store.open(cfg.store)
    with store.connect(write=False) as con:
        return read_catalog_view(store, con)


def _first_product(cfg: Settings) -> tuple[str, str]:
    store = Store.open(cfg.store)
    view = load_snapshot(store) or _catalog_view(cfg)
    table = store.read_part(view.batches[0], 0, ["gtin", "serial"])
    return table.column("gtin")[0].as_py(), table.column("serial")[0].as_py()


def _second_batch(cfg: Settings, tmp_path: Path) -> None:
    text = EXAMPLE_CSV.read_text().splitlines()
    rows = [text[0]]
    for line in text[1:]:
        gtin, serial, rest = line.split(",", 2)
        rows.append(f"{gtin},{serial}Z,{rest}")  # the same products, other serials
    other = tmp_path / "more.csv"
    other.write_text("\n".join(rows) + "\n")
    mint_batch(other, settings=cfg)


def test_a_commit_leaves_a_snapshot_equal_to_the_catalog(tmp_path: Path) -> None:
    with example_store(tmp_path) as (cfg, _):
        store = Store.open(cfg.store)
        assert (store.root / SNAPSHOT_NAME).is_file()
        assert load_snapshot(store) == _catalog_view(cfg)
        _second_batch(cfg, tmp_path)
        snapshot = load_snapshot(store)
        assert snapshot is not None and len(snapshot.batches) == 2
        assert snapshot == _catalog_view(cfg)


def test_a_stale_snapshot_is_never_used(tmp_path: Path) -> None:
    with example_store(tmp_path) as (cfg, _):
        store = Store.open(cfg.store)
        old = (store.root / SNAPSHOT_NAME).read_bytes()
        _second_batch(cfg, tmp_path)
        (store.root / SNAPSHOT_NAME).write_bytes(old)  # a snapshot from before the commit
        assert load_snapshot(store) is None
        # readers see the second batch all the same, and rewrite the snapshot
        assert len(read_view(cfg).batches) == 2
        assert load_snapshot(store) == _catalog_view(cfg)


def test_a_write_ahead_log_beside_the_catalog_disables_the_snapshot(tmp_path: Path) -> None:
    with example_store(tmp_path) as (cfg, _):
        store = Store.open(cfg.store)
        assert load_snapshot(store) is not None
        store.catalog_wal_path.write_bytes(b"")
        try:
            assert load_snapshot(store) is None
        finally:
            store.catalog_wal_path.unlink()


def _damaged(data: bytes, how: int, at: int) -> bytes:
    if how == 0:  # one bit flipped
        i = at % len(data)
        return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :]
    if how == 1:  # cut short
        return data[: at % len(data)]
    return data + b"x" * (1 + at % 7)  # trailing garbage


@settings(max_examples=60, deadline=None)
@given(how=st.integers(0, 2), at=st.integers(0, 1 << 20))
def test_a_damaged_snapshot_is_ignored_and_answers_stay_right(
    tmp_path_factory: pytest.TempPathFactory, how: int, at: int
) -> None:
    base = tmp_path_factory.mktemp("view")
    with example_store(base) as (cfg, _):
        store = Store.open(cfg.store)
        path = store.root / SNAPSHOT_NAME
        good = path.read_bytes()
        bad = _damaged(good, how, at)
        path.write_bytes(bad)
        if bad != good:
            assert load_snapshot(store) is None
        gtin, serial = _first_product(cfg)
        assert find_product(cfg, gtin=gtin, serial=serial).record["serial"] == serial
        assert load_snapshot(store) == _catalog_view(cfg)  # rewritten by that reader


def test_the_snapshot_is_not_needed(tmp_path: Path) -> None:
    with example_store(tmp_path) as (cfg, _):
        store = Store.open(cfg.store)
        gtin, serial = _first_product(cfg)
        before = export_proof(cfg, gtin=gtin, serial=serial)
        (store.root / SNAPSHOT_NAME).unlink()
        assert export_proof(cfg, gtin=gtin, serial=serial) == before


def test_a_snapshot_that_cannot_be_written_is_not_needed(tmp_path: Path) -> None:
    """Where the snapshot cannot be written (here a directory stands in its place, which
    fails the same way for root), readers and writers go on without it."""
    with example_store(tmp_path) as (cfg, _):
        store = Store.open(cfg.store)
        (store.root / SNAPSHOT_NAME).unlink()
        (store.root / SNAPSHOT_NAME).mkdir()
        gtin, serial = _first_product(cfg)
        assert find_product(cfg, gtin=gtin, serial=serial).record["gtin"] == gtin
        _second_batch(cfg, tmp_path)
        assert len(read_view(cfg).batches) == 2
        assert (store.root / SNAPSHOT_NAME).is_dir()
        assert not [p for p in store.root.iterdir() if p.name.endswith(".tmp")]


def test_a_snapshot_copied_with_a_replica_is_used_there(tmp_path: Path) -> None:
    """Copied together (any order), the two files still match: the digest is of the
    catalog's bytes, not of its inode or times."""
    with example_store(tmp_path) as (cfg, _):
        replica = tmp_path / "replica"
        shutil.copytree(cfg.store, replica)
        assert load_snapshot(Store.open(replica)) == _catalog_view(cfg)


def test_one_shot_lookups_import_neither_duckdb_nor_numpy_nor_pyarrow(tmp_path: Path) -> None:
    with example_store(tmp_path) as (cfg, _):
        gtin, serial = _first_product(cfg)
        heavy = ("duckdb", "numpy", "pyarrow")
        code = "\n".join(
            [
                "import sys, json",
                "from pathlib import Path",
                "from provmint.config import Settings",
                "from provmint.products import export_proof, find_product",
                f"store, key_file = Path({str(cfg.store)!r}), Path({str(cfg.key_file)!r})",
                "cfg = Settings(store=store, key_file=key_file)",
                f"find_product(cfg, gtin={gtin!r}, serial={serial!r})",
                f"export_proof(cfg, gtin={gtin!r}, serial={serial!r})",
                f"print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))",
            ]
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
        assert json.loads(out) == []


# -- the point index ----------------------------------------------------------------------


def _write_run(path: Path, entries: list[tuple[int, int]]) -> Path:
    with RunWriter(path, RunKind.KEY) as writer:
        if entries:
            keys = np.array([k for k, _ in entries], dtype=np.uint64)
            rows = np.array([r for _, r in entries], dtype=np.uint32)
            writer.append(keys, rows)
    return path


_KEYS = st.one_of(st.integers(0, 40), st.integers(0, (1 << 64) - 1))


@settings(max_examples=80, deadline=None)
@given(
    runs=st.lists(
        st.lists(st.tuples(_KEYS, st.integers(0, (1 << 32) - 1)), max_size=60),
        min_size=1,
        max_size=3,
    ),
    probes=st.lists(_KEYS, min_size=1, max_size=20),
)
def test_point_index_finds_what_the_key_index_finds(
    tmp_path_factory: pytest.TempPathFactory,
    runs: list[list[tuple[int, int]]],
    probes: list[int],
) -> None:
    base = tmp_path_factory.mktemp("runs")
    paths = [_write_run(base / f"r{i}.run", sorted(set(r))) for i, r in enumerate(runs)]
    every = [k for r in runs for k, _ in r]
    with (
        KeyIndex.open(paths, kind=RunKind.KEY, fence_stride=4) as fenced,
        PointIndex.open(paths, kind=RunKind.KEY) as point,
    ):
        assert point.count == fenced.count
        for key in probes + every[:20]:
            expected = fenced.find(key).tolist()
            assert sorted(point.candidates(key)) == expected
            assert sorted(fenced.candidates(key)) == expected


def test_a_streamed_finder_reads_only_fences_and_finds_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The finder a mint opens (``streamed``) reads each run's header and one key per
    fence, not the index's keys (its cost at open does not grow with the store), and it
    finds every product as the lookup finder does; the mint's catalog opens that one."""
    from provmint.batch import _Catalog
    from provmint.store import keyindex
    from provmint.store.keyindex import SCAN_FENCE_STRIDE
    from provmint.store.lookup import ProductFinder

    with example_store(tmp_path) as (cfg, _):
        _second_batch(cfg, tmp_path)
        store = Store.open(cfg.store)
        read = count_index_reads(monkeypatch)
        with store.connect(write=False) as con:
            runs = [p for p in store.index_dir.iterdir() if p.suffix == ".run"]
            assert len(runs) >= 2
            with ProductFinder.load(store, con, streamed=True) as streamed:
                assert sorted(read) == sorted(p.name for p in runs)
                assert set(read.values()) == {keyindex.HEADER_SIZE + 8}  # one fence a run
                read.clear()
                with ProductFinder.load(store, con) as default:
                    assert sum(read.values()) > keyindex.HEADER_SIZE * len(runs) + 8 * 18
                    assert streamed.products == default.products == 18
                    for batch in streamed.batches:
                        table = store.read_part(batch, 0, ["gtin", "serial"])
                        gtins = table.column("gtin").to_pylist()
                        serials = table.column("serial").to_pylist()
                        for gtin, serial in zip(gtins, serials, strict=True):
                            found = streamed.by_key(gtin, serial)
                            assert found is not None and found == default.by_key(gtin, serial)
                            assert streamed.by_token(found.token) == default.by_token(found.token)
        with store.writing_later(timeout=5, purpose="test") as connection:
            catalog = _Catalog.open(store, connection)
            try:
                for index in catalog.finder.runs.values():
                    assert {run.fence_stride for run in index.runs} == {SCAN_FENCE_STRIDE}
            finally:
                catalog.finder.close()


def _small_batch(cfg: Settings, tmp_path: Path, rows: int) -> None:
    """A second batch of the example's first ``rows`` products under other serials: small
    enough that the index keeps the first batch's runs beside its own."""
    text = EXAMPLE_CSV.read_text().splitlines()
    lines = [text[0]]
    for line in text[1 : 1 + rows]:
        gtin, serial, rest = line.split(",", 2)
        lines.append(f"{gtin},{serial}S,{rest}")
    small = tmp_path / "small.csv"
    small.write_text("\n".join(lines) + "\n")
    mint_batch(small, settings=cfg)


def _all_found(store: Store, finder: Any, batches: Any) -> bool:
    for batch in batches:
        table = store.read_part(batch, 0, ["gtin", "serial"])
        gtins, serials = table.column("gtin").to_pylist(), table.column("serial").to_pylist()
        for gtin, serial in zip(gtins, serials, strict=True):
            found = finder.by_key(gtin, serial)
            if found is None or finder.by_token(found.token) != found:
                return False
    return True


def test_a_reload_takes_over_the_open_runs_and_reads_only_new_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A service's reload (``reuse``): the runs both views list are the same open runs,
    only the new runs are read, the replaced finder still answers until closed and then
    closes only what it kept; a reload with nothing new reads nothing."""
    from provmint.store.lookup import ProductFinder

    with example_store(tmp_path) as (cfg, _):
        store = Store.open(cfg.store)
        first_view = _catalog_view(cfg)
        first = ProductFinder.open(store, first_view)
        _small_batch(cfg, tmp_path, 4)
        view = _catalog_view(cfg)
        read = count_index_reads(monkeypatch)
        second = ProductFinder.open(store, view, reuse=first)
        old_names = {e.name for runs in first_view.runs.values() for e in runs}
        new_names = {e.name for runs in view.runs.values() for e in runs}
        assert old_names & new_names and new_names - old_names  # kept runs, and new ones
        assert set(read) == new_names - old_names
        for kind, index in second.runs.items():
            before = {str(r.path): r for r in first.runs[kind].runs}
            for run in index.runs:
                if run.path.name in old_names:
                    assert run is before[str(run.path)]
        assert _all_found(store, first, first_view.batches)  # the replaced one answers
        first.close()
        assert _all_found(store, second, view.batches)  # its shared runs stay open
        read.clear()
        third = ProductFinder.open(store, view, reuse=second)  # an anchor: no new run
        assert read == {}
        second.close()
        assert _all_found(store, third, view.batches)
        runs = [run for index in third.runs.values() for run in index.runs]
        third.close()
        assert all(run.closed for run in runs)


def test_a_failed_reload_leaves_the_finder_it_replaces_whole(tmp_path: Path) -> None:
    from provmint.errors import StoreCorruptError
    from provmint.store.lookup import ProductFinder

    with example_store(tmp_path) as (cfg, _):
        store = Store.open(cfg.store)
        first_view = _catalog_view(cfg)
        first = ProductFinder.open(store, first_view)
        _small_batch(cfg, tmp_path, 4)
        view = _catalog_view(cfg)
        old_names = {e.name for runs in first_view.runs.values() for e in runs}
        new = sorted(e.name for runs in view.runs.values() for e in runs if e.name not in old_names)
        (store.index_dir / new[-1]).unlink()  # a new run lost: the reload fails
        with pytest.raises(StoreCorruptError):
            ProductFinder.open(store, view, reuse=first)
        assert _all_found(store, first, first_view.batches)
        runs = [run for index in first.runs.values() for run in index.runs]
        first.close()
        assert all(run.closed for run in runs)


def test_the_audits_index_read_reads_each_run_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``batch_entries`` (the audit's read of the index) reads each live run whole once,
    with no lookup fences before (they read the keys once more)."""
    from provmint.store import keyindex
    from provmint.store.lookup import batch_entries

    with example_store(tmp_path) as (cfg, _):
        _second_batch(cfg, tmp_path)
        store = Store.open(cfg.store)
        read = count_index_reads(monkeypatch)
        with store.connect(write=False) as con:
            batch = store.batches(con)[1]
            found = batch_entries(store, con, batch)
            listed = [e for entries in read_catalog_view(store, con).runs.values() for e in entries]
        assert {kind: len(block.keys) for kind, block in found.items()} == {
            keyindex.RunKind.KEY: 9,
            keyindex.RunKind.TOKEN: 9,
        }
        fence = 8  # the one key of the scan fence
        assert read == {e.name: keyindex.HEADER_SIZE + fence + 12 * e.entries for e in listed}


def _products(store: Store, batches: Any) -> list[tuple[str, str]]:
    out = []
    for batch in batches:
        table = store.read_part(batch, 0, ["gtin", "serial"])
        out += zip(
            table.column("gtin").to_pylist(), table.column("serial").to_pylist(), strict=True
        )
    return out


def test_a_service_answers_before_the_fences_are_read(tmp_path: Path) -> None:
    """A serve worker's index answers at once through the map (nothing read up front),
    and a thread then puts a finder with fences in its place; every product is found
    before and after."""
    from provmint.server import ProductIndex
    from provmint.store.keyindex import KeyIndex, PointIndex, RunKind

    with example_store(tmp_path) as (cfg, _):
        store = Store.open(cfg.store)
        index = ProductIndex(cfg)
        assert index.finder is not None
        products = _products(store, index.finder.batches)
        assert all(index.find(g, s) is not None for g, s in products)  # either finder
        assert index.fenced.wait(30)
        (first,) = index._retired  # the first finder, replaced (closed at the next reload)
        assert isinstance(first.runs[RunKind.KEY], PointIndex)
        assert all(first.by_key(g, s) is not None for g, s in products)
        assert index.finder is not None and isinstance(index.finder.runs[RunKind.KEY], KeyIndex)
        assert all(index.find(g, s) is not None for g, s in products)


def test_a_request_never_waits_for_a_reload_under_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the first fences are still read (a slow disk, made here by a delay), a
    request's check for a changed catalog does not wait: it goes on with the finder it
    has, and the change is loaded at a later check."""
    import os
    import threading

    from provmint.server import ProductIndex
    from provmint.store.lookup import ProductFinder

    opened = ProductFinder.open.__func__  # type: ignore[attr-defined]
    release = threading.Event()

    def slow_open(cls: Any, store: Any, view: Any, **kw: Any) -> Any:
        if not kw.get("point"):
            release.wait(30)
        return opened(cls, store, view, **kw)

    with example_store(tmp_path) as (cfg, _):
        monkeypatch.setattr(ProductFinder, "open", classmethod(slow_open))
        index = ProductIndex(cfg)
        store = Store.open(cfg.store)
        os.utime(store.catalog_path, (1.0, 1.0))  # the catalog changes meanwhile
        index._checked = 0.0
        started = time.monotonic()
        index.refresh()  # the fences' thread holds the reload: not waited for
        assert time.monotonic() - started < 5
        assert not index.fenced.is_set() and index._stamp != store.catalog_stamp()
        release.set()
        assert index.fenced.wait(30)
        index._checked = 0.0
        index.refresh()
        assert index._stamp == store.catalog_stamp()
        assert index.finder is not None
        assert all(index.find(g, s) is not None for g, s in _products(store, index.finder.batches))
