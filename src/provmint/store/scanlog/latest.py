"""A code's latest clients, kept in its own row so that the copy signal needs no query.

The copy signal asks, for each genuine scan, how many distinct clients scanned the code
since the window's start, and how many of them gave a place, each count capped at one
more than its threshold (``max_clients + 1``, ``max_places + 1``). Both caps are small,
so the answers follow from the ``K`` clients scanned most recently: when at least ``K``
clients scanned since the start, the latest ``K`` all did, and the capped count is
``K``; otherwise every client that did is among the latest ``K``. That list changes
only when a scan comes in (a client seen again moves up; a new one pushes the oldest
out), so it can be kept up to date scan by scan, whatever the order scans arrive in.

Each list is stored with its ``K``: a rule raised later (``max_clients`` from 5 to 10)
finds lists kept for the old one, and the log rebuilds such a list from the code's scans
once (:attr:`Latest.too_short`).

Stored form (a BLOB in ``scan_codes.latest``, version 1): one byte version, then two
lists, the clients by their last genuine scan and the clients by their last scan that
gave a place, each as a little-endian u16 ``K`` and u16 ``n``, and ``n`` entries of a
little-endian i64 time (microseconds since the Unix epoch, UTC) and the 16-byte client
key, latest first.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from provmint.store.scanlog.clients import CLIENT_BYTES

__all__ = ["Latest", "Recency", "micros"]

_VERSION = 1
_ENTRY = struct.Struct(f"<q{CLIENT_BYTES}s")
_SIZES = struct.Struct("<HH")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)
MAX_KEPT = 0xFFFF
"""The longest list a u16 can count (the rule's thresholds stop at 10,000)."""


def micros(when: datetime) -> int:
    """``when`` as whole microseconds since the Unix epoch (exact, unlike a float)."""
    return (when - _EPOCH) // _MICRO


@dataclass(slots=True)
class Recency:
    """The latest ``keep`` distinct clients by one time, latest first."""

    keep: int
    entries: list[tuple[int, bytes]] = field(default_factory=list)

    def saw(self, client: bytes, at: int) -> None:
        """``client`` scanned at ``at`` (microseconds): it moves up, or comes in and
        pushes the oldest out once the list holds ``keep``."""
        entries = self.entries
        for i, (when, known) in enumerate(entries):
            if known == client:
                if at <= when:
                    return  # an older scan of a client already listed changes nothing
                del entries[i]
                break
        else:
            if len(entries) >= self.keep and at <= entries[-1][0]:
                return  # older than every client kept: not among the latest
        i = 0
        while i < len(entries) and entries[i][0] >= at:
            i += 1
        entries.insert(i, (at, client))
        del entries[self.keep :]

    def since(self, start: int, cap: int) -> int:
        """Clients whose time is at or after ``start`` (microseconds), at most ``cap``
        (which must not exceed ``keep``)."""
        n = 0
        for when, _ in self.entries:
            if when < start or n >= cap:
                break
            n += 1
        return n

    def latest(self) -> int | None:
        """The latest time listed (None: no client)."""
        return self.entries[0][0] if self.entries else None

    def full(self) -> bool:
        """Whether older clients may have been pushed out."""
        return len(self.entries) >= self.keep


@dataclass(slots=True)
class Latest:
    """A code's latest clients: by genuine scan (``scanned``), and by genuine scan that
    gave a place (``placed``)."""

    scanned: Recency
    placed: Recency

    @classmethod
    def empty(cls, clients: int, places: int) -> Latest:
        """No client yet, keeping ``clients`` and ``places`` of them."""
        return cls(Recency(clients), Recency(places))

    @classmethod
    def load(cls, blob: bytes | None, clients: int, places: int) -> Latest:
        """The stored lists (empty when ``blob`` is None)."""
        if blob is None:
            return cls.empty(clients, places)
        view = memoryview(blob)
        if view[0] != _VERSION:
            raise ValueError(f"unknown latest-clients version {view[0]}")
        offset = 1
        lists = []
        for _ in range(2):
            keep, n = _SIZES.unpack_from(view, offset)
            offset += _SIZES.size
            entries = [_ENTRY.unpack_from(view, offset + i * _ENTRY.size) for i in range(n)]
            offset += n * _ENTRY.size
            lists.append(Recency(keep, entries))
        return cls(lists[0], lists[1])

    def dump(self) -> bytes:
        """The stored form."""
        out = bytearray([_VERSION])
        for recency in (self.scanned, self.placed):
            out += _SIZES.pack(recency.keep, len(recency.entries))
            for when, client in recency.entries:
                out += _ENTRY.pack(when, client)
        return bytes(out)

    def too_short(self, clients: int, places: int) -> bool:
        """Whether a list kept fewer than the rule now needs and may have lost some
        (then rebuild it with :meth:`rebuilt`)."""
        return (self.scanned.keep < clients and self.scanned.full()) or (
            self.placed.keep < places and self.placed.full()
        )

    @classmethod
    def rebuilt(
        cls, rows: Iterable[tuple[bytes, int, int | None]], clients: int, places: int
    ) -> Latest:
        """The lists from every counted client's (key, last genuine scan, last genuine
        scan with a place) of the code, in microseconds."""
        latest = cls.empty(clients, places)
        for client, last, placed in rows:
            latest.scanned.saw(client, last)
            if placed is not None:
                latest.placed.saw(client, placed)
        return latest

    def widened(self, clients: int, places: int) -> Latest:
        """Keeping at least ``clients`` and ``places`` from now on (never fewer than
        before, so that lowering a threshold loses nothing)."""
        self.scanned.keep = min(MAX_KEPT, max(self.scanned.keep, clients))
        self.placed.keep = min(MAX_KEPT, max(self.placed.keep, places))
        return self
