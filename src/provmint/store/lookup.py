"""Finding one product among all of the store's, at the same cost at any store size.

The store's *index* is a few sorted runs per kind (:mod:`provmint.store.keyindex`) under
``<store>/index/``: kind ``KEY`` maps the (gtin, serial) hash of every product to its
*global row*, kind ``TOKEN`` the first 8 bytes of its token. Global rows number the
products of all batches in catalog order (a batch's rows start where the previous
batch's end), so a row turns into (batch, leaf) by one search over the batches. The
catalog lists the live runs (``index_runs``): a commit writes the new runs first, under
new names, and replaces the list in the batch's transaction; superseded runs are removed
afterwards (they are derived files, rebuilt by ``store repair`` at any time).

A product's record comes from its batch's record parts (:mod:`provmint.store.records`):
one read and one small decompression. Every hit is confirmed against the record, as a
64-bit hash or an 8-byte prefix can collide. Batches minted before record parts existed
are read from their Parquet parts.
"""

from __future__ import annotations

import bisect
import itertools
import os
import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from provmint.canonical import decode_record
from provmint.errors import StoreCorruptError, StoreError
from provmint.store import PART_COLUMNS
from provmint.store.keyindex import (
    FENCE_STRIDE,
    SCAN_FENCE_STRIDE,
    KeyBlock,
    KeyIndex,
    KeyRun,
    PointIndex,
    RunKind,
    merge_runs,
    plan_merge,
)

if TYPE_CHECKING:
    import duckdb

    from provmint.store import BatchInfo, Store
    from provmint.store.view import CatalogView

__all__ = [
    "INDEX_SCHEMA",
    "IndexMerge",
    "IndexUpdate",
    "ProductFinder",
    "RunEntry",
    "StoredProduct",
    "batch_entries",
    "index_runs",
    "merge_index_run",
    "token_prefix",
    "update_index",
]

INDEX_SCHEMA = """
CREATE TABLE IF NOT EXISTS index_runs (
    kind INTEGER NOT NULL, position INTEGER NOT NULL, name VARCHAR NOT NULL,
    entries BIGINT NOT NULL
);
"""
MAX_ROWS = 1 << 32
"""Global rows are u32: a store holds at most this many products."""
_RUN_NAME = re.compile(r"^(key|token)-[0-9a-f]{16}\.run$")
_OPEN_PARTS = 256


def token_prefix(token: bytes) -> int:
    """The index key of a raw token: its first 8 bytes as a little-endian u64."""
    return int.from_bytes(token[:8], "little")


@dataclass(frozen=True, slots=True)
class RunEntry:
    """One live run of the store's index, as the catalog lists it."""

    kind: RunKind
    name: str
    entries: int


def index_runs(con: duckdb.DuckDBPyConnection) -> dict[RunKind, list[RunEntry]]:
    """The live runs of each kind, oldest (largest) first."""
    from provmint.store import damaged

    out: dict[RunKind, list[RunEntry]] = {kind: [] for kind in RunKind}
    for number, name, entries in con.execute(
        "SELECT kind, name, entries FROM index_runs ORDER BY kind, position"
    ).fetchall():
        try:
            kind = RunKind(number)
        except ValueError:
            what = f"run {name} has an unknown kind ({number})"
            raise StoreCorruptError(damaged(what, "the catalog's table index_runs")) from None
        out[kind].append(RunEntry(kind, name, int(entries)))
    return out


@dataclass(frozen=True, slots=True)
class StoredProduct:
    """A product as stored: its batch, leaf, committed record and raw token."""

    batch: BatchInfo
    leaf: int
    record: dict[str, str]
    token: bytes


class _RowIndex(Protocol):
    """What the finder needs of an index: :class:`KeyIndex` (fences in RAM, for a
    service's many lookups) or :class:`PointIndex` (nothing read up front, for one)."""

    @property
    def count(self) -> int: ...

    def candidates(self, key: int) -> Iterator[int]: ...

    def close(self) -> None: ...


class ProductFinder:
    """Looks products up through the store's index. Open it under the store lock
    (:meth:`open` from a :class:`~provmint.store.view.CatalogView`, :meth:`load` from a
    catalog connection); it holds the runs open, so it stays valid after the lock is
    released.
    """

    def __init__(
        self, store: Store, batches: Sequence[BatchInfo], runs: Mapping[RunKind, _RowIndex]
    ) -> None:
        self.store = store
        self.batches = list(batches)
        self.runs = dict(runs)
        self.bases = [0, *itertools.accumulate(b.products for b in self.batches)]
        self._parts: OrderedDict[tuple[str, int], Any] = OrderedDict()
        self._parts_lock = threading.Lock()

    @classmethod
    def load(
        cls, store: Store, con: duckdb.DuckDBPyConnection, *, streamed: bool = False
    ) -> ProductFinder:
        """The finder over the committed batches and live runs (hold the store lock).

        ``streamed``: for a caller that streams the runs (merge-joins) and locates rows
        rather than looking keys up, as a mint's duplicate check does. The runs then keep
        one fence a streaming block (:data:`~provmint.store.keyindex.SCAN_FENCE_STRIDE`),
        each read on its own: opening makes one small read per 262,144 products, where
        the lookup fences read every key of the index (16 GB at a billion products).
        Lookups through such a finder are right but search 262,144 keys each."""
        stride = SCAN_FENCE_STRIDE if streamed else FENCE_STRIDE
        return cls._open(store, store.batches(con), index_runs(con), point=False, stride=stride)

    @classmethod
    def open(
        cls,
        store: Store,
        view: CatalogView,
        *,
        point: bool = False,
        reuse: ProductFinder | None = None,
    ) -> ProductFinder:
        """The finder over a view of the catalog. ``point``: for a process that looks up
        a few products (:class:`PointIndex`: nothing read up front, no numpy).

        ``reuse``: the finder this one replaces, over an earlier view of the same store
        (a service's reload): the runs both views list are taken over from it, open, so
        that a reload reads the fences of the new runs only, not of the whole index
        (16 GB at a billion products, on every commit or anchor). ``reuse`` still answers
        as before; close it when no lookup uses it any more (it then closes only what it
        did not hand over)."""
        return cls._open(
            store, view.batches, view.runs, point=point, stride=FENCE_STRIDE, reuse=reuse
        )

    @classmethod
    def _open(
        cls,
        store: Store,
        batches: Sequence[BatchInfo],
        listed: Mapping[RunKind, Sequence[RunEntry]],
        *,
        point: bool,
        stride: int,
        reuse: ProductFinder | None = None,
    ) -> ProductFinder:
        if batches and not listed[RunKind.KEY]:
            raise StoreCorruptError(
                f"store {store.root} has no lookup index",
                hint=f"build it with: provmint store repair --store {store.root}",
            )
        runs: dict[RunKind, _RowIndex] = {}
        try:
            for kind, entries in listed.items():
                paths = [store.index_dir / e.name for e in entries]
                earlier = reuse.runs.get(kind) if reuse is not None else None
                runs[kind] = (
                    PointIndex.open(paths, kind=kind)
                    if point
                    else KeyIndex.open(
                        paths,
                        kind=kind,
                        fence_stride=stride,
                        reuse=earlier if isinstance(earlier, KeyIndex) else None,
                    )
                )
            expected = sum(b.products for b in batches)
            for kind, index in runs.items():
                if index.count != expected:
                    raise StoreCorruptError(
                        f"the {kind.name.lower()} index of store {store.root} holds "
                        f"{index.count} entries for {expected} products",
                        hint=f"rebuild it with: provmint store repair --store {store.root}",
                    )
        except BaseException:
            for index in runs.values():
                index.close()
            raise
        if reuse is not None:
            for kind, index in runs.items():
                earlier = reuse.runs.get(kind)
                if isinstance(index, KeyIndex) and isinstance(earlier, KeyIndex):
                    index.take_over(earlier)
        return cls(store, batches, runs)

    @property
    def products(self) -> int:
        """Products in the store."""
        return self.bases[-1]

    def close(self) -> None:
        """Release the runs and the open record parts."""
        for index in self.runs.values():
            index.close()
        for part in self._parts.values():
            part.close()
        self._parts.clear()

    def __enter__(self) -> ProductFinder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def locate(self, row: int) -> tuple[BatchInfo, int]:
        """(batch, leaf) of a global row."""
        i = bisect.bisect_right(self.bases, row) - 1
        if not 0 <= i < len(self.batches):
            raise StoreCorruptError(f"the index of store {self.store.root} names row {row}")
        return self.batches[i], row - self.bases[i]

    def by_key(self, gtin14: str, serial: str) -> StoredProduct | None:
        """The product with this identity, if the store has it."""
        from provmint.keyhash import key_hash

        # A (gtin, serial) is in the store once (a mint refuses duplicates), and so is a
        # token: the first confirmed row is the answer, and the runs after it are not read.
        for row in self.runs[RunKind.KEY].candidates(key_hash(gtin14, serial)):
            product = self.product(*self.locate(row))
            if product.record.get("gtin") == gtin14 and product.record.get("serial") == serial:
                return product
        return None

    def by_token(self, token: bytes) -> StoredProduct | None:
        """The product whose token is ``token`` (16 raw bytes), if any."""
        from provmint.tokens import tokens_equal

        for row in self.runs[RunKind.TOKEN].candidates(token_prefix(token)):
            product = self.product(*self.locate(row))
            if tokens_equal(product.token, token):
                return product
        return None

    def product(self, batch: BatchInfo, leaf: int) -> StoredProduct:
        """The stored product at ``leaf`` of ``batch``."""
        if not 0 <= leaf < batch.products:
            raise StoreCorruptError(f"batch {batch.batch_id} has no product #{leaf}")
        part_index, offset = divmod(leaf, batch.part_rows)
        part = self._record_part(batch, part_index)
        if part is None:
            return self._from_parquet(batch, leaf)
        record, token = part.get(offset)
        try:
            fields = decode_record(record)
        except ValueError as exc:
            raise StoreCorruptError(
                f"damaged: record of product {leaf}, {part.path}: {exc}"
            ) from exc
        return StoredProduct(batch, leaf, fields, token)

    def _record_part(self, batch: BatchInfo, index: int) -> Any:
        from provmint.store.records import RecordPart

        key = (batch.batch_id, index)
        with self._parts_lock:
            part = self._parts.get(key)
            if part is not None:
                self._parts.move_to_end(key)
                return part
            path = self.store.record_part_path(batch, index)
            if not path.parent.is_dir():
                return None  # a batch from before record parts
            part = RecordPart.open(path)
            self._parts[key] = part
            while len(self._parts) > _OPEN_PARTS:
                self._parts.popitem(last=False)[1].close()
            return part

    def _from_parquet(self, batch: BatchInfo, leaf: int) -> StoredProduct:
        from provmint.tokens import parse_token

        row = self.store.read_products(batch, [leaf]).to_pylist()[0]
        record = {k: v for k, v in row.items() if k not in PART_COLUMNS and v is not None}
        return StoredProduct(batch, leaf, record, parse_token(row["token"]))


def batch_entries(
    store: Store, con: duckdb.DuckDBPyConnection, batch: BatchInfo
) -> dict[RunKind, KeyBlock]:
    """Every entry of the store's live index that points into ``batch``, its rows turned
    into the batch's leaf indexes: the audit's view of the index. Each live run is read
    whole and checked on the way (its size as listed, entries in order, rows inside the
    store), so damage anywhere in a run the batch's lookups go through is found; it is
    StoreCorruptError naming the run."""
    from provmint.store import damaged

    batches = store.batches(con)
    base = 0
    for other in batches:
        if other.batch_id == batch.batch_id:
            break
        base += other.products
    total = sum(b.products for b in batches)
    found: dict[RunKind, KeyBlock] = {}
    for kind, entries in index_runs(con).items():
        pieces: list[KeyBlock] = []
        for entry in entries:
            # Streamed, not looked up in: no lookup fences (they would read the keys
            # once more before the whole run is read and checked).
            path = store.index_dir / entry.name
            with KeyRun.open(path, kind=kind, fence_stride=SCAN_FENCE_STRIDE) as run:
                if run.count != entry.entries:
                    raise StoreCorruptError(
                        damaged(f"{run.count} entries, the catalog lists {entry.entries}", run.path)
                    )
                pieces.append(run.checked_entries(base, base + batch.products, rows_below=total))
        found[kind] = _leaf_entries(pieces, base)
    return found


def _leaf_entries(pieces: list[KeyBlock], base: int) -> KeyBlock:
    import numpy as np

    keys = np.concatenate([p.keys for p in pieces]) if pieces else np.zeros(0, np.uint64)
    rows = np.concatenate([p.rows for p in pieces]) if pieces else np.zeros(0, np.uint32)
    return KeyBlock(keys, (rows - np.uint32(base)).astype(np.uint32))


# -- writing ----------------------------------------------------------------------------


@dataclass
class IndexUpdate:
    """The store's index after a batch is added: written before the commit, listed by
    it (:meth:`record`), then tidied (:meth:`finish`) or undone (:meth:`discard`)."""

    runs: list[RunEntry]
    added: list[Path] = field(default_factory=list)
    superseded: list[Path] = field(default_factory=list)

    def record(self, con: duckdb.DuckDBPyConnection) -> None:
        """Replace the catalog's list of runs (inside the commit's transaction)."""
        con.execute("DELETE FROM index_runs")
        positions: dict[RunKind, int] = {}
        for entry in self.runs:
            position = positions.get(entry.kind, 0)
            positions[entry.kind] = position + 1
            con.execute(
                "INSERT INTO index_runs VALUES (?, ?, ?, ?)",
                [int(entry.kind), position, entry.name, entry.entries],
            )

    def finish(self) -> None:
        """Remove the runs the new ones replace (after the commit)."""
        for path in self.superseded:
            path.unlink(missing_ok=True)

    def discard(self) -> None:
        """Remove the runs written for a commit that did not happen."""
        for path in self.added:
            path.unlink(missing_ok=True)


def new_run_path(directory: Path, kind: RunKind) -> Path:
    """A fresh run file name under ``directory``."""
    return directory / f"{kind.name.lower()}-{secrets.token_hex(8)}.run"


def update_index(
    directory: Path,
    current: dict[RunKind, list[RunEntry]],
    batch_runs: dict[RunKind, KeyRun],
    base: int,
    *,
    run_all: Callable[[Callable[[IndexMerge], str], list[IndexMerge]], list[str]] | None = None,
) -> IndexUpdate:
    """Fold a new batch's runs (rows = its leaf indexes) into the store's index, whose
    live runs are ``current``; the batch's rows start at global row ``base``. Trailing
    runs are merged with the new one as :func:`plan_merge` says, so the number of runs
    stays logarithmic in the store's size. ``run_all(merge_index_run, merges)`` does the
    merges (one a kind, independent: a minting run gives them to its worker processes,
    side by side); by default, here, one after the other."""
    update = IndexUpdate(runs=[])
    directory.mkdir(exist_ok=True)
    merges: list[IndexMerge] = []
    for kind in RunKind:
        entries = current[kind]
        new = batch_runs[kind]
        if base + new.count > MAX_ROWS:
            raise StoreError(
                f"a store holds at most {MAX_ROWS:,} products; this batch would make "
                f"{base + new.count:,}"
            )
        absorbed = plan_merge([e.entries for e in entries], new.count)
        kept, merged = entries[: len(entries) - absorbed], entries[len(entries) - absorbed :]
        path = new_run_path(directory, kind)
        update.added.append(path)
        merges.append(
            IndexMerge(
                kind, tuple(str(directory / e.name) for e in merged), str(new.path), base, str(path)
            )
        )
        update.runs += [
            *kept,
            RunEntry(kind, path.name, sum(e.entries for e in merged) + new.count),
        ]
        update.superseded += [directory / e.name for e in merged]
    try:
        if run_all is None:
            for merge in merges:
                merge_index_run(merge)
        else:
            run_all(merge_index_run, merges)
    except BaseException:
        update.discard()
        raise
    return update


@dataclass(frozen=True, slots=True)
class IndexMerge:
    """One kind's step of :func:`update_index`: the store's runs it absorbs, the batch's
    run (its rows offset by ``base``), and the new run file (all paths, to be sent to
    another process)."""

    kind: RunKind
    absorbed: tuple[str, ...]
    batch_run: str
    base: int
    target: str


def merge_index_run(merge: IndexMerge) -> str:
    """Write ``merge.target`` (durably): the absorbed runs and the batch's run merged."""
    stride = SCAN_FENCE_STRIDE  # streamed, never looked up in
    inputs = [KeyRun.open(Path(p), kind=merge.kind, fence_stride=stride) for p in merge.absorbed]
    try:
        new = KeyRun.open(Path(merge.batch_run), kind=merge.kind, fence_stride=stride)
        try:
            offsets = [0] * len(inputs) + [merge.base]
            merge_runs([*inputs, new], merge.target, row_offsets=offsets).close()
        finally:
            new.close()
    finally:
        for run in inputs:
            run.close()
    return merge.target


def stray_runs(directory: Path, listed: set[str]) -> Iterator[Path]:
    """Run files in ``directory`` the catalog does not list (what an interrupted commit
    or a replaced run left)."""
    if directory.is_dir():
        for entry in directory.iterdir():
            if _RUN_NAME.match(entry.name) and entry.name not in listed:
                yield entry


def runs_of_columns(
    directory: Path,
    columns: Callable[[], Iterator[tuple[Any, Any, Any]]],
) -> dict[RunKind, KeyRun]:
    """Sorted runs (rows = leaf indexes) of one batch from its (gtin, serial, token
    prefix) column blocks, in leaf order; spills to ``directory`` past the memory budget."""
    import numpy as np

    from provmint.ingest import key_hashes
    from provmint.store.keyindex import SpillSorter

    directory.mkdir(parents=True, exist_ok=True)
    with (
        SpillSorter(directory, RunKind.KEY) as keys,
        SpillSorter(directory, RunKind.TOKEN) as tokens,
    ):
        start = 0
        for gtin, serial, prefixes in columns():
            n = len(gtin)
            rows = np.arange(start, start + n, dtype=np.uint32)
            keys.add(key_hashes(gtin, serial), rows)
            tokens.add(prefixes, rows)
            start += n
        return {
            RunKind.KEY: keys.finish(new_run_path(directory, RunKind.KEY)),
            RunKind.TOKEN: tokens.finish(new_run_path(directory, RunKind.TOKEN)),
        }


def rebuild_index(
    store: Store,
    batches: Sequence[BatchInfo],
    runs_of: Callable[[BatchInfo, Path], dict[RunKind, KeyRun]],
    progress: Callable[[int, int], None] | None = None,
) -> IndexUpdate:
    """The whole index built again from every batch, in catalog order (``runs_of`` gives
    a batch's runs, written into the given scratch directory)."""
    update = IndexUpdate(runs=[])
    current: dict[RunKind, list[RunEntry]] = {kind: [] for kind in RunKind}
    scratch = store.index_dir / f".rebuild-{os.getpid()}"
    base = 0
    try:
        for done, batch in enumerate(batches, start=1):
            batch_runs = runs_of(batch, scratch)
            try:
                step = update_index(store.index_dir, current, batch_runs, base)
            finally:
                for run in batch_runs.values():
                    run.close()
                    run.path.unlink(missing_ok=True)
            for path in step.superseded:
                if path in update.added:  # an intermediate of this rebuild
                    path.unlink(missing_ok=True)
                    update.added.remove(path)
                else:
                    update.superseded.append(path)
            update.added += step.added
            current = {kind: [e for e in step.runs if e.kind == kind] for kind in RunKind}
            base += batch.products
            if progress is not None:
                progress(done, len(batches))
    except BaseException:
        update.discard()
        raise
    finally:
        if scratch.exists():
            for leftover in scratch.iterdir():
                leftover.unlink()
            scratch.rmdir()
    update.runs = [e for kind in RunKind for e in current[kind]]
    return update


def column_blocks(store: Store, batch: BatchInfo) -> Iterator[tuple[Any, Any, Any]]:
    """(gtin, serial, token prefix) of a batch's products part by part, from its Parquet
    parts (the checked reader, which also checks every token's form)."""
    import base64

    import numpy as np
    import pyarrow.compute as pc

    for index in range(batch.parts):
        table = store.read_part(batch, index, ["gtin", "serial", "token"])
        n = table.num_rows
        # The first 12 of the 22 characters are the first 9 bytes: no padding needed.
        head = "".join(pc.utf8_slice_codeunits(table.column("token"), 0, 12).to_pylist())
        raw = np.frombuffer(base64.urlsafe_b64decode(head), dtype=np.uint8).reshape(n, 9)
        prefixes = np.ascontiguousarray(raw[:, :8]).view("<u8").reshape(n).astype(np.uint64)
        yield table.column("gtin"), table.column("serial"), prefixes
