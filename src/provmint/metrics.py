"""Prometheus metrics of a provmint service, for one process or a pool of workers.

``provmint serve --metrics-port PORT`` answers ``GET /metrics`` on a port of its own
(127.0.0.1 unless ``--metrics-host`` says otherwise), never on the public port: behind
a TLS proxy on the same machine every public request comes from 127.0.0.1, so "local
clients only" on the public port would be "everyone". The public port answers
``/metrics`` 404 like any unknown page.

The workers are separate processes, and a scrape reaches one of them: each worker counts
into memory-mapped files of its own in a private directory that ``serve`` creates and
removes (prometheus-client's multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``), and the
worker answering a scrape adds up every worker's files. Counting a request is a dict
lookup and three writes to a mapped page (a few microseconds); a scrape reads the files.
What every worker knows alike (the index's products, the store's batches) is read at
scrape time by the worker answering; the standard ``process_*`` figures are summed over
the service's processes (the supervisor and its workers).

Labels are bounded and never carry what a visitor sent: a route is a template
(``/01/{gtin}[/10/{lot}]/21/{serial}``), never a path; no codes, tokens, addresses,
places or user agents.

A process that serves alone (the dashboard) mounts :class:`MetricsApp` at ``/metrics``
over :func:`service_registry` (no directory; its own figures; its own pid), with its
:class:`RequestMetrics` added by :meth:`RequestMetrics.register`.

prometheus-client is imported only here, and only when metrics are on.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import socket
import tempfile
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provmint.errors import ProvmintError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

__all__ = [
    "LATENCY_BUCKETS",
    "MetricsApp",
    "MetricsEndpoint",
    "RequestMetrics",
    "Routes",
    "ServiceExporter",
    "StoreFigures",
    "exporter",
    "exposition",
    "service_registry",
]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.04, 0.06, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0
)  # fmt: skip
"""Seconds: fine around the service's usual answers (1-40 ms; a "not recognised" answer
takes at least 5 ms on purpose), coarse up to the scan log's wait (3 s) and beyond."""
OPENMETRICS = "application/openmetrics-text"
OPENMETRICS_TYPE = OPENMETRICS + "; version=1.0.0; charset=utf-8"
TEXT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
NO_VERDICT = "none"
"""The ``verdict`` label of an answer that gives none (errors, health, proofs)."""
OTHER_ROUTE = "other"
"""The ``route`` label of a path that is none of the service's routes."""


@dataclass(frozen=True, slots=True)
class MetricsEndpoint:
    """Where ``/metrics`` is served: its own port, on loopback unless told otherwise."""

    port: int
    host: str = "127.0.0.1"

    @property
    def local(self) -> bool:
        """Whether only this machine can reach it."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @property
    def url(self) -> str:
        """The scrape URL."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"


@dataclass(frozen=True, slots=True)
class StoreFigures:
    """What a scrape reads of the store, as the answering process sees it."""

    products: int
    """Products in the lookup index."""
    batches: int
    """Batches in the store."""


class Routes:
    """The route templates of a service: a path's ``route`` label is the template of the
    exact path it equals, or of the first prefix it starts with, or ``other``."""

    def __init__(self, exact: Mapping[bytes, str], prefixes: Sequence[tuple[bytes, str]]) -> None:
        self.exact = dict(exact)
        self.prefixes = tuple(prefixes)

    @property
    def names(self) -> frozenset[str]:
        """Every label this table can give."""
        return frozenset((*self.exact.values(), *(t for _, t in self.prefixes), OTHER_ROUTE))

    def of(self, path: bytes) -> str:
        """The route template of a raw request path."""
        found = self.exact.get(path)
        if found is not None:
            return found
        for prefix, template in self.prefixes:
            if path.startswith(prefix):
                return template
        return OTHER_ROUTE


class RequestMetrics:
    """One process's request counters (create it after ``fork``, in the process that
    counts; with multiprocess mode on, its values go to that process's files)."""

    def __init__(self, routes: Routes) -> None:
        from prometheus_client import Counter, Histogram

        self.routes = routes
        self.requests = Counter(
            "provmint_http_requests",
            "HTTP requests answered, by route template, status and public verdict.",
            ("route", "status", "verdict"),
            registry=None,
        )
        self.latency = Histogram(
            "provmint_http_request_duration_seconds",
            "Time to answer a request (from its head to its answer), by route template.",
            ("route",),
            buckets=LATENCY_BUCKETS,
            registry=None,
        )
        self.not_logged = Counter(
            "provmint_scans_not_logged",
            "Scans the scan log did not record (errors, time-outs, a full queue).",
            registry=None,
        )
        self._not_logged_seen = 0
        # Children by label values: .labels() costs more than the count itself.
        self._requests: dict[tuple[str, int, str], Any] = {}
        self._latency: dict[str, Any] = {}

    def register(self, registry: CollectorRegistry) -> None:
        """Add these metrics to ``registry``: for a single process (a dashboard) that
        does not use multiprocess mode, whose files a scrape would read instead."""
        for metric in (self.requests, self.latency, self.not_logged):
            registry.register(metric)

    def count(self, path: bytes, status: int, verdict: str, seconds: float) -> None:
        """Count one answered request (the hot path: a few microseconds)."""
        route = self.routes.of(path)
        key = (route, status, verdict or NO_VERDICT)
        child = self._requests.get(key)
        if child is None:
            child = self._requests[key] = self.requests.labels(route, str(status), key[2])
        child.inc()
        timer = self._latency.get(route)
        if timer is None:
            timer = self._latency[route] = self.latency.labels(route)
        timer.observe(seconds)

    def scans_not_logged(self, total: int) -> None:
        """Catch up with this process's count of scans not logged (its scan writer's)."""
        if total > self._not_logged_seen:
            self.not_logged.inc(total - self._not_logged_seen)
            self._not_logged_seen = total


# --------------------------------------------------------------------------- collectors


class _StoreCollector:
    """``provmint_index_products`` and ``provmint_store_batches``, read at scrape time."""

    def __init__(self, figures: Callable[[], StoreFigures]) -> None:
        self.figures = figures

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        figures = self.figures()
        yield GaugeMetricFamily(
            "provmint_index_products", "Products in the lookup index.", value=figures.products
        )
        yield GaugeMetricFamily(
            "provmint_store_batches", "Batches in the store.", value=figures.batches
        )


_FIRST_PROCESS = frozenset(("process_start_time_seconds", "process_max_fds"))
"""Process figures taken from the service's first process; the others are summed."""


def _children(pid: int) -> list[int]:
    """The child processes of ``pid`` (Linux; none elsewhere)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _constant(pid: int) -> Callable[[], int]:
    return lambda: pid


class _ProcessTreeCollector:
    """The standard ``process_*`` figures of a whole service: the process ``root`` and its
    children (the workers), summed (CPU time, memory, open files); its start time and
    file limit are the root's. Also ``provmint_processes``."""

    def __init__(self, root: int) -> None:
        self.root = root

    def collect(self) -> Iterator[Metric]:
        from prometheus_client import ProcessCollector
        from prometheus_client.core import GaugeMetricFamily
        from prometheus_client.metrics_core import Metric

        pids = [self.root, *_children(self.root)]
        merged: dict[str, Metric] = {}
        for pid in pids:
            collector = ProcessCollector(pid=_constant(pid), registry=None)
            for family in collector.collect():
                total = merged.get(family.name)
                if total is None:
                    total = merged[family.name] = Metric(
                        family.name, family.documentation, family.type
                    )
                    total.samples = list(family.samples)
                elif family.name not in _FIRST_PROCESS:
                    total.samples = [
                        s._replace(value=s.value + t.value)
                        for s, t in zip(total.samples, family.samples, strict=True)
                    ]
        yield from merged.values()
        yield GaugeMetricFamily(
            "provmint_processes",
            "Processes of the service (the supervisor and its workers).",
            value=len(pids),
        )


def service_registry(
    directory: Path | None, figures: Callable[[], StoreFigures] | None, root: int | None
) -> CollectorRegistry:
    """A registry for scrapes: every process's counters in ``directory`` (multiprocess
    mode), the store's figures, and the process tree under ``root``."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    if directory is not None:
        MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    if figures is not None:
        registry.register(_StoreCollector(figures))
    if root is not None:
        registry.register(_ProcessTreeCollector(root))
    return registry


def exposition(registry: CollectorRegistry, accept: str = "") -> tuple[bytes, str]:
    """The registry's metrics and their media type: OpenMetrics 1.0 when ``accept``
    names it (Prometheus does), else the classic text format. Nothing of ``accept`` is
    echoed back (prometheus-client's own negotiation copies its version parameter into
    the answer, and raises on some)."""
    from prometheus_client import generate_latest
    from prometheus_client.openmetrics import exposition as openmetrics

    wanted = (part.partition(";")[0].strip().lower() for part in accept.split(","))
    if OPENMETRICS in wanted:
        return openmetrics.generate_latest(registry), OPENMETRICS_TYPE  # type: ignore[no-untyped-call]
    return generate_latest(registry), TEXT_TYPE


# --------------------------------------------------------------------------- HTTP


Send = Callable[[dict[str, Any]], Awaitable[None]]
_HEADERS = (
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
)


class MetricsApp:
    """An ASGI application answering ``GET /metrics`` (and ``HEAD``) with the registry
    ``registry()`` gives at each scrape; anything else is 404 or 405. Mount it wherever
    metrics are served (``provmint serve``'s metrics port; a dashboard)."""

    def __init__(self, registry: Callable[[], CollectorRegistry], path: bytes = b"/metrics"):
        self.registry = registry
        self.path = path

    async def __call__(
        self,
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[dict[str, Any]]],
        send: Send,
    ) -> None:
        if scope["type"] != "http":
            return
        path = scope.get("raw_path") or scope["path"].encode()
        if path.partition(b"?")[0] != self.path:
            await _plain(send, 404, b"not found\n")
            return
        if scope["method"] not in ("GET", "HEAD"):
            await _plain(send, 405, b"method not allowed\n", ((b"allow", b"GET, HEAD"),))
            return
        accept = next((v for k, v in scope["headers"] if k == b"accept"), b"")
        body, media_type = exposition(self.registry(), accept.decode("latin-1"))
        await _plain(
            send, 200, body, media_type=media_type.encode(), head=scope["method"] == "HEAD"
        )


async def _plain(
    send: Send,
    status: int,
    body: bytes,
    extra: Iterable[tuple[bytes, bytes]] = (),
    *,
    media_type: bytes = b"text/plain; charset=utf-8",
    head: bool = False,
) -> None:
    headers = [
        (b"content-type", media_type),
        (b"content-length", str(len(body)).encode()),
        *_HEADERS,
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


# --------------------------------------------------------------------------- a service


@dataclass(frozen=True, slots=True)
class ServiceExporter:
    """What ``serve`` prepares before it starts its workers: the metrics port's socket
    (bound and listening, inherited by every worker), the private directory of the
    workers' metric files, and the supervisor's pid (the root of the process tree)."""

    endpoint: MetricsEndpoint
    sock: socket.socket
    directory: Path
    root: int

    def check_public(self, sock: socket.socket) -> None:
        """Refuse a public socket on the metrics port (a worker tells its metrics
        requests apart by the port they came to: they must differ)."""
        if sock.getsockname()[1] == self.endpoint.port:
            raise ProvmintError(
                f"the service and its metrics cannot share port {self.endpoint.port}",
                hint="choose another --metrics-port",
            )

    def start_worker(self) -> None:
        """Turn on multiprocess mode in this process (a worker, after ``fork``), before
        any metric is created."""
        from prometheus_client import values

        os.environ[MULTIPROC_ENV] = str(self.directory)
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]

    def app(self, figures: Callable[[], StoreFigures]) -> MetricsApp:
        """The scrape handler of a worker: every worker's counters, the store's figures
        as this worker sees them, the service's processes."""
        registry = service_registry(self.directory, figures, self.root)
        return MetricsApp(lambda: registry)


@contextlib.contextmanager
def exporter(endpoint: MetricsEndpoint) -> Iterator[ServiceExporter]:
    """Bind the metrics port and create the workers' metric directory (removed, and the
    port closed, on the way out)."""
    from provmint.supervisor import bind

    try:
        sock = bind(endpoint.host, endpoint.port)
    except ProvmintError as exc:
        raise ProvmintError(
            f"metrics: {exc.message}", hint="choose another --metrics-port or --metrics-host"
        ) from None
    directory = Path(tempfile.mkdtemp(prefix="provmint-metrics-"))
    previous = os.environ.get(MULTIPROC_ENV)
    try:
        sock.listen(128)
        yield ServiceExporter(endpoint, sock, directory, os.getpid())
    finally:
        sock.close()
        shutil.rmtree(directory, ignore_errors=True)
        if previous is None:
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            os.environ[MULTIPROC_ENV] = previous
