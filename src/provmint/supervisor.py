"""Several processes serving one port: the supervisor behind ``provmint serve --workers N``.

The parent binds the port once (``SO_REUSEPORT``, never listening: it only holds the port,
so that ``--port 0`` gives every worker the same one), then forks the workers. Each worker
binds its own ``SO_REUSEPORT`` socket on that port, builds its application and serves;
the kernel spreads new connections over the workers' sockets, so every core works even
when a few keep-alive clients send everything (a shared listening socket lets one busy
worker accept most connections). Workers are forked before any of them opens a database
or starts a thread, so nothing is shared but the code.

- Ctrl-C or SIGTERM stops every worker (SIGTERM, then SIGKILL after :data:`GRACE_SECONDS`)
  and then the parent.
- A worker that dies is reported and restarted; if workers die :data:`CRASH_LIMIT` times
  within :data:`CRASH_WINDOW` seconds the service stops (exit 1) instead of looping.
- A worker that fails to start (its error is passed up a pipe) stops the whole service
  with that error, at startup.
- Workers die with the parent: Linux's ``PR_SET_PDEATHSIG`` sends them SIGTERM when the
  parent dies, even by SIGKILL (elsewhere a watchdog thread checks the parent).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from provmint.errors import ProvmintError

__all__ = ["CRASH_LIMIT", "CRASH_WINDOW", "GRACE_SECONDS", "WorkerStart", "bind", "supervise"]

GRACE_SECONDS = 12.0
"""How long stopping workers may finish their requests before they are killed."""
STARTUP_SECONDS = 300.0
"""How long workers may take to load the store before startup is abandoned."""
CRASH_LIMIT = 5
CRASH_WINDOW = 60.0
"""``CRASH_LIMIT`` worker deaths within ``CRASH_WINDOW`` seconds stop the service."""

WorkerStart = Callable[[socket.socket, Callable[[], None]], None]
"""What a worker runs: ``start(sock, ready)`` builds the application, listens on ``sock``,
calls ``ready()``, then serves until it is told to stop. It raises ProvmintError when the
worker cannot start."""

_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD)


def bind(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A TCP socket bound to (host, port), not yet listening."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ProvmintError(
            f"cannot listen on {host}:{port}: {(exc.strerror or str(exc)).lower()}",
            hint="choose another --port or --host (--port 0 picks a free port)",
        ) from None
    return sock


def describe_exit(status: int) -> str:
    """``exit status 1`` or ``killed by signal SIGKILL``, from a wait status."""
    code = os.waitstatus_to_exitcode(status)
    if code >= 0:
        return f"exit status {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = str(-code)
    return f"killed by signal {name}"


@dataclass
class _Worker:
    index: int
    pid: int
    pipe: int
    started: float
    ready: bool = False
    buffer: bytes = b""


@dataclass
class _State:
    workers: dict[int, _Worker] = field(default_factory=dict)
    deaths: deque[float] = field(default_factory=deque)
    stop_signal: int | None = None
    stopping: bool = False
    failure: ProvmintError | None = None
    last_error: ProvmintError | None = None
    serving: bool = False


def _die_with_parent(parent: int) -> None:
    """Make this (forked) process get SIGTERM when ``parent`` dies."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, signal.SIGTERM, 0, 0, 0) != 0:  # PR_SET_PDEATHSIG
            raise OSError(ctypes.get_errno(), "prctl")
    except (OSError, AttributeError):

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(1.0)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=watch, name="parent-watch", daemon=True).start()
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(0)


class _Supervisor:
    def __init__(
        self,
        count: int,
        host: str,
        port: int,
        start: WorkerStart,
        notify: Callable[[str], None],
    ) -> None:
        self.count = count
        self.host = host
        self.port = port
        self.start = start
        self.notify = notify
        self.state = _State()
        self.wake_r = self.wake_w = -1
        self.reserve: socket.socket | None = None

    # ----------------------------------------------------------------- worker side

    def _child(self, index: int, pipe: int, parent: int) -> int:
        """The body of a forked worker; returns its exit status."""
        for sig in _SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        for fd in (self.wake_r, self.wake_w, *(w.pipe for w in self.state.workers.values())):
            os.close(fd)
        if self.reserve is not None:
            self.reserve.close()
        _die_with_parent(parent)
        try:
            sock = bind(self.host, self.port, reuse_port=True)

            def ready() -> None:
                os.write(pipe, b'{"ready": true}\n')

            self.start(sock, ready)
        except ProvmintError as exc:
            message = {"error": exc.message, "hint": exc.hint, "exit": exc.exit_code}
            os.write(pipe, json.dumps(message).encode() + b"\n")
            return exc.exit_code
        except KeyboardInterrupt:
            return 0
        return 0

    def _spawn(self, index: int) -> None:
        read_end, write_end = os.pipe()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the worker
            status = 1
            try:
                os.close(read_end)
                status = self._child(index, write_end, parent)
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(status)
        os.close(write_end)
        os.set_blocking(read_end, False)
        self.state.workers[pid] = _Worker(index, pid, read_end, time.monotonic())

    # ----------------------------------------------------------------- parent side

    def _read_pipe(self, worker: _Worker) -> None:
        try:
            data = os.read(worker.pipe, 4096)
        except BlockingIOError:
            return
        worker.buffer += data
        while b"\n" in worker.buffer:
            line, _, worker.buffer = worker.buffer.partition(b"\n")
            message = json.loads(line)
            if message.get("ready"):
                worker.ready = True
            elif "error" in message:
                error = ProvmintError(message["error"], hint=message.get("hint"))
                error.exit_code = int(message.get("exit", 1))
                self.state.last_error = error
                if not self.state.serving:
                    self.state.failure = error

    def _reap(self) -> None:
        for pid in list(self.state.workers):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done == 0:
                continue
            worker = self.state.workers.pop(pid)
            self._read_pipe(worker)
            os.close(worker.pipe)
            if self.state.stopping or self.state.stop_signal or self.state.failure:
                continue
            how = describe_exit(status)
            if not self.state.serving:
                self.state.failure = self.state.last_error or ProvmintError(
                    f"worker {worker.index + 1} (pid {pid}) stopped during startup: {how}"
                )
                continue
            now = time.monotonic()
            self.state.deaths.append(now)
            while self.state.deaths and now - self.state.deaths[0] > CRASH_WINDOW:
                self.state.deaths.popleft()
            if len(self.state.deaths) >= CRASH_LIMIT:
                last = f" (last error: {self.state.last_error})" if self.state.last_error else ""
                self.state.failure = ProvmintError(
                    f"workers keep dying ({len(self.state.deaths)} exits in "
                    f"{CRASH_WINDOW:g} s, the last {how}){last}: stopping the service"
                )
                continue
            self.notify(f"worker {worker.index + 1} (pid {pid}) {how}; starting a new one")
            self._spawn(worker.index)

    def _wait(self, timeout: float) -> None:
        """Wait for a signal or a worker's message; handle them."""
        fds = [self.wake_r, *(w.pipe for w in self.state.workers.values())]
        try:
            readable, _, _ = select.select(fds, [], [], max(timeout, 0.0))
        except InterruptedError:
            readable = []
        if self.wake_r in readable:
            try:
                for number in os.read(self.wake_r, 512):
                    if number in (signal.SIGINT, signal.SIGTERM) and self.state.stop_signal is None:
                        self.state.stop_signal = number
            except BlockingIOError:
                pass
        for worker in list(self.state.workers.values()):
            if worker.pipe in readable:
                self._read_pipe(worker)
        self._reap()

    def _stop_all(self) -> None:
        self.state.stopping = True
        for pid in self.state.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + GRACE_SECONDS
        while self.state.workers and time.monotonic() < deadline:
            self._wait(0.1)
        for pid in list(self.state.workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        while self.state.workers:
            self._wait(0.1)

    def run(self, on_ready: Callable[[tuple[str, int]], None] | None) -> None:
        # SO_REUSEPORT would let a second service of the same user join this port and
        # take half its connections: a plain bind first proves the port is free.
        probe = bind(self.host, self.port)
        self.port = probe.getsockname()[1]
        probe.close()
        self.reserve = bind(self.host, self.port, reuse_port=True)
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        previous = {sig: signal.signal(sig, lambda *_: None) for sig in _SIGNALS}
        old_wakeup = signal.set_wakeup_fd(self.wake_w)
        try:
            for index in range(self.count):
                self._spawn(index)
            deadline = time.monotonic() + STARTUP_SECONDS
            while not self.state.serving:
                if self.state.failure or self.state.stop_signal:
                    break
                if time.monotonic() > deadline:
                    self.state.failure = ProvmintError(
                        f"the workers did not start within {STARTUP_SECONDS:g} s"
                    )
                    break
                self._wait(deadline - time.monotonic())
                if (
                    all(w.ready for w in self.state.workers.values())
                    and len(self.state.workers) == self.count
                ):
                    self.state.serving = True
                    if on_ready is not None:
                        on_ready((self.host, self.port))
            while self.state.failure is None and self.state.stop_signal is None:
                self._wait(5.0)
        finally:
            self._stop_all()
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(self.wake_r)
            os.close(self.wake_w)
            self.reserve.close()
        if self.state.failure is not None:
            raise self.state.failure
        if self.state.stop_signal == signal.SIGINT:
            raise KeyboardInterrupt


def supervise(
    count: int,
    host: str,
    port: int,
    start: WorkerStart,
    *,
    on_ready: Callable[[tuple[str, int]], None] | None = None,
    notify: Callable[[str], None] = lambda _: None,
) -> None:
    """Run ``count`` forked workers on (host, port) until SIGINT (raises
    KeyboardInterrupt) or SIGTERM (returns). ``on_ready`` gets the bound (host, port)
    once every worker is ready; ``notify`` gets one-line reports (a worker died and was
    restarted). Raises ProvmintError when a worker cannot start or workers keep dying."""
    _Supervisor(count, host, port, start, notify).run(on_ready)
