"""A web worker's scan log, written from one thread so that the event loop never waits on it.

The service's event loop hands each scan to :class:`ScanWriter` and awaits the answer
for at most a bounded time. One thread writes whatever has queued up meanwhile in one
transaction (:meth:`~provmint.store.scanlog.ScanLog.record_many`), so under load one
commit serves many scans, and a locked or unreachable log stalls only that thread:

* a scan whose answer does not come within ``wait`` seconds is answered without the
  clone check (the page says the scan was not logged), and counted;
* a full queue refuses new scans at once instead of growing without bound;
* the thread gives up on a batch after the backend's own bounded retries, failing every
  scan in it: nothing is retried forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from dataclasses import dataclass, field
from typing import Any

from provmint.store.scanlog import ScanLog, ScanLogError, ScanRequest, ScanStats

__all__ = ["ScanWriter"]

MAX_BATCH = 64
"""Scans written in one transaction at most."""

MAX_QUEUED = 10_000
"""Scans waiting to be written at most; beyond, new scans are refused at once."""


@dataclass(slots=True)
class _Job:
    """A scan (or, without one, a check that the log can be written) and where its
    answer goes."""

    loop: asyncio.AbstractEventLoop | None
    future: asyncio.Future[Any] | None
    """None: nobody waits for this scan's answer."""
    scan: ScanRequest | None = None

    def settle(self, result: Any = None, error: BaseException | None = None) -> None:
        """Hand the answer to the event loop (from the writer thread)."""
        if self.loop is not None and self.future is not None:
            # The loop may be gone (the request's time ran out and its loop shut down):
            # nobody to tell, and the thread must go on with the next batch.
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(_settle, self.future, result, error)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the request stopped waiting (its time ran out)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


@dataclass
class ScanWriter:
    """Writes one process's scans to ``log`` from a thread of its own (started on first
    use, so that it is created after ``fork``)."""

    log: ScanLog
    wait: float = 2.0
    """Seconds a request waits for its scan to be written before answering without it."""
    failures: int = 0
    """Scans not logged (errors, time-outs, a full queue) since the start."""
    _queue: queue.Queue[_Job | None] = field(
        default_factory=lambda: queue.Queue(MAX_QUEUED), repr=False
    )
    _thread: threading.Thread | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    async def record(self, scan: ScanRequest) -> ScanStats:
        """Log ``scan``; its code's history with it. Raises :class:`ScanLogError` when it
        was not logged within :attr:`wait` seconds (it may still be, later)."""
        result: ScanStats = await self._submit(scan)
        return result

    def send(self, scan: ScanRequest) -> None:
        """Log ``scan`` without waiting for it (a full queue drops it, counted)."""
        self._start()
        try:
            self._queue.put_nowait(_Job(None, None, scan))
        except queue.Full:
            self._failed(1)

    async def check(self) -> None:
        """Raise :class:`ScanLogError` unless the writer thread can reach the log now."""
        await self._submit(None)

    async def _submit(self, scan: ScanRequest | None) -> Any:
        self._start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        try:
            self._queue.put_nowait(_Job(loop, future, scan))
        except queue.Full:
            self._failed(scan is not None)
            raise ScanLogError("too many scans are waiting to be logged") from None
        try:
            return await asyncio.wait_for(future, self.wait)
        except TimeoutError:
            self._failed(scan is not None)
            raise ScanLogError(f"the scan log did not answer within {self.wait:g} s") from None
        except ScanLogError:
            self._failed(scan is not None)
            raise

    def _failed(self, count: int) -> None:
        # Counted from the event loop and from the writer thread.
        with self._lock:
            self.failures += count

    def _start(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="provmint-scan-writer")
                thread.daemon = True  # a stuck backend must not keep the process alive
                thread.start()
                self._thread = thread

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs = [first]
            while len(jobs) < MAX_BATCH:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    self._write(jobs)
                    return
                jobs.append(job)
            self._write(jobs)

    def _write(self, jobs: list[_Job]) -> None:
        """Write the batch's scans in one go, then answer every job in it."""
        scans = [job for job in jobs if job.scan is not None]
        checks = [job for job in jobs if job.scan is None]
        try:
            if scans:
                written = self.log.record_many([job.scan for job in scans if job.scan])
            if checks:
                self.log.check()
        except Exception as exc:  # a backend bug too must not kill the thread or hang requests
            error = (
                exc
                if isinstance(exc, ScanLogError)
                else ScanLogError(f"the scan log failed ({type(exc).__name__})")
            )
            if error is not exc:
                error.__cause__ = exc
            # Those awaited are counted by the request that gets the error.
            self._failed(sum(1 for job in scans if job.future is None))
            for job in jobs:
                job.settle(error=error)
            return
        for job, stats in zip(scans, written if scans else [], strict=True):
            job.settle(stats)
        for job in checks:
            job.settle()

    def close(self) -> None:
        """Write what is queued, stop the thread, close the log."""
        thread = self._thread
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout=self.wait + 1.0)
            self._thread = None
        self.log.close()
