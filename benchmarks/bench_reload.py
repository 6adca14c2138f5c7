#!/usr/bin/env python3
"""What a ``provmint serve`` worker pays to (re)load the store's index, at the store's size.

A worker opens a product finder when it starts, and again whenever the catalog changes (a
batch committed, an anchor recorded), inside a request. This times, on an existing store:

- ``start``: opening the finder as a worker starts (the lookup fences of every run);
- ``reload, nothing new``: opening it again over the same catalog, as after an anchor,
  taking over the open runs (``reuse``) and, for comparison, from scratch;
- with ``--mint CSV``: the CSV minted as a new batch, then the reload after that commit,
  with ``reuse`` and from scratch.

    python benchmarks/bench_reload.py --store STORE
    python benchmarks/bench_reload.py --store STORE --mint day.csv --rounds 5

The page cache is warm (run it twice for cold figures to drop out). Medians of
``--rounds``; the store is only read, except for the batch ``--mint`` adds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from provmint.config import resolve_settings
from provmint.products import catalog_view
from provmint.store.lookup import ProductFinder


def timed_open(settings: Any, reuse: ProductFinder | None, rounds: int) -> tuple[float, int]:
    """Median seconds of opening a finder (``reuse``: taking over its runs), and the
    products it finds."""
    times = []
    products = 0
    for _ in range(rounds):
        started = time.perf_counter()
        with catalog_view(settings) as (store, view):
            finder = ProductFinder.open(store, view, reuse=reuse)
        times.append(time.perf_counter() - started)
        products = finder.products
        if reuse is None:
            finder.close()
        else:  # hand the runs back for the next round: the reused finder stays current
            reuse = finder
    if reuse is not None:
        reuse.close()
    return statistics.median(times), products


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--mint", type=Path, help="a CSV to commit as a new batch in between")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    settings = resolve_settings(store=args.store)
    figures: dict[str, Any] = {}

    started = time.perf_counter()
    with catalog_view(settings) as (store, view):
        current = ProductFinder.open(store, view)
    figures["start_s"] = round(time.perf_counter() - started, 4)
    figures["products"] = current.products
    fresh, _ = timed_open(settings, None, args.rounds)
    figures["reload_nothing_new_from_scratch_s"] = round(fresh, 4)
    reused, _ = timed_open(settings, current, args.rounds)
    figures["reload_nothing_new_reuse_s"] = round(reused, 4)

    if args.mint is not None:
        with catalog_view(settings) as (store, view):
            current = ProductFinder.open(store, view)
        mint = ["batch", "create", str(args.mint), "--json", "--store", str(args.store)]
        subprocess.run([sys.executable, "-m", "provmint", *mint], check=True, capture_output=True)
        started = time.perf_counter()
        with catalog_view(settings) as (store, view):
            after = ProductFinder.open(store, view, reuse=current)
        figures["reload_after_commit_reuse_s"] = round(time.perf_counter() - started, 4)
        figures["products_after"] = after.products
        current.close()
        after.close()
        fresh, _ = timed_open(settings, None, args.rounds)
        figures["reload_after_commit_from_scratch_s"] = round(fresh, 4)

    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"store of {figures['products']:,} products ({args.store})")
    for name, value in figures.items():
        if name.endswith("_s"):
            print(f"  {name[:-2].replace('_', ' '):40} {value * 1e3:9.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
