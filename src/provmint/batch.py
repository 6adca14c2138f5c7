"""``mint_batch``: validate a products CSV, mint tokens, store the batch and its tree.

The verb behind ``provmint batch create``. It checks the file and its header before the
store is touched, then under the store's exclusive lock streams the file through the
workers (:mod:`provmint.minting`: memory does not grow with the batch), looks for
duplicates inside the file and against the store, and commits the batch atomically with
the store's index. Any refused row refuses the whole batch unless ``skip_invalid``.
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from provmint import __version__, merkle
from provmint.canonical import (
    RECORD_VERSION,
    TOKEN_VERSION,
    batch_commitment,
    manifest_digest,
)
from provmint.config import Settings, is_placeholder
from provmint.errors import (
    InputError,
    ProvmintError,
    Reject,
    RowsRejectedError,
    os_error,
)
from provmint.keys import load_keyring

if TYPE_CHECKING:
    import duckdb

    from provmint.ingest import ProductReader
    from provmint.minting import MintPass, Problems, Runner, StagedBatch
    from provmint.store import BatchInfo, Store
    from provmint.store.keyindex import KeyRun, RunKind
    from provmint.store.lookup import ProductFinder

__all__ = ["MANIFEST_FORMAT", "MintSummary", "Progress", "mint_batch", "write_rejects"]

MANIFEST_FORMAT = "provmint-manifest/1"
REJECTS_HEADER = ("row", "line", "column", "value", "code", "reason")
POOL_MIN_BYTES = 2 << 20
"""Below this input size a process pool costs more than it saves: mint in-process."""
JOIN_THREADS = 4
"""Most threads the duplicate check's join against the store's index takes."""

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
    url_base: str = ""
    """The URL base the batch was minted with (its manifest's ``url_base``)."""

    @property
    def placeholder_base(self) -> bool:
        """Whether no URL base was configured (the placeholder was minted with): labels
        and exports will ask for one (:func:`provmint.config.output_url_base`)."""
        return is_placeholder(self.url_base)

    @property
    def rate(self) -> float:
        """Products minted per second of wall time."""
        return self.products / self.elapsed if self.elapsed > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """What the run did, JSON-ready: the fields ``batch create --json`` adds to the
        batch object (``docs/schemas/commands/batch-create.schema.json``; the batch's
        own facts, its root, commitment and source among them, are the batch object's).
        Rejects are counted here, listed in the rejects file."""
        return {
            "batch_id": self.batch_id,
            "products": self.products,
            "rows": self.total_rows,
            "rejected": self.rejected_rows,
            "rejects_file": self.rejects_path,
            "store": self.store,
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
    from provmint.outfile import open_output

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
    from provmint.outfile import is_stdout

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


@dataclass(frozen=True, slots=True)
class _Job:
    """What one ``mint_batch`` call works with."""

    source: Path
    settings: Settings
    key_id: str
    skip_invalid: bool
    rejects_path: Path | str | None
    label: str | None
    report: Progress
    size: int


def mint_batch(
    source: Path | str,
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
    from provmint.minting import Runner

    started = time.perf_counter()
    source = Path(source)
    key = load_keyring(settings.key_file).active
    size = _size(source)
    # The pool starts first: its fork server imports the engine in its own process
    # while this one does (serial, the two imports took about 0.4 s of a 1M mint). So
    # this module imports no more than it needs to get here (the store, the ingest and
    # the minting code come after).
    runner = Runner(
        settings.workers, key.secret.reveal(), settings.workers > 1 and size >= POOL_MIN_BYTES
    )
    try:
        from concurrent.futures.process import BrokenProcessPool

        from provmint import engine
        from provmint.ingest import open_products
        from provmint.store import Store

        # The file and its header are checked before the store is touched.
        # Parsed in this thread alone: the workers keep the cores busy.
        with open_products(source, chunk_rows=engine.CHUNK_ROWS, parse_threads=False) as reader:
            store = Store.open(settings.store, create=True)
            job = _Job(
                source,
                settings,
                key.id,
                skip_invalid,
                rejects_path,
                label,
                progress or (lambda phase, done, total: None),
                size,
            )
            try:
                with store.writing_later(
                    timeout=settings.lock_timeout, purpose="batch create", on_wait=on_wait
                ) as connection:
                    summary = _mint(job, store, connection, reader, runner)
            except BrokenProcessPool as exc:
                raise ProvmintError(
                    "minting failed: a worker process died (out of memory?)"
                ) from exc
            except OSError as exc:  # from this process, pyarrow or a worker: often unnamed
                raise os_error(exc, settings.store, note="nothing was minted") from exc
    finally:
        runner.close()
    return replace(summary, elapsed=time.perf_counter() - started)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _mint(
    job: _Job,
    store: Store,
    connection: Callable[[], duckdb.DuckDBPyConnection],
    reader: ProductReader,
    runner: Runner,
) -> MintSummary:
    """Mint under the exclusive lock: the passes, the duplicates, the report, the commit."""
    run = _MintRun.start(job, store, connection, reader, runner)
    try:
        minted = run.first_pass()
        rejects = _report(job, run.problems, reader, run.catalog().con)
        if run.problems:
            minted = run.mint_again(minted)
        if minted.result.rows == 0:
            raise InputError(f"{job.source}: no valid rows to mint ({run.problems.rows} rejected)")
        info = run.commit(minted)
    finally:
        run.close()
    return run.summary(minted, info, rejects)


class _Minted(NamedTuple):
    """A pass over the file and the batch's keys it produced (merged into one run)."""

    result: MintPass
    keys: KeyRun


@dataclass(frozen=True, slots=True)
class _Catalog:
    """The catalog as a mint uses it: the write connection (the store recovered first),
    the new batch's sequence number and the finder of the store's products."""

    con: duckdb.DuckDBPyConnection
    seq: int
    finder: ProductFinder

    @classmethod
    def open(cls, store: Store, connection: Callable[[], duckdb.DuckDBPyConnection]) -> _Catalog:
        """Connect, finish or clean up what interrupted writers left, and load."""
        from provmint.store.lookup import ProductFinder

        con = connection()
        store.recover(con)
        # Streamed: the duplicate check merge-joins the store's runs and looks no key up.
        return cls(con, store.next_seq(con), ProductFinder.load(store, con, streamed=True))


@dataclass(slots=True)
class _MintRun:
    """One mint under the lock: the new batch's identity, its staging and what is open.

    Each step leaves what it opened here, so :meth:`close` can release it and remove the
    staged batch whichever step fails (nothing of an uncommitted batch is left behind).
    """

    job: _Job
    store: Store
    connection: Callable[[], duckdb.DuckDBPyConnection]
    reader: ProductReader
    runner: Runner
    now: datetime
    batch_id: str
    problems: Problems
    staged: StagedBatch
    opened: _Catalog | None = None
    runs: list[KeyRun] = field(default_factory=list)  # merged runs, closed at the end
    committed: bool = False

    @classmethod
    def start(
        cls,
        job: _Job,
        store: Store,
        connection: Callable[[], duckdb.DuckDBPyConnection],
        reader: ProductReader,
        runner: Runner,
    ) -> _MintRun:
        """Name the batch and stage its directory (the catalog is opened later)."""
        from provmint.minting import Problems, StagedBatch

        now = datetime.now(UTC)
        batch_id = _new_batch_id(now)
        staged = StagedBatch(store, batch_id, runner, job.report)
        return cls(job, store, connection, reader, runner, now, batch_id, Problems(), staged)

    def catalog(self) -> _Catalog:
        """The catalog, opened on first use. The first pass opens it once the workers
        have their first chunks, so that loading DuckDB and recovering the store (0.15-0.25
        s) do not hold them up: the pass writes only this run's staging directory, which
        no recovery touches, and nothing before the duplicate check reads the catalog."""
        if self.opened is None:
            self.opened = _Catalog.open(self.store, self.connection)
        return self.opened

    def first_pass(self) -> _Minted:
        """Mint every row of the file, then look for duplicates: within the file and
        against the store (both need the batch's merged keys, so they follow the pass)."""
        from provmint.minting import Identities, in_file_duplicates, store_duplicates
        from provmint.store.keyindex import RunKind

        first = self.staged.first_pass(
            self.reader, self.problems, self.job.size, meanwhile=self.catalog
        )
        if first.minted and first.rows:
            self.staged.start_tail(first)  # beside the duplicate check
        self.job.report("check", 0, 1)
        keys = self._merged(first, RunKind.KEY)
        identities = Identities(self.staged.work, first.first_records)
        for found in in_file_duplicates(keys, identities):
            self.problems.add(found)
        # The workers are idle by now: the join takes a thread for each (up to
        # JOIN_THREADS: each buffers a block of every store run, and more do not help
        # a join that reads as fast as the disk gives).
        threads = min(self.job.settings.workers, JOIN_THREADS)
        for found in store_duplicates(keys, identities, self.catalog().finder, threads=threads):
            self.problems.add(found)
        self.job.report("check", 1, 1)
        return _Minted(first, keys)

    def mint_again(self, first: _Minted) -> _Minted:
        """Mint again, from the file, only the rows that passed (``skip_invalid``): the
        first pass's staging is discarded, as its leaves and indexes include the refused."""
        from provmint.minting import StagedBatch
        from provmint.store.keyindex import RunKind

        first.keys.close()
        self.staged.discard()
        self.staged = StagedBatch(self.store, self.batch_id, self.runner, self.job.report)
        result = self.staged.second_pass(
            self.job.source, self.problems, self.reader.sha256, self.job.size
        )
        return _Minted(result, self._merged(result, RunKind.KEY))

    def commit(self, minted: _Minted) -> BatchInfo:
        """Write the tree, the manifest and the store's new index, then commit the batch:
        its catalog row and the new index in one transaction."""
        from provmint.store.files import write_atomic
        from provmint.store.keyindex import RunKind
        from provmint.store.lookup import index_runs, update_index

        self.job.report("commit", 0, 1)
        catalog = self.catalog()
        result = minted.result
        tokens = self.staged.merged_tokens(result)
        self.runs.append(tokens)
        index = update_index(  # while the tree file is completed and synced
            self.store.index_dir,
            index_runs(catalog.con),
            {RunKind.KEY: minted.keys, RunKind.TOKEN: tokens},
            catalog.finder.products,
            run_all=self.runner.call_all,
        )
        self.runner.release()  # the workers' last task: they exit during the commit
        try:  # (commit_batch discards the index's new runs itself if it fails)
            root = self.staged.tree_root(result)
            info = _batch_info(
                self.job,
                catalog.seq,
                self.batch_id,
                self.now,
                self.reader,
                result.rows,
                root,
                self.problems.rows,
            )
            write_atomic(
                self.staged.path / "manifest.json",
                (json.dumps(info.manifest, indent=2, sort_keys=True) + "\n").encode(),
            )
            self.staged.finish_files()
        except BaseException:
            index.discard()
            raise
        self.store.commit_batch(catalog.con, self.staged.path, info, index)
        self.committed = True
        self.job.report("commit", 1, 1)
        return info

    def close(self) -> None:
        """Release the runs and the finder; remove the staged batch unless committed."""
        for run in self.runs:
            run.close()
        if self.opened is not None:
            self.opened.finder.close()
        if not self.committed:
            self.staged.discard()  # what this run wrote, never committed

    def summary(self, minted: _Minted, info: BatchInfo, rejects: list[Reject]) -> MintSummary:
        """What was minted (``elapsed`` is filled in by :func:`mint_batch`)."""
        job = self.job
        written = job.rejects_path if rejects else None  # the file is only written with rejects
        return MintSummary(
            batch_id=self.batch_id,
            source=str(job.source),
            store=str(self.store.root),
            products=minted.result.rows,
            total_rows=self.reader.records,
            rejected_rows=self.problems.rows,
            rejects=tuple(rejects),
            rejects_path=None if written is None else str(written),
            root=info.root,
            tree_size=minted.result.rows,
            commitment=info.commitment,
            key_id=job.key_id,
            workers=self.runner.workers,
            elapsed=0.0,
            url_base=job.settings.url_base,
        )

    def _merged(self, result: MintPass, kind: RunKind) -> KeyRun:
        """The pass's chunk runs of ``kind`` merged, kept to be closed at the end."""
        run = self.staged.merged_runs(result, kind)
        self.runs.append(run)
        return run


def _report(
    job: _Job, problems: Problems, reader: ProductReader, con: duckdb.DuckDBPyConnection
) -> list[Reject]:
    """Write the rejects file (or remove a stale one) and refuse the batch when rows were
    refused and not ``skip_invalid``. Returns the rejects (those kept for the report)."""
    from provmint.ingest import record_lines
    from provmint.store import batch_minted_from

    if not problems:
        if job.rejects_path is not None:
            _remove_stale_rejects(job.rejects_path)
        return []
    kept = problems.sorted()
    wanted = {p.record for p in kept} | {p.twin for p in kept if p.twin is not None}
    lines = record_lines(job.source, wanted)
    rejects = [p.reject(lines) for p in kept]
    if job.rejects_path is not None:
        write_rejects(job.rejects_path, rejects)
    if job.skip_invalid:
        return rejects
    error = RowsRejectedError(
        job.source,
        rejects,
        problems.rows,
        reader.records,
        job.rejects_path,
        problems=problems.count,
    )
    minted = batch_minted_from(con, reader.sha256)
    if minted is not None:  # the likeliest reason for duplicates
        error.hint = (
            f"this exact file was already minted as batch {minted.batch_id} on {minted.created_at}"
        )
    raise error


def _batch_info(
    job: _Job,
    seq: int,
    batch_id: str,
    now: datetime,
    reader: ProductReader,
    n: int,
    root: bytes,
    rejected_rows: int,
) -> BatchInfo:
    from provmint.engine import CHUNK_ROWS
    from provmint.store import BatchInfo

    parts = (n + CHUNK_ROWS - 1) // CHUNK_ROWS
    created = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    manifest = {
        "format": MANIFEST_FORMAT,
        "batch_id": batch_id,
        "created_at": created,
        "label": job.label,
        "source": {
            "name": job.source.name,
            "sha256": reader.sha256,
            "bytes": reader.bytes_read,
            "rows": reader.records,
        },
        "products": n,
        "rejected": rejected_rows,
        "columns": sorted(reader.names),
        "tree": {"profile": merkle.PROFILE, "size": n, "root": root.hex()},
        "record_version": RECORD_VERSION,
        "token_version": TOKEN_VERSION,
        "key_id": job.key_id,
        "url_base": job.settings.url_base,
        "parts": {"rows": CHUNK_ROWS, "count": parts},
        "provmint_version": __version__,
    }
    digest = manifest_digest(manifest)
    commitment = batch_commitment(batch_id, n, root, digest)
    return BatchInfo(
        seq=seq,
        batch_id=batch_id,
        created_at=created,
        label=job.label,
        source_name=job.source.name,
        source_sha256=reader.sha256,
        products=n,
        rejected=rejected_rows,
        tree_profile=merkle.PROFILE,
        tree_size=n,
        root=root.hex(),
        manifest_digest=digest.hex(),
        commitment=commitment.hex(),
        key_id=job.key_id,
        part_rows=CHUNK_ROWS,
        parts=parts,
        manifest=manifest,
    )
