"""The scan log: every check of a printed code, for history and clone detection.

A small SQLite database beside the catalog (``<store>/scans.sqlite``, WAL mode), because
scans arrive from several processes at once (``provmint scan``, ``provmint serve``) and
SQLite lets many writers take turns where DuckDB allows one writing process. It holds no
tokens: only the product identity, the verdict, where (if told) and when.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from provmint.errors import StoreError

__all__ = ["GOOD_VERDICTS", "Scan", "ScanLog", "ScanStats", "clean_location"]

GOOD_VERDICTS = ("genuine", "pending", "suspect")
"""Verdicts of scans that showed the code's real token."""


def clean_location(text: str | None) -> str | None:
    """A scan location as kept: printable, one line, at most 64 characters."""
    if text is None:
        return None
    cleaned = "".join(ch for ch in text if ch.isprintable()).strip()[:64]
    return cleaned or None


_SCHEMA = """
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
"""


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
class ScanStats:
    """How often and from where a code was scanned (this scan included).

    ``count`` and ``locations`` cover the scans that showed the right token (verdicts in
    :data:`GOOD_VERDICTS`): scans of made-up tokens say nothing about copied labels, and
    counting them would let anyone who knows a serial brand its genuine label a copy.
    """

    count: int
    locations: tuple[str, ...]
    first_seen: str | None
    recent: tuple[Scan, ...]
    all_scans: int = 0


class ScanLog:
    """The scan log of a store; safe to share between threads (one connection each)."""

    def __init__(self, root: Path) -> None:
        self.path = root / "scans.sqlite"
        self._local = threading.local()

    def _con(self) -> sqlite3.Connection:
        con: sqlite3.Connection | None = getattr(self._local, "con", None)
        if con is None:
            try:
                con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
                con.execute("PRAGMA journal_mode=WAL")
                con.execute("PRAGMA synchronous=NORMAL")
                con.executescript(_SCHEMA)
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open the scan log {self.path}: {exc}") from exc
            self._local.con = con
        return con

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
        when = (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        con = self._con()
        try:
            con.execute(
                "INSERT INTO scans (at, gtin, serial, verdict, location, source) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (when, gtin, serial, verdict, clean_location(location), source),
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write the scan log {self.path}: {exc}") from exc
        return self.stats(gtin, serial, recent)

    def stats(self, gtin: str, serial: str, recent: int = 10) -> ScanStats:
        """History of one code: genuine-token scans and their places, first scan, all
        scans, and the ``recent`` last ones."""
        con = self._con()
        good = ", ".join("?" for _ in GOOD_VERDICTS)
        key = (gtin, serial)
        try:
            total, count, first = con.execute(
                f"SELECT count(*), count(*) FILTER (WHERE verdict IN ({good})), min(at) "
                "FROM scans WHERE gtin = ? AND serial = ?",
                (*GOOD_VERDICTS, *key),
            ).fetchone()
            places = tuple(
                row[0]
                for row in con.execute(
                    f"SELECT DISTINCT location FROM scans WHERE gtin = ? AND serial = ? AND "
                    f"location IS NOT NULL AND verdict IN ({good}) ORDER BY location",
                    (*key, *GOOD_VERDICTS),
                )
            )
            rows = (
                con.execute(
                    "SELECT at, verdict, location, source FROM scans WHERE gtin = ? AND "
                    "serial = ? ORDER BY id DESC LIMIT ?",
                    (*key, recent),
                ).fetchall()
                if recent
                else []
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the scan log {self.path}: {exc}") from exc
        return ScanStats(
            int(count or 0),
            places,
            first,
            tuple(Scan(a, v, loc, src) for a, v, loc, src in rows),
            int(total),
        )
