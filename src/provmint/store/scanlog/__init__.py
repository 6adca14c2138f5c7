"""The scan log: every check of a printed code, for history and clone detection.

Two backends behind one interface, :class:`ScanLog`, chosen by the ``scan_log`` setting
(``--scan-log``, ``PROVMINT_SCAN_LOG``, ``scan_log`` in the config file):

- SQLite (the default): ``<store>/scans.sqlite`` in WAL mode, beside the catalog, so that
  ``provmint scan`` and ``provmint serve`` processes on one machine take turns writing
  (``sqlite:PATH`` puts it elsewhere); see :mod:`.sqlite`.
- PostgreSQL (``postgresql://...``): one log shared by every replica of the verification
  service behind a load balancer, so clone detection counts scans across all of them;
  see :mod:`.postgres`.

Both keep these tables. ``scans`` holds one row per scan (time, code, verdict, place,
source, the client's key and whether it counts; never a token, an address or a user
agent), indexed by (gtin, serial) for a code's history. Aggregates, updated in the same
transaction as the scan row, make the copy signal cost the same however many scans a
code has:

- ``scan_codes``: one row per code with its counters (scans that showed the right
  token, all scans, first scan, distinct places), when an operator last cleared its copy
  signal, and how many forged scans it had today;
- ``scan_places``: the distinct places of genuine-token scans, each with its count and
  the last time a counted client gave it;
- the code's clients (see :mod:`.clients`): in SQLite, each code's latest few clients
  kept in its ``scan_codes`` row (see :mod:`.latest`: one write per scan, where a row
  per code and client with two indexes took three); in PostgreSQL, ``scan_clients``,
  one row per code and client with its first and last genuine-token scan and the last
  one that gave a place;
- ``scan_days``: how many scans each day (UTC) had, by verdict (:meth:`ScanLog.daily`),
  kept when old scans are pruned;
- ``scan_log_meta``: the log's random client salt.

The copy signal's counts (:class:`ScanStats`) come from the code's latest clients and
from index range scans over its places (and, in PostgreSQL, its clients), bounded by
the window and capped with ``LIMIT`` at one more than the rule's threshold: a code
flooded with scans costs no more to check than a fresh one. Forged
scans are counted, but at most :data:`FORGED_ROWS_PER_DAY` of them per code and day are
kept as rows, so a forger cannot grow the log without bound. Pruning
(:meth:`ScanLog.prune`) deletes old scan rows and recounts the codes they touched.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from provmint.config import PG_SCHEMES, CopySignalSettings, redact
from provmint.errors import StoreError

if TYPE_CHECKING:
    from provmint.config import Settings

__all__ = [
    "DEFAULT_FILE",
    "EVIDENCE_CAP",
    "FORGED_ROWS_PER_DAY",
    "GOOD_VERDICTS",
    "LISTED_PLACES",
    "MAX_LISTED_SCANS",
    "SCHEMA_VERSION",
    "SUSPECT",
    "CopyEvidence",
    "DayCount",
    "LoggedScan",
    "PlaceEvidence",
    "Scan",
    "ScanLog",
    "ScanLogError",
    "ScanQuery",
    "ScanRequest",
    "ScanStats",
    "clean_location",
    "open_scan_log",
    "redact",
]

GOOD_VERDICTS = ("genuine", "pending", "suspect")
"""Verdicts of scans that showed the code's real token."""

SUSPECT = "suspect"
"""The verdict of a genuine code flagged as possibly copied: rare, and what operators
list (``provmint stats``, the dashboard), so the log indexes these scans alone."""

SCHEMA_VERSION = 4
"""Version of the scan-log tables (1: the scans table alone, SQLite only; 2: the
per-code counters; 3: clients, places over time and clears, for the copy signal; 4: scans
per day and verdict)."""

FORGED_ROWS_PER_DAY = 20
"""Forged scans of one code kept as rows per day (UTC); the rest are only counted."""

EVIDENCE_CAP = 10_000
"""Clients and places :meth:`ScanLog.evidence` counts at most (for the operator)."""

LISTED_EVIDENCE = 50
"""Places :meth:`ScanLog.evidence` lists at most (the latest)."""

LISTED_PLACES = 10
"""How many of a code's places a :class:`ScanStats` lists (all are counted)."""

DEFAULT_FILE = "scans.sqlite"
"""The default scan log, inside the store."""

PRUNE_CHUNK = 10_000
"""Scan rows deleted per transaction when pruning, so writers never wait long."""

STAMP = "%Y-%m-%dT%H:%M:%S.%fZ"
"""How a scan's time is written (UTC, microseconds; sorts as text)."""


class ScanLogError(StoreError):
    """The scan log cannot be opened, read or written (read-only store, PostgreSQL down,
    a schema newer than this provmint): the scan was not logged. Exit 1."""


def clean_location(text: str | None) -> str | None:
    """A scan location as kept: printable, one line, at most 64 characters."""
    if text is None:
        return None
    cleaned = "".join(ch for ch in text if ch.isprintable()).strip()[:64]
    return cleaned or None


def stamp(when: datetime) -> str:
    """A scan time as stored and shown: ``2026-11-28T10:15:00.000000Z``."""
    # isoformat, not strftime(STAMP): the same text, several times faster (once a scan)
    return when.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


@dataclass(frozen=True, slots=True)
class Scan:
    """One logged scan."""

    at: str
    verdict: str
    location: str | None
    source: str

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "at": self.at,
            "verdict": self.verdict,
            "location": self.location,
            "source": self.source,
        }


@dataclass(frozen=True, slots=True)
class LoggedScan:
    """One row of the scan log, as ``provmint scans list`` shows it (the client's key
    is never shown: it identifies nobody by itself, and tells one visitor from another)."""

    at: str
    gtin: str
    serial: str
    verdict: str
    location: str | None
    source: str
    counted: bool
    """False for a link-preview bot or crawler (never counted by the copy signal)."""

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "at": self.at,
            "gtin": self.gtin,
            "serial": self.serial,
            "verdict": self.verdict,
            "location": self.location,
            "source": self.source,
            "counted": self.counted,
        }


MAX_LISTED_SCANS = 100_000
"""The most scans one listing returns."""


@dataclass(frozen=True, slots=True)
class ScanQuery:
    """Which scans to list: of one code (gtin and serial), with one verdict, since a
    time; the newest ``limit`` of them."""

    gtin: str | None = None
    serial: str | None = None
    verdict: str | None = None
    since: datetime | None = None
    limit: int = 50

    def where(self, mark: str, time: Callable[[datetime], Any]) -> tuple[str, list[Any]]:
        """The SQL condition (``mark``: the driver's placeholder) and its arguments;
        ``time`` turns ``since`` into what the log stores (text in SQLite, a timestamp
        in PostgreSQL)."""
        terms: list[str] = []
        args: list[Any] = []
        if self.gtin is not None and self.serial is not None:
            terms.append(f"gtin = {mark} AND serial = {mark}")
            args += [self.gtin, self.serial]
        if self.verdict == SUSPECT:
            # Written out, so that the planner can use the index of suspect scans alone
            # (a partial index: a bound value would not match its condition).
            terms.append(f"verdict = '{SUSPECT}'")
        elif self.verdict is not None:
            terms.append(f"verdict = {mark}")
            args.append(self.verdict)
        if self.since is not None:
            terms.append(f"at >= {mark}")
            args.append(time(self.since))
        return (" WHERE " + " AND ".join(terms) if terms else ""), args


@dataclass(frozen=True, slots=True)
class DayCount:
    """How many scans with one verdict a day (UTC) had, as :meth:`ScanLog.daily` counts
    them: every scan logged, also the forged ones kept only as a count, and also those
    pruned since."""

    day: date
    verdict: str
    scans: int

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"day": self.day.isoformat(), "verdict": self.verdict, "scans": self.scans}


@dataclass(frozen=True, slots=True)
class ScanRequest:
    """One scan to log (see :meth:`ScanLog.record_many`)."""

    gtin: str
    serial: str
    verdict: str
    location: str | None
    source: str
    at: datetime | None = None
    """When it happened (now, when None)."""
    address: str | None = None
    """The client's address as the service sees it (``cli:HOST`` for ``provmint
    scan``); with the user agent, hashed into the client's key and never stored. None
    with no user agent: the unknown client."""
    user_agent: str | None = None


@dataclass(frozen=True, slots=True)
class ScanStats:
    """How often and from where a code was scanned (this scan included).

    ``count`` and ``places`` cover the scans that showed the right token (verdicts in
    :data:`GOOD_VERDICTS`): scans of made-up tokens say nothing about copied labels, and
    counting them would let anyone who knows a serial brand its genuine label a copy.
    ``locations`` lists the first :data:`LISTED_PLACES` of those places by name.
    """

    count: int
    locations: tuple[str, ...]
    first_seen: str | None
    recent: tuple[Scan, ...]
    all_scans: int = 0
    places: int = 0
    clients: int = 0
    """Distinct counted clients with a genuine-token scan since :attr:`since` (counted up
    to the rule's ``max_clients + 1``)."""
    window_places: int = 0
    """Distinct places given by counted clients' genuine-token scans since
    :attr:`since` (counted up to ``max_places + 1``)."""
    placing_clients: int = 0
    """Distinct counted clients that gave a place since :attr:`since` (up to
    ``max_places + 1``)."""
    window_locations: tuple[str, ...] = ()
    """The places since :attr:`since`, latest first (at most :data:`LISTED_PLACES`): only
    when they are enough to flag the code, for the operator's reason."""
    since: str | None = None
    """Where the copy signal's evidence starts: the window's start, or the operator's
    last clear when later."""


@dataclass(frozen=True, slots=True)
class PlaceEvidence:
    """One place a code was seen from, as :meth:`ScanLog.evidence` lists it."""

    location: str
    scans: int
    """Genuine-token scans that gave it (all of them, in the log)."""
    last_at: str | None
    """The latest of those from a counted client."""

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"location": self.location, "scans": self.scans, "last_at": self.last_at}


@dataclass(frozen=True, slots=True)
class CopyEvidence:
    """What the copy signal of one code rests on at one moment (``provmint scans show``).

    Counts are exact up to :data:`EVIDENCE_CAP`."""

    gtin: str
    serial: str
    at: str
    """The moment the evidence was read (the window ends here)."""
    window_start: str
    cleared_at: str | None
    """When an operator last cleared the code's signal (None: never)."""
    since: str
    """Evidence from here on counts: the later of the window's start and the clear."""
    clients: int
    placing_clients: int
    window_places: int
    places: tuple[PlaceEvidence, ...]
    """The places since :attr:`since`, latest first (at most :data:`LISTED_EVIDENCE`)."""
    first_seen: str | None
    """The code's first logged scan (any verdict)."""
    last_seen: str | None
    """The latest genuine-token scan from a counted client."""
    genuine_scans: int
    """Scans that showed the code's real token (all time, bots included)."""
    all_scans: int
    """Every scan of the code, forged ones included."""

    @property
    def window_locations(self) -> tuple[str, ...]:
        """The places' names, latest first."""
        return tuple(p.location for p in self.places)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form (places are the operator's data: this is for the operator)."""
        return {
            "gtin": self.gtin,
            "serial": self.serial,
            "at": self.at,
            "window_start": self.window_start,
            "cleared_at": self.cleared_at,
            "since": self.since,
            "clients": self.clients,
            "placing_clients": self.placing_clients,
            "places": self.window_places,
            "listed_places": [p.to_json() for p in self.places],
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "genuine_scans": self.genuine_scans,
            "all_scans": self.all_scans,
        }


class ScanLog(ABC):
    """Where scans are logged. Safe to share between the threads of one process; open a
    new one in each process (connections do not survive ``fork``)."""

    kind: str
    """``sqlite`` or ``postgresql``."""
    rule: CopySignalSettings
    """The copy signal's window and thresholds: what :class:`ScanStats` counts, and how
    far (one more than each threshold)."""

    @property
    @abstractmethod
    def where(self) -> str:
        """Where the log is, for messages (a path, or a URL without its password)."""

    @abstractmethod
    def migrate(self) -> None:
        """Create or upgrade the tables (safe to run from several processes at once)."""

    @abstractmethod
    def check(self) -> None:
        """Raise :class:`ScanLogError` unless a scan could be logged now."""

    @abstractmethod
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
        """Log a scan and return the code's history including it (the ``recent`` last
        scans, and its places by name; 0 skips both, as the web service does, which
        needs the counts alone). ``address`` and ``user_agent`` name the client
        (:class:`ScanRequest`)."""

    def record_many(self, scans: Sequence[ScanRequest], *, recent: int = 0) -> list[ScanStats]:
        """Log several scans in order; each one's history including it (and the scans
        before it). A backend may write them in one transaction, as SQLite does: then
        all are logged, or none and this raises :class:`ScanLogError`."""
        return [
            self.record(
                s.gtin,
                s.serial,
                s.verdict,
                location=s.location,
                source=s.source,
                at=s.at,
                recent=recent,
                address=s.address,
                user_agent=s.user_agent,
            )
            for s in scans
        ]

    @abstractmethod
    def stats(
        self, gtin: str, serial: str, recent: int = 10, *, at: datetime | None = None
    ) -> ScanStats:
        """History of one code, without logging a scan (the copy signal's window ends
        at ``at``, now when None)."""

    @abstractmethod
    def daily(self, since: date | None = None) -> list[DayCount]:
        """Scans per day (UTC) and verdict, from ``since`` (every day when None), by day
        then verdict. Read from a counter the log keeps per day and verdict, so the cost
        depends on the days asked for, not on how many scans they had. Reads only."""

    @abstractmethod
    def list_scans(self, query: ScanQuery) -> list[LoggedScan]:
        """The scans ``query`` selects, newest first (at most its ``limit``). A listing
        reads the log from its newest scan back and stops at ``limit`` matches (of one
        code, through the code's index)."""

    @abstractmethod
    def evidence(
        self, gtin: str, serial: str, *, at: datetime | None = None
    ) -> CopyEvidence | None:
        """What the copy signal of a code rests on at ``at`` (now when None); None when
        the log has no scan of it. Reads only; creates nothing."""

    @abstractmethod
    def clear(self, gtin: str, serial: str, *, at: datetime | None = None) -> CopyEvidence | None:
        """Record that an operator cleared the code's copy signal at ``at`` (now): the
        evidence before it stops counting. Returns the evidence as it was just before
        (what was cleared); None, clearing nothing, when the log has no scan of it."""

    @abstractmethod
    def prune(self, before: datetime, *, chunk: int = PRUNE_CHUNK) -> int:
        """Delete the scans logged before ``before``, ``chunk`` rows per transaction;
        return how many. The codes they belonged to are recounted from the scans that
        remain."""

    def close(self) -> None:  # noqa: B027 (a backend may hold nothing to close)
        """Release connections."""

    def __enter__(self) -> ScanLog:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def open_scan_log(settings: Settings, *, pool_size: int = 2, service: bool = False) -> ScanLog:
    """The scan log the settings name (nothing is connected or created until first use),
    counting for the copy signal as ``settings.copy_signal`` says.

    ``pool_size`` bounds the PostgreSQL connections this process keeps; ``service`` (a
    long-running web worker) keeps SQLite from sleeping on its event loop (see
    :class:`.sqlite.SqliteScanLog`)."""
    url = settings.scan_log
    if url is not None and url.startswith(PG_SCHEMES):
        from provmint.store.scanlog.postgres import PostgresScanLog

        return PostgresScanLog(url, pool_size=pool_size, rule=settings.copy_signal)
    from provmint.store.scanlog.sqlite import SqliteScanLog

    path = Path(url[len("sqlite:") :]) if url is not None else settings.store / DEFAULT_FILE
    return SqliteScanLog(path, service=service, rule=settings.copy_signal)


def window_start(rule: CopySignalSettings, at: datetime, cleared_at: str | None) -> str:
    """Where the copy signal's evidence starts for a scan at ``at``: the window's start,
    or the code's last clear when that is later (both as stored text)."""
    start = stamp(at - rule.window)
    return max(start, cleared_at) if cleared_at else start
