"""The dashboard's ``/metrics``: Prometheus figures of the dashboard process and of the
store and scans it shows, through :mod:`provmint.metrics` (prometheus-client is
imported there, when the dashboard starts).

- ``provmint_http_requests`` and ``provmint_http_request_duration_seconds``: the
  dashboard's own requests by page (a fixed set of routes; anything else is ``other``);
- ``provmint_index_products`` and ``provmint_store_batches``, as ``provmint serve``
  gives them;
- ``provmint_products{standing}`` (anchored, anchoring, pending),
  ``provmint_window_scans{verdict}`` (the default window's scans) and
  ``provmint_suspect_codes``;
- the standard ``process_*`` figures of this process.

The store's figures are those of the statistics the pages last showed (at most
:data:`provmint.dashboard.app.CACHE_SECONDS` old: a scrape computes them when they are
older).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from provmint.stats import Standing, StoreStats

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

__all__ = ["DashboardMetrics"]


class _StatsCollector:
    """The store's standings, the window's scans and the suspect codes, at scrape time."""

    def __init__(self, latest: Callable[[], StoreStats | None]) -> None:
        self.latest = latest

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        stats = self.latest()
        if stats is None:
            return
        products = GaugeMetricFamily(
            "provmint_products", "Products by anchor standing.", labels=("standing",)
        )
        for standing in Standing:
            products.add_metric((standing.value,), getattr(stats.products, standing.value))
        yield products
        scans = GaugeMetricFamily(
            "provmint_window_scans",
            "Scans in the dashboard's default window, by verdict.",
            labels=("verdict",),
        )
        for verdict, count in stats.verdicts.items():
            scans.add_metric((verdict,), count)
        yield scans
        yield GaugeMetricFamily(
            "provmint_suspect_codes",
            "Codes whose latest scan was judged a possible copy (as listed, at most 100).",
            value=len(stats.suspects),
        )


class DashboardMetrics:
    """The dashboard's counters and its scrape (create one per process)."""

    def __init__(self, routes: Iterable[str], latest: Callable[[], StoreStats | None]) -> None:
        from provmint.metrics import RequestMetrics, Routes, StoreFigures, service_registry

        def figures() -> StoreFigures:
            stats = latest()
            if stats is None:
                return StoreFigures(0, 0)
            return StoreFigures(stats.products.total, stats.batches.total)

        self.requests = RequestMetrics(Routes({r.encode(): r for r in routes}, ()))
        self.registry = service_registry(None, figures, os.getpid())
        self.registry.register(self.requests.requests)
        self.registry.register(self.requests.latency)
        self.registry.register(_StatsCollector(latest))

    def count(self, path: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        self.requests.count(path.encode("utf-8", "surrogateescape"), status, "", seconds)

    def scrape(self, accept: str) -> tuple[bytes, str]:
        """The metrics, and their media type (OpenMetrics when ``accept`` asks for it)."""
        from provmint.metrics import exposition

        return exposition(self.registry, accept)
