"""The scan log: every check of a printed code, for history and clone detection.

Two backends behind one interface, :class:`ScanLog`, chosen by the ``scan_log`` setting
(``--scan-log``, ``PROVMINT_SCAN_LOG``, ``scan_log`` in the config file):

- SQLite (the default): ``<store>/scans.sqlite`` in WAL mode, beside the catalog, so that
  ``provmint scan`` and ``provmint serve`` processes on one machine take turns writing
  (``sqlite:PATH`` puts it elsewhere); see :mod:`.sqlite`.
- PostgreSQL (``postgresql://...``): one log shared by every replica of the verification
  service behind a load balancer, so clone detection counts scans across all of them;
  see :mod:`.postgres`.

Both keep the same tables. ``scans`` holds one row per scan (time, code, verdict, place,
source; never a token), indexed by (gtin, serial) for a code's history. ``scan_codes`` holds one
row per code with its counters (scans that showed the right token, all scans, first scan,
distinct places) and ``scan_places`` the distinct places of genuine-token scans: both are
updated in the same transaction as the scan row, so the clone check reads one row and
costs the same however long the log grows. Pruning (:meth:`ScanLog.prune`) deletes old
scan rows and recounts the codes they touched.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from provmint.config import PG_SCHEMES, redact
from provmint.errors import ConfigError, StoreError

if TYPE_CHECKING:
    from provmint.config import Settings

__all__ = [
    "DEFAULT_FILE",
    "GOOD_VERDICTS",
    "LISTED_PLACES",
    "SCHEMA_VERSION",
    "Scan",
    "ScanLog",
    "ScanLogError",
    "ScanRequest",
    "ScanStats",
    "clean_location",
    "open_scan_log",
    "parse_age",
    "redact",
]

GOOD_VERDICTS = ("genuine", "pending", "suspect")
"""Verdicts of scans that showed the code's real token."""

SCHEMA_VERSION = 2
"""Version of the scan-log tables (1: the scans table alone, SQLite only)."""

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
class ScanRequest:
    """One scan to log (see :meth:`ScanLog.record_many`)."""

    gtin: str
    serial: str
    verdict: str
    location: str | None
    source: str
    at: datetime | None = None
    """When it happened (now, when None)."""


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


class ScanLog(ABC):
    """Where scans are logged. Safe to share between the threads of one process; open a
    new one in each process (connections do not survive ``fork``)."""

    kind: str
    """``sqlite`` or ``postgresql``."""

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
    ) -> ScanStats:
        """Log a scan and return the code's history including it (the ``recent`` last
        scans; 0 skips them, as the web service does)."""

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
            )
            for s in scans
        ]

    @abstractmethod
    def stats(self, gtin: str, serial: str, recent: int = 10) -> ScanStats:
        """History of one code, without logging a scan."""

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
    """The scan log the settings name (nothing is connected or created until first use).

    ``pool_size`` bounds the PostgreSQL connections this process keeps; ``service`` (a
    long-running web worker) keeps SQLite from sleeping on its event loop (see
    :class:`.sqlite.SqliteScanLog`)."""
    url = settings.scan_log
    if url is not None and url.startswith(PG_SCHEMES):
        from provmint.store.scanlog.postgres import PostgresScanLog

        return PostgresScanLog(url, pool_size=pool_size)
    from provmint.store.scanlog.sqlite import SqliteScanLog

    path = Path(url[len("sqlite:") :]) if url is not None else settings.store / DEFAULT_FILE
    return SqliteScanLog(path, service=service)


_AGE = re.compile(r"([0-9]{1,6})([hdw])")
_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
_MAX_AGE = timedelta(days=100 * 366)


def parse_age(text: str) -> timedelta:
    """A retention age such as ``365d``, ``12h`` or ``52w`` (hours, days, weeks).
    Raises ConfigError (exit 2) for anything else, zero, or more than 100 years."""
    found = _AGE.fullmatch(text.strip())
    if found is None:
        raise ConfigError(
            f"--older-than {text!r} is not an age",
            hint="write a whole number and a unit: h (hours), d (days) or w (weeks), "
            "as in 365d, 12h or 52w",
        )
    age = int(found.group(1)) * _UNITS[found.group(2)]
    if not timedelta(0) < age <= _MAX_AGE:
        raise ConfigError(f"--older-than {text!r} must be more than 0 and at most 100 years")
    return age
