"""The SQLite scan log: ``<store>/scans.sqlite`` by default, in WAL mode.

SQLite lets many processes on one machine take turns writing (``provmint scan``, the
workers of ``provmint serve``), where DuckDB allows one writing process. Every write is
one ``BEGIN IMMEDIATE`` transaction, so the counters and the scan rows never disagree.
Nothing is created until the first scan is logged: a store that was never scanned has
no ``scans.sqlite``, and a read-only store is read without one.
"""

from __future__ import annotations

import itertools
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from provmint.store.scanlog import (
    GOOD_VERDICTS,
    LISTED_PLACES,
    PRUNE_CHUNK,
    SCHEMA_VERSION,
    Scan,
    ScanLog,
    ScanLogError,
    ScanRequest,
    ScanStats,
    clean_location,
    stamp,
)

__all__ = ["SqliteScanLog"]

_T = TypeVar("_T")

_GOOD = "verdict IN ({})".format(", ".join(f"'{v}'" for v in GOOD_VERDICTS))

# Version 1 (provmint before the counters) had the scans table and scans_by_code only.
# No index on ``at``: every index costs each scan a page write, and pruning finds old rows
# in id order (oldest first) instead; only its last chunk reads the rest of the table.
_V2 = f"""
CREATE TABLE IF NOT EXISTS scans (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    gtin TEXT NOT NULL,
    serial TEXT NOT NULL,
    verdict TEXT NOT NULL,
    location TEXT,
    source TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS scans_by_code ON scans (gtin, serial);
CREATE TABLE IF NOT EXISTS scan_codes (
    gtin TEXT NOT NULL,
    serial TEXT NOT NULL,
    good INTEGER NOT NULL,
    total INTEGER NOT NULL,
    first_at TEXT NOT NULL,
    places INTEGER NOT NULL,
    PRIMARY KEY (gtin, serial)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS scan_places (
    gtin TEXT NOT NULL,
    serial TEXT NOT NULL,
    location TEXT NOT NULL,
    PRIMARY KEY (gtin, serial, location)
) WITHOUT ROWID;
DELETE FROM scan_codes;
DELETE FROM scan_places;
INSERT INTO scan_places
    SELECT DISTINCT gtin, serial, location FROM scans WHERE location IS NOT NULL AND {_GOOD};
INSERT INTO scan_codes
    SELECT gtin, serial, count(*) FILTER (WHERE {_GOOD}), count(*), min(at),
           (SELECT count(*) FROM scan_places p WHERE p.gtin = s.gtin AND p.serial = s.serial)
    FROM scans s GROUP BY gtin, serial;
"""

_UPSERT_CODE = """
INSERT INTO scan_codes (gtin, serial, good, total, first_at, places)
VALUES (?, ?, ?, 1, ?, 0)
ON CONFLICT (gtin, serial) DO UPDATE SET
    good = good + excluded.good,
    total = total + 1,
    first_at = min(first_at, excluded.first_at)
RETURNING good, total, first_at, places
"""

# Recount the codes listed in temp.touched from the scans that remain.
_RECOUNT = f"""
UPDATE scan_codes SET (good, total, first_at) = (
    SELECT count(*) FILTER (WHERE {_GOOD}), count(*), coalesce(min(at), scan_codes.first_at)
    FROM scans s WHERE s.gtin = scan_codes.gtin AND s.serial = scan_codes.serial)
WHERE (gtin, serial) IN (SELECT gtin, serial FROM temp.touched);
DELETE FROM scan_places
WHERE (gtin, serial) IN (SELECT gtin, serial FROM temp.touched)
  AND NOT EXISTS (SELECT 1 FROM scans s WHERE s.gtin = scan_places.gtin
                  AND s.serial = scan_places.serial AND s.location = scan_places.location
                  AND s.{_GOOD});
UPDATE scan_codes SET places = (
    SELECT count(*) FROM scan_places p
    WHERE p.gtin = scan_codes.gtin AND p.serial = scan_codes.serial)
WHERE (gtin, serial) IN (SELECT gtin, serial FROM temp.touched);
DELETE FROM scan_codes
WHERE total = 0 AND (gtin, serial) IN (SELECT gtin, serial FROM temp.touched);
"""


_OPEN_TIMEOUT = 30.0
"""Seconds a scan-log connection waits for another process's lock."""

CHECKPOINT_SECONDS = 0.25
"""How often a service's background thread copies the WAL back into the database."""

_BUSY_STEPS = (0.00005, 0.0001, 0.0002, 0.0005, 0.001)
"""A service's sleeps between attempts to take a lock another process holds (then the
last, until :data:`_OPEN_TIMEOUT`)."""

_FALLBACK_CHECKPOINT_PAGES = 16_384
"""A service's writers still checkpoint when the WAL reaches this many pages (64 MB),
so it stays bounded should the background thread fall behind."""


def _while_busy(work: Callable[[], _T], pause: Callable[[int], float]) -> _T:
    """``work()``, run again after ``pause(attempt)`` seconds while it finds the database
    locked by another connection, for up to :data:`_OPEN_TIMEOUT` seconds."""
    deadline = time.monotonic() + _OPEN_TIMEOUT
    for attempt in itertools.count():
        try:
            return work()
        except sqlite3.OperationalError as exc:
            busy = (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF == sqlite3.SQLITE_BUSY
            if not busy or time.monotonic() > deadline:
                raise
        time.sleep(pause(attempt))
    raise AssertionError("unreachable")


class SqliteScanLog(ScanLog):
    """The scan log in one SQLite file (one connection per thread).

    A ``service`` log (a web worker's) never lets the worker's event loop sleep long:

    - the WAL is copied back into the database by a thread of its own every
      :data:`CHECKPOINT_SECONDS`, rather than by whichever scan's commit crosses
      SQLite's threshold (a checkpoint waits for fsync);
    - waiting for another worker's write lock takes steps of tens of microseconds
      (:meth:`_patiently`), where SQLite's own busy handler sleeps 1, 2, 5, 10... ms.
    """

    kind = "sqlite"

    def __init__(self, path: Path, *, service: bool = False) -> None:
        self.path = path
        self.service = service
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._checkpointer: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def where(self) -> str:
        """The file."""
        return str(self.path)

    def _fail(self, doing: str, exc: sqlite3.Error) -> ScanLogError:
        code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF  # the primary code
        if code in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN) and not os.access(
            self.path.parent, os.W_OK
        ):
            return ScanLogError(
                f"cannot {doing} the scan log {self.path}: its directory is read-only",
                hint="log scans in PostgreSQL (--scan-log postgresql://...) or in a "
                "writable place (--scan-log sqlite:PATH) when the store is read-only",
            )
        return ScanLogError(f"cannot {doing} the scan log {self.path}: {exc}")

    def _con(self, *, create: bool = True) -> sqlite3.Connection | None:
        """This thread's connection (opened, and the tables made, on first use); None
        when the file does not exist and ``create`` is false."""
        con: sqlite3.Connection | None = getattr(self._local, "con", None)
        if con is not None:
            return con
        if not create and not self.path.exists():
            return None
        try:
            # Each connection is used by the thread that opened it; only close() reaches
            # across threads (a web worker's writer thread opens, the shutdown closes).
            con = sqlite3.connect(
                self.path,
                timeout=0 if self.service else _OPEN_TIMEOUT,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise self._fail("open", exc) from exc
        try:
            self._prepare(con)
        except sqlite3.Error as exc:
            con.close()
            raise self._fail("open", exc) from exc
        self._local.con = con
        with self._lock:
            self._all.append(con)
            if self.service and self._checkpointer is None:
                self._checkpointer = threading.Thread(
                    target=self._checkpoint_loop, name="scan-log-checkpoints", daemon=True
                )
                self._checkpointer.start()
        return con

    def _checkpoint_loop(self) -> None:
        """Copy the WAL back into the database until closed. PASSIVE never blocks the
        writers; a failure is left to the next round (writers report their own)."""
        con: sqlite3.Connection | None = None
        while not self._stopping.wait(CHECKPOINT_SECONDS):
            try:
                if con is None:
                    con = sqlite3.connect(self.path, timeout=_OPEN_TIMEOUT, isolation_level=None)
                con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error:
                if con is not None:
                    con.close()
                con = None
        if con is not None:
            con.close()

    def _prepare(self, con: sqlite3.Connection) -> None:
        """WAL mode and the current schema on a new connection. Switching the journal
        mode, or opening while another process recovers the WAL, can fail at once with
        "database is locked" (SQLite does not call the busy handler there, to avoid
        deadlocks): several processes opening the log together retry for a while, at
        random moments so that they do not collide again."""

        def setup() -> None:
            if con.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            if self.service:
                con.execute(f"PRAGMA wal_autocheckpoint={_FALLBACK_CHECKPOINT_PAGES}")
            self._migrate(con)

        _while_busy(setup, lambda attempt: 0.02 + random.random() * 0.05)

    @staticmethod
    def _version(con: sqlite3.Connection) -> int:
        names = {row[0] for row in con.execute("SELECT name FROM sqlite_master")}
        if "scan_log_version" in names:
            row = con.execute("SELECT max(version) FROM scan_log_version").fetchone()
            return int(row[0] or 0)
        return 1 if "scans" in names else 0

    def _migrate(self, con: sqlite3.Connection) -> None:
        if self._version(con) == SCHEMA_VERSION:
            return  # the usual case: no write lock taken
        con.execute("BEGIN IMMEDIATE")  # one migrating process at a time
        try:
            version = self._version(con)
            if version > SCHEMA_VERSION:
                raise ScanLogError(
                    f"the scan log {self.path} has schema version {version}, newer than "
                    f"this provmint understands ({SCHEMA_VERSION})",
                    hint="upgrade provmint",
                )
            if version < SCHEMA_VERSION:
                for statement in _V2.split(";"):
                    if statement.strip():
                        con.execute(statement)
                con.execute("CREATE TABLE IF NOT EXISTS scan_log_version (version INTEGER)")
                con.execute("DELETE FROM scan_log_version")
                con.execute("INSERT INTO scan_log_version VALUES (?)", (SCHEMA_VERSION,))
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def migrate(self) -> None:
        """Create or upgrade the file's tables (creating the file)."""
        self._con()

    def check(self) -> None:
        """The file can be opened and written (opening it once; cheap afterwards)."""
        self._con()

    def record(
        self,
        gtin: str,
        serial: str,
        verdict: str,
        *,
        location: str | None,
        source: str,
        at: datetime | None = None,
        recent: int = 10,
    ) -> ScanStats:
        """Log a scan; return the code's history including it."""
        when = stamp(at or datetime.now(UTC))
        place = clean_location(location)
        con = self._con()
        assert con is not None
        try:
            counters = self._patiently(
                lambda: self._write_scan(con, gtin, serial, verdict, place, source, when)
            )
        except sqlite3.Error as exc:
            raise self._fail("write", exc) from exc
        return self._stats(con, gtin, serial, recent, counters)

    def record_many(self, scans: Sequence[ScanRequest], *, recent: int = 0) -> list[ScanStats]:
        """Log several scans in one transaction (one commit for all: what lets a busy
        web worker keep up); each one's history including it."""
        if not scans:
            return []
        now = datetime.now(UTC)
        rows = [
            (s.gtin, s.serial, s.verdict, clean_location(s.location), s.source, stamp(s.at or now))
            for s in scans
        ]
        con = self._con()
        assert con is not None

        def write() -> list[tuple[int, int, str, int]]:
            con.execute("BEGIN IMMEDIATE")
            try:
                counters = [self._write_rows(con, *row) for row in rows]
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            return counters

        try:
            written = self._patiently(write)
        except sqlite3.Error as exc:
            raise self._fail("write", exc) from exc
        return [
            self._stats(con, s.gtin, s.serial, recent, c)
            for s, c in zip(scans, written, strict=True)
        ]

    @classmethod
    def _write_scan(
        cls,
        con: sqlite3.Connection,
        gtin: str,
        serial: str,
        verdict: str,
        place: str | None,
        source: str,
        when: str,
    ) -> tuple[int, int, str, int]:
        """One scan's transaction: the code's counters, its place, the scan row."""
        con.execute("BEGIN IMMEDIATE")
        try:
            counters = cls._write_rows(con, gtin, serial, verdict, place, source, when)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return counters

    @staticmethod
    def _write_rows(
        con: sqlite3.Connection,
        gtin: str,
        serial: str,
        verdict: str,
        place: str | None,
        source: str,
        when: str,
    ) -> tuple[int, int, str, int]:
        """One scan's rows, inside a transaction: the code's counters (returned, as they
        are with this scan), its place, the scan row."""
        good = verdict in GOOD_VERDICTS
        counters: tuple[int, int, str, int] = con.execute(
            _UPSERT_CODE, (gtin, serial, int(good), when)
        ).fetchone()
        if good and place is not None:
            added = con.execute(
                "INSERT OR IGNORE INTO scan_places VALUES (?, ?, ?)",
                (gtin, serial, place),
            ).rowcount
            if added:
                counters = con.execute(
                    "UPDATE scan_codes SET places = places + 1 "
                    "WHERE gtin = ? AND serial = ? RETURNING good, total, first_at, places",
                    (gtin, serial),
                ).fetchone()
        con.execute(
            "INSERT INTO scans (at, gtin, serial, verdict, location, source) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (when, gtin, serial, verdict, place, source),
        )
        return counters

    def _patiently(self, work: Callable[[], _T]) -> _T:
        """``work()``, run again while another connection holds the lock it needs. Only a
        service's connections come back busy at once (the others wait in SQLite's busy
        handler); they retry after :data:`_BUSY_STEPS`."""
        if not self.service:
            return work()
        return _while_busy(work, lambda attempt: _BUSY_STEPS[min(attempt, len(_BUSY_STEPS) - 1)])

    def stats(self, gtin: str, serial: str, recent: int = 10) -> ScanStats:
        """History of one code."""
        con = self._con(create=False)
        if con is None:
            return ScanStats(0, (), None, (), 0, 0)
        return self._stats(con, gtin, serial, recent, None)

    def _stats(
        self,
        con: sqlite3.Connection,
        gtin: str,
        serial: str,
        recent: int,
        counters: tuple[int, int, str, int] | None,
    ) -> ScanStats:
        key = (gtin, serial)

        def read() -> tuple[tuple[int, int, str | None, int], list[str], list[Any]]:
            found = counters
            if found is None:
                found = con.execute(
                    "SELECT good, total, first_at, places FROM scan_codes "
                    "WHERE gtin = ? AND serial = ?",
                    key,
                ).fetchone()
            row = found if found is not None else (0, 0, None, 0)
            listed: list[str] = []
            if row[3]:
                listed = [
                    r[0]
                    for r in con.execute(
                        "SELECT location FROM scan_places WHERE gtin = ? AND serial = ? "
                        "ORDER BY location LIMIT ?",
                        (*key, LISTED_PLACES),
                    )
                ]
            rows = (
                con.execute(
                    "SELECT at, verdict, location, source FROM scans WHERE gtin = ? AND "
                    "serial = ? ORDER BY id DESC LIMIT ?",
                    (*key, recent),
                ).fetchall()
                if recent
                else []
            )
            return row, listed, rows

        try:
            (good, total, first, places), listed, rows = self._patiently(read)
        except sqlite3.Error as exc:
            raise self._fail("read", exc) from exc
        return ScanStats(
            count=int(good),
            locations=tuple(listed),
            first_seen=first,
            recent=tuple(Scan(a, v, loc, src) for a, v, loc, src in rows),
            all_scans=int(total),
            places=int(places),
        )

    def prune(self, before: datetime, *, chunk: int = PRUNE_CHUNK) -> int:
        """Delete scans older than ``before``, ``chunk`` rows per transaction."""
        con = self._con(create=False)
        if con is None:
            return 0
        cutoff = stamp(before)
        removed = 0
        try:
            con.execute(
                "CREATE TEMP TABLE IF NOT EXISTS touched "
                "(gtin TEXT, serial TEXT, PRIMARY KEY (gtin, serial)) WITHOUT ROWID"
            )
            while True:
                con.execute("BEGIN IMMEDIATE")
                try:
                    con.execute("DELETE FROM temp.touched")
                    codes = con.execute(
                        "DELETE FROM scans WHERE id IN (SELECT id FROM scans WHERE at < ? "
                        "ORDER BY id LIMIT ?) RETURNING gtin, serial",
                        (cutoff, chunk),
                    ).fetchall()
                    con.executemany("INSERT OR IGNORE INTO temp.touched VALUES (?, ?)", codes)
                    for statement in _RECOUNT.split(";"):
                        if statement.strip():
                            con.execute(statement)
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
                removed += len(codes)
                if len(codes) < chunk:
                    return removed
        except sqlite3.Error as exc:
            raise self._fail("prune", exc) from exc

    def close(self) -> None:
        """Close every thread's connection (and stop the checkpoint thread)."""
        with self._lock:
            cons, self._all = self._all, []
            checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            self._stopping.set()
            checkpointer.join()
            self._stopping.clear()
        for con in cons:
            con.close()
        self._local = threading.local()
