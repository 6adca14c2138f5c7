"""``provmint stats``: the store and its scans at a glance, for the operator.

Batches and products (anchored, being anchored, pending), anchors and what they cost,
scans per day by verdict, the codes flagged as possible copies and why, and the store's
size on disk. Everything here answers as fast at ten million products and a hundred
million scans as at ten:

- batches, products and anchors come from the catalog's rows (one per batch and per
  anchor), never from the Parquet parts;
- scans per day come from the scan log's day counters (:meth:`ScanLog.daily`), kept by
  its writer, never from the scan rows;
- suspect codes come from a listing of suspect scans bounded by those counters (it stops
  at the oldest suspect scan of the window, see :func:`suspect_codes`), and each code's
  evidence through its own index;
- the size on disk is a walk of the store's directories (a few files per batch).

The dashboard (:mod:`provmint.dashboard`) shows the same facts.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provmint.config import PG_SCHEMES, Settings
from provmint.store import Store
from provmint.store.anchors import AnchorRecord, AnchorState
from provmint.store.scanlog import (
    DEFAULT_FILE,
    MAX_LISTED_SCANS,
    ScanLog,
    ScanQuery,
    open_scan_log,
    stamp,
)

if TYPE_CHECKING:
    from provmint.store.scanlog import DayCount

__all__ = [
    "DEFAULT_DAYS",
    "MAX_SUSPECT_CODES",
    "VERDICTS",
    "AnchorCosts",
    "BatchStanding",
    "CatalogFacts",
    "DayScans",
    "DiskUsage",
    "Standing",
    "StoreStats",
    "SuspectCode",
    "Tally",
    "anchor_costs",
    "daily_scans",
    "day_start",
    "disk_usage",
    "format_eth",
    "read_catalog_facts",
    "scan_log_files",
    "store_stats",
    "suspect_codes",
]

DEFAULT_DAYS = 30
"""The days ``provmint stats`` and the dashboard look back by default (today included)."""
MAX_SUSPECT_CODES = 100
"""The most suspect codes listed (the latest flagged first)."""
MAX_EXAMINED_CODES = 1000
"""The most codes with a suspect scan whose latest scan is looked at for one listing."""
VERDICTS = ("genuine", "pending", "suspect", "forged")
"""The verdicts the scan log records, in the order they are shown (an unknown code is
never logged: there is no product to log it against)."""
WEI_PER_ETH = 10**18


class Standing(StrEnum):
    """Where a batch is on its way into the chain (its value is what JSON says)."""

    ANCHORED = "anchored"
    """Its live anchor is in a block: proofs carry it."""
    ANCHORING = "anchoring"
    """An anchor covers it, not yet in a block (built, signed or broadcast)."""
    PENDING = "pending"
    """No live anchor covers it: the next ``provmint anchor`` takes it."""


@dataclass(frozen=True, slots=True)
class BatchStanding:
    """A committed batch and its anchor, as the operator lists it."""

    seq: int
    batch_id: str
    created_at: str
    label: str | None
    products: int
    standing: Standing
    anchor: AnchorRecord | None
    """The live anchor covering it (the newest that is not failed), if any."""

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        anchor = self.anchor
        return {
            "batch_id": self.batch_id,
            "created_at": self.created_at,
            "label": self.label,
            "products": self.products,
            "standing": self.standing,
            "anchor_id": None if anchor is None else anchor.anchor_id,
            "anchor_state": None if anchor is None else anchor.state,
            "tx_hash": None if anchor is None else anchor.tx_hash,
        }


@dataclass(frozen=True, slots=True)
class CatalogFacts:
    """What the catalog holds for the operator: every batch with its standing (oldest
    first) and every anchor, failed ones included (oldest first)."""

    batches: tuple[BatchStanding, ...] = ()
    anchors: tuple[AnchorRecord, ...] = ()


def read_catalog_facts(settings: Settings, *, timeout: float | None = None) -> CatalogFacts:
    """The catalog's batches and anchors, read under the shared store lock (waiting at
    most ``timeout`` seconds, the settings' lock timeout by default). A store with no
    batch yet has none."""
    from provmint.store.anchors import all_anchors

    store = Store.open(settings.store)
    if not store.catalog_path.exists() and not store.batch_dirs():
        return CatalogFacts()
    wait = settings.lock_timeout if timeout is None else timeout
    with store.reading(timeout=wait, purpose="read the catalog for stats") as con:
        batches = store.batches(con)
        anchors = all_anchors(con)
    live: dict[int, AnchorRecord] = {}
    for record in anchors:  # oldest first: the newest live anchor of a batch wins
        if record.state is not AnchorState.FAILED:
            for seq, _, _ in record.batches:
                live[seq] = record
    standings = tuple(
        BatchStanding(
            b.seq,
            b.batch_id,
            b.created_at,
            b.label,
            b.products,
            _standing(live.get(b.seq)),
            live.get(b.seq),
        )
        for b in batches
    )
    return CatalogFacts(standings, tuple(anchors))


def _standing(anchor: AnchorRecord | None) -> Standing:
    if anchor is None:
        return Standing.PENDING
    return Standing.ANCHORED if anchor.state.in_block else Standing.ANCHORING


@dataclass(frozen=True, slots=True)
class Tally:
    """Batches or products by standing."""

    anchored: int = 0
    anchoring: int = 0
    pending: int = 0

    @property
    def total(self) -> int:
        """All of them."""
        return self.anchored + self.anchoring + self.pending

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "total": self.total,
            "anchored": self.anchored,
            "anchoring": self.anchoring,
            "pending": self.pending,
        }


def _tally(batches: Iterable[BatchStanding], weight: str) -> Tally:
    counts = dict.fromkeys(Standing, 0)
    for batch in batches:
        counts[batch.standing] += batch.products if weight == "products" else 1
    return Tally(counts[Standing.ANCHORED], counts[Standing.ANCHORING], counts[Standing.PENDING])


@dataclass(frozen=True, slots=True)
class AnchorCosts:
    """The anchors by state, and what their transactions cost (gas used and fees paid,
    from their receipts: anchors in a block and reverted ones)."""

    states: dict[str, int]
    gas_used: int
    fee_wei: int

    @property
    def total(self) -> int:
        """Every anchor."""
        return sum(self.states.values())

    @property
    def fee_eth(self) -> Decimal:
        """The fees in ether (exact)."""
        return Decimal(format_eth(self.fee_wei))

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form (wei as a string: it outgrows a JSON number)."""
        return {
            "total": self.total,
            "states": self.states,
            "gas_used": self.gas_used,
            "fee_wei": str(self.fee_wei),
            "fee_eth": format_eth(self.fee_wei),
        }


def format_eth(wei: int) -> str:
    """Wei as ether, exactly, without an exponent (``0.000123``, ``0``): integer
    arithmetic, whatever the size (a decimal context would round past 28 digits)."""
    whole, fraction = divmod(wei, WEI_PER_ETH)
    return f"{whole}.{fraction:018d}".rstrip("0").rstrip(".")


def anchor_costs(anchors: Iterable[AnchorRecord]) -> AnchorCosts:
    """The anchors' states and costs."""
    states = {state.value: 0 for state in AnchorState}
    gas = fee = 0
    for record in anchors:
        states[record.state.value] += 1
        gas += record.gas_used or 0
        fee += int(record.fee_wei) if record.fee_wei else 0
    return AnchorCosts(states, gas, fee)


@dataclass(frozen=True, slots=True)
class DayScans:
    """The scans of one UTC day, by verdict."""

    day: date
    verdicts: dict[str, int]

    @property
    def total(self) -> int:
        """Every scan of the day."""
        return sum(self.verdicts.values())

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"day": self.day.isoformat(), "total": self.total, "verdicts": self.verdicts}


def daily_scans(counts: Sequence[DayCount], since: date | None, today: date) -> list[DayScans]:
    """Every day from ``since`` (or the first day counted) to ``today``, each with every
    verdict of :data:`VERDICTS` (zeros included) and any other the log counted."""
    found: dict[date, dict[str, int]] = {}
    extra: list[str] = []
    for count in counts:
        found.setdefault(count.day, {})[count.verdict] = (
            found.get(count.day, {}).get(count.verdict, 0) + count.scans
        )
        if count.verdict not in VERDICTS and count.verdict not in extra:
            extra.append(count.verdict)
    first = since if since is not None else min(found, default=today)
    last = max(today, max(found, default=today))
    names = (*VERDICTS, *sorted(extra))
    days = []
    day = first
    while day <= last:
        seen = found.get(day, {})
        days.append(DayScans(day, {name: seen.get(name, 0) for name in names}))
        day += timedelta(days=1)
    return days


@dataclass(frozen=True, slots=True)
class SuspectCode:
    """A code whose latest scan was judged a possible copy, and why it is flagged now
    (its places are the operator's data: what visitors gave as ``?loc=``)."""

    gtin: str
    serial: str
    last_suspect_at: str
    suspect_scans: int
    """Its suspect scans within the window (as listed)."""
    flagged: bool
    """Whether the copy signal flags it now (False: cleared, or its evidence aged out)."""
    reason: str | None
    """Why it is flagged now (None when it is not)."""
    cleared_at: str | None

    @property
    def code(self) -> str:
        """The code as a Digital Link path, without its token."""
        return f"01/{self.gtin}/21/{self.serial}"

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "code": self.code,
            "gtin": self.gtin,
            "serial": self.serial,
            "last_suspect_at": self.last_suspect_at,
            "suspect_scans": self.suspect_scans,
            "flagged": self.flagged,
            "reason": self.reason,
            "cleared_at": self.cleared_at,
        }


def suspect_codes(
    log: ScanLog, suspect_scans: int, start: datetime, *, at: datetime | None = None
) -> tuple[list[SuspectCode], bool]:
    """The codes whose latest scan was suspect, latest flagged first (at most
    :data:`MAX_SUSPECT_CODES`), and whether that is all of them.

    ``suspect_scans`` is how many suspect scans the day counters hold since ``start`` (a
    day's beginning): the listing asks for exactly that many, so it stops at the oldest
    of them instead of reading the log to its first row."""
    from provmint.scan import suspicious

    if suspect_scans <= 0:
        return [], True
    limit = min(suspect_scans, MAX_LISTED_SCANS)
    scans = log.list_scans(ScanQuery(verdict="suspect", since=start, limit=limit))
    latest: dict[tuple[str, str], str] = {}
    counts: dict[tuple[str, str], int] = {}
    for scan in scans:  # newest first
        key = (scan.gtin, scan.serial)
        latest.setdefault(key, scan.at)
        counts[key] = counts.get(key, 0) + 1
    found: list[SuspectCode] = []
    complete = len(scans) < MAX_LISTED_SCANS
    for examined, (gtin, serial) in enumerate(latest):
        if len(found) == MAX_SUSPECT_CODES or examined == MAX_EXAMINED_CODES:
            complete = False
            break
        newest = log.list_scans(ScanQuery(gtin, serial, limit=1))
        if not newest or newest[0].verdict != "suspect":
            continue  # scanned since without being flagged (cleared, say)
        evidence = log.evidence(gtin, serial, at=at)
        reason = suspicious(evidence, log.rule) if evidence is not None else None
        found.append(
            SuspectCode(
                gtin,
                serial,
                latest[(gtin, serial)],
                counts[(gtin, serial)],
                reason is not None,
                reason,
                evidence.cleared_at if evidence is not None else None,
            )
        )
    return found, complete


@dataclass(frozen=True, slots=True)
class DiskUsage:
    """Bytes on disk (apparent sizes): the store's parts, and the scan log's file when it
    is SQLite (None for PostgreSQL, whose size is the database server's)."""

    batches: int = 0
    """Batch directories (Parquet parts, record parts, trees, manifests), staging too."""
    index: int = 0
    catalog: int = 0
    """The catalog, its snapshot for readers, and the store's other top-level files."""
    anchors: int = 0
    other: int = 0
    scan_log: int | None = None

    @property
    def total(self) -> int:
        """Everything counted."""
        return (
            self.batches
            + self.index
            + self.catalog
            + self.anchors
            + self.other
            + (self.scan_log or 0)
        )

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "total": self.total,
            "batches": self.batches,
            "index": self.index,
            "catalog": self.catalog,
            "anchors": self.anchors,
            "scan_log": self.scan_log,
            "other": self.other,
        }


_PARTS = {"batches": "batches", "staging": "batches", "index": "index", "anchors": "anchors"}


def _tree_bytes(path: Path) -> int:
    """The apparent size of a file, or of everything under a directory (symlinks not
    followed; files that vanish meanwhile count as nothing)."""
    try:
        info = path.lstat()
    except OSError:
        return 0
    if not path.is_dir() or path.is_symlink():
        return info.st_size
    total = 0
    for top, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # removed meanwhile: nothing to count
                total += os.lstat(os.path.join(top, name)).st_size
    return total


def scan_log_files(settings: Settings) -> tuple[Path, ...] | None:
    """The files of a SQLite scan log (the database, its write-ahead log and shared
    memory); None for PostgreSQL."""
    url = settings.scan_log
    if url is not None and url.startswith(PG_SCHEMES):
        return None
    path = Path(url[len("sqlite:") :]) if url is not None else settings.store / DEFAULT_FILE
    return (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm"))


def disk_usage(settings: Settings) -> DiskUsage:
    """The store's size on disk by part, and the scan log's (a directory walk)."""
    log_files = scan_log_files(settings)
    logs = {p.resolve() for p in log_files or ()}
    sizes = dict.fromkeys(("batches", "index", "catalog", "anchors", "other"), 0)
    try:
        entries = list(settings.store.iterdir())
    except OSError:
        entries = []
    for entry in entries:
        if entry.resolve() in logs:
            continue  # counted as the scan log's
        # The files beside the directories are the catalog's (and the store's marker).
        part = _PARTS.get(entry.name, "catalog" if entry.is_file() else "other")
        sizes[part] += _tree_bytes(entry)
    scan_log = None if log_files is None else sum(_tree_bytes(p) for p in log_files)
    return DiskUsage(**sizes, scan_log=scan_log)


@dataclass(frozen=True, slots=True)
class StoreStats:
    """The store and its scans at one moment (``provmint stats``)."""

    at: datetime
    since: date | None
    """The first day of the scans counted (UTC); None: every day the log counted."""
    batches: Tally
    products: Tally
    anchors: AnchorCosts
    days: tuple[DayScans, ...]
    suspects: tuple[SuspectCode, ...]
    suspects_complete: bool
    """False when more codes are suspect than are listed."""
    disk: DiskUsage
    scan_log: str
    """Where the scan log is (a path, or a URL without its password)."""
    catalog: CatalogFacts = field(default_factory=CatalogFacts, repr=False)
    """The facts these were counted from (for the dashboard's listings)."""

    @property
    def verdicts(self) -> dict[str, int]:
        """Scans within the window by verdict."""
        out: dict[str, int] = {}
        for day in self.days:
            for name, scans in day.verdicts.items():
                out[name] = out.get(name, 0) + scans
        return out

    @property
    def scans(self) -> int:
        """Every scan within the window."""
        return sum(self.verdicts.values())

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "at": stamp(self.at),
            "since": None if self.since is None else self.since.isoformat(),
            "batches": self.batches.to_json(),
            "products": self.products.to_json(),
            "anchors": self.anchors.to_json(),
            "scans": {
                "total": self.scans,
                "verdicts": self.verdicts,
                "days": [day.to_json() for day in self.days],
            },
            "suspect_codes": {
                "complete": self.suspects_complete,
                "codes": [code.to_json() for code in self.suspects],
            },
            "disk": self.disk.to_json(),
            "scan_log": self.scan_log,
        }


def day_start(day: date) -> datetime:
    """The first moment of a UTC day."""
    return datetime.combine(day, time(0), UTC)


def store_stats(
    settings: Settings,
    *,
    since: date | None = None,
    at: datetime | None = None,
    log: ScanLog | None = None,
    lock_timeout: float | None = None,
) -> StoreStats:
    """The store's statistics, with the scans of the UTC days from ``since`` on (every
    day the log counted when None) until ``at`` (now). ``log``: an open scan log to read
    (the dashboard keeps one), else the one the settings name, opened and closed here.
    Reads only: the scan log is not created when it does not exist yet."""
    now = at or datetime.now(UTC)
    facts = read_catalog_facts(settings, timeout=lock_timeout)
    disk = disk_usage(settings)
    own = log is None
    scan_log = open_scan_log(settings, pool_size=0) if log is None else log
    try:
        counts = scan_log.daily(since)
        days = daily_scans(counts, since, now.date())
        suspect = sum(day.verdicts.get("suspect", 0) for day in days)
        start = day_start(since if since is not None else days[0].day)
        suspects, complete = suspect_codes(scan_log, suspect, start, at=now)
        where = scan_log.where
    finally:
        if own:
            scan_log.close()
    return StoreStats(
        at=now,
        since=since,
        batches=_tally(facts.batches, "batches"),
        products=_tally(facts.batches, "products"),
        anchors=anchor_costs(facts.anchors),
        days=tuple(days),
        suspects=tuple(suspects),
        suspects_complete=complete,
        disk=disk,
        scan_log=where,
        catalog=facts,
    )
