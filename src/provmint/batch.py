"""``mint_batch``: validate a products CSV, mint tokens, store the batch and its tree.

The verb behind ``provmint batch create``. It reads and validates the file without the
store lock (bad files fail fast), then under the exclusive lock checks every product
against the store, writes the batch into a staging directory in aligned chunks (in a
process pool when there is enough work), and commits it atomically.
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import shutil
import stat
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, as_completed, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provmint import __version__, merkle
from provmint.canonical import (
    RECORD_VERSION,
    TOKEN_VERSION,
    batch_commitment,
    manifest_digest,
)
from provmint.config import Settings
from provmint.errors import (
    InputError,
    MissingFileError,
    ProvmintError,
    Reject,
    RowsRejectedError,
    os_error,
)
from provmint.ingest import (
    Ingested,
    ParsedCsv,
    RowCheck,
    check_rows,
    conclude,
    parse_csv,
    record_lines,
)
from provmint.keys import load_keyring
from provmint.outfile import is_stdout, open_output
from provmint.store import BatchInfo, PendingBatch, Store
from provmint.store.treefile import create_tree_file

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["MANIFEST_FORMAT", "MintSummary", "Progress", "mint_batch", "write_rejects"]

MANIFEST_FORMAT = "provmint-manifest/1"
REJECTS_HEADER = ("row", "line", "column", "value", "code", "reason")
POOL_MIN_BYTES = 2 << 20
"""Below this input size a process pool costs more than it saves: mint in-process."""

Progress = Callable[[str, int, int], None]
"""``progress(phase, done, total)``; phases: read, check, mint, commit."""


@dataclass(frozen=True, slots=True)
class MintSummary:
    """What ``mint_batch`` did."""

    batch_id: str
    source: str
    store: str
    products: int
    total_rows: int
    rejected_rows: int
    rejects: tuple[Reject, ...]
    rejects_path: str | None
    root: str
    tree_size: int
    commitment: str
    key_id: str
    workers: int
    elapsed: float

    @property
    def rate(self) -> float:
        """Products minted per second of wall time."""
        return self.products / self.elapsed if self.elapsed > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """JSON-ready summary (rejects are counted here, listed in the rejects file)."""
        return {
            "batch_id": self.batch_id,
            "source": self.source,
            "store": self.store,
            "products": self.products,
            "rows": self.total_rows,
            "rejected": self.rejected_rows,
            "rejects_file": self.rejects_path,
            "root": self.root,
            "tree_size": self.tree_size,
            "commitment": self.commitment,
            "key_id": self.key_id,
            "workers": self.workers,
            "elapsed_s": round(self.elapsed, 3),
            "products_per_s": round(self.rate, 1),
        }


def write_rejects(
    path: Path | str, rejects: tuple[Reject, ...] | list[Reject], *, raw: bool = False
) -> None:
    """Write every reject as CSV (row, line, column, value, code, reason), as every output
    is written (:func:`provmint.outfile.open_output`; ``-`` is standard output). Values a
    spreadsheet would run as formulas are neutralised unless ``raw``. Raises OutputError
    (exit 1) when it cannot be written."""
    import io

    from provmint import csvsafe

    cell = (lambda value: value) if raw else csvsafe.neutralise
    with open_output(path) as sink:
        text = io.TextIOWrapper(sink, encoding="utf-8", newline="")
        out = csvsafe.csv_writer(text)
        out.writerow(REJECTS_HEADER)
        out.writerows(
            [
                str(r.row),
                "" if r.line is None else str(r.line),
                cell(r.column),
                cell(r.value),
                cell(r.code),
                cell(r.reason),
            ]
            for r in rejects
        )
        text.flush()
        text.detach()  # the sink is open_output's to finish


def _remove_stale_rejects(path: Path | str) -> None:
    """A clean run removes a rejects report an earlier run left at the same path, so an
    old report never looks current. Only a regular file (not a link, device or FIFO,
    which are never opened here) with provmint's own header is removed."""
    try:
        if is_stdout(path) or not stat.S_ISREG(os.lstat(path).st_mode):
            return
        with open(path, encoding="utf-8") as fh:
            header = fh.readline()
    except (OSError, UnicodeDecodeError):
        return
    if next(csv.reader([header]), None) == list(REJECTS_HEADER):
        Path(path).unlink(missing_ok=True)


def _new_batch_id(now: datetime) -> str:
    return f"{now:%Y%m%d}-{secrets.token_hex(4)}"


def _store_duplicates(store: Store, con: Any, ing: Ingested) -> tuple[list[Reject], Any]:
    """Rows whose (gtin, serial) is already in the store: rejects and a keep-mask."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    keep = np.ones(ing.table.num_rows, dtype=bool)
    if not ing.table.num_rows:
        return [], keep
    hits = store.key_candidates(con, ing.keys)
    if not hits.num_rows:
        return [], keep
    found: list[tuple[int, str]] = []
    seqs = hits.column("batch_seq").to_numpy()
    for seq in np.unique(seqs).tolist():
        sel = np.flatnonzero(seqs == seq)
        batch = store.batch_by_seq(con, int(seq))
        leaves = hits.column("leaf_index").to_numpy()[sel]
        positions = hits.column("pos").to_numpy()[sel]
        stored = (
            pa.concat_tables(
                pq.read_table(p, columns=["gtin", "serial"]) for p in store.part_files(batch)
            )
            if len(sel) > 64
            else store.read_products(batch, leaves.tolist(), ["gtin", "serial"])
        )
        if len(sel) > 64:
            stored = stored.take(pa.array(leaves))
        new = ing.table.select(["gtin", "serial"]).take(pa.array(positions))
        same = pc.and_(
            pc.equal(stored.column("gtin"), new.column("gtin")),
            pc.equal(stored.column("serial"), new.column("serial")),
        )
        for pos in positions[same.to_numpy(zero_copy_only=False)].tolist():
            found.append((int(pos), batch.batch_id))
    if not found:
        return [], keep
    lines = record_lines(ing)
    rejects = []
    gtins = ing.table.column("gtin")
    serials = ing.table.column("serial")
    for pos, batch_id in found:
        keep[pos] = False
        row = int(ing.rows[pos])
        rejects.append(
            Reject(
                row,
                lines.get(row),
                "serial",
                serials[pos].as_py(),
                "duplicate_in_store",
                f"already minted in batch {batch_id} (same gtin {gtins[pos].as_py()} and serial)",
            )
        )
    return rejects, keep


class _Background:
    """Run one call in a thread; :meth:`join` re-raises what it raised."""

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        self.error: BaseException | None = None

        def target() -> None:
            try:
                fn(*args)
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=target, daemon=True)
        self.thread.start()

    def join(self, *, raise_error: bool = True) -> None:
        self.thread.join()
        if self.error is not None and raise_error:
            raise self.error


class _Runner:
    """Runs chunk tasks in a process pool or in this process, a bounded number at a time.

    The pool starts in a background thread: the fork server imports the engine (pyarrow,
    numpy) once and workers fork from it ready to run, while the parent reads the CSV.
    """

    def __init__(self, workers: int, secret: bytes, use_pool: bool) -> None:
        self.secret = secret
        self.workers = workers if use_pool else 1
        self.pool: ProcessPoolExecutor | None = None
        self._starting: threading.Thread | None = None
        self._error: BaseException | None = None
        if use_pool:
            self._starting = threading.Thread(target=self._start, daemon=True)
            self._starting.start()

    def _start(self) -> None:
        from provmint import engine
        from provmint.pool import start_pool

        try:
            self.pool = start_pool(
                self.workers,
                preload=["provmint.engine", "pyarrow.parquet"],
                initializer=engine.init_worker,
                initargs=(self.secret, os.getpid()),
            )
        except BaseException as exc:  # reported when the pool is first needed
            self._error = exc

    def _ready(self) -> ProcessPoolExecutor | None:
        if self._starting is not None:
            self._starting.join()
            self._starting = None
            if self._error is not None:
                raise ProvmintError(f"cannot start worker processes: {self._error}") from (
                    self._error
                )
        return self.pool

    def run(self, tasks: Iterator[Any], on_done: Callable[[Any], None]) -> list[Any]:
        """Run every task; ``on_done`` sees each result as it completes."""
        from dataclasses import replace

        from provmint import engine

        pool = self._ready()
        results = []
        if pool is None:
            for task in tasks:
                result = engine.mint_chunk(replace(task, secret=self.secret))
                on_done(result)
                results.append(result)
            return results
        pending: set[Future[Any]] = set()
        for task in tasks:
            pending.add(pool.submit(engine.mint_chunk, task))
            if len(pending) >= 2 * self.workers:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    results.append(future.result())
                    on_done(results[-1])
        for future in as_completed(pending):
            results.append(future.result())
            on_done(results[-1])
        return results

    def close(self) -> None:
        """Stop the workers (also when minting failed half-way)."""
        try:
            pool = self._ready()
        except ProvmintError:
            return
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _mint_chunks(
    runner: _Runner,
    chunks: Iterator[pa.Table],
    n: int,
    staging: Path,
    url_base: str,
    progress: Progress,
) -> tuple[bytes, bytes] | None:
    """Mint ``n`` rows arriving as aligned chunks; return (root, token prefixes), or None
    when the chunks stopped before ``n`` rows (a bad row was found)."""
    from provmint import engine

    tree_path = staging / "tree.bin"
    offsets = create_tree_file(tree_path, n)
    sizes = merkle.level_sizes(n)
    chunk_level = engine.CHUNK_ROWS.bit_length() - 1
    top = min(chunk_level, len(sizes) - 1)

    def tasks() -> Iterator[engine.ChunkTask]:
        for index, table in enumerate(chunks):
            yield engine.ChunkTask(
                index=index,
                start=index * engine.CHUNK_ROWS,
                rows_ipc=engine.table_to_ipc(table),
                part_path=str(staging / "products" / f"part-{index:05d}.parquet"),
                tree_path=str(tree_path),
                level_offsets=offsets,
                top_level=top,
                url_base=url_base,
            )

    done = [0]

    def on_done(result: Any) -> None:
        done[0] += result.rows
        progress("mint", done[0], n)

    results = sorted(runner.run(tasks(), on_done), key=lambda r: r.index)
    if done[0] != n:
        return None
    roots = b"".join(r.root for r in results)
    if len(results) == 1:
        root = results[0].root
    else:
        upper = merkle.build_levels(roots)
        with open(tree_path, "r+b") as fh:
            for j, level in enumerate(upper[1:], start=1):
                fh.seek(offsets[chunk_level + j])
                fh.write(level)
            fh.flush()
            os.fsync(fh.fileno())
        root = upper[-1]
    return root, b"".join(r.token_prefixes for r in results)


def _slices(table: pa.Table, size: int) -> Iterator[pa.Table]:
    for start in range(0, table.num_rows, size):
        yield table.slice(start, size)


class _Checking:
    """Validates a parsed CSV chunk by chunk, handing clean chunks to the minting as it
    goes (the common case: no bad row, so validation and minting overlap); a bad row
    stops the hand-over, but every row is still checked so that all problems are told.
    When all rows are checked, duplicates inside the file and against the store are
    looked for, and the (gtin, serial) index is started in the background."""

    def __init__(
        self, parsed: ParsedCsv, store: Store, con: Any, pending: PendingBatch, progress: Progress
    ) -> None:
        self.parsed = parsed
        self.store = store
        self.con = con
        self.pending = pending
        self.progress = progress
        self.checks: list[RowCheck] = []
        self.ingested: Ingested | None = None
        self.rejects: tuple[Reject, ...] = ()
        self.table: pa.Table | None = None
        self.keys: Any = None
        self.indexer: _Background | None = None

    def chunks(self, size: int) -> Iterator[pa.Table]:
        """Checked chunks of ``size`` rows, as long as every row so far is valid."""
        clean = not self.parsed.ragged_texts
        n = self.parsed.num_rows
        for start in range(0, n, size):
            check = check_rows(self.parsed, start, min(n, start + size))
            self.checks.append(check)
            self.progress("check", check.stop, n)
            clean = clean and not check.problems
            if clean:
                yield check.table
        self.finish()

    def check_all(self) -> None:
        """Check every row without minting (used when a row already failed)."""
        for _ in self.chunks(max(1, self.parsed.num_rows)):
            pass

    def finish(self) -> None:
        import numpy as np
        import pyarrow as pa

        if self.ingested is not None:
            return
        ing = conclude(self.parsed, self.checks)
        dups, keep = _store_duplicates(self.store, self.con, ing)
        self.ingested = ing
        self.rejects = tuple(sorted(ing.rejects + tuple(dups), key=lambda r: (r.row, r.column)))
        self.table = ing.table if keep.all() else ing.table.take(pa.array(np.flatnonzero(keep)))
        self.keys = ing.keys[keep]
        if not self.rejects:  # the batch will be committed: index it while minting ends
            self.start_indexer()

    def start_indexer(self) -> None:
        if self.indexer is None:
            self.indexer = _Background(self.pending.add_index, "product_keys", self.keys)

    def join(self, *, raise_error: bool = True) -> None:
        if self.indexer is not None:
            self.indexer.join(raise_error=raise_error)


def mint_batch(
    source: Path,
    *,
    settings: Settings,
    skip_invalid: bool = False,
    rejects_path: Path | str | None = None,
    label: str | None = None,
    progress: Progress | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> MintSummary:
    """Validate ``source``, mint every product and commit the batch to the store.

    Refuses the whole batch (RowsRejectedError, nothing stored) if any row is invalid or
    already minted, unless ``skip_invalid``. All rejects go to ``rejects_path`` when given.
    Raises KeyringError without an issuer key, StoreBusyError if the store stays locked.
    """
    started = time.perf_counter()
    report: Progress = progress or (lambda phase, done, total: None)
    key = load_keyring(settings.key_file).active
    store = Store.open(settings.store, create=True)
    try:
        size = source.stat().st_size
    except FileNotFoundError:  # the same "not found" (exit 7) as every missing input file
        raise MissingFileError(source, "products CSV") from None
    except OSError:
        size = 0
    use_pool = settings.workers > 1 and size >= POOL_MIN_BYTES
    # Started before this process imports pyarrow, so the fork server's import of the same
    # runs on the other core meanwhile.
    runner = _Runner(settings.workers, key.secret.reveal(), use_pool)
    import numpy as np

    from provmint.engine import CHUNK_ROWS

    try:
        report("read", 0, 1)
        parsed = parse_csv(source)
        report("read", 1, 1)
        with (
            store.lock(
                exclusive=True,
                timeout=settings.lock_timeout,
                purpose="batch create",
                on_wait=on_wait,
            ),
            store.connect(write=True) as con,
        ):
            store.recover(con)
            now = datetime.now(UTC)
            batch_id = _new_batch_id(now)
            seq = store.next_seq(con)
            staging = store.staging_path(batch_id)
            pending = store.begin_batch(con, seq)
            checking = _Checking(parsed, store, con, pending, report)
            try:
                minted = None
                if parsed.ragged_texts:
                    checking.check_all()
                else:
                    minted = _mint_chunks(
                        runner,
                        checking.chunks(CHUNK_ROWS),
                        parsed.num_rows,
                        staging,
                        settings.url_base,
                        report,
                    )
                ing, rejects = checking.ingested, checking.rejects
                table = checking.table
                if ing is None or table is None:
                    raise ProvmintError("internal error: rows were not all checked")
                rejected_rows = len({r.row for r in rejects})
                if rejects and rejects_path is not None:
                    write_rejects(rejects_path, rejects)
                elif rejects_path is not None:
                    _remove_stale_rejects(rejects_path)
                if rejects and not skip_invalid:
                    error = RowsRejectedError(
                        source, list(rejects), rejected_rows, ing.total_rows, rejects_path
                    )
                    _hint_same_file(store, con, ing, error)
                    raise error
                if table.num_rows == 0:
                    raise InputError(f"{source}: no valid rows to mint ({rejected_rows} rejected)")
                if minted is None or rejects:  # mint again, the valid rows only
                    shutil.rmtree(staging)
                    staging = store.staging_path(batch_id)
                    checking.start_indexer()
                    minted = _mint_chunks(
                        runner,
                        _slices(table, CHUNK_ROWS),
                        table.num_rows,
                        staging,
                        settings.url_base,
                        report,
                    )
                if minted is None:
                    raise ProvmintError("internal error: the batch was not minted whole")
                root, prefixes = minted
                report("commit", 0, 1)
                checking.join()
                pending.add_index("product_tokens", np.frombuffer(prefixes, dtype="<u8"))
                info = _batch_info(
                    seq,
                    batch_id,
                    now,
                    label,
                    source,
                    ing,
                    table,
                    root,
                    key.id,
                    settings.url_base,
                    rejected_rows,
                )
                (staging / "manifest.json").write_text(
                    json.dumps(info.manifest, indent=2, sort_keys=True) + "\n"
                )
                pending.commit(staging, info)
                report("commit", 1, 1)
            except BaseException as exc:
                checking.join(raise_error=False)
                if pending.committed:  # only moving the files into place failed
                    raise ProvmintError(
                        f"batch {batch_id} is committed, but its files could not be moved "
                        f"into place: {exc}",
                        hint="any later provmint write (or provmint store repair) finishes it",
                    ) from exc
                pending.abort()
                shutil.rmtree(staging, ignore_errors=True)  # what this run wrote, uncommitted
                raise
    except BrokenProcessPool as exc:
        raise ProvmintError("minting failed: a worker process died (out of memory?)") from exc
    except OSError as exc:  # from this process, pyarrow or a worker: often without a file name
        raise os_error(exc, settings.store, note="nothing was minted") from exc
    finally:
        runner.close()
    return MintSummary(
        batch_id=batch_id,
        source=str(source),
        store=str(store.root),
        products=table.num_rows,
        total_rows=ing.total_rows,
        rejected_rows=rejected_rows,
        rejects=rejects,
        rejects_path=str(rejects_path) if rejects and rejects_path is not None else None,
        root=root.hex(),
        tree_size=table.num_rows,
        commitment=info.commitment,
        key_id=key.id,
        workers=runner.workers,
        elapsed=time.perf_counter() - started,
    )


def _hint_same_file(store: Store, con: Any, ing: Ingested, error: RowsRejectedError) -> None:
    """If this exact file was minted before, say so: the likeliest reason for duplicates."""
    row = con.execute(
        "SELECT batch_id, created_at FROM batches WHERE source_sha256 = ? ORDER BY seq LIMIT 1",
        [ing.source_sha256],
    ).fetchone()
    if row:
        error.hint = f"this exact file was already minted as batch {row[0]} on {row[1]}"


def _batch_info(
    seq: int,
    batch_id: str,
    now: datetime,
    label: str | None,
    source: Path,
    ing: Ingested,
    table: pa.Table,
    root: bytes,
    key_id: str,
    url_base: str,
    rejected_rows: int,
) -> BatchInfo:
    from provmint.engine import CHUNK_ROWS

    n = table.num_rows
    parts = (n + CHUNK_ROWS - 1) // CHUNK_ROWS
    created = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    manifest = {
        "format": MANIFEST_FORMAT,
        "batch_id": batch_id,
        "created_at": created,
        "label": label,
        "source": {
            "name": source.name,
            "sha256": ing.source_sha256,
            "bytes": ing.source_bytes,
            "rows": ing.total_rows,
        },
        "products": n,
        "rejected": rejected_rows,
        "columns": sorted(ing.columns),
        "tree": {"profile": merkle.PROFILE, "size": n, "root": root.hex()},
        "record_version": RECORD_VERSION,
        "token_version": TOKEN_VERSION,
        "key_id": key_id,
        "url_base": url_base,
        "parts": {"rows": CHUNK_ROWS, "count": parts},
        "provmint_version": __version__,
    }
    digest = manifest_digest(manifest)
    commitment = batch_commitment(batch_id, n, root, digest)
    return BatchInfo(
        seq=seq,
        batch_id=batch_id,
        created_at=created,
        label=label,
        source_name=source.name,
        source_sha256=ing.source_sha256,
        products=n,
        rejected=rejected_rows,
        tree_profile=merkle.PROFILE,
        tree_size=n,
        root=root.hex(),
        manifest_digest=digest.hex(),
        commitment=commitment.hex(),
        key_id=key_id,
        part_rows=CHUNK_ROWS,
        parts=parts,
        manifest=manifest,
    )
