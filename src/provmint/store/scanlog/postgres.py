"""The PostgreSQL scan log: one log shared by every replica of the verification service.

psycopg 3. The web service keeps a small connection pool per process (psycopg_pool; each
connection is checked before use, so one that died with the server is replaced instead
of failing a scan); one-shot commands (``provmint scan``, ``provmint scans prune``) use
one connection. Connections run in autocommit: logging a scan is one statement that
inserts the scan row, the code's place and bumps the code's counters, atomically and in
one round trip, so concurrent replicas never lose a count.

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
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from provmint.store.scanlog import (
    GOOD_VERDICTS,
    LISTED_PLACES,
    PRUNE_CHUNK,
    SCHEMA_VERSION,
    Scan,
    ScanLog,
    ScanLogError,
    ScanStats,
    clean_location,
    redact,
    stamp,
)

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

# One statement: the place (if new), the scan row and the code's counters. The place is
# inserted before the counters are locked (the counter row reads the place CTE), in
# every transaction, so two scans never wait on each other in opposite orders.
_RECORD = """
WITH place AS (
    INSERT INTO scan_places (gtin, serial, location)
    SELECT %(gtin)s, %(serial)s, %(location)s WHERE %(counts_place)s
    ON CONFLICT DO NOTHING
    RETURNING 1
), scan AS (
    INSERT INTO scans (at, gtin, serial, verdict, location, source)
    VALUES (%(at)s, %(gtin)s, %(serial)s, %(verdict)s, %(location)s, %(source)s)
)
INSERT INTO scan_codes AS c (gtin, serial, good, total, first_at, places)
VALUES (%(gtin)s, %(serial)s, %(good)s, 1, %(at)s, (SELECT count(*) FROM place))
ON CONFLICT (gtin, serial) DO UPDATE SET
    good = c.good + EXCLUDED.good,
    total = c.total + 1,
    first_at = LEAST(c.first_at, EXCLUDED.first_at),
    places = c.places + EXCLUDED.places
RETURNING good, total, first_at, places
"""

_CODES = "unnest(%(gtins)s::text[], %(serials)s::text[]) AS k(gtin, serial)"
_RECOUNT = [
    f"""UPDATE scan_codes c
    SET good = r.good, total = r.total, first_at = coalesce(r.first_at, c.first_at)
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
    f"""UPDATE scan_codes c SET places = (
        SELECT count(*) FROM scan_places p WHERE p.gtin = c.gtin AND p.serial = c.serial)
    FROM {_CODES} WHERE c.gtin = k.gtin AND c.serial = k.serial""",
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

    def __init__(self, url: str, *, pool_size: int = 2) -> None:
        self.url = url
        self.pool_size = pool_size
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
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute("DELETE FROM scan_log_version")
                conn.execute("INSERT INTO scan_log_version VALUES (%s)", (SCHEMA_VERSION,))

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
    ) -> ScanStats:
        """Log a scan (one statement); return the code's history including it."""
        place = clean_location(location)
        good = verdict in GOOD_VERDICTS
        params = {
            "gtin": gtin,
            "serial": serial,
            "verdict": verdict,
            "location": place,
            "source": source,
            "at": at or datetime.now(UTC),
            "good": int(good),
            "counts_place": good and place is not None,
        }

        def work(conn: psycopg.Connection[Any]) -> ScanStats:
            row = conn.execute(_RECORD, params).fetchone()
            assert row is not None
            return self._stats(conn, gtin, serial, recent, row)

        return self._run("write", work)

    def stats(self, gtin: str, serial: str, recent: int = 10) -> ScanStats:
        """History of one code."""
        return self._run("read", lambda conn: self._stats(conn, gtin, serial, recent, None))

    @staticmethod
    def _stats(
        conn: psycopg.Connection[Any],
        gtin: str,
        serial: str,
        recent: int,
        counters: tuple[Any, ...] | None,
    ) -> ScanStats:
        key = {"gtin": gtin, "serial": serial}
        if counters is None:
            counters = conn.execute(
                "SELECT good, total, first_at, places FROM scan_codes "
                "WHERE gtin = %(gtin)s AND serial = %(serial)s",
                key,
            ).fetchone() or (0, 0, None, 0)
        good, total, first, places = counters
        listed: list[str] = []
        if places:
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
        return ScanStats(
            count=int(good),
            locations=tuple(listed),
            first_seen=None if first is None else stamp(first),
            recent=tuple(Scan(stamp(a), v, loc, src) for a, v, loc, src in rows),
            all_scans=int(total),
            places=int(places),
        )

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
