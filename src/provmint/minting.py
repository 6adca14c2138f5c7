"""How a batch is minted, with memory that does not grow with the batch.

The minting process reads the CSV as a stream of aligned chunks
(:func:`provmint.ingest.open_products`) and hands each to a worker
(:func:`provmint.engine.run_chunk`), which validates it and, while no row of the file has
been refused, mints it straight into the staging directory: Parquet part, record part,
its subtree's levels, its index runs. Nothing of the batch's size stays in this process:
per chunk only its root (32 bytes) and its first record number.

Duplicates are found once every chunk is in: the chunks' (gtin, serial) key runs are
merged into one sorted run (an external sort of 64-bit hashes), equal neighbours are
candidates inside the file and a merge-join with the store's index gives candidates
against the store; every candidate is confirmed on the real (gtin, serial) values.

A file with refused rows is refused whole (nothing is written to the store), unless
``--skip-invalid``: then a second pass mints the rows that passed, read again from the
file (its SHA-256 must not have changed). Either way the result is identical for any
number of workers and any block size.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import (
    FIRST_COMPLETED,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from provmint.errors import InputFileError, ProvmintError

if TYPE_CHECKING:
    import numpy as np

    from provmint.engine import ChunkOutcome, ChunkTask, KeyRows
    from provmint.ingest import ProductReader, RawChunk, RowProblem
    from provmint.store import Store
    from provmint.store.keyindex import KeyMatches, KeyRun, RunKind
    from provmint.store.lookup import ProductFinder

__all__ = ["MAX_KEPT_PROBLEMS", "MintPass", "Problems", "Runner", "StagedBatch"]

MAX_KEPT_PROBLEMS = 1_000_000
"""Problems kept in full for the report (every refused record is still known, as a bit)."""

Progress = Callable[[str, int, int], None]
_T = TypeVar("_T")


# -- problems --------------------------------------------------------------------------


class Problems:
    """Every reason rows were refused: which records (one bit each, whatever their
    number) and, for the report, the problems of the first :data:`MAX_KEPT_PROBLEMS`
    records in file order."""

    def __init__(self, keep: int = MAX_KEPT_PROBLEMS) -> None:
        import numpy as np

        self.keep = keep
        self.count = 0
        self._kept: list[RowProblem] = []
        self._refused = np.zeros(1 << 16, dtype=bool)

    def add(self, problems: tuple[RowProblem, ...] | list[RowProblem]) -> None:
        """Take problems, in any order."""
        import numpy as np

        if not problems:
            return
        self.count += len(problems)
        top = max(p.record for p in problems)
        if top >= len(self._refused):
            grown = np.zeros(max(top + 1, 2 * len(self._refused)), dtype=bool)
            grown[: len(self._refused)] = self._refused
            self._refused = grown
        self._refused[[p.record for p in problems]] = True
        self._kept += problems
        if len(self._kept) > 2 * self.keep:
            self._kept = self.sorted()[: self.keep]

    def __bool__(self) -> bool:
        return self.count > 0

    @property
    def rows(self) -> int:
        """Distinct records refused."""
        return int(self._refused.sum())

    def refused(self, records: np.ndarray) -> np.ndarray:
        """Which of ``records`` were refused (a boolean mask)."""
        import numpy as np

        inside = records < len(self._refused)
        out = np.zeros(len(records), dtype=bool)
        out[inside] = self._refused[records[inside]]
        return out

    def sorted(self) -> list[RowProblem]:
        """The problems kept, by record and column."""
        return sorted(self._kept, key=lambda p: (p.record, p.column))[: self.keep]


# -- running chunks ----------------------------------------------------------------------


def _init_worker(secret: bytes, parent_pid: int) -> None:
    """Pool initializer: :func:`provmint.engine.init_worker`, named here so that starting
    a fork server's pool does not import the engine into the minting process (the fork
    server imports it, in parallel with the minting process's own import)."""
    from provmint import engine

    engine.init_worker(secret, parent_pid)


_WORKER_MODULES = ["provmint.engine", "provmint.minting", "pyarrow.parquet", "pyarrow.compute"]
"""Imported once by the fork server, or by each forked worker as it starts, not on its
first chunk (the minting process itself never imports pyarrow.compute or pyarrow.parquet)."""


def _nothing() -> None:
    """The default ``meanwhile`` of :meth:`Runner.run`: no work of this process's own."""


class Runner:
    """Runs chunk tasks in a process pool, or in this process for small files, with a
    bounded number in flight.

    The workers fork from this process when it runs no other thread (as on the command
    line), at once and with the engine it has imported. Otherwise they fork from a
    fork server, which is started in a background thread and imports the engine while
    this process opens the file."""

    def __init__(self, workers: int, secret: bytes, use_pool: bool) -> None:
        self.secret = secret
        self.workers = workers if use_pool else 1
        self.pool: ProcessPoolExecutor | None = None
        self._starting: threading.Thread | None = None
        self._error: BaseException | None = None
        self._stopping: threading.Thread | None = None
        if use_pool and threading.active_count() == 1:
            from provmint import engine  # noqa: F401  (imported before the fork: the workers have it)
            from provmint.pool import fork_pool

            self._start(fork_pool)
        elif use_pool:
            from provmint.pool import start_pool

            self._starting = threading.Thread(target=self._start, args=(start_pool,), daemon=True)
            self._starting.start()

    def _start(self, start: Callable[..., ProcessPoolExecutor]) -> None:
        try:
            self.pool = start(
                self.workers,
                preload=_WORKER_MODULES,
                initializer=_init_worker,
                initargs=(self.secret, os.getpid()),
            )
        except BaseException as exc:  # reported when the pool is first needed
            self._error = exc

    def _ready(self) -> ProcessPoolExecutor | None:
        if self._starting is not None:
            self._starting.join()
            self._starting = None
        if self._error is not None:
            if not isinstance(self._error, Exception):  # an interrupt stays one
                raise self._error
            raise ProvmintError(f"cannot start worker processes: {self._error}") from self._error
        return self.pool

    def call(self, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(*args)`` in a worker process, or in this process without a pool."""
        pool = self._ready()
        return fn(*args) if pool is None else pool.submit(fn, *args).result()

    def call_all(self, fn: Callable[[Any], _T], items: list[Any]) -> list[_T]:
        """``fn(item)`` for every item, side by side in the worker processes (one after
        the other in this process without a pool). All have ended when it returns or
        raises (the first failure), so that none still writes a file meanwhile."""
        pool = self._ready()
        if pool is None:
            return [fn(item) for item in items]
        futures = [pool.submit(fn, item) for item in items]
        wait(futures)
        return [future.result() for future in futures]

    def run(
        self,
        tasks: Iterator[ChunkTask],
        on_done: Callable[[ChunkOutcome], None],
        meanwhile: Callable[[], object] = _nothing,
    ) -> None:
        """Run every task; ``on_done`` sees each outcome as it completes. ``meanwhile`` is
        called once, in this thread, as soon as the workers have all the tasks they can
        take (before waiting for any): work of this process's own that the first chunks
        need not wait for."""
        from provmint import engine

        tasks = self._read_ahead(tasks)
        pool = self._ready()
        if pool is None:
            meanwhile()
            for task in tasks:
                on_done(engine.run_chunk(replace(task, secret=self.secret)))
            return
        pending: set[Future[ChunkOutcome]] = set()
        try:
            for task in tasks:
                pending.add(pool.submit(engine.run_chunk, task))
                if len(pending) >= 2 * self.workers:
                    meanwhile()
                    meanwhile = _nothing
                while len(pending) >= 2 * self.workers:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        on_done(future.result())
            meanwhile()
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    on_done(future.result())
        except BaseException:
            # No chunk is left running when this raises: the caller removes the staging
            # directory next, and a worker still writing into it could leave files behind.
            for future in pending:
                future.cancel()
            wait(pending)
            raise

    def _read_ahead(self, tasks: Iterator[ChunkTask]) -> Iterator[ChunkTask]:
        """While the workers still start, make the first tasks (read the file's first
        chunks): as many as will be in flight, so the workers find them ready."""
        starting = self._starting
        if starting is None or not starting.is_alive():
            return tasks
        early: list[ChunkTask] = []
        for task in tasks:
            early.append(task)
            if len(early) >= 2 * self.workers or not starting.is_alive():
                break
        return itertools.chain(early, tasks)

    def release(self) -> None:
        """No more tasks will come: the workers are stopped in a thread of this process,
        which waits for them to exit (each frees hundreds of MB) while this one goes on
        with what is left (a mint's commit); :meth:`close` waits for that thread."""
        pool, self.pool = self._ready(), None
        if pool is not None:
            self._stopping = threading.Thread(
                target=pool.shutdown, kwargs={"wait": True, "cancel_futures": True}
            )
            self._stopping.start()

    def close(self) -> None:
        """Stop the workers (also when minting failed half-way, or they never started)."""
        if self._starting is not None:
            self._starting.join()
            self._starting = None
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        if self._stopping is not None:
            self._stopping.join()
            self._stopping = None


# -- one pass over the file --------------------------------------------------------------


class _Tail(NamedTuple):
    """The commit's work started when a pass ends (:meth:`StagedBatch.start_tail`)."""

    tree: Future[bytes]  # tree.bin written and synced; its root
    tokens: Future[KeyRun]  # the chunks' token runs merged


@dataclass
class MintPass:
    """What a pass over the file gave: chunk roots (in chunk order), rows minted, and
    whether every chunk was minted (no row refused)."""

    chunks: int = 0
    rows: int = 0
    roots: dict[int, bytes] = field(default_factory=dict)
    minted: bool = True
    first_records: list[int] = field(default_factory=list)

    @property
    def root_bytes(self) -> bytes:
        """The chunk roots, concatenated in chunk order."""
        return b"".join(self.roots[i] for i in range(self.chunks))


class StagedBatch:
    """A batch being written under ``staging/``: its directory, its working directory
    (chunk runs, identities, tree levels: removed before the commit) and its passes."""

    def __init__(self, store: Store, batch_id: str, runner: Runner, progress: Progress) -> None:
        from provmint.engine import CHUNK_ROWS
        from provmint.store.treefile import TreeSpill

        self.store = store
        self.batch_id = batch_id
        self.runner = runner
        self.progress = progress
        self.path = store.staging_path(batch_id)
        (self.path / "records").mkdir()
        self.work = self.path / "work"
        self.work.mkdir()
        self.spill = TreeSpill(
            self.work / "levels", CHUNK_ROWS.bit_length() - 1, self.path / "tree.bin"
        )
        self.spill.create()
        self._tail: _Tail | None = None
        self._syncer: ThreadPoolExecutor | None = None
        self._syncs: list[Future[None]] = []
        self._removal: Future[None] | None = None

    def task(self, chunk: RawChunk, start: int | None, key_rows: KeyRows) -> ChunkTask:
        """The worker's task for one chunk."""
        import numpy as np

        from provmint.engine import ChunkTask, chunk_files, write_rows

        part = f"part-{chunk.index:05d}"
        write_rows(chunk_files(self.work, chunk.index).rows, chunk.table)
        return ChunkTask(
            index=chunk.index,
            names=chunk.names,
            records=np.ascontiguousarray(chunk.records, dtype=np.int64).tobytes(),
            start=start,
            key_rows=key_rows,
            work=str(self.work),
            part_path=str(self.path / "products" / f"{part}.parquet"),
            records_path=str(self.path / "records" / f"{part}.rec"),
            level_paths=self.spill.paths,
        )

    def sync_later(self, index: int) -> None:
        """fsync chunk ``index``'s part files in a thread of this process (the workers
        leave them to it and go on): an fsync blocks, mostly waiting for the disk, and
        two workers waiting for theirs in turn left a core idle each time."""
        part = f"part-{index:05d}"
        # tree.bin too: the leaves written so far, so that little is left for the tail.
        paths = (
            self.path / "products" / f"{part}.parquet",
            self.path / "records" / f"{part}.rec",
            self.spill.tree,
        )
        self._syncs.append(self._file_thread().submit(_fsync_files, paths))

    def _file_thread(self) -> ThreadPoolExecutor:
        """The thread of this process that syncs and removes the batch's files."""
        if self._syncer is None:
            self._syncer = ThreadPoolExecutor(1, thread_name_prefix="provmint-sync")
        return self._syncer

    def synced(self) -> None:
        """Wait until every part file handed to :meth:`sync_later` is on disk (the first
        failure, such as a full disk, is raised)."""
        syncs, self._syncs = self._syncs, []
        try:
            for sync in syncs:
                sync.result()
        finally:
            for sync in syncs:
                sync.cancel()

    def first_pass(
        self,
        reader: ProductReader,
        problems: Problems,
        size: int,
        meanwhile: Callable[[], object] = _nothing,
    ) -> MintPass:
        """Validate every chunk and mint them while no row has been refused (``meanwhile``:
        see :meth:`Runner.run`)."""
        from provmint.engine import CHUNK_ROWS, KeyRows

        result = MintPass()
        lock = threading.Lock()

        def tasks() -> Iterator[ChunkTask]:
            for chunk in reader:
                with lock:
                    problems.add(chunk.problems)
                    clean = not problems
                result.chunks += 1
                if len(chunk.records):  # only the last chunk can be empty
                    result.first_records.append(int(chunk.records[0]))
                self.progress("mint", reader.bytes_read, size)
                if chunk.table.num_rows:
                    yield self.task(
                        chunk, chunk.index * CHUNK_ROWS if clean else None, KeyRows.RECORDS
                    )

        def done(outcome: ChunkOutcome) -> None:
            with lock:
                problems.add(outcome.problems)
                result.rows += outcome.rows
                if outcome.root is None:
                    result.minted = False
                else:
                    result.roots[outcome.index] = outcome.root
                    self.sync_later(outcome.index)

        self.runner.run(tasks(), done, meanwhile)
        result.minted = result.minted and not problems
        return result

    def second_pass(self, source: Path, problems: Problems, sha256: str, size: int) -> MintPass:
        """Mint the rows that passed, read again from ``source``, in aligned chunks."""
        from provmint.engine import CHUNK_ROWS, KeyRows
        from provmint.ingest import open_products

        result = MintPass()

        def tasks(reader: ProductReader) -> Iterator[ChunkTask]:
            for chunk in _realigned(reader, problems):
                result.chunks += 1
                self.progress("mint", reader.bytes_read, size)
                yield self.task(chunk, result.rows, KeyRows.LEAVES)
                result.rows += chunk.table.num_rows

        def done(outcome: ChunkOutcome) -> None:
            if outcome.root is None or outcome.problems:
                raise ProvmintError(
                    f"internal error: chunk {outcome.index} changed between two readings"
                )
            result.roots[outcome.index] = outcome.root
            self.sync_later(outcome.index)

        with open_products(source, chunk_rows=CHUNK_ROWS, parse_threads=False) as reader:
            self.runner.run(tasks(reader), done)
            if reader.sha256 != sha256:
                raise InputFileError(
                    source,
                    "changed while provmint was reading it (its SHA-256 is not the one first read)",
                    hint="leave the file alone until provmint is done with it, then run again",
                )
        return result

    # -- after a pass

    def merged_runs(self, result: MintPass, kind: RunKind) -> KeyRun:
        """Every chunk's run of ``kind`` merged into one (the chunk runs are removed): in
        a worker process, idle once the pass is done (the two kinds' merges, started
        from two threads of this one, then run side by side without sharing its GIL)."""
        from provmint.store.keyindex import SCAN_FENCE_STRIDE, KeyRun

        merged = self.runner.call(merge_chunk_runs, str(self.work), result.chunks, kind)
        # Streamed by the duplicate checks and the index update, never looked up in.
        return KeyRun.open(Path(merged), fence_stride=SCAN_FENCE_STRIDE)

    def assemble_tree(self, result: MintPass) -> bytes:
        """Write tree.bin from the spilled levels; returns the root."""
        return self.spill.assemble(result.rows, result.root_bytes)

    def start_tail(self, result: MintPass) -> None:
        """Start, in two threads, what the commit of a minted pass needs besides the
        duplicate check: tree.bin (mostly its fsync) and the merged token runs. They
        overlap with the check and with each other (the kernel's copy and fsync, and
        numpy, let go of the GIL); if the batch is refused, :meth:`discard` waits for
        them and throws them away."""
        from provmint.store.keyindex import RunKind

        starter = ThreadPoolExecutor(2, thread_name_prefix="provmint-tail")
        self._tail = _Tail(
            starter.submit(self.assemble_tree, result),
            starter.submit(self.merged_runs, result, RunKind.TOKEN),
        )
        starter.shutdown(wait=False)

    def merged_tokens(self, result: MintPass) -> KeyRun:
        """The merged token runs: from :meth:`start_tail` when it was started, else made
        now. Waits for no part file nor the tree: the index update may go on meanwhile."""
        from provmint.store.keyindex import RunKind

        if self._tail is not None:
            return self._tail.tokens.result()
        return self.merged_runs(result, RunKind.TOKEN)

    def tree_root(self, result: MintPass) -> bytes:
        """The tree's root, tree.bin and every part file on disk: from :meth:`start_tail`
        when it was started, else made now. The working files are no longer needed then:
        their removal starts in a thread (:meth:`finish_files` waits for it)."""
        self.synced()
        if self._tail is not None:
            found, self._tail = self._tail, None
            found.tokens.result()
            root = found.tree.result()
        else:
            root = self.assemble_tree(result)
        # Freeing their pages took about 10 ms of a 1M mint: meanwhile, the manifest.
        self._removal = self._file_thread().submit(shutil.rmtree, self.work)
        return root

    def finish_files(self) -> None:
        """Remove the working files (what stays is what the batch consists of)."""
        self.synced()
        removal, self._removal = self._removal, None
        if removal is not None:
            removal.result()
        else:
            shutil.rmtree(self.work)
        if self._syncer is not None:
            self._syncer.shutdown(wait=True)

    def discard(self) -> None:
        """Remove everything this run wrote (the batch was not committed)."""
        if self._tail is not None:  # wait for the threads before their files go
            found, self._tail = self._tail, None
            with contextlib.suppress(Exception):
                found.tree.result()
            with contextlib.suppress(Exception):
                found.tokens.result().close()
        with contextlib.suppress(Exception):
            self.synced()
        if self._syncer is not None:  # (and the working files' removal, if it started)
            self._syncer.shutdown(wait=True)
        shutil.rmtree(self.path, ignore_errors=True)


def merge_chunk_runs(work: str, chunks: int, kind: RunKind) -> str:
    """Merge the runs of ``kind`` that chunks ``0..chunks - 1`` left in ``work`` into one
    run file there, remove them, and return its path (run in a worker process)."""
    from provmint.engine import chunk_files
    from provmint.store.keyindex import SCAN_FENCE_STRIDE, KeyRun, RunKind, RunWriter, merge_runs

    paths = [
        getattr(chunk_files(work, i), "keys" if kind is RunKind.KEY else "tokens")
        for i in range(chunks)
    ]
    paths = [p for p in paths if p.exists()]
    target = Path(work) / f"{kind.name.lower()}.run"
    if not paths:
        with RunWriter(target, kind, count=0, durable=False):
            pass
        return str(target)
    runs = [KeyRun.open(p, kind=kind, fence_stride=SCAN_FENCE_STRIDE) for p in paths]
    try:
        merge_runs(runs, target, durable=False).close()
    finally:
        for run in runs:
            run.close()
            run.path.unlink()
    return str(target)


def _fsync_files(paths: tuple[Path, ...]) -> None:
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _realigned(reader: ProductReader, problems: Problems) -> Iterator[RawChunk]:
    """The rows of ``reader`` no problem refused, in chunks of exactly CHUNK_ROWS rows
    again (the last one shorter), every column as text."""
    import pyarrow as pa

    from provmint.engine import CHUNK_ROWS

    held: list[Any] = []
    records: list[Any] = []
    rows = index = 0
    names: tuple[str, ...] = reader.names
    for chunk in reader:
        keep = ~problems.refused(chunk.records)
        if not keep.any():
            continue
        table = chunk.table.filter(pa.array(keep))
        table = table.cast(pa.schema([(name, pa.string()) for name in table.column_names]))
        held.append(table)
        records.append(chunk.records[keep])
        rows += table.num_rows
        while rows >= CHUNK_ROWS:
            yield _take(held, records, CHUNK_ROWS, index, names)
            rows -= CHUNK_ROWS
            index += 1
    if rows:
        yield _take(held, records, rows, index, names)


def _take(
    held: list[Any], records: list[Any], n: int, index: int, names: tuple[str, ...]
) -> RawChunk:
    """The first ``n`` held rows as one chunk (the rest stay held)."""
    import numpy as np
    import pyarrow as pa

    from provmint.ingest import RawChunk

    table = pa.concat_tables(held).combine_chunks()
    all_records = np.concatenate(records)
    held[:] = [table.slice(n)] if table.num_rows > n else []
    records[:] = [all_records[n:]] if table.num_rows > n else []
    return RawChunk(index, names, table.slice(0, n), all_records[:n], ())


# -- duplicates ----------------------------------------------------------------------------


class Identities:
    """The (gtin, serial) of any record of the file, from the chunks' identity files."""

    def __init__(self, work: Path, first_records: list[int]) -> None:
        import numpy as np

        self.work = work
        self.first_records = np.array(first_records, dtype=np.int64)

    def of(self, records: np.ndarray) -> tuple[list[str], list[str]]:
        """(gtins, serials) of ``records`` (which have identities), in their order."""
        import numpy as np
        import pyarrow as pa

        from provmint.engine import chunk_files

        gtins: list[str] = [""] * len(records)
        serials: list[str] = [""] * len(records)
        chunks = np.searchsorted(self.first_records, records, side="right") - 1
        for chunk in np.unique(chunks).tolist():
            at = np.flatnonzero(chunks == chunk)
            path = chunk_files(self.work, chunk).identities
            with pa.memory_map(str(path)) as source:
                table = pa.ipc.open_file(source).read_all()
            known = table.column("record").to_numpy()
            where = np.searchsorted(known, records[at])
            g = table.column("gtin").take(pa.array(where)).to_pylist()
            s = table.column("serial").take(pa.array(where)).to_pylist()
            for i, position in enumerate(at.tolist()):
                gtins[position], serials[position] = g[i], s[i]
        return gtins, serials


def in_file_duplicates(keys: KeyRun, identities: Identities) -> Iterator[list[RowProblem]]:
    """Problems of the records that share their (gtin, serial) with another record of the
    file (both copies are refused), found among equal key hashes of ``keys`` (rows are
    record indexes)."""
    import numpy as np

    from provmint.ingest import RowProblem
    from provmint.store.keyindex import equal_keys

    for block in equal_keys(keys):
        records = block.rows.astype(np.int64) + 1
        gtins, serials = identities.of(records)
        groups: dict[tuple[int, str, str], list[int]] = {}
        for key, record, gtin, serial in zip(
            block.keys.tolist(), records.tolist(), gtins, serials, strict=True
        ):
            groups.setdefault((key, gtin, serial), []).append(record)
        found: list[RowProblem] = []
        for (_, _, serial), members in groups.items():
            if len(members) < 2:
                continue
            first = members[0]
            for record in members:
                twin = members[1] if record == first else first
                found.append(
                    RowProblem(
                        record,
                        "serial",
                        serial,
                        "duplicate_in_file",
                        "same gtin and serial as",
                        twin=twin,
                    )
                )
        if found:
            yield found


def store_duplicates(
    keys: KeyRun, identities: Identities, finder: ProductFinder, *, threads: int = 1
) -> Iterator[list[RowProblem]]:
    """Problems of the records whose (gtin, serial) is already in the store: a merge-join
    of ``keys`` (rows are record indexes) with the store's index, confirmed against the
    stored values part by part. The join reads the store's whole index (1.2 GB at 100M
    products), so ``threads`` threads join a range of keys each."""
    from provmint.store.keyindex import KeyIndex, RunKind, common_keys_split

    index = finder.runs[RunKind.KEY]
    assert isinstance(index, KeyIndex), "the mint opens the finder with KeyIndex runs"
    store_runs = index.runs
    if not store_runs:
        return
    # Closed on the way out, however it is left, so that the join's threads stop with it.
    with contextlib.closing(common_keys_split(keys, store_runs, parts=threads)) as joined:
        for matches in joined:
            found = _confirmed(matches, identities, finder)
            if found:
                yield found


def _confirmed(
    matches: KeyMatches, identities: Identities, finder: ProductFinder
) -> list[RowProblem]:
    """The problems of the join's ``matches`` whose stored gtin and serial are the
    record's (the others are collisions of the 64-bit keys)."""
    import numpy as np

    from provmint.ingest import RowProblem

    records = matches.rows.astype(np.int64) + 1
    gtins, serials = identities.of(records)
    stored = _stored_identities(finder, matches.other_rows.astype(np.int64))
    return [
        RowProblem(
            record,
            "serial",
            serial,
            "duplicate_in_store",
            f"already minted in batch {batch_id} (same gtin {gtin} and serial)",
        )
        for record, gtin, serial, (batch_id, s_gtin, s_serial) in zip(
            records.tolist(), gtins, serials, stored, strict=True
        )
        if gtin == s_gtin and serial == s_serial
    ]


def _stored_identities(finder: ProductFinder, rows: np.ndarray) -> list[tuple[str, str, str]]:
    """(batch id, gtin, serial) of global rows, reading each part involved once."""
    import numpy as np
    import pyarrow as pa

    out: list[tuple[str, str, str]] = [("", "", "")] * len(rows)
    located = [finder.locate(int(r)) for r in rows.tolist()]
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (batch, leaf) in enumerate(located):
        groups.setdefault((batch.seq, leaf // batch.part_rows), []).append(i)
    for (_, part), members in groups.items():
        batch = located[members[0]][0]
        table = finder.store.read_part(batch, part, ["gtin", "serial"])
        offsets = np.array([located[i][1] % batch.part_rows for i in members], dtype=np.int64)
        g = table.column("gtin").take(pa.array(offsets)).to_pylist()
        s = table.column("serial").take(pa.array(offsets)).to_pylist()
        for j, i in enumerate(members):
            out[i] = (batch.batch_id, g[j], s[j])
    return out
