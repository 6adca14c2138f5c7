"""``provmint anchor --every``: anchoring on a schedule, in one long-lived process.

Each run is an ordinary :func:`~provmint.anchor.run.anchor_batches`: it finishes the
anchors earlier runs left open, then anchors whatever became pending. Nothing here
duplicates the anchor's state machine; the schedule only decides *when* to run, what
one run's outcome says in one line, and which errors end the loop:

* a run's chain or store trouble (the node down, fees above the cap, not enough funds,
  the store busy) is that run's outcome: one ``error:`` line, and the next period
  tries again (the state machine is saved, nothing is lost);
* a configuration error (a bad option, the registry method without a registry, the
  node serving another chain than the profile's, a corrupt store) will not go away by
  waiting: it is raised at once.

Stopping is cooperative: once the ``stop`` event is set (the command line sets it on
SIGTERM or Ctrl-C), the loop runs no more, a sleep between runs ends at once, and a run
in progress stops waiting for the chain; an anchor it has sent is left in its saved
state, which the next ``provmint anchor`` (or the next start of the schedule) finishes.

The clock, the wall clock and the sleep are injectable, so the loop is tested without
waiting.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from provmint.errors import (
    ChainMismatchError,
    ConfigError,
    KeyringError,
    ProvmintError,
    StoreCorruptError,
)

if TYPE_CHECKING:
    from provmint.anchor.run import AnchorRun
    from provmint.chain import ChainKey
    from provmint.config import ChainSettings, Settings
    from provmint.store.anchors import AnchorRecord

__all__ = [
    "MAX_EVERY",
    "MIN_EVERY",
    "ScheduledRun",
    "anchor_every",
    "format_every",
    "is_fatal",
    "parse_every",
    "run_every",
]

MIN_EVERY = 2.0
"""The shortest period, in seconds (a run itself takes about that long on a local node)."""
MAX_EVERY = 7 * 24 * 3600.0
"""The longest period: a week."""

_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
_NUMBER = "(0|[1-9][0-9]{0,6})"
_DURATION = re.compile("".join(f"(?:{_NUMBER}{unit})?" for unit, _ in _UNITS))
"""``1d``, ``1h30m``, ``90s``: whole numbers (ASCII digits), units in this order, each
at most once. No spaces, signs, fractions or bare numbers."""

FATAL_ERRORS: tuple[type[ProvmintError], ...] = (
    ConfigError,
    KeyringError,
    ChainMismatchError,
    StoreCorruptError,
)
"""Errors that end the loop at once: waiting for the next period will not mend them."""


def parse_every(text: str) -> float:
    """A period such as ``90s``, ``30m``, ``1h``, ``1h30m`` or ``7d``, in seconds,
    between :data:`MIN_EVERY` and :data:`MAX_EVERY`. Anything else is a ConfigError."""
    shown = text if len(text) <= 24 and text.isascii() and text.isprintable() else "the value"
    hint = "a whole number and a unit: 90s, 30m, 1h, 1h30m, 1d (from 2s to 7d)"
    found = _DURATION.fullmatch(text)
    if not text or found is None:
        raise ConfigError(f"--every {shown!r} is not a duration", hint=hint)
    seconds = sum(
        int(number) * size
        for number, (_, size) in zip(found.groups(), _UNITS, strict=True)
        if number is not None
    )
    if not MIN_EVERY <= seconds <= MAX_EVERY:
        raise ConfigError(f"--every {shown}: the period must be from 2s to 7d", hint=hint)
    return float(seconds)


def format_every(seconds: float) -> str:
    """A period for people, in the form :func:`parse_every` reads: ``1h30m``."""
    left, parts = round(seconds), []
    for unit, size in _UNITS:
        count, left = divmod(left, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def is_fatal(error: ProvmintError) -> bool:
    """Does ``error`` end the loop (see :data:`FATAL_ERRORS`)?"""
    return isinstance(error, FATAL_ERRORS)


@dataclass(frozen=True, slots=True)
class ScheduledRun:
    """One run of the schedule: when, how long, and what it did (or its error)."""

    number: int
    started: datetime
    elapsed: float
    run: AnchorRun | None
    error: ProvmintError | None
    stopping: bool
    """The stop event was set when the run ended (an open anchor was left for later)."""

    def summary(self) -> str:
        """What the run did, in a few words."""
        if self.error is not None:
            hint = f" (hint: {self.error.hint})" if self.error.hint else ""
            return f"error: {self.error}{hint}"
        run = self.run
        if run is None:  # pragma: no cover - a run has a result or an error
            return "no result"
        parts = [
            f"resumed anchor #{a.anchor_id} ({_outcome(a, self.stopping)})" for a in run.resumed
        ]
        if run.anchor is not None:
            a = run.anchor
            parts.append(
                f"anchored {a.tree_size} batch(es) in tx {a.tx_hash or '(none yet)'} "
                f"(anchor #{a.anchor_id}, {_outcome(a, self.stopping)})"
            )
        elif run.remaining and self.stopping:
            parts.append("stopping before a new anchor")
        elif not run.resumed:
            parts.append("nothing pending")
        if run.remaining:
            parts.append(f"{run.remaining} batch(es) still pending")
        return "; ".join(parts)

    def line(self) -> str:
        """The run's one log line: UTC time, run number, summary, duration."""
        when = self.started.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return f"{when} anchor run {self.number}: {self.summary()} ({self.elapsed:.1f} s)"

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form (one line per run with ``--json``)."""
        # The one error shape, as a failing command prints it with --json.
        error = None if self.error is None else self.error.to_json()
        return {
            "run": self.number,
            "started": self.started.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "elapsed_s": round(self.elapsed, 3),
            "stopping": self.stopping,
            "summary": self.summary(),
            "result": self.run.to_json() if self.run is not None else None,
            "error": error,
        }


def _outcome(record: AnchorRecord, stopping: bool) -> str:
    """An anchor's state after a run, for the log line."""
    state = str(record.state)
    if state == "confirmed":
        return f"confirmed in block {record.block_number}"
    if state == "failed":
        return f"failed: {record.error}" if record.error else "failed"
    why = "stopping" if stopping else "not done waiting"
    return f"{state}, {why}; the next run finishes it"


def _utc_now() -> datetime:
    return datetime.now(UTC)


def run_every(
    interval: float,
    job: Callable[[], AnchorRun],
    *,
    stop: threading.Event,
    on_run: Callable[[ScheduledRun], None],
    clock: Callable[[], float] = time.monotonic,
    now: Callable[[], datetime] = _utc_now,
    sleep: Callable[[float], object] | None = None,
    max_runs: int | None = None,
) -> int:
    """Run ``job`` now and then every ``interval`` seconds until ``stop`` is set (or
    ``max_runs`` runs); hand each outcome to ``on_run``. Returns the number of runs.

    Runs keep to a fixed grid (start, start + interval, ...): a run that takes longer
    than the interval skips the slots it overran rather than running back to back.
    A :class:`ProvmintError` is the run's outcome, unless :func:`is_fatal`, then it is
    raised; any other exception is raised. ``sleep(seconds)`` defaults to
    ``stop.wait``, which ends at once when ``stop`` is set."""
    if not interval > 0:
        raise ValueError("the interval must be positive")
    pause: Callable[[float], object] = sleep or stop.wait
    runs = 0
    due = clock()
    while not stop.is_set():
        runs += 1
        started_at, started = now(), clock()
        run: AnchorRun | None = None
        error: ProvmintError | None = None
        try:
            run = job()
        except ProvmintError as exc:
            if is_fatal(exc):
                raise
            error = exc
        on_run(ScheduledRun(runs, started_at, clock() - started, run, error, stop.is_set()))
        if max_runs is not None and runs >= max_runs:
            break
        due += interval
        late = clock() - due
        if late >= 0:  # the run overran one or more slots: the next one on the grid
            due += (int(late // interval) + 1) * interval
        while not stop.is_set() and (left := due - clock()) > 0:
            pause(left)
    return runs


def anchor_every(
    settings: Settings,
    chain: ChainSettings,
    key: ChainKey,
    interval: float,
    *,
    stop: threading.Event,
    on_run: Callable[[ScheduledRun], None],
    wait: bool = True,
    clock: Callable[[], float] = time.monotonic,
    now: Callable[[], datetime] = _utc_now,
    sleep: Callable[[float], object] | None = None,
    max_runs: int | None = None,
) -> int:
    """Anchor every ``interval`` seconds (:data:`MIN_EVERY` to :data:`MAX_EVERY`) until
    ``stop`` is set: each run finishes the open anchors, then anchors what is pending
    (see :func:`run_every` for the timing and the errors). Returns the number of runs."""
    from provmint.anchor.run import anchor_batches

    if not MIN_EVERY <= interval <= MAX_EVERY:
        raise ConfigError(
            f"the period must be from 2s to 7d, not {interval:g} s",
            hint="a whole number and a unit: 90s, 30m, 1h, 1d",
        )

    def job() -> AnchorRun:
        return anchor_batches(settings, chain, key, wait=wait, stop=stop)

    return run_every(
        interval,
        job,
        stop=stop,
        on_run=on_run,
        clock=clock,
        now=now,
        sleep=sleep,
        max_runs=max_runs,
    )
