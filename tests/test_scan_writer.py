"""The web worker's scan writer: scans written from one thread, in batches, each answer
waited for a bounded time; failures answered and counted, never retried forever."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from provmint.store.scanlog import ScanLogError, ScanRequest
from provmint.store.scanlog import writer as writer_module
from provmint.store.scanlog.sqlite import SqliteScanLog
from provmint.store.scanlog.writer import ScanWriter

GTIN = "09520123450014"


def _scan(serial: str, verdict: str = "pending", location: str | None = None) -> ScanRequest:
    return ScanRequest(GTIN, serial, verdict, location, "serve")


def _rows(path: Path) -> list[tuple[str, str]]:
    con = sqlite3.connect(path)
    try:
        return con.execute("SELECT serial, verdict FROM scans ORDER BY id").fetchall()
    finally:
        con.close()


def test_concurrent_scans_share_transactions_and_keep_their_counts(tmp_path: Path) -> None:
    path = tmp_path / "scans.sqlite"
    log = SqliteScanLog(path, service=True)
    calls: list[int] = []
    record_many = log.record_many

    def counting(scans, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(len(scans))
        return record_many(scans, **kwargs)

    log.record_many = counting  # type: ignore[method-assign]
    writer = ScanWriter(log, wait=10)

    async def scan_all() -> list[int]:
        stats = await asyncio.gather(*(writer.record(_scan("S1")) for _ in range(200)))
        return [s.count for s in stats]

    try:
        counts = asyncio.run(scan_all())
    finally:
        writer.close()
    # Every scan was counted once, in order, whatever batch it was written in...
    assert sorted(counts) == list(range(1, 201))
    assert len(_rows(path)) == 200 and sum(calls) == 200
    # ...and the writer batched them (one transaction for many scans).
    assert len(calls) < 200
    assert writer.failures == 0


def test_a_locked_log_answers_within_the_wait_and_counts_the_failure(tmp_path: Path) -> None:
    path = tmp_path / "scans.sqlite"
    log = SqliteScanLog(path, service=True)
    log.migrate()
    writer = ScanWriter(log, wait=0.5)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        with pytest.raises(ScanLogError, match=r"did not answer within 0\.5 s"):
            asyncio.run(writer.record(_scan("S1")))
        assert time.monotonic() - started < 2.0
        assert writer.failures == 1
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    # The scan that timed out is still written once the lock is gone; new ones too.
    assert asyncio.run(writer.record(_scan("S2"))).count == 1
    writer.close()
    assert _rows(path) == [("S1", "pending"), ("S2", "pending")]


def test_a_failing_log_fails_every_scan_of_the_batch(tmp_path: Path) -> None:
    """A log SQLite cannot open (its path is a directory): every waiting scan gets the
    error (none hangs), fire-and-forget scans are counted, the thread lives on."""
    path = tmp_path / "scans.sqlite"
    path.mkdir()
    writer = ScanWriter(SqliteScanLog(path, service=True), wait=5)

    async def scan_all() -> list[BaseException | object]:
        writer.send(_scan("F", "forged"))
        return await asyncio.gather(
            *(writer.record(_scan(f"S{i}")) for i in range(5)), return_exceptions=True
        )

    assert all(isinstance(r, ScanLogError) for r in asyncio.run(scan_all()))
    assert all(isinstance(r, ScanLogError) for r in asyncio.run(scan_all()))  # still answers
    writer.close()
    assert writer.failures == 12


def test_a_full_queue_refuses_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer_module, "MAX_QUEUED", 2)
    path = tmp_path / "scans.sqlite"
    log = SqliteScanLog(path, service=True)
    log.migrate()
    writer = ScanWriter(log, wait=5)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # the thread is stuck on its first batch

    async def timed(serial: str) -> tuple[object, float]:
        started = time.monotonic()
        try:
            result: object = await writer.record(_scan(serial))
        except ScanLogError as exc:
            result = exc
        return result, time.monotonic() - started

    async def flood() -> list[tuple[object, float]]:
        first = asyncio.create_task(timed("S0"))
        await asyncio.sleep(0.2)  # taken by the thread, which now waits on the lock
        rest = await asyncio.gather(*(timed(f"S{i}") for i in range(1, 6)))
        holder.execute("ROLLBACK")
        return [await first, *rest]

    try:
        results = asyncio.run(flood())
    finally:
        holder.close()
        writer.close()
    refused = [(r, took) for r, took in results if "too many scans" in str(r)]
    assert len(refused) == 3  # 1 taken by the thread, 2 queued, the rest refused...
    assert all(took < 1.0 for _, took in refused)  # ...at once
    assert writer.failures == 3 + sum(isinstance(r, ScanLogError) for r, _ in results[:3])


def test_close_writes_what_was_sent(tmp_path: Path) -> None:
    path = tmp_path / "scans.sqlite"
    writer = ScanWriter(SqliteScanLog(path, service=True))
    for i in range(20):
        writer.send(_scan(f"S{i}", "forged"))
    writer.close()
    assert len(_rows(path)) == 20
