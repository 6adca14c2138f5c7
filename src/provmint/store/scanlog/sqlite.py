"""The SQLite scan log: ``<store>/scans.sqlite`` by default, in WAL mode.

SQLite lets many processes on one machine take turns writing (``provmint scan``, the
workers of ``provmint serve``), where DuckDB allows one writing process. Every write is
one ``BEGIN IMMEDIATE`` transaction, so the counters, the copy signal's aggregates and
the scan rows never disagree (and the copy signal's counts, read in the same
transaction, include every scan logged before). Nothing is created until the first scan
is logged: a store that was never scanned has no ``scans.sqlite``, and a read-only store
is read without one.
"""

from __future__ import annotations

import itertools
import os
import random
import secrets
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from provmint.config import CopySignalSettings
from provmint.store.scanlog import (
    EVIDENCE_CAP,
    FORGED_ROWS_PER_DAY,
    GOOD_VERDICTS,
    LISTED_EVIDENCE,
    LISTED_PLACES,
    PRUNE_CHUNK,
    SCHEMA_VERSION,
    SUSPECT,
    CopyEvidence,
    DayCount,
    LoggedScan,
    PlaceEvidence,
    Scan,
    ScanLog,
    ScanLogError,
    ScanQuery,
    ScanRequest,
    ScanStats,
    clean_location,
    stamp,
    window_start,
)
from provmint.store.scanlog.clients import SALT_BYTES, UNKNOWN_CLIENT, ClientKeys
from provmint.store.scanlog.latest import Latest, micros

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

_UNKNOWN = f"X'{UNKNOWN_CLIENT.hex()}'"

# Version 3: the copy signal. Scans of version 2 have no client: they keep one, the
# unknown client (all of them count as one), and the aggregates are filled from them.
# ADD COLUMN with a constant default rewrites no row, however large the log.
_V3 = f"""
ALTER TABLE scans ADD COLUMN client BLOB NOT NULL DEFAULT {_UNKNOWN};
ALTER TABLE scans ADD COLUMN counted INTEGER NOT NULL DEFAULT 1;
ALTER TABLE scan_codes ADD COLUMN cleared_at TEXT;
ALTER TABLE scan_codes ADD COLUMN forged_day TEXT;
ALTER TABLE scan_codes ADD COLUMN forged_today INTEGER NOT NULL DEFAULT 0;
ALTER TABLE scan_codes ADD COLUMN unlogged INTEGER NOT NULL DEFAULT 0;
ALTER TABLE scan_places ADD COLUMN scans INTEGER NOT NULL DEFAULT 0;
ALTER TABLE scan_places ADD COLUMN last_at TEXT;
CREATE TABLE scan_clients (
    gtin TEXT NOT NULL,
    serial TEXT NOT NULL,
    client BLOB NOT NULL,
    first_at TEXT NOT NULL,
    last_at TEXT NOT NULL,
    placed_at TEXT,
    scans INTEGER NOT NULL,
    PRIMARY KEY (gtin, serial, client)
) WITHOUT ROWID;
CREATE INDEX scan_clients_by_time ON scan_clients (gtin, serial, last_at);
CREATE INDEX scan_clients_by_place ON scan_clients (gtin, serial, placed_at);
CREATE INDEX scan_places_by_time ON scan_places (gtin, serial, last_at);
CREATE TABLE scan_log_meta (name TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
UPDATE scan_places SET (scans, last_at) = (
    SELECT count(*), max(at) FROM scans s
    WHERE s.gtin = scan_places.gtin AND s.serial = scan_places.serial
      AND s.location = scan_places.location AND s.{_GOOD});
INSERT INTO scan_clients
    SELECT gtin, serial, {_UNKNOWN}, min(at), max(at),
           max(CASE WHEN location IS NOT NULL THEN at END), count(*)
    FROM scans WHERE {_GOOD} GROUP BY gtin, serial;
"""

# Version 4: scans per day and verdict (what ``provmint stats`` charts; pruning keeps
# them; the forged scans kept only as a count before version 4 have no day to add to),
# and each code's latest clients in its own row (see :mod:`.latest`) instead of a row
# per code and client with two indexes: three fewer B-tree writes per scan. The lists
# are filled from scan_clients (:meth:`SqliteScanLog._fill_latest`), which then goes.
# Suspect scans (rare) get an index of their own: what operators list, newest first.
_V4 = f"""
ALTER TABLE scan_codes ADD COLUMN latest BLOB;
CREATE INDEX scans_suspect ON scans (id) WHERE verdict = '{SUSPECT}';
CREATE TABLE scan_days (
    day TEXT NOT NULL,
    verdict TEXT NOT NULL,
    scans INTEGER NOT NULL,
    PRIMARY KEY (day, verdict)
) WITHOUT ROWID;
INSERT INTO scan_days SELECT substr(at, 1, 10), verdict, count(*) FROM scans GROUP BY 1, 2;
"""

_V4_DROP = "DROP TABLE scan_clients"

# One transaction's scans, added to their days' counts (one row per day and verdict).
_COUNT_DAYS = """
INSERT INTO scan_days (day, verdict, scans) VALUES (?, ?, ?)
ON CONFLICT (day, verdict) DO UPDATE SET scans = scans + excluded.scans
"""

# A code's counters, with this scan. A forged scan also counts towards its code's forged
# scans of the day (the latest day seen); past FORGED_ROWS_PER_DAY it is only counted
# (``unlogged``), not kept as a row.
_UPSERT_CODE = f"""
INSERT INTO scan_codes
    (gtin, serial, good, total, first_at, places, forged_day, forged_today, unlogged, latest)
VALUES (:gtin, :serial, :good, 1, :at, 0, :forged_day, :forged, 0, :latest)
ON CONFLICT (gtin, serial) DO UPDATE SET
    latest = coalesce(excluded.latest, latest),
    good = good + excluded.good,
    total = total + 1,
    first_at = min(first_at, excluded.first_at),
    forged_today = CASE
        WHEN excluded.forged_day IS NULL THEN forged_today
        WHEN forged_day IS NULL OR excluded.forged_day > forged_day THEN 1
        ELSE forged_today + 1 END,
    forged_day = CASE
        WHEN excluded.forged_day IS NULL THEN forged_day
        WHEN forged_day IS NULL OR excluded.forged_day > forged_day THEN excluded.forged_day
        ELSE forged_day END,
    unlogged = unlogged + CASE
        WHEN excluded.forged_day IS NULL THEN 0
        WHEN forged_day IS NULL OR excluded.forged_day > forged_day THEN 0
        WHEN forged_today + 1 > {FORGED_ROWS_PER_DAY} THEN 1
        ELSE 0 END
RETURNING good, total, first_at, places, cleared_at, forged_today
"""

# The later of two times, either of which may be NULL.
_LATER = (
    "CASE WHEN {new} IS NULL THEN {old} "
    "WHEN {old} IS NULL OR {new} > {old} THEN {new} ELSE {old} END"
)

# RETURNING scans = 1: the place is new (its count starts at 1).
_UPSERT_PLACE = f"""
INSERT INTO scan_places (gtin, serial, location, scans, last_at) VALUES (?, ?, ?, 1, ?)
ON CONFLICT (gtin, serial, location) DO UPDATE SET
    scans = scans + 1,
    last_at = {_LATER.format(new="excluded.last_at", old="last_at")}
RETURNING scans
"""

# The copy signal's count of places: an index range scan from ``since``, stopping after
# at most its LIMIT rows however many places the code has (INDEXED BY: never another
# plan). Its clients come from the code's row (:mod:`.latest`).
_WINDOW_PLACE_COUNT = """
SELECT count(*) FROM (SELECT 1 FROM scan_places INDEXED BY scan_places_by_time
    WHERE gtin = ? AND serial = ? AND last_at >= ? LIMIT ?)
"""
# Every counted client of codes with its last genuine scan, and its last that gave a
# place: what a code's latest clients are rebuilt from (``{codes}``: which codes).
_CLIENTS_OF = f"""
SELECT gtin, serial, client, max(at), max(CASE WHEN location IS NOT NULL THEN at END)
FROM scans WHERE {{codes}} AND {_GOOD} AND counted
GROUP BY gtin, serial, client ORDER BY gtin, serial
"""
# The operator's evidence: distinct counted clients of the code's genuine scans since a
# time (and those that gave a place), read from its scan rows.
_EVIDENCE_CLIENTS = f"""
SELECT
    (SELECT count(*) FROM (SELECT DISTINCT client FROM scans WHERE gtin = :gtin
        AND serial = :serial AND {_GOOD} AND counted AND at >= :since LIMIT :cap)),
    (SELECT count(*) FROM (SELECT DISTINCT client FROM scans WHERE gtin = :gtin
        AND serial = :serial AND {_GOOD} AND counted AND location IS NOT NULL
        AND at >= :since LIMIT :cap))
"""
_WINDOW_PLACES = """
SELECT location, scans, last_at FROM scan_places INDEXED BY scan_places_by_time
WHERE gtin = ? AND serial = ? AND last_at >= ? ORDER BY last_at DESC LIMIT ?
"""

_WHERE_TOUCHED = "(gtin, serial) IN (SELECT gtin, serial FROM temp.touched)"

# Recount the codes listed in temp.touched from the scans that remain.
_RECOUNT = f"""
UPDATE scan_codes SET (good, total, first_at) = (
    SELECT count(*) FILTER (WHERE {_GOOD}), count(*) + scan_codes.unlogged,
           coalesce(min(at), scan_codes.first_at)
    FROM scans s WHERE s.gtin = scan_codes.gtin AND s.serial = scan_codes.serial)
WHERE {_WHERE_TOUCHED};
DELETE FROM scan_places
WHERE {_WHERE_TOUCHED}
  AND NOT EXISTS (SELECT 1 FROM scans s WHERE s.gtin = scan_places.gtin
                  AND s.serial = scan_places.serial AND s.location = scan_places.location
                  AND s.{_GOOD});
UPDATE scan_places SET (scans, last_at) = (
    SELECT count(*), max(at) FILTER (WHERE counted) FROM scans s
    WHERE s.gtin = scan_places.gtin AND s.serial = scan_places.serial
      AND s.location = scan_places.location AND s.{_GOOD})
WHERE {_WHERE_TOUCHED};
UPDATE scan_codes SET places = (
    SELECT count(*) FROM scan_places p
    WHERE p.gtin = scan_codes.gtin AND p.serial = scan_codes.serial)
WHERE {_WHERE_TOUCHED};
UPDATE scan_codes SET latest = NULL WHERE {_WHERE_TOUCHED};
DELETE FROM scan_codes WHERE total = 0 AND {_WHERE_TOUCHED};
"""


class _Scan(NamedTuple):
    """A scan as written: its place cleaned, its time stamped, its client keyed."""

    gtin: str
    serial: str
    verdict: str
    place: str | None
    source: str
    at: datetime
    when: str
    client: bytes
    counted: bool


class _Counts(NamedTuple):
    """A code's counters and copy-signal counts (see :class:`ScanStats`)."""

    good: int
    total: int
    first_at: str | None
    places: int
    clients: int = 0
    window_places: int = 0
    placing_clients: int = 0
    window_locations: tuple[str, ...] = ()
    since: str | None = None


def _micros_of(text: str) -> int:
    """A stored time (:data:`~provmint.store.scanlog.STAMP`) in microseconds."""
    return micros(datetime.fromisoformat(text[:-1]).replace(tzinfo=UTC))


def _stamp_of(at: int) -> str:
    """Microseconds as a stored time."""
    return stamp(datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=at))


def _by_code(
    rows: Iterable[tuple[str, str, bytes, str, str | None]],
) -> Iterator[tuple[tuple[str, str], list[tuple[bytes, int, int | None]]]]:
    """Rows of (gtin, serial, client, last scan, last placed scan), ordered by code,
    grouped by code, their times in microseconds."""
    for code, group in itertools.groupby(rows, key=lambda r: (r[0], r[1])):
        yield (
            code,
            [
                (bytes(c), _micros_of(last), _micros_of(placed) if placed else None)
                for _, _, c, last, placed in group
            ],
        )


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

    def __init__(
        self,
        path: Path,
        *,
        service: bool = False,
        rule: CopySignalSettings | None = None,
    ) -> None:
        self.path = path
        self.service = service
        self.rule = rule or CopySignalSettings()
        self._keys: ClientKeys | None = None
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
            if self._keys is None:
                self._keys = ClientKeys(self._salt(con))
        except sqlite3.Error as exc:
            con.close()
            raise self._fail("open", exc) from exc
        except BaseException:
            con.close()
            raise
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

    def _salt(self, con: sqlite3.Connection) -> bytes:
        """The log's client salt (made with the schema; read once per log object)."""
        row = _while_busy(
            lambda: con.execute(
                "SELECT value FROM scan_log_meta WHERE name = 'client_salt'"
            ).fetchone(),
            lambda attempt: 0.02 + random.random() * 0.05,
        )
        if row is None or len(row[0]) < SALT_BYTES:
            raise ScanLogError(f"the scan log {self.path} has no client salt", hint="restore it")
        return bytes(row[0])

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
                steps = [step for first, step in ((2, _V2), (3, _V3), (4, _V4)) if version < first]
                for step in steps:
                    for statement in step.split(";"):
                        if statement.strip():
                            con.execute(statement)
                if version < 4:
                    self._fill_latest(con)
                con.execute(
                    "INSERT OR IGNORE INTO scan_log_meta VALUES ('client_salt', ?)",
                    (secrets.token_bytes(SALT_BYTES),),
                )
                con.execute("CREATE TABLE IF NOT EXISTS scan_log_version (version INTEGER)")
                con.execute("DELETE FROM scan_log_version")
                con.execute("INSERT INTO scan_log_version VALUES (?)", (SCHEMA_VERSION,))
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def _fill_latest(self, con: sqlite3.Connection) -> None:
        """Version 4's upgrade: each code's latest clients from scan_clients, which goes."""
        clients, places = self._keep()
        rows = con.execute(
            "SELECT gtin, serial, client, last_at, placed_at FROM scan_clients "
            "ORDER BY gtin, serial"
        )
        con.executemany(
            "UPDATE scan_codes SET latest = ? WHERE gtin = ? AND serial = ?",
            (
                (Latest.rebuilt(found, clients, places).dump(), gtin, serial)
                for (gtin, serial), found in _by_code(rows)
            ),
        )
        con.execute(_V4_DROP)

    def _keep(self) -> tuple[int, int]:
        """How many latest clients, and placing clients, the rule needs kept."""
        return self.rule.max_clients + 1, self.rule.max_places + 1

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
        address: str | None = None,
        user_agent: str | None = None,
    ) -> ScanStats:
        """Log a scan; return the code's history including it."""
        scan = ScanRequest(gtin, serial, verdict, location, source, at, address, user_agent)
        return self.record_many([scan], recent=recent)[0]

    def record_many(self, scans: Sequence[ScanRequest], *, recent: int = 0) -> list[ScanStats]:
        """Log several scans in one transaction (one commit for all: what lets a busy
        web worker keep up); each one's history including it."""
        if not scans:
            return []
        con = self._con()
        assert con is not None and self._keys is not None
        now = datetime.now(UTC)
        now_stamp = stamp(now)  # most scans of a batch are "now": stamped once
        rows = []
        for s in scans:
            client, counted = self._keys.of(s.address, s.user_agent)
            when = s.at or now
            rows.append(
                _Scan(
                    s.gtin,
                    s.serial,
                    s.verdict,
                    clean_location(s.location),
                    s.source,
                    when,
                    now_stamp if when is now else stamp(when),
                    client,
                    counted,
                )
            )

        def write() -> list[_Counts]:
            con.execute("BEGIN IMMEDIATE")
            try:
                counts = [self._write_rows(con, row) for row in rows]
                days = Counter((row.when[:10], row.verdict) for row in rows)
                con.executemany(_COUNT_DAYS, [(*key, n) for key, n in days.items()])
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            return counts

        try:
            written = self._patiently(write)
        except sqlite3.Error as exc:
            raise self._fail("write", exc) from exc
        return [
            self._stats(con, s.gtin, s.serial, recent, c)
            for s, c in zip(scans, written, strict=True)
        ]

    def _write_rows(self, con: sqlite3.Connection, scan: _Scan) -> _Counts:
        """One scan's rows, inside a transaction: the code's counters and latest clients,
        its place, the scan row (unless a forged one past the day's rows); then the copy
        signal's counts as they are with this scan."""
        good = scan.verdict in GOOD_VERDICTS
        latest: Latest | None = None
        if good:
            latest = self._latest(con, scan.gtin, scan.serial)
            if scan.counted:
                at = micros(scan.at)
                latest.scanned.saw(scan.client, at)
                if scan.place is not None:
                    latest.placed.saw(scan.client, at)
        n_good, total, first_at, places, cleared_at, forged_today = con.execute(
            _UPSERT_CODE,
            {
                "gtin": scan.gtin,
                "serial": scan.serial,
                "good": int(good),
                "at": scan.when,
                "forged_day": None if good else scan.when[:10],
                "forged": 0 if good else 1,
                "latest": latest.dump() if latest is not None else None,
            },
        ).fetchone()
        if good and scan.place is not None:
            (seen,) = con.execute(
                _UPSERT_PLACE,
                (scan.gtin, scan.serial, scan.place, scan.when if scan.counted else None),
            ).fetchone()
            if seen == 1:
                (places,) = con.execute(
                    "UPDATE scan_codes SET places = places + 1 "
                    "WHERE gtin = ? AND serial = ? RETURNING places",
                    (scan.gtin, scan.serial),
                ).fetchone()
        if good or forged_today <= FORGED_ROWS_PER_DAY:
            con.execute(
                "INSERT INTO scans (at, gtin, serial, verdict, location, source, client, counted) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    scan.when,
                    scan.gtin,
                    scan.serial,
                    scan.verdict,
                    scan.place,
                    scan.source,
                    scan.client,
                    int(scan.counted),
                ),
            )
        counts = _Counts(n_good, total, first_at, places)
        if latest is None:
            return counts  # a forged scan: no copy signal to give
        return self._window(con, counts, scan.gtin, scan.serial, scan.at, cleared_at, latest)

    def _latest(self, con: sqlite3.Connection, gtin: str, serial: str) -> Latest:
        """The code's latest clients as the rule needs them: as stored, or rebuilt from
        its scans when kept for a lower threshold than today's."""
        clients, places = self._keep()
        row = con.execute(
            "SELECT latest FROM scan_codes WHERE gtin = ? AND serial = ?", (gtin, serial)
        ).fetchone()
        latest = Latest.load(row[0] if row else None, clients, places)
        if not latest.too_short(clients, places):
            return latest.widened(clients, places)
        rows = con.execute(
            _CLIENTS_OF.format(codes="gtin = ? AND serial = ?"), (gtin, serial)
        ).fetchall()
        found = [entry for _, entries in _by_code(rows) for entry in entries]
        return Latest.rebuilt(found, clients, places)

    def _window(
        self,
        con: sqlite3.Connection,
        counts: _Counts,
        gtin: str,
        serial: str,
        at: datetime,
        cleared_at: str | None,
        latest: Latest,
    ) -> _Counts:
        """``counts`` with the copy signal's, for a scan at ``at``: each capped at one
        more than its threshold; the places named only when they would flag the code."""
        rule = self.rule
        since = window_start(rule, at, cleared_at)
        start = _micros_of(since)
        cap = rule.max_places + 1
        window_places = 0
        if counts.places:
            (window_places,) = con.execute(
                _WINDOW_PLACE_COUNT, (gtin, serial, since, cap)
            ).fetchone()
        placing = latest.placed.since(start, cap)
        listed: tuple[str, ...] = ()
        if window_places > rule.max_places and placing > rule.max_places:
            listed = tuple(
                r[0] for r in con.execute(_WINDOW_PLACES, (gtin, serial, since, LISTED_PLACES))
            )
        return counts._replace(
            clients=latest.scanned.since(start, rule.max_clients + 1),
            window_places=window_places,
            placing_clients=placing,
            window_locations=listed,
            since=since,
        )

    def _patiently(self, work: Callable[[], _T]) -> _T:
        """``work()``, run again while another connection holds the lock it needs. Only a
        service's connections come back busy at once (the others wait in SQLite's busy
        handler); they retry after :data:`_BUSY_STEPS`."""
        if not self.service:
            return work()
        return _while_busy(work, lambda attempt: _BUSY_STEPS[min(attempt, len(_BUSY_STEPS) - 1)])

    def stats(
        self, gtin: str, serial: str, recent: int = 10, *, at: datetime | None = None
    ) -> ScanStats:
        """History of one code (the copy signal's window ending at ``at``, now)."""
        con = self._con(create=False)
        if con is None:
            return ScanStats(0, (), None, (), 0, 0)
        when = at or datetime.now(UTC)

        def read() -> _Counts | None:
            row = con.execute(
                "SELECT good, total, first_at, places, cleared_at FROM scan_codes "
                "WHERE gtin = ? AND serial = ?",
                (gtin, serial),
            ).fetchone()
            if row is None:
                return None
            latest = self._latest(con, gtin, serial)
            return self._window(con, _Counts(*row[:4]), gtin, serial, when, row[4], latest)

        try:
            counts = self._patiently(read)
        except sqlite3.Error as exc:
            raise self._fail("read", exc) from exc
        return self._stats(con, gtin, serial, recent, counts)

    def _stats(
        self,
        con: sqlite3.Connection,
        gtin: str,
        serial: str,
        recent: int,
        counts: _Counts | None,
    ) -> ScanStats:
        key = (gtin, serial)
        found = counts if counts is not None else _Counts(0, 0, None, 0)

        def read() -> tuple[list[str], list[Any]]:
            listed: list[str] = []
            if found.places and recent:  # the service asks for counts alone
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
            return listed, rows

        try:
            listed, rows = self._patiently(read)
        except sqlite3.Error as exc:
            raise self._fail("read", exc) from exc
        return ScanStats(
            count=int(found.good),
            locations=tuple(listed),
            first_seen=found.first_at,
            recent=tuple(Scan(a, v, loc, src) for a, v, loc, src in rows),
            all_scans=int(found.total),
            places=int(found.places),
            clients=found.clients,
            window_places=found.window_places,
            placing_clients=found.placing_clients,
            window_locations=found.window_locations,
            since=found.since,
        )

    def daily(self, since: date | None = None) -> list[DayCount]:
        """Scans per day and verdict, from ``since`` (see :meth:`ScanLog.daily`)."""
        con = self._con(create=False)
        if con is None:
            return []
        start = since.isoformat() if since is not None else ""
        try:
            rows = self._patiently(
                lambda: con.execute(
                    "SELECT day, verdict, scans FROM scan_days WHERE day >= ? "
                    "ORDER BY day, verdict",
                    (start,),
                ).fetchall()
            )
        except sqlite3.Error as exc:
            raise self._fail("read", exc) from exc
        return [DayCount(date.fromisoformat(d), v, int(n)) for d, v, n in rows]

    def list_scans(self, query: ScanQuery) -> list[LoggedScan]:
        """The scans ``query`` selects, newest first."""
        con = self._con(create=False)
        if con is None:
            return []
        where, args = query.where("?", stamp)
        sql = (
            "SELECT at, gtin, serial, verdict, location, source, counted FROM scans"
            f"{where} ORDER BY id DESC LIMIT ?"
        )
        try:
            rows = self._patiently(lambda: con.execute(sql, (*args, query.limit)).fetchall())
        except sqlite3.Error as exc:
            raise self._fail("read", exc) from exc
        return [LoggedScan(a, g, s, v, loc, src, bool(c)) for a, g, s, v, loc, src, c in rows]

    def evidence(
        self, gtin: str, serial: str, *, at: datetime | None = None
    ) -> CopyEvidence | None:
        """What the copy signal of one code rests on (None: never scanned)."""
        con = self._con(create=False)
        if con is None:
            return None
        when = at or datetime.now(UTC)
        try:
            return self._patiently(lambda: self._evidence(con, gtin, serial, when))
        except sqlite3.Error as exc:
            raise self._fail("read", exc) from exc

    def _evidence(
        self, con: sqlite3.Connection, gtin: str, serial: str, at: datetime
    ) -> CopyEvidence | None:
        row = con.execute(
            "SELECT good, total, first_at, cleared_at FROM scan_codes "
            "WHERE gtin = ? AND serial = ?",
            (gtin, serial),
        ).fetchone()
        if row is None:
            return None
        good, total, first_at, cleared_at = row
        since = window_start(self.rule, at, cleared_at)
        clients, placing = con.execute(
            _EVIDENCE_CLIENTS, {"gtin": gtin, "serial": serial, "since": since, "cap": EVIDENCE_CAP}
        ).fetchone()
        (window_places,) = con.execute(
            _WINDOW_PLACE_COUNT, (gtin, serial, since, EVIDENCE_CAP)
        ).fetchone()
        places = tuple(
            PlaceEvidence(location, int(scans), last_at)
            for location, scans, last_at in con.execute(
                _WINDOW_PLACES, (gtin, serial, since, LISTED_EVIDENCE)
            )
        )
        last = self._latest(con, gtin, serial).scanned.latest()
        return CopyEvidence(
            gtin=gtin,
            serial=serial,
            at=stamp(at),
            window_start=stamp(at - self.rule.window),
            cleared_at=cleared_at,
            since=since,
            clients=clients,
            placing_clients=placing,
            window_places=window_places,
            places=places,
            first_seen=first_at,
            last_seen=_stamp_of(last) if last is not None else None,
            genuine_scans=int(good),
            all_scans=int(total),
        )

    def clear(self, gtin: str, serial: str, *, at: datetime | None = None) -> CopyEvidence | None:
        """Record a clear of the code's copy signal; the evidence it cleared."""
        con = self._con(create=False)
        if con is None:
            return None
        when = at or datetime.now(UTC)

        def work() -> CopyEvidence | None:
            con.execute("BEGIN IMMEDIATE")
            try:
                found = self._evidence(con, gtin, serial, when)
                if found is not None:
                    con.execute(
                        "UPDATE scan_codes SET cleared_at = max(coalesce(cleared_at, ''), ?) "
                        "WHERE gtin = ? AND serial = ?",
                        (stamp(when), gtin, serial),
                    )
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            return found

        try:
            return self._patiently(work)
        except sqlite3.Error as exc:
            raise self._fail("clear", exc) from exc

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
                    self._rebuild_latest(con)
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
                removed += len(codes)
                if len(codes) < chunk:
                    return removed
        except sqlite3.Error as exc:
            raise self._fail("prune", exc) from exc

    def _rebuild_latest(self, con: sqlite3.Connection) -> None:
        """The latest clients of the codes in temp.touched, from the scans that remain
        (the recount left theirs empty)."""
        clients, places = self._keep()
        rows = con.execute(_CLIENTS_OF.format(codes=_WHERE_TOUCHED))
        con.executemany(
            "UPDATE scan_codes SET latest = ? WHERE gtin = ? AND serial = ?",
            [
                (Latest.rebuilt(found, clients, places).dump(), gtin, serial)
                for (gtin, serial), found in _by_code(rows)
            ],
        )

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
