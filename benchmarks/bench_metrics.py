#!/usr/bin/env python3
"""What counting a request costs ``provmint serve`` with ``--metrics-port`` (issue 13).

Times :meth:`provmint.metrics.RequestMetrics.count` and the catch-up of the scan
writer's failures (what the hot path does per request when metrics are on) in
prometheus-client's multiprocess mode, as a worker runs them. Reports microseconds per
request (the best of ``--rounds`` rounds: the least disturbed by other processes) and
that time as a share of a request's CPU time at ``--rps`` requests/s on ``--cores`` cores.
The wrk figures (``bench_serve.py --metrics-ab``) are the end-to-end check; on a noisy
machine this one is the steadier.

    python benchmarks/bench_metrics.py
    python benchmarks/bench_metrics.py --rps 2500 --cores 2 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from provmint.metrics import RequestMetrics, Routes, ServiceExporter

CODE = "/01/{gtin}[/10/{lot}]/21/{serial}"
PATHS = (
    b"/01/09520123450014/21/546CAWQDCR56",
    b"/01/09520123450014/10/L2406A/21/X1",
    b"/healthz",
    b"/nope",
)
ANSWERS = ((200, "genuine"), (404, "unknown"), (200, ""), (404, ""))


def per_request_us(metrics: RequestMetrics, count: int) -> float:
    """Microseconds per counted request over ``count`` requests."""
    started = time.perf_counter()
    for i in range(count):
        status, verdict = ANSWERS[i & 3]
        metrics.count(PATHS[i & 3], status, verdict, 0.004)
        metrics.scans_not_logged(0)
    return (time.perf_counter() - started) / count * 1e6


def main() -> int:
    """Time the counting and print the figures."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200_000, help="per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rps", type=float, default=2500, help="the service's requests/s")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="provmint-metrics-bench-") as tmp:
        exporter = ServiceExporter(None, None, Path(tmp), 0)  # type: ignore[arg-type]
        exporter.start_worker()
        routes = Routes({b"/healthz": "/healthz"}, ((b"/01/", CODE),))
        metrics = RequestMetrics(routes)
        rounds = [per_request_us(metrics, args.requests) for _ in range(args.rounds)]
    best = min(rounds)
    budget_us = args.cores / args.rps * 1e6
    report = {
        "us_per_request": round(best, 2),
        "rounds_us": [round(r, 2) for r in rounds],
        "request_cpu_us": round(budget_us, 1),
        "cost_percent": round(100 * best / budget_us, 2),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(
            f"counting: {best:.2f} us per request (rounds {report['rounds_us']}); at "
            f"{args.rps:g} requests/s on {args.cores} cores a request has {budget_us:.0f} us "
            f"of CPU: {report['cost_percent']}%"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
