"""The PostgreSQL scan log: one log shared by every replica of the verification service.

psycopg 3. The web service keeps a small connection pool per process (psycopg_pool; each
connection is checked before use, so one that died with the server is replaced instead
of failing a scan); one-shot commands (``provmint scan``, ``provmint scans prune``) use
one connection. Logging a scan is one transaction, sent in one pipeline: it first bumps
the code's counters (which locks the code's row, so scans of one code from every
replica take turns and never lose a count), then updates the code's client and place,
inserts the scan row, and reads the copy signal's counts, which therefore include every
scan of the code logged before.

The tables are created (or upgraded) by the first process that uses the log, inside a
transaction holding ``pg_advisory_xact_lock``, so replicas started at the same moment
migrate one after the other and find the work done.

When PostgreSQL cannot be reached, every call raises :class:`ScanLogError` within
:data:`WAIT_SECONDS`; for :data:`RETRY_SECONDS` afterwards calls fail at once instead of
waiting again, so a web worker never stalls for long during an outage. The pool
reconnects by itself when the server is back.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, TypeVar

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
    ScanStats,
    clean_location,
    redact,
    stamp,
)
from provmint.store.scanlog.clients import SALT_BYTES, UNKNOWN_CLIENT, ClientKeys

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

__all__ = ["CONNECT_TIMEOUT", "RETRY_SECONDS", "WAIT_SECONDS", "PostgresScanLog"]

T = TypeVar("T")

CONNECT_TIMEOUT = 3
"""Seconds to open a connection (``connect_timeout`` in the URL overrides it)."""
WAIT_SECONDS = 2.0
"""Longest a scan waits for a pooled connection before it is answered as not logged."""
RETRY_SECONDS = 1.0
"""After a failure, calls fail at once for this long (no new wait)."""
RECONNECT_SECONDS = 5.0
"""The pool's background reconnection gives up after this; the next call starts anew."""
STATEMENT_TIMEOUT_MS = 5000
"""Server-side limit for one pooled statement (a lock held too long fails the scan)."""

_LOCK_KEY = 0x70726F766D696E74  # "provmint": the advisory lock taken while migrating

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS scans (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at timestamptz NOT NULL,
        gtin text NOT NULL,
        serial text NOT NULL,
        verdict text NOT NULL,
        location text,
        source text NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS scans_by_code ON scans (gtin, serial)",
    # Scans arrive in time order: a BRIN index finds old ones for pruning at almost no
    # cost per insert (a B-tree on ``at`` would cost each scan another page write).
    "CREATE INDEX IF NOT EXISTS scans_by_time ON scans USING brin (at)",
    """CREATE TABLE IF NOT EXISTS scan_codes (
        gtin text NOT NULL,
        serial text NOT NULL,
        good bigint NOT NULL,
        total bigint NOT NULL,
        first_at timestamptz NOT NULL,
        places bigint NOT NULL,
        PRIMARY KEY (gtin, serial))""",
    """CREATE TABLE IF NOT EXISTS scan_places (
        gtin text NOT NULL,
        serial text NOT NULL,
        location text NOT NULL,
        PRIMARY KEY (gtin, serial, location))""",
]

_UNKNOWN = f"decode('{UNKNOWN_CLIENT.hex()}', 'hex')"
_GOOD_SQL = "verdict IN ({})".format(", ".join(f"'{v}'" for v in GOOD_VERDICTS))

# Version 3: the copy signal (see the SQLite log for the same tables). Scans of version
# 2 keep one client, the unknown one, and the aggregates are filled from them. ADD
# COLUMN with a constant default rewrites no row.
_V3 = [
    f"ALTER TABLE scans ADD COLUMN IF NOT EXISTS client bytea NOT NULL DEFAULT {_UNKNOWN}",
    "ALTER TABLE scans ADD COLUMN IF NOT EXISTS counted boolean NOT NULL DEFAULT true",
    """ALTER TABLE scan_codes
        ADD COLUMN IF NOT EXISTS cleared_at timestamptz,
        ADD COLUMN IF NOT EXISTS forged_day date,
        ADD COLUMN IF NOT EXISTS forged_today bigint NOT NULL DEFAULT 0,
        ADD COLUMN IF NOT EXISTS unlogged bigint NOT NULL DEFAULT 0""",
    """ALTER TABLE scan_places
        ADD COLUMN IF NOT EXISTS scans bigint NOT NULL DEFAULT 0,
        ADD COLUMN IF NOT EXISTS last_at timestamptz""",
    """CREATE TABLE IF NOT EXISTS scan_clients (
        gtin text NOT NULL,
        serial text NOT NULL,
        client bytea NOT NULL,
        first_at timestamptz NOT NULL,
        last_at timestamptz NOT NULL,
        placed_at timestamptz,
        scans bigint NOT NULL,
        PRIMARY KEY (gtin, serial, client))""",
    "CREATE INDEX IF NOT EXISTS scan_clients_by_time ON scan_clients (gtin, serial, last_at)",
    "CREATE INDEX IF NOT EXISTS scan_clients_by_place ON scan_clients (gtin, serial, placed_at)",
    "CREATE INDEX IF NOT EXISTS scan_places_by_time ON scan_places (gtin, serial, last_at)",
    """CREATE TABLE IF NOT EXISTS scan_log_meta (
        name text PRIMARY KEY,
        value bytea NOT NULL)""",
    f"""UPDATE scan_places sp SET scans = r.n, last_at = r.last
    FROM (SELECT gtin, serial, location, count(*) AS n, max(at) AS last FROM scans
          WHERE {_GOOD_SQL} AND location IS NOT NULL GROUP BY gtin, serial, location) r
    WHERE sp.gtin = r.gtin AND sp.serial = r.serial AND sp.location = r.location""",
    f"""INSERT INTO scan_clients
        SELECT gtin, serial, {_UNKNOWN}, min(at), max(at),
               max(at) FILTER (WHERE location IS NOT NULL), count(*)
        FROM scans WHERE {_GOOD_SQL} GROUP BY gtin, serial
    ON CONFLICT DO NOTHING""",
]

# Version 4: scans per day and verdict. Each row is one of _DAY_SHARDS counters of its
# day and verdict (a process adds to the one its pid picks): a single row per day would
# make every scan of every replica wait for the last one's commit.
_DAY_SHARDS = 16
_V4 = [
    # Suspect scans (rare) get an index of their own: what operators list, newest first.
    f"CREATE INDEX IF NOT EXISTS scans_suspect ON scans (id) WHERE verdict = '{SUSPECT}'",
    """CREATE TABLE IF NOT EXISTS scan_days (
        day date NOT NULL,
        verdict text NOT NULL,
        shard smallint NOT NULL,
        scans bigint NOT NULL,
        PRIMARY KEY (day, verdict, shard))""",
    """INSERT INTO scan_days
        SELECT (at AT TIME ZONE 'UTC')::date, verdict, 0, count(*) FROM scans GROUP BY 1, 2
    ON CONFLICT DO NOTHING""",
]
_COUNT_DAY = """
INSERT INTO scan_days AS d (day, verdict, shard, scans)
VALUES (%(day)s, %(verdict)s, %(shard)s, 1)
ON CONFLICT (day, verdict, shard) DO UPDATE SET scans = d.scans + 1
"""

# A scan's transaction (see the module's docstring). First the code's counters: a
# forged scan also counts towards its code's forged scans of the day (the latest day
# seen); past FORGED_ROWS_PER_DAY it is only counted (``unlogged``), not kept as a row.
_UPSERT_CODE = f"""
INSERT INTO scan_codes AS c
    (gtin, serial, good, total, first_at, places, forged_day, forged_today, unlogged)
VALUES (%(gtin)s, %(serial)s, %(good)s, 1, %(at)s, 0, %(forged_day)s, %(forged)s, 0)
ON CONFLICT (gtin, serial) DO UPDATE SET
    good = c.good + EXCLUDED.good,
    total = c.total + 1,
    first_at = LEAST(c.first_at, EXCLUDED.first_at),
    forged_today = CASE
        WHEN EXCLUDED.forged_day IS NULL THEN c.forged_today
        WHEN c.forged_day IS NULL OR EXCLUDED.forged_day > c.forged_day THEN 1
        ELSE c.forged_today + 1 END,
    forged_day = GREATEST(c.forged_day, EXCLUDED.forged_day),
    unlogged = c.unlogged + CASE
        WHEN EXCLUDED.forged_day IS NULL THEN 0
        WHEN c.forged_day IS NULL OR EXCLUDED.forged_day > c.forged_day THEN 0
        WHEN c.forged_today + 1 > {FORGED_ROWS_PER_DAY} THEN 1
        ELSE 0 END
"""
_UPSERT_CLIENT = """
INSERT INTO scan_clients AS k (gtin, serial, client, first_at, last_at, placed_at, scans)
VALUES (%(gtin)s, %(serial)s, %(client)s, %(at)s, %(at)s, %(placed_at)s, 1)
ON CONFLICT (gtin, serial, client) DO UPDATE SET
    first_at = LEAST(k.first_at, EXCLUDED.first_at),
    last_at = GREATEST(k.last_at, EXCLUDED.last_at),
    placed_at = GREATEST(k.placed_at, EXCLUDED.placed_at),
    scans = k.scans + 1
"""
# The place, and the code's count of places when it is new (its count starts at 1).
_UPSERT_PLACE = """
WITH place AS (
    INSERT INTO scan_places AS sp (gtin, serial, location, scans, last_at)
    VALUES (%(gtin)s, %(serial)s, %(location)s, 1, %(place_at)s)
    ON CONFLICT (gtin, serial, location) DO UPDATE SET
        scans = sp.scans + 1,
        last_at = GREATEST(sp.last_at, EXCLUDED.last_at)
    RETURNING scans
)
UPDATE scan_codes SET places = places + 1
WHERE gtin = %(gtin)s AND serial = %(serial)s AND (SELECT scans FROM place) = 1
"""
_INSERT_SCAN = f"""
INSERT INTO scans (at, gtin, serial, verdict, location, source, client, counted)
SELECT %(at)s, %(gtin)s, %(serial)s, %(verdict)s, %(location)s, %(source)s, %(client)s,
       %(counted)s
WHERE %(is_good)s OR (SELECT forged_today FROM scan_codes
                      WHERE gtin = %(gtin)s AND serial = %(serial)s) <= {FORGED_ROWS_PER_DAY}
"""
# The code's counters and the copy signal's counts: index range scans from ``since``,
# each stopping after at most its LIMIT rows however many the code has.
_READ = """
SELECT c.good, c.total, c.first_at, c.places, c.cleared_at, w.since,
    (SELECT count(*) FROM (SELECT 1 FROM scan_clients k WHERE k.gtin = c.gtin
        AND k.serial = c.serial AND k.last_at >= w.since LIMIT %(clients_cap)s) x),
    (SELECT count(*) FROM (SELECT 1 FROM scan_places p WHERE p.gtin = c.gtin
        AND p.serial = c.serial AND p.last_at >= w.since LIMIT %(places_cap)s) x),
    (SELECT count(*) FROM (SELECT 1 FROM scan_clients k WHERE k.gtin = c.gtin
        AND k.serial = c.serial AND k.placed_at >= w.since LIMIT %(places_cap)s) x)
FROM scan_codes c
CROSS JOIN LATERAL (SELECT GREATEST(%(start)s::timestamptz, c.cleared_at) AS since) w
WHERE c.gtin = %(gtin)s AND c.serial = %(serial)s
"""
_COUNTERS = """
SELECT good, total, first_at, places FROM scan_codes
WHERE gtin = %(gtin)s AND serial = %(serial)s
"""
_WINDOW_PLACES = """
SELECT location, scans, last_at FROM scan_places
WHERE gtin = %(gtin)s AND serial = %(serial)s AND last_at >= %(since)s
ORDER BY last_at DESC LIMIT %(n)s
"""

_CODES = "unnest(%(gtins)s::text[], %(serials)s::text[]) AS k(gtin, serial)"
_RECOUNT = [
    f"""UPDATE scan_codes c
    SET good = r.good, total = r.total + c.unlogged, first_at = coalesce(r.first_at, c.first_at)
    FROM (SELECT k.gtin, k.serial,
                 count(s.id) FILTER (WHERE s.verdict = ANY(%(good)s)) AS good,
                 count(s.id) AS total, min(s.at) AS first_at
          FROM {_CODES}
          LEFT JOIN scans s ON s.gtin = k.gtin AND s.serial = k.serial
          GROUP BY k.gtin, k.serial) r
    WHERE c.gtin = r.gtin AND c.serial = r.serial""",
    f"""DELETE FROM scan_places p USING {_CODES}
    WHERE p.gtin = k.gtin AND p.serial = k.serial
      AND NOT EXISTS (SELECT 1 FROM scans s WHERE s.gtin = p.gtin AND s.serial = p.serial
                      AND s.location = p.location AND s.verdict = ANY(%(good)s))""",
    f"""UPDATE scan_places sp SET scans = r.n, last_at = r.last
    FROM (SELECT s.gtin, s.serial, s.location, count(*) AS n,
                 max(s.at) FILTER (WHERE s.counted) AS last
          FROM {_CODES} JOIN scans s ON s.gtin = k.gtin AND s.serial = k.serial
          WHERE s.verdict = ANY(%(good)s) AND s.location IS NOT NULL
          GROUP BY s.gtin, s.serial, s.location) r
    WHERE sp.gtin = r.gtin AND sp.serial = r.serial AND sp.location = r.location""",
    f"""UPDATE scan_codes c SET places = (
        SELECT count(*) FROM scan_places p WHERE p.gtin = c.gtin AND p.serial = c.serial)
    FROM {_CODES} WHERE c.gtin = k.gtin AND c.serial = k.serial""",
    f"""DELETE FROM scan_clients sc USING {_CODES}
    WHERE sc.gtin = k.gtin AND sc.serial = k.serial""",
    f"""INSERT INTO scan_clients
        SELECT s.gtin, s.serial, s.client, min(s.at), max(s.at),
               max(s.at) FILTER (WHERE s.location IS NOT NULL), count(*)
        FROM {_CODES} JOIN scans s ON s.gtin = k.gtin AND s.serial = k.serial
        WHERE s.verdict = ANY(%(good)s) AND s.counted
        GROUP BY s.gtin, s.serial, s.client""",
    f"""DELETE FROM scan_codes c USING {_CODES}
    WHERE c.gtin = k.gtin AND c.serial = k.serial AND c.total = 0""",
]

# The pool reports every failed reconnection as a warning; the service reports outages
# itself, once, so these stay out of its output.
logging.getLogger("psycopg.pool").addHandler(logging.NullHandler())
logging.getLogger("psycopg.pool").propagate = False


def _reason(exc: BaseException) -> str:
    """The first line of a database error, or what a pool timeout means."""
    from psycopg_pool import PoolTimeout

    if isinstance(exc, PoolTimeout):
        return f"PostgreSQL did not answer within {WAIT_SECONDS:g} s"
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class PostgresScanLog(ScanLog):
    """The scan log in a PostgreSQL database. ``pool_size`` 0: one connection, for
    one-shot commands; otherwise a pool of up to that many (created in the process
    that uses it, never inherited through ``fork``)."""

    kind = "postgresql"

    def __init__(
        self, url: str, *, pool_size: int = 2, rule: CopySignalSettings | None = None
    ) -> None:
        self.url = url
        self.pool_size = pool_size
        self.rule = rule or CopySignalSettings()
        self._keys: ClientKeys | None = None
        self._lock = threading.Lock()
        self._pool: ConnectionPool[Any] | None = None
        self._direct: psycopg.Connection[Any] | None = None
        self._owner = os.getpid()
        self._migrated = False
        self._retry_at = 0.0
        self._last_failure = ""

    @property
    def where(self) -> str:
        """The URL without its password."""
        return redact(self.url)

    # ----------------------------------------------------------------- connections

    def _params(self) -> dict[str, Any]:
        from psycopg import ProgrammingError
        from psycopg.conninfo import conninfo_to_dict

        try:
            params = conninfo_to_dict(self.url)
        except ProgrammingError as exc:
            raise ScanLogError(f"the scan log URL {self.where} is not valid: {exc}") from None
        params.setdefault("connect_timeout", CONNECT_TIMEOUT)
        params.setdefault("application_name", "provmint")
        return params

    def _connect(self) -> psycopg.Connection[Any]:
        import psycopg

        return psycopg.connect(autocommit=True, **self._params())

    def _get_pool(self) -> ConnectionPool[Any]:
        from psycopg_pool import ConnectionPool

        with self._lock:
            if self._pool is None or self._owner != os.getpid():
                self._owner = os.getpid()
                self._migrated = False

                def configure(conn: psycopg.Connection[Any]) -> None:
                    conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")

                self._pool = ConnectionPool(
                    kwargs={**self._params(), "autocommit": True},
                    min_size=1,
                    max_size=self.pool_size,
                    open=False,
                    configure=configure,
                    check=ConnectionPool.check_connection,
                    timeout=WAIT_SECONDS,
                    reconnect_timeout=RECONNECT_SECONDS,
                    name="provmint-scan-log",
                )
                self._pool.open(wait=False)
            return self._pool

    def _with_connection(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        if self.pool_size:
            with self._get_pool().connection() as conn:
                return work(conn)
        with self._lock:
            if self._direct is None or self._direct.closed:
                self._direct = self._connect()
            try:
                return work(self._direct)
            except BaseException:
                if self._direct.broken:
                    self._direct.close()
                raise

    def _run(self, doing: str, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        """Run ``work`` on a connection (migrating first, once per process); any database
        failure becomes one ScanLogError, and the next calls fail fast for a moment."""
        import psycopg

        if time.monotonic() < self._retry_at:
            raise ScanLogError(f"cannot {doing} the scan log {self.where}: {self._last_failure}")

        def migrated(conn: psycopg.Connection[Any]) -> T:
            if not self._migrated:
                self._migrate(conn)
                self._migrated = True
            if self._keys is None:
                self._keys = ClientKeys(self._salt(conn))
            return work(conn)

        try:
            result = self._with_connection(migrated)
        except psycopg.Error as exc:
            self._last_failure = _reason(exc)
            self._retry_at = time.monotonic() + RETRY_SECONDS
            raise ScanLogError(
                f"cannot {doing} the scan log {self.where}: {self._last_failure}"
            ) from exc
        self._retry_at = 0.0
        return result

    # ----------------------------------------------------------------- schema

    def _migrate(self, conn: psycopg.Connection[Any]) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            conn.execute("CREATE TABLE IF NOT EXISTS scan_log_version (version integer NOT NULL)")
            row = conn.execute("SELECT max(version) FROM scan_log_version").fetchone()
            version = row[0] if row is not None and row[0] is not None else 0
            if version > SCHEMA_VERSION:
                raise ScanLogError(
                    f"the scan log {self.where} has schema version {version}, newer than "
                    f"this provmint understands ({SCHEMA_VERSION})",
                    hint="upgrade provmint on every replica",
                )
            if version < SCHEMA_VERSION:
                for statement in [*_SCHEMA, *_V3, *_V4]:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO scan_log_meta VALUES ('client_salt', %s) ON CONFLICT DO NOTHING",
                    (secrets.token_bytes(SALT_BYTES),),
                )
                conn.execute("DELETE FROM scan_log_version")
                conn.execute("INSERT INTO scan_log_version VALUES (%s)", (SCHEMA_VERSION,))

    def _salt(self, conn: psycopg.Connection[Any]) -> bytes:
        """The log's client salt (made with the schema; read once per process)."""
        row = conn.execute("SELECT value FROM scan_log_meta WHERE name = 'client_salt'").fetchone()
        if row is None or len(row[0]) < SALT_BYTES:
            raise ScanLogError(f"the scan log {self.where} has no client salt", hint="restore it")
        return bytes(row[0])

    def migrate(self) -> None:
        """Create the tables if they are missing, on a connection of its own (so that
        a process can migrate and then ``fork`` without passing a connection on)."""
        import psycopg

        try:
            with self._connect() as conn:
                self._migrate(conn)
        except psycopg.Error as exc:
            raise ScanLogError(f"cannot reach the scan log {self.where}: {_reason(exc)}") from exc

    # ----------------------------------------------------------------- operations

    def check(self) -> None:
        """One round trip to the server."""
        self._run("reach", lambda conn: conn.execute("SELECT 1").fetchone())

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
        """Log a scan (one transaction, one pipeline); return the code's history with it."""
        place = clean_location(location)
        good = verdict in GOOD_VERDICTS
        when = at or datetime.now(UTC)
        rule = self.rule

        def work(conn: psycopg.Connection[Any]) -> ScanStats:
            assert self._keys is not None
            client, counted = self._keys.of(address, user_agent)
            params = {
                "gtin": gtin,
                "serial": serial,
                "verdict": verdict,
                "location": place,
                "source": source,
                "at": when,
                "good": int(good),
                "is_good": good,
                "forged_day": None if good else when.astimezone(UTC).date(),
                "day": when.astimezone(UTC).date(),
                "shard": os.getpid() % _DAY_SHARDS,
                "forged": 0 if good else 1,
                "client": client,
                "counted": counted,
                "placed_at": when if place is not None else None,
                "place_at": when if counted else None,
                "start": when - rule.window,
                "clients_cap": rule.max_clients + 1,
                "places_cap": rule.max_places + 1,
            }
            with conn.pipeline(), conn.transaction():
                conn.execute(_UPSERT_CODE, params)
                if good and counted:
                    conn.execute(_UPSERT_CLIENT, params)
                if good and place is not None:
                    conn.execute(_UPSERT_PLACE, params)
                conn.execute(_INSERT_SCAN, params)
                conn.execute(_COUNT_DAY, params)
                row = conn.execute(_READ if good else _COUNTERS, params).fetchone()
            assert row is not None
            counts: tuple[Any, ...] = row[:4]
            window: tuple[Any, ...] | None = None
            if good:
                window = self._window(conn, gtin, serial, row[5:])
            return self._stats(conn, gtin, serial, recent, counts, window)

        return self._run("write", work)

    def stats(
        self, gtin: str, serial: str, recent: int = 10, *, at: datetime | None = None
    ) -> ScanStats:
        """History of one code (the copy signal's window ending at ``at``, now)."""
        when = at or datetime.now(UTC)
        rule = self.rule

        def work(conn: psycopg.Connection[Any]) -> ScanStats:
            row = conn.execute(
                _READ,
                {
                    "gtin": gtin,
                    "serial": serial,
                    "start": when - rule.window,
                    "clients_cap": rule.max_clients + 1,
                    "places_cap": rule.max_places + 1,
                },
            ).fetchone()
            if row is None:
                return self._stats(conn, gtin, serial, recent, None, None)
            window = self._window(conn, gtin, serial, row[5:])
            return self._stats(conn, gtin, serial, recent, row[:4], window)

        return self._run("read", work)

    def _window(
        self, conn: psycopg.Connection[Any], gtin: str, serial: str, counts: Sequence[Any]
    ) -> tuple[Any, ...]:
        """The copy signal's window from a row's (since, clients, places, placing
        clients): the counts, and the places named only when they would flag the code."""
        since, clients, places, placing = counts
        rule = self.rule
        listed: tuple[str, ...] = ()
        if places > rule.max_places and placing > rule.max_places:
            listed = tuple(
                r[0]
                for r in conn.execute(
                    _WINDOW_PLACES,
                    {"gtin": gtin, "serial": serial, "since": since, "n": LISTED_PLACES},
                )
            )
        return (clients, places, placing, listed, stamp(since))

    @staticmethod
    def _stats(
        conn: psycopg.Connection[Any],
        gtin: str,
        serial: str,
        recent: int,
        counters: tuple[Any, ...] | None,
        window: tuple[Any, ...] | None,
    ) -> ScanStats:
        key = {"gtin": gtin, "serial": serial}
        good, total, first, places = counters or (0, 0, None, 0)
        listed: list[str] = []
        if places and recent:  # the service asks for counts alone
            listed = [
                r[0]
                for r in conn.execute(
                    "SELECT location FROM scan_places WHERE gtin = %(gtin)s AND "
                    "serial = %(serial)s ORDER BY location LIMIT %(n)s",
                    {**key, "n": LISTED_PLACES},
                )
            ]
        rows: list[tuple[Any, ...]] = []
        if recent:
            rows = conn.execute(
                "SELECT at, verdict, location, source FROM scans WHERE gtin = %(gtin)s "
                "AND serial = %(serial)s ORDER BY at DESC, id DESC LIMIT %(n)s",
                {**key, "n": recent},
            ).fetchall()
        clients, window_places, placing, window_listed, since = window or (0, 0, 0, (), None)
        return ScanStats(
            count=int(good),
            locations=tuple(listed),
            first_seen=None if first is None else stamp(first),
            recent=tuple(Scan(stamp(a), v, loc, src) for a, v, loc, src in rows),
            all_scans=int(total),
            places=int(places),
            clients=int(clients),
            window_places=int(window_places),
            placing_clients=int(placing),
            window_locations=window_listed,
            since=since,
        )

    def daily(self, since: date | None = None) -> list[DayCount]:
        """Scans per day and verdict, from ``since`` (see :meth:`ScanLog.daily`)."""

        def work(conn: psycopg.Connection[Any]) -> list[DayCount]:
            rows = conn.execute(
                "SELECT day, verdict, sum(scans) FROM scan_days WHERE day >= %s "
                "GROUP BY day, verdict ORDER BY day, verdict",
                (since or date.min,),
            ).fetchall()
            return [DayCount(d, v, int(n)) for d, v, n in rows]

        return self._run("read", work)

    def list_scans(self, query: ScanQuery) -> list[LoggedScan]:
        """The scans ``query`` selects, newest first."""
        where, args = query.where("%s", lambda when: when)
        sql = (
            "SELECT at, gtin, serial, verdict, location, source, counted FROM scans"
            f"{where} ORDER BY id DESC LIMIT %s"
        )

        def work(conn: psycopg.Connection[Any]) -> list[LoggedScan]:
            rows = conn.execute(sql, (*args, query.limit)).fetchall()
            return [
                LoggedScan(stamp(a), g, s, v, loc, src, bool(c)) for a, g, s, v, loc, src, c in rows
            ]

        return self._run("read", work)

    def evidence(
        self, gtin: str, serial: str, *, at: datetime | None = None
    ) -> CopyEvidence | None:
        """What the copy signal of one code rests on (None: never scanned)."""
        when = at or datetime.now(UTC)
        return self._run("read", lambda conn: self._evidence(conn, gtin, serial, when))

    def _evidence(
        self, conn: psycopg.Connection[Any], gtin: str, serial: str, at: datetime
    ) -> CopyEvidence | None:
        key = {"gtin": gtin, "serial": serial}
        row = conn.execute(
            _READ,
            {
                **key,
                "start": at - self.rule.window,
                "clients_cap": EVIDENCE_CAP,
                "places_cap": EVIDENCE_CAP,
            },
        ).fetchone()
        if row is None:
            return None
        good, total, first, _places, cleared, since, clients, window_places, placing = row
        places = tuple(
            PlaceEvidence(location, int(scans), None if last is None else stamp(last))
            for location, scans, last in conn.execute(
                _WINDOW_PLACES, {**key, "since": since, "n": LISTED_EVIDENCE}
            )
        )
        last = conn.execute(
            "SELECT last_at FROM scan_clients WHERE gtin = %(gtin)s AND serial = %(serial)s "
            "ORDER BY last_at DESC LIMIT 1",
            key,
        ).fetchone()
        return CopyEvidence(
            gtin=gtin,
            serial=serial,
            at=stamp(at),
            window_start=stamp(at - self.rule.window),
            cleared_at=None if cleared is None else stamp(cleared),
            since=stamp(since),
            clients=int(clients),
            placing_clients=int(placing),
            window_places=int(window_places),
            places=places,
            first_seen=None if first is None else stamp(first),
            last_seen=stamp(last[0]) if last else None,
            genuine_scans=int(good),
            all_scans=int(total),
        )

    def clear(self, gtin: str, serial: str, *, at: datetime | None = None) -> CopyEvidence | None:
        """Record a clear of the code's copy signal; the evidence it cleared."""
        when = at or datetime.now(UTC)

        def work(conn: psycopg.Connection[Any]) -> CopyEvidence | None:
            with conn.transaction():
                conn.execute(
                    "SELECT 1 FROM scan_codes WHERE gtin = %s AND serial = %s FOR UPDATE",
                    (gtin, serial),
                )
                found = self._evidence(conn, gtin, serial, when)
                if found is not None:
                    conn.execute(
                        "UPDATE scan_codes SET cleared_at = GREATEST(cleared_at, %s) "
                        "WHERE gtin = %s AND serial = %s",
                        (when, gtin, serial),
                    )
            return found

        return self._run("clear", work)

    def prune(self, before: datetime, *, chunk: int = PRUNE_CHUNK) -> int:
        """Delete scans older than ``before``, ``chunk`` per transaction.

        Each chunk locks the counter rows of its codes (in a fixed order) before deleting,
        so a scan of one of those codes logged meanwhile waits and then counts on top of
        the recount, never lost and never counted twice."""

        def one_chunk(conn: psycopg.Connection[Any]) -> tuple[int, bool]:
            with conn.transaction():
                rows = conn.execute(
                    "SELECT id, gtin, serial FROM scans WHERE at < %s LIMIT %s",
                    (before, chunk),
                ).fetchall()
                if not rows:
                    return 0, True
                codes = sorted({(g, s) for _, g, s in rows})
                keys = {
                    "gtins": [g for g, _ in codes],
                    "serials": [s for _, s in codes],
                    "good": list(GOOD_VERDICTS),
                }
                conn.execute(
                    f"SELECT 1 FROM scan_codes c JOIN {_CODES} "
                    "ON c.gtin = k.gtin AND c.serial = k.serial "
                    "ORDER BY c.gtin, c.serial FOR UPDATE OF c",
                    keys,
                )
                deleted = conn.execute(
                    "DELETE FROM scans WHERE id = ANY(%s)", ([r[0] for r in rows],)
                ).rowcount
                for statement in _RECOUNT:
                    conn.execute(statement, keys)
            return max(deleted, 0), len(rows) < chunk

        removed = 0
        while True:
            count, done = self._run("prune", one_chunk)
            removed += count
            if done:
                return removed

    def close(self) -> None:
        """Close the pool (or the connection)."""
        with self._lock:
            pool, self._pool = self._pool, None
            direct, self._direct = self._direct, None
        if pool is not None and self._owner == os.getpid():
            pool.close(timeout=1.0)
        if direct is not None:
            direct.close()
