"""The product store: per-batch Parquet parts and tree files, plus a DuckDB catalog.

Layout (``provmint-store/2``; a ``/1`` store is read as it is, see :data:`STORE_FORMAT`)::

    <store>/STORE                      marker: format and creation time
    <store>/catalog.duckdb             batches, lookup indexes, the ``products`` view
    <store>/.lock                      advisory lock (see :mod:`provmint.store.lock`)
    <store>/batches/<id>/manifest.json the batch manifest (its digest is committed)
    <store>/batches/<id>/tree.bin      the whole Merkle tree (:mod:`provmint.store.treefile`)
    <store>/batches/<id>/products/part-NNNNN.parquet   2^16 products per part, zstd
                                       (:class:`PartLayout`: no url column since /2)
    <store>/batches/<id>/records/part-NNNNN.rec        the same rows for point lookups
    <store>/index/{key,token}-<hex>.run                the store's index (sorted runs)
    <store>/staging/<id>.<pid>/        batches being written (never visible to readers)
    <store>/anchors/<n>.json           a copy of each anchor record (for store repair)
    <store>/prints/<id>.jsonl          the URL bases a batch's labels were printed with
    <store>/quarantine/                batch directories store repair could not restore

The catalog says which batches exist: a batch exists once its catalog row is committed.
A batch is written under ``staging/`` and fsynced, committed to the catalog in one DuckDB
transaction, and only then renamed into ``batches/``. An interruption before the commit
leaves a staging directory that the next writer removes (once its writer is provably
dead); an interruption after it leaves a committed batch whose files readers still find in
``staging/`` and that the next writer moves into place. So ``batches/`` only ever holds
committed batches, and provmint never deletes anything there: a batch directory the
catalog does not know means the catalog was lost or replaced, and writers refuse to go on
until ``provmint store repair`` has rebuilt it (:mod:`provmint.repair`). Committed batch
directories are never modified.

Lookups cost the same at any store size: the store's index (sorted runs of 64-bit
(gtin, serial) hashes and token prefixes under ``index/``, listed by the catalog) gives a
product's batch and leaf, its batch's record parts its record (:mod:`provmint.store.lookup`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provmint.errors import (
    NotFoundError,
    ProvmintError,
    StoreBusyError,
    StoreCorruptError,
    StoreError,
    os_error,
)
from provmint.pendingfile import stale_temporaries
from provmint.store.anchors import ANCHOR_SCHEMA
from provmint.store.files import fsync_dir, load_json, write_atomic
from provmint.store.lock import pid_alive, store_lock
from provmint.store.treefile import TreeFile

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from provmint.store.lookup import IndexUpdate
    from provmint.store.view import CatalogView

__all__ = [
    "LATEST",
    "PART_COLUMNS",
    "PART_FORMAT_KEY",
    "PART_LAYOUT",
    "READABLE_STORE_FORMATS",
    "ROW_GROUP_ROWS",
    "STORE_FORMAT",
    "BatchInfo",
    "BatchStamp",
    "PartLayout",
    "Recovery",
    "Store",
    "batch_minted_from",
    "damaged",
    "find_batch",
    "init_catalog",
    "insert_batch",
    "load_json",
    "products_select",
    "store_lock",
    "transaction",
]

STORE_FORMAT = "provmint-store/2"
"""The store format this version writes (the ``STORE`` marker): ``/2`` may hold parts of
:attr:`PartLayout.V2`, which versions before it cannot read."""
READABLE_STORE_FORMATS = ("provmint-store/1", STORE_FORMAT)
"""Store formats this version opens; a ``/1`` store becomes ``/2`` before its first batch
of :attr:`PartLayout.V2` commits (:meth:`Store.upgrade_format`)."""
ROW_GROUP_ROWS = 1 << 14
"""Rows per Parquet row group of a batch's product parts (the last group of a part may
be shorter): the minting engine writes them so, the part checks expect them so."""
PART_COLUMNS = ("leaf_index", "token", "url")
"""The names provmint keeps for the columns a product part holds (or held) beside the
record's own fields, so no input column may take them."""
PART_FORMAT_KEY = "provmint.part"
"""The Parquet key-value metadata naming a part's layout (absent in :attr:`PartLayout.V1`)."""


class PartLayout(StrEnum):
    """The layouts of a batch's product part files.

    Both hold ``leaf_index``, the record's fields (sorted) and ``token``, zstd-compressed
    in :data:`ROW_GROUP_ROWS`-row groups. ``V1`` (written before ``provmint-store/2``)
    adds a ``url`` column and no metadata. ``V2`` drops ``url``, which every reader
    rebuilds from the row and the manifest's ``url_base`` (:func:`provmint.engine.
    digital_links`): it cost a third of the minting workers' Parquet time and half of a
    part's bytes. A ``V2`` part names its layout in the :data:`PART_FORMAT_KEY` metadata."""

    V1 = "provmint-part/1"
    V2 = "provmint-part/2"

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns a part of this layout holds beside the record's fields."""
        return PART_COLUMNS if self is PartLayout.V1 else ("leaf_index", "token")

    @property
    def metadata(self) -> dict[bytes, bytes] | None:
        """The part's Arrow schema metadata (None: none at all)."""
        return None if self is PartLayout.V1 else {PART_FORMAT_KEY.encode(): self.value.encode()}


PART_LAYOUT = PartLayout.V2
"""The layout this version writes."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY,
    batch_id VARCHAR UNIQUE NOT NULL,
    created_at VARCHAR NOT NULL,
    label VARCHAR,
    source_name VARCHAR NOT NULL,
    source_sha256 VARCHAR NOT NULL,
    products BIGINT NOT NULL,
    rejected BIGINT NOT NULL,
    tree_profile VARCHAR NOT NULL,
    tree_size BIGINT NOT NULL,
    root VARCHAR NOT NULL,
    manifest_digest VARCHAR NOT NULL,
    commitment VARCHAR NOT NULL,
    key_id VARCHAR NOT NULL,
    part_rows INTEGER NOT NULL,
    parts INTEGER NOT NULL,
    manifest VARCHAR NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """A committed batch as the catalog knows it; ``manifest`` is the committed manifest."""

    seq: int
    batch_id: str
    created_at: str
    label: str | None
    source_name: str
    source_sha256: str
    products: int
    rejected: int
    tree_profile: str
    tree_size: int
    root: str
    manifest_digest: str
    commitment: str
    key_id: str
    part_rows: int
    parts: int
    manifest: dict[str, Any]

    @property
    def columns(self) -> list[str]:
        """The product fields the batch committed."""
        return list(self.manifest["columns"])

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary (the manifest plus catalog facts)."""
        return {
            "batch_id": self.batch_id,
            "created_at": self.created_at,
            "label": self.label,
            "source": self.manifest["source"],
            "products": self.products,
            "rejected": self.rejected,
            "tree": self.manifest["tree"],
            "manifest_digest": self.manifest_digest,
            "commitment": self.commitment,
            "key_id": self.key_id,
            "columns": self.columns,
            "record_version": self.manifest["record_version"],
            "token_version": self.manifest["token_version"],
            "url_base": self.manifest["url_base"],
            "provmint_version": self.manifest["provmint_version"],
        }


_BATCH_COLUMNS = (
    "seq, batch_id, created_at, label, source_name, source_sha256, products, rejected, "
    "tree_profile, tree_size, root, manifest_digest, commitment, key_id, part_rows, parts, "
    "manifest"
)


_MANIFEST_KEYS = ("source", "tree", "columns", "record_version", "token_version", "url_base")


def _batch_from_row(row: tuple[Any, ...]) -> BatchInfo:
    values = list(row)
    try:
        manifest = load_json(values[-1])
    except (TypeError, ValueError):
        manifest = None
    # What readers rely on; the audit checks the rest against the committed digest.
    if (
        not isinstance(manifest, dict)
        or any(key not in manifest for key in _MANIFEST_KEYS)
        or not isinstance(manifest["columns"], list)
        or not all(isinstance(c, str) for c in manifest["columns"])
        or not isinstance(manifest["url_base"], str)
    ):
        raise StoreCorruptError(
            f"damaged: the manifest of batch {values[1]} is not a provmint manifest, "
            "catalog.duckdb table batches",
            hint="restore the catalog from a backup",
        )
    values[-1] = manifest
    return BatchInfo(*values)


_STAGING_NAME = re.compile(r"^(?P<batch>[0-9]{8}-[0-9a-f]{8})\.(?P<pid>[0-9]{1,10})$")
"""``staging/<batch id>.<writer pid>``: only entries of this shape are provmint's."""


def init_catalog(con: duckdb.DuckDBPyConnection) -> None:
    """Create the catalog's tables where they do not exist yet."""
    from provmint.store.lookup import INDEX_SCHEMA

    con.execute(_SCHEMA)
    con.execute(ANCHOR_SCHEMA)
    con.execute(INDEX_SCHEMA)


def insert_batch(con: duckdb.DuckDBPyConnection, info: BatchInfo) -> None:
    """Insert a batch's catalog row."""
    con.execute(
        f"INSERT INTO batches ({_BATCH_COLUMNS}) VALUES "
        "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            info.seq,
            info.batch_id,
            info.created_at,
            info.label,
            info.source_name,
            info.source_sha256,
            info.products,
            info.rejected,
            info.tree_profile,
            info.tree_size,
            info.root,
            info.manifest_digest,
            info.commitment,
            info.key_id,
            info.part_rows,
            info.parts,
            json.dumps(info.manifest),
        ],
    )


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """One catalog transaction: committed when the block ends, rolled back when it raises
    (the error then propagates)."""
    import duckdb

    con.execute("BEGIN TRANSACTION")
    try:
        yield
        con.execute("COMMIT")
    except BaseException:
        # DuckDB may have ended it already (a failed COMMIT does).
        with contextlib.suppress(duckdb.TransactionException):
            con.execute("ROLLBACK")
        raise


@dataclass(frozen=True, slots=True)
class BatchStamp:
    """A committed batch's id and creation time: what a message naming it needs."""

    batch_id: str
    created_at: str


def batch_minted_from(con: duckdb.DuckDBPyConnection, sha256: str) -> BatchStamp | None:
    """The first committed batch minted from the file whose SHA-256 is ``sha256`` (hex),
    or None. Only its id and creation time are read: this serves a message, which a
    damaged manifest elsewhere in the row must not turn into another error."""
    row = con.execute(
        "SELECT batch_id, created_at FROM batches WHERE source_sha256 = ? ORDER BY seq LIMIT 1",
        [sha256],
    ).fetchone()
    return BatchStamp(str(row[0]), str(row[1])) if row else None


@dataclass(frozen=True, slots=True)
class Recovery:
    """What :meth:`Store.recover` did: committed batches it moved out of ``staging/``
    and the leftovers of dead writers it removed (paths relative to the store)."""

    finished: tuple[str, ...]
    removed: tuple[str, ...]


class Store:
    """A product store on disk. Open it with :meth:`open`; lock it around catalog access."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.catalog_path = root / "catalog.duckdb"
        self.catalog_wal_path = root / "catalog.duckdb.wal"
        self.batches_dir = root / "batches"
        self.staging_dir = root / "staging"
        self.anchors_dir = root / "anchors"
        self.quarantine_dir = root / "quarantine"
        self.index_dir = root / "index"

    @classmethod
    def open(cls, root: Path, *, create: bool = False) -> Store:
        """Open the store at ``root``; with ``create``, make it if it does not exist."""
        marker = root / "STORE"
        if not marker.exists():
            if not create:
                raise StoreError(
                    f"no provmint store at {root}",
                    hint="mint a batch first (provmint batch create FILE), or pass --store",
                )
            if root.exists() and any(root.iterdir()):
                raise StoreError(f"{root} exists and is not a provmint store (not empty)")
            try:
                for sub in ("batches", "staging"):
                    (root / sub).mkdir(parents=True, exist_ok=True)
                doc = {
                    "format": STORE_FORMAT,
                    "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                }
                write_atomic(marker, (json.dumps(doc) + "\n").encode())
            except OSError as exc:
                raise StoreError(f"cannot create a store at {root}: {exc.strerror}") from exc
        else:
            found = _read_marker(marker).get("format")
            if found not in READABLE_STORE_FORMATS:
                raise StoreError(f"{root}: unsupported store format {found!r}")
        return cls(root)

    def lock(self, *, exclusive: bool, timeout: float, purpose: str, on_wait: Any = None) -> Any:
        """The store lock (see :func:`provmint.store.lock.store_lock`)."""
        return store_lock(
            self.root, exclusive=exclusive, timeout=timeout, purpose=purpose, on_wait=on_wait
        )

    @contextmanager
    def connect(self, *, write: bool) -> Iterator[duckdb.DuckDBPyConnection]:
        """A catalog connection; call it only while holding the lock (exclusive to write).

        A catalog is created only in a store that holds no batch yet: a missing catalog
        next to batch directories is an error that names the repair, never a fresh start.
        """
        import duckdb

        if not self.catalog_path.exists():
            self._no_catalog(write)
        try:
            con = duckdb.connect(str(self.catalog_path), read_only=not write)
        except duckdb.Error as exc:
            raise self.catalog_error(exc) from exc
        view: CatalogView | None = None
        try:
            if write:
                init_catalog(con)
            yield con
            if write:  # what the readers' snapshot will hold (read before the close)
                view = self._committed_view(con)
        except duckdb.Error as exc:
            raise self.catalog_error(exc) from exc
        finally:
            # Closing checkpoints the write-ahead log into the file. When that fails (a
            # full disk), every committed change is still in the log, which DuckDB
            # replays the next time: the work is done, so it is not reported as failed.
            with contextlib.suppress(duckdb.Error):
                con.close()
        if write:
            # The readers' snapshot of what was just written. It is a cache that readers
            # check against the catalog file: failing to write it loses nothing.
            from provmint.store.view import refresh_snapshot

            with contextlib.suppress(ProvmintError, OSError):
                refresh_snapshot(self, view)

    def _committed_view(self, con: duckdb.DuckDBPyConnection) -> CatalogView | None:
        """The readers' view of what the writer's connection has committed, read in a
        transaction of its own; None when the read fails or a transaction is still open
        on the connection (its changes are not committed: closing rolls them back)."""
        import duckdb

        from provmint.store.view import read_catalog_view

        try:
            con.execute("BEGIN TRANSACTION")  # refused inside an open transaction
        except duckdb.Error:
            return None
        try:
            return read_catalog_view(self, con)
        except (ProvmintError, duckdb.Error):
            return None
        finally:
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")

    @contextmanager
    def writing(
        self,
        *,
        timeout: float,
        purpose: str,
        on_wait: Callable[[str], None] | None = None,
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        """A write connection to the catalog, held inside the exclusive store lock.

        The lock is taken first (waiting up to ``timeout`` seconds, ``on_wait`` told once
        who holds it; ``purpose`` is what a waiting process is told we do), the connection
        opened inside it, and both released in reverse order, so the connection (and the
        readers' snapshot written when it closes) never outlives the lock. An error in the
        block propagates (DuckDB's mapped by :meth:`catalog_error`).
        """
        with self.writing_later(timeout=timeout, purpose=purpose, on_wait=on_wait) as connection:
            yield connection()

    @contextmanager
    def writing_later(
        self,
        *,
        timeout: float,
        purpose: str,
        on_wait: Callable[[str], None] | None = None,
    ) -> Iterator[Callable[[], duckdb.DuckDBPyConnection]]:
        """:meth:`writing`, with the connection opened when the function this yields is
        first called (it returns the same connection every time): a writer can start on
        work that needs only the lock (a mint's first chunks) while DuckDB loads. The
        connection, if opened, is closed before the lock is released, as in :meth:`writing`.
        """
        with (
            self.lock(exclusive=True, timeout=timeout, purpose=purpose, on_wait=on_wait),
            contextlib.ExitStack() as opened,
        ):
            connections: list[duckdb.DuckDBPyConnection] = []

            def connection() -> duckdb.DuckDBPyConnection:
                if not connections:
                    connections.append(opened.enter_context(self.connect(write=True)))
                return connections[0]

            yield connection

    @contextmanager
    def reading(
        self, *, timeout: float, purpose: str = "read"
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection to the catalog, held inside the shared store lock (taken
        first, released last, as in :meth:`writing`). Raises StoreError when the store has
        no batch yet (nothing to read) and StoreCorruptError when its catalog is missing."""
        with (
            self.lock(exclusive=False, timeout=timeout, purpose=purpose),
            self.connect(write=False) as con,
        ):
            yield con

    def catalog_stamp(self) -> tuple[float, int]:
        """A cheap fingerprint of the catalog's files (modification time, total size)
        that changes with every commit, for a reader deciding whether to reload;
        ``(0.0, 0)`` while there is no catalog."""
        try:
            info = os.stat(self.catalog_path)
        except FileNotFoundError:
            return (0.0, 0)
        # A commit may land in the write-ahead log and leave the file itself untouched.
        wal = self.catalog_wal_path
        wal_size = wal.stat().st_size if wal.exists() else 0
        return (info.st_mtime, info.st_size + wal_size)

    def view(self) -> CatalogView:
        """The catalog as readers see it (hold the store lock; shared is enough): from
        the snapshot when it matches the catalog file, else read from the catalog (and
        the snapshot rewritten where the store can be written). See
        :mod:`provmint.store.view`."""
        from provmint.store.view import load_snapshot, refresh_snapshot

        return load_snapshot(self) or refresh_snapshot(self)

    def _no_catalog(self, write: bool) -> None:
        batches = self.batch_dirs()
        if batches:
            raise StoreCorruptError(
                f"store {self.root} has no catalog ({self.catalog_path.name} is missing) but "
                f"holds {len(batches)} batch director{'y' if len(batches) == 1 else 'ies'}",
                hint=f"rebuild the catalog from them: provmint store repair --store {self.root}",
            )
        if not write:
            raise StoreError(f"no batches in store {self.root} yet", hint="mint a batch first")

    def catalog_error(self, exc: Exception) -> ProvmintError:
        """The StoreError for a DuckDB error on the catalog (busy, full disk, damaged)."""
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "Could not set lock" in text or "Conflicting lock" in text:
            return StoreBusyError(
                f"catalog {self.catalog_path} is open in another program: {text}",
                hint="close other DuckDB sessions on the catalog, or open them read-only",
            )
        if "No space left on device" in text or "Disk full" in text:
            full = OSError(errno.ENOSPC, "No space left on device", str(self.catalog_path))
            return os_error(full, note="nothing was committed")
        if "Permission denied" in text or "Read-only file system" in text:
            return StoreError(f"cannot open catalog {self.catalog_path}: {text}")
        # Anything else means the file is not the catalog provmint wrote (truncated,
        # overwritten, checksum errors, missing tables). Repair never deletes, so it is
        # always safe to suggest.
        return StoreCorruptError(
            f"catalog {self.catalog_path} is damaged: {text}",
            hint=f"rebuild it from the batch directories: provmint store repair "
            f"--store {self.root}",
        )

    # -- writing ---------------------------------------------------------------------

    def batch_dirs(self) -> list[Path]:
        """Every directory under ``batches/`` (committed batches, unless the catalog was
        lost or replaced)."""
        if not self.batches_dir.is_dir():
            return []
        return sorted(p for p in self.batches_dir.iterdir() if p.is_dir())

    def _staged(self) -> dict[str, list[Path]]:
        """Staging directories by batch id (only entries named as provmint names them)."""
        out: dict[str, list[Path]] = {}
        if self.staging_dir.is_dir():
            for entry in self.staging_dir.iterdir():
                match = _STAGING_NAME.match(entry.name)
                if match and entry.is_dir():
                    out.setdefault(match["batch"], []).append(entry)
        return out

    def recover(self, con: duckdb.DuckDBPyConnection) -> Recovery:
        """Finish or clean up what interrupted writers left (needs the exclusive lock).

        A committed batch still in ``staging/`` is moved into place; the staging
        directories of dead writers are removed (:meth:`finish_staged`). A batch directory
        the catalog does not know is never removed: it means the catalog was lost or
        replaced, so this raises StoreCorruptError naming ``provmint store repair``.
        """
        known = {r[0] for r in con.execute("SELECT batch_id FROM batches").fetchall()}
        recovery = self.finish_staged(known)
        strangers = [p.name for p in self.batch_dirs() if p.name not in known]
        if strangers:
            raise StoreCorruptError(
                f"store {self.root}: batches/{strangers[0]} is not in the catalog"
                + (f" (nor are {len(strangers) - 1} more)" if len(strangers) > 1 else "")
                + "; the catalog is older than the batch files or was replaced",
                hint=f"rebuild the catalog from the batch directories: provmint store repair "
                f"--store {self.root}",
            )
        if recovery.finished:
            self.refresh_view(con)
        self._settle_index(con, bool(known))
        return replace(recovery, removed=recovery.removed + self._remove_stale_temporaries())

    def _remove_stale_temporaries(self) -> tuple[str, ...]:
        """Remove the temporary files of writers killed half-way through an atomic write
        (anchor journals, index files, the catalog's neighbours); needs the exclusive
        lock, like every writer of these directories."""
        removed = []
        for directory in (self.root, self.anchors_dir, self.index_dir, self.quarantine_dir):
            for path in stale_temporaries(directory, pid_alive):
                path.unlink(missing_ok=True)
                removed.append(str(path.relative_to(self.root)))
        return tuple(removed)

    def _settle_index(self, con: duckdb.DuckDBPyConnection, has_batches: bool) -> None:
        """Remove index files an interrupted commit or repair left; build the index of a
        store whose catalog predates it (its batches are read once)."""
        from provmint.store.lookup import (
            column_blocks,
            rebuild_index,
            runs_of_columns,
            stray_runs,
        )

        listed = {name for (name,) in con.execute("SELECT name FROM index_runs").fetchall()}
        for stray in stray_runs(self.index_dir, listed):
            stray.unlink()
        if self.index_dir.is_dir():
            for scratch in self.index_dir.glob(".*-[0-9]*"):
                pid = scratch.name.rpartition("-")[2]
                if scratch.is_dir() and pid.isdigit() and not pid_alive(int(pid)):
                    shutil.rmtree(scratch)
        if listed or not has_batches:
            return
        index = rebuild_index(
            self,
            self.batches(con),
            lambda batch, scratch: runs_of_columns(scratch, lambda: column_blocks(self, batch)),
        )
        try:
            with transaction(con):
                index.record(con)
                con.execute("DROP TABLE IF EXISTS product_keys")
                con.execute("DROP TABLE IF EXISTS product_tokens")
        except BaseException:
            index.discard()
            raise

    def finish_staged(self, committed: set[str]) -> Recovery:
        """Move the batches of ``committed`` (ids the catalog holds) that are still in
        ``staging/`` into place, and remove the other staging directories whose writer is
        dead: we hold the exclusive lock, which every writer holds for as long as it
        writes, and the pid in the directory's name is not running. Needs the exclusive
        lock."""
        finished, removed = [], []
        for batch_id, entries in sorted(self._staged().items()):
            if batch_id in committed and not (self.batches_dir / batch_id).exists():
                staged = self._committed_staging(entries)
                if staged is not None:
                    self.publish(staged, batch_id)
                    finished.append(batch_id)
                    entries = [e for e in entries if e != staged]
            for entry in entries:
                match = _STAGING_NAME.match(entry.name)
                if match and int(match["pid"]) != os.getpid() and not pid_alive(int(match["pid"])):
                    shutil.rmtree(entry)
                    removed.append(str(entry.relative_to(self.root)))
        return Recovery(tuple(finished), tuple(removed))

    @staticmethod
    def _committed_staging(entries: list[Path]) -> Path | None:
        """The staging directory holding a committed batch's finished files (its manifest
        is written last, just before the commit)."""
        done = [e for e in entries if (e / "manifest.json").is_file()]
        return done[0] if len(done) == 1 else None

    def staging_path(self, batch_id: str) -> Path:
        """A fresh staging directory for a batch being written."""
        path = self.staging_dir / f"{batch_id}.{os.getpid()}"
        (path / "products").mkdir(parents=True)
        return path

    def upgrade_format(self) -> None:
        """Mark a ``provmint-store/1`` store ``provmint-store/2`` (hold the lock exclusively),
        so that no version before it reads the parts of :attr:`PartLayout.V2` the next
        commit brings: it refuses the store's format instead of calling them damaged.
        Nothing else changes; the marker keeps its creation time."""
        marker = self.root / "STORE"
        doc = _read_marker(marker)
        if doc.get("format") != STORE_FORMAT:
            doc["format"] = STORE_FORMAT
            try:
                write_atomic(marker, (json.dumps(doc) + "\n").encode())
            except OSError as exc:
                raise os_error(exc, marker) from exc

    def publish(self, staging: Path, batch_id: str) -> None:
        """Move a committed batch's files from ``staging`` into ``batches/``."""
        os.replace(staging, self.batches_dir / batch_id)
        fsync_dir(self.batches_dir)
        fsync_dir(self.staging_dir)

    def commit_batch(
        self,
        con: duckdb.DuckDBPyConnection,
        staging: Path,
        info: BatchInfo,
        index: IndexUpdate,
    ) -> None:
        """Commit the batch whose files are fully written in ``staging``, with the store's
        index after it (its runs already written), then move the files into place.

        Before the commit nothing of the batch is visible and a failure undoes the new
        runs; once COMMIT returns the batch exists. Should this process die before the
        rename, readers find its files in ``staging/`` and the next writer moves them.
        """
        import duckdb

        for directory in (staging / "products", staging / "records", staging):
            if directory.exists():
                fsync_dir(directory)
        self.upgrade_format()
        try:
            with transaction(con):
                insert_batch(con, info)
                index.record(con)
        except BaseException:
            index.discard()
            raise
        self.publish(staging, info.batch_id)
        index.finish()
        # A convenience view, rebuilt by the next commit: the batch itself is in place.
        with contextlib.suppress(duckdb.Error):
            self.refresh_view(con)

    def refresh_view(self, con: duckdb.DuckDBPyConnection) -> None:
        """(Re)create the ``products`` view over every committed part file (a convenience
        for people querying the catalog with DuckDB; provmint itself never reads it).

        Its ``url`` column is rebuilt from each row as the readers rebuild it (parts of
        :attr:`PartLayout.V2` store none; an older part's stored one is the same), so
        every batch's rows have one."""
        # One read of the parts of the batches of one URL base and one set of columns:
        # their parts have the same columns, so DuckDB binds the view with the first
        # file's schema alone (union_by_name read every file's footer, at every commit:
        # 0.16 s at 100M products, seconds at a billion). The newest batch's parts come
        # first: an older batch's parts of provmint-part/1 hold a ``url`` more, which a
        # read ignores when the first file lacks it (the view rebuilds the url anyway).
        groups: dict[tuple[str, tuple[str, ...]], list[BatchInfo]] = {}
        for batch in self.batches(con):
            if (self.batches_dir / batch.batch_id).is_dir():
                key = (str(batch.manifest["url_base"]), tuple(sorted(batch.columns)))
                groups.setdefault(key, []).append(batch)
        if not groups:
            con.execute("DROP VIEW IF EXISTS products")
            return
        # Absolute paths, for a reader anywhere: the batches' directory resolved once
        # (provmint makes every directory and part below it itself).
        top = str(self.batches_dir.resolve())
        selects = [
            products_select(
                base,
                [
                    os.path.join(top, b.batch_id, "products", f"part-{i:05d}.parquet")
                    for b in reversed(batches)
                    for i in range(b.parts)
                ],
                lots="lot" in columns,
                same_columns=True,
            )
            for (base, columns), batches in groups.items()
        ]
        con.execute("CREATE OR REPLACE VIEW products AS " + " UNION ALL BY NAME ".join(selects))
        con.execute("INSERT OR REPLACE INTO meta VALUES ('root', ?)", [str(self.root.resolve())])

    def next_seq(self, con: duckdb.DuckDBPyConnection) -> int:
        """The sequence number the next batch gets."""
        row = con.execute("SELECT coalesce(max(seq), 0) + 1 FROM batches").fetchone()
        return int(row[0]) if row else 1

    # -- reading ---------------------------------------------------------------------

    def batches(self, con: duckdb.DuckDBPyConnection) -> list[BatchInfo]:
        """Every committed batch, oldest first."""
        rows = con.execute(f"SELECT {_BATCH_COLUMNS} FROM batches ORDER BY seq").fetchall()
        return [_batch_from_row(r) for r in rows]

    def batch(self, con: duckdb.DuckDBPyConnection, ref: str) -> BatchInfo:
        """A batch by full id or unique prefix (like a git commit)."""
        return find_batch(self.batches(con), ref, self.root)

    def batch_by_seq(self, con: duckdb.DuckDBPyConnection, seq: int) -> BatchInfo:
        """A batch by its catalog sequence number."""
        rows = con.execute(f"SELECT {_BATCH_COLUMNS} FROM batches WHERE seq = ?", [seq]).fetchall()
        if not rows:
            raise StoreCorruptError(f"catalog index points at missing batch #{seq}")
        return _batch_from_row(rows[0])

    def batch_dir(self, batch: BatchInfo) -> Path:
        """Directory of a committed batch: under ``batches/``, or still in ``staging/``
        when its writer died between the commit and the rename (the next writer moves it)."""
        final = self.batches_dir / batch.batch_id
        if not final.exists():
            staged = self._committed_staging(self._staged().get(batch.batch_id, []))
            if staged is not None:
                return staged
        return final

    def tree(self, batch: BatchInfo) -> TreeFile:
        """The batch's stored Merkle tree."""
        tree = TreeFile(self.batch_dir(batch) / "tree.bin")
        if tree.size != batch.tree_size:
            raise StoreCorruptError(f"tree file of batch {batch.batch_id} has the wrong size")
        return tree

    def part_files(self, batch: BatchInfo) -> list[Path]:
        """The batch's Parquet part files, in leaf order."""
        return [
            self.batch_dir(batch) / "products" / f"part-{i:05d}.parquet" for i in range(batch.parts)
        ]

    def record_part_path(self, batch: BatchInfo, index: int) -> Path:
        """The batch's record part ``index`` (:mod:`provmint.store.records`)."""
        return self.batch_dir(batch) / "records" / f"part-{index:05d}.rec"

    def read_part(self, batch: BatchInfo, index: int, columns: list[str] | None = None) -> pa.Table:
        """Part file ``index`` of ``batch`` (only ``columns`` if given), checked before it is
        returned: readable, the batch's schema and row counts, valid UTF-8, no nulls,
        ``leaf_index`` in order, well-formed tokens, truthful statistics.

        Every failure (I/O, Arrow, Parquet, encoding, shape) is a
        :class:`~provmint.errors.StoreCorruptError` ``"damaged: <what>, <path>"``: the one
        place that turns a damaged part into one clear line.
        """
        import pyarrow.parquet as pq

        if not 0 <= index < batch.parts:
            raise NotFoundError(f"batch {batch.batch_id} has no part {index}")
        path = self.part_files(batch)[index]
        start = index * batch.part_rows
        rows = min(batch.part_rows, batch.tree_size - start)
        with _reading(path), _part_file(path) as fh:
            file = pq.ParquetFile(fh)
            _check_layout(file, batch, path, rows)
            table = file.read(columns=_with_leaf_index(columns))
            _check_values(table, path, start)
            _check_chunks(file, list(range(file.metadata.num_row_groups)), table, path, rows)
        return table.select(columns) if columns is not None else table

    def read_products(
        self, batch: BatchInfo, leaf_indexes: list[int], columns: list[str] | None = None
    ) -> pa.Table:
        """Stored product rows by leaf index (reads only the row groups holding them),
        checked like :meth:`read_part`; damage raises StoreCorruptError."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        pieces = []
        groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for position, leaf in enumerate(leaf_indexes):
            if not 0 <= leaf < batch.tree_size:
                raise NotFoundError(f"batch {batch.batch_id} has no product #{leaf}")
            part, offset = divmod(leaf, batch.part_rows)
            groups.setdefault((part, offset // ROW_GROUP_ROWS), []).append(
                (position, offset % ROW_GROUP_ROWS)
            )
        order: list[int] = []
        for (part, group), wanted in sorted(groups.items()):
            path = self.part_files(batch)[part]
            start = part * batch.part_rows
            with _reading(path), _part_file(path) as fh:
                file = pq.ParquetFile(fh)
                rows = min(batch.part_rows, batch.tree_size - start)
                _check_layout(file, batch, path, rows)
                table = file.read_row_group(group, columns=_with_leaf_index(columns))
                _check_values(table, path, start + group * ROW_GROUP_ROWS)
                _check_chunks(file, [group], table, path, rows)
            if columns is not None:
                table = table.select(columns)
            pieces.append(table.take(pa.array([offset for _, offset in wanted])))
            order += [position for position, _ in wanted]
        if not pieces:
            raise NotFoundError("no products asked for")
        combined = pa.concat_tables(pieces)
        inverse = sorted(range(len(order)), key=order.__getitem__)
        return combined.take(pa.array(inverse))


# -- reading stored parts: every check and error mapping in one place -------------------

_TOKEN_TEXT = r"^[A-Za-z0-9_-]{21}[AQgw]$"
"""A canonical printed token (what :func:`provmint.tokens.parse_token` accepts), as RE2."""
_TOKEN_WIDTH = 22
_TOKEN_BODY = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
_PARQUET_TYPES = {"leaf_index": ("INT64", "None")}
_STRING_TYPE = ("BYTE_ARRAY", "String")


LATEST = "latest"
"""The batch reference that means the newest batch (``provmint batch show latest``)."""


_MARKER_MAX_BYTES = 1 << 16
"""A marker is one short JSON object; a longer file is not one provmint wrote."""


def _read_marker(marker: Path) -> dict[str, Any]:
    """The store marker's JSON object (StoreCorruptError when it is unreadable, longer
    than :data:`_MARKER_MAX_BYTES`, nested deeper than an object needs, or not an
    object)."""
    try:
        with open(marker, "rb") as fh:
            data = fh.read(_MARKER_MAX_BYTES + 1)
        if len(data) > _MARKER_MAX_BYTES:
            raise ValueError("too long")
        doc = load_json(data, max_depth=4)
    except (OSError, ValueError) as exc:
        raise StoreCorruptError(f"{marker}: unreadable store marker") from exc
    if not isinstance(doc, dict):
        raise StoreCorruptError(f"{marker}: unreadable store marker")
    return doc


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def products_select(base: str, files: list[str], *, lots: bool, same_columns: bool = False) -> str:
    """The ``products`` view's rows of the part ``files`` of batches minted on URL
    ``base`` (``lots``: some hold a lot column): every stored column but a stored
    ``url``, then the URL :func:`provmint.gs1.digital_link` makes, then the file name.
    DuckDB's ``url_encode`` percent-encodes as :func:`provmint.gs1.percent_encode` does
    (every UTF-8 byte but RFC 3986's unreserved characters; tested). ``same_columns``:
    every file holds the first one's columns (more are ignored), so the files' columns
    are not matched by name, which reads every file's footer."""
    listing = ", ".join(_sql_text(f) for f in files)
    lot = ""
    if lots:
        lot = "CASE WHEN coalesce(lot, '') = '' THEN '' ELSE '/10/' || url_encode(lot) END || "
    url = (
        f"{_sql_text(base.rstrip('/') + '/01/')} || gtin || {lot}'/21/' || url_encode(serial)"
        " || '?t=' || token"
    )
    return (
        f"SELECT COLUMNS(lambda c: c NOT IN ('url', 'filename')), {url} AS url, filename "
        f"FROM read_parquet([{listing}], union_by_name = {str(not same_columns).lower()}, "
        "filename = true)"
    )


def find_batch(batches: Sequence[BatchInfo], ref: str, root: Path) -> BatchInfo:
    """The batch of ``batches`` (a store's, oldest first) whose id is ``ref`` or, failing
    that, the only one whose id starts with ``ref`` (like a git commit); NotFoundError
    naming the store at ``root`` otherwise. :data:`LATEST` names the newest batch (no
    batch id can be that word)."""
    if ref == LATEST:
        if not batches:
            raise NotFoundError(
                f"no batches yet in store {root}", hint="mint one with: provmint batch create FILE"
            )
        return batches[-1]
    exact = [b for b in batches if b.batch_id == ref]
    if exact:
        return exact[0]
    matches = [b for b in batches if ref and b.batch_id.startswith(ref)]
    if not matches:
        raise NotFoundError(
            f"no batch {ref!r} in store {root}", hint="list batches with: provmint batch list"
        )
    if len(matches) > 1:
        ids = ", ".join(b.batch_id for b in matches[:5])
        raise NotFoundError(f"batch id prefix {ref!r} is ambiguous: {ids}")
    return matches[0]


def damaged(what: str, where: Path | str) -> str:
    """The one wording of store damage: ``damaged: <what>, <where>``."""
    return f"damaged: {what}, {where}"


def _corrupt(what: str, where: Path | str) -> StoreCorruptError:
    return StoreCorruptError(
        damaged(what, where),
        hint="audit the batch (provmint verify --batch ID) and restore it from a backup",
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= 160 else line[:157] + "..."


def _part_file(path: Path) -> Any:
    """An Arrow-native reader of ``path``.

    Not a Python file object: Arrow's reader threads would then hold Python buffers, and
    one released on a worker thread while the interpreter exits aborts the process
    ("terminate called without an active exception").
    """
    import pyarrow as pa

    return pa.OSFile(str(path), "r")


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Turn every way reading a part file can fail into StoreCorruptError."""
    import pyarrow as pa

    try:
        yield
    except StoreCorruptError:
        raise
    except FileNotFoundError as exc:
        raise _corrupt("the part file is missing", path) from exc
    except OSError as exc:
        if exc.errno is not None:  # a real I/O error, not pyarrow's "OSError: ..." parse errors
            raise _corrupt(f"cannot read the part file ({exc.strerror})", path) from exc
        raise _corrupt(f"not readable Parquet ({_first_line(exc)})", path) from exc
    except (pa.ArrowException, ValueError, UnicodeDecodeError, MemoryError, KeyError) as exc:
        raise _corrupt(f"not readable Parquet ({_first_line(exc)})", path) from exc


def _with_leaf_index(columns: list[str] | None) -> list[str] | None:
    if columns is None or "leaf_index" in columns:
        return columns
    return ["leaf_index", *columns]


def _check_layout(file: Any, batch: BatchInfo, path: Path, rows: int) -> None:
    """The part's file metadata: the batch's columns with their types, ``rows`` rows in
    as many row groups as provmint writes (the groups are checked once read)."""

    schema = file.schema_arrow
    layout = _layout_of(file, path)
    expected = {*layout.columns, *batch.columns}
    names = list(schema.names)
    if len(set(names)) != len(names) or set(names) != expected:
        raise _corrupt(f"columns {sorted(names)} are not the batch's {sorted(expected)}", path)
    parquet = file.schema
    for i, name in enumerate(names):
        column = parquet.column(i)
        kind = (column.physical_type, str(column.logical_type))
        wanted = _PARQUET_TYPES.get(name, _STRING_TYPE)
        arrow = schema.field(i)
        arrow_type = "int64" if name == "leaf_index" else "string"
        if column.name != name or kind != wanted or str(arrow.type) != arrow_type:
            raise _corrupt(f"column {name!r} has the wrong name or type", path)
        if not arrow.nullable or arrow.metadata:
            raise _corrupt(f"column {name!r} has a schema provmint does not write", path)
    meta = file.metadata
    if meta.num_rows != rows:
        raise _corrupt(f"holds {meta.num_rows} products where the batch has {rows}", path)
    if meta.num_row_groups != -(-rows // ROW_GROUP_ROWS):
        raise _corrupt(f"{meta.num_row_groups} row groups cannot be provmint's", path)


def _layout_of(file: Any, path: Path) -> PartLayout:
    """The layout a part names, in its Arrow schema's metadata and the same in the
    Parquet footer's key-value metadata (nothing in either: :attr:`PartLayout.V1`)."""
    footer = dict(file.metadata.metadata or {})
    footer.pop(b"ARROW:schema", None)  # the Arrow schema itself, read as schema_arrow
    arrow = file.schema_arrow.metadata or {}
    for layout in PartLayout:
        if arrow == footer == (layout.metadata or {}):
            return layout
    raise _corrupt("the schema carries metadata provmint does not write", path)


def _first_false(mask: Any) -> int | None:
    """Index of the first False in a boolean Arrow array (nulls count as False)."""
    import numpy as np

    values = mask.to_numpy(zero_copy_only=False)
    bad = np.flatnonzero(~values.astype(bool))
    return int(bad[0]) if bad.size else None


def _check_values(table: pa.Table, path: Path, start: int) -> None:
    """Row-level checks: valid Arrow data (UTF-8 included), no nulls, ``leaf_index`` from
    ``start`` on, canonical tokens."""
    import numpy as np
    import pyarrow.compute as pc

    try:
        table.validate(full=True)
    except ValueError as exc:
        raise _corrupt(f"invalid values ({_first_line(exc)})", path) from exc
    for name in table.column_names:
        column = table.column(name)
        if column.null_count:
            row = _first_false(pc.is_valid(column))
            raise _corrupt(f"{name} of product {start + (row or 0)} is missing", path)
    leaves = table.column("leaf_index").to_numpy()
    wrong = np.flatnonzero(leaves != np.arange(start, start + len(leaves)))
    if wrong.size:
        row = int(wrong[0])
        raise _corrupt(f"product {start + row} is stored as leaf {leaves[row]}", path)
    if "token" in table.column_names:
        row = _first_malformed_token(table.column("token"))
        if row is not None:
            raise _corrupt(f"token of product {start + row} is malformed", path)


def _first_malformed_token(tokens: Any) -> int | None:
    """The first row that is not a canonical printed token (:data:`_TOKEN_TEXT`: 21
    base64url characters, then one of ``AQgw``), found with byte lookups over the
    column's buffer, several times faster than the regex (kept for a column of another
    shape, which is then malformed anyway)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    column = tokens.combine_chunks() if isinstance(tokens, pa.ChunkedArray) else tokens
    n = len(column)
    offsets = np.frombuffer(column.buffers()[1], np.int32, n + 1, column.offset * 4)
    if column.type != pa.string() or not n or not (np.diff(offsets) == _TOKEN_WIDTH).all():
        return _first_false(pc.match_substring_regex(column, _TOKEN_TEXT)) if n else None
    data = np.frombuffer(column.buffers()[2], np.uint8, n * _TOKEN_WIDTH, int(offsets[0]))
    body, last = np.ones(256, dtype=bool), np.ones(256, dtype=bool)  # True: not allowed
    body[np.frombuffer(_TOKEN_BODY, np.uint8)] = False
    last[np.frombuffer(b"AQgw", np.uint8)] = False
    wrong = body.take(data)
    wrong[_TOKEN_WIDTH - 1 :: _TOKEN_WIDTH] = last.take(data[_TOKEN_WIDTH - 1 :: _TOKEN_WIDTH])
    bad = np.flatnonzero(wrong)
    return int(bad[0]) // _TOKEN_WIDTH if bad.size else None


def _check_chunks(file: Any, groups: list[int], table: pa.Table, path: Path, rows: int) -> None:
    """The row groups (of a part of ``rows`` rows) that ``table`` was read from: each
    of the size provmint writes (product lookups rely on it), each column chunk naming
    its column, with true statistics (DuckDB prunes row groups with them): every
    present min/max bounds the data and every null count is exact.

    Only groups and chunks already read are inspected: pyarrow aborts the whole process
    when asked for the metadata of some damaged ones, where reading them raises an error.
    """
    import pyarrow.compute as pc

    meta = file.metadata
    names = list(file.schema_arrow.names)
    offset = 0
    for group in groups:
        row_group = meta.row_group(group)
        if row_group.num_rows != min(ROW_GROUP_ROWS, rows - group * ROW_GROUP_ROWS):
            raise _corrupt(f"row group {group} has the wrong number of products", path)
        for name in table.column_names:
            chunk = row_group.column(names.index(name))
            if chunk.path_in_schema != name:
                raise _corrupt(f"row group {group} does not hold column {name!r}", path)
            stats = chunk.statistics
            if stats is None:
                continue
            values = table.column(name).slice(offset, row_group.num_rows)
            if stats.has_null_count and stats.null_count != values.null_count:
                raise _corrupt(f"statistics of {name} in row group {group} are wrong", path)
            if stats.has_min_max and row_group.num_rows:
                bounds = pc.min_max(values)
                if not stats.min <= bounds["min"].as_py() <= bounds["max"].as_py() <= stats.max:
                    raise _corrupt(f"statistics of {name} in row group {group} are wrong", path)
        offset += row_group.num_rows
