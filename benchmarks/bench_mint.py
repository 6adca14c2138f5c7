#!/usr/bin/env python3
"""Benchmark ``provmint batch create`` against the issue's plain-Python reference.

Generates a realistic CSV (1M rows by default), then alternately runs, in fresh
processes: the reference (``benchmarks/reference_mint.py``: pyarrow read, ``hmac.digest``
token and SHA-256 leaf per row, RFC 6962 root, nothing stored) and ``provmint batch
create`` into an empty store. Reports medians of wall time, products/s and peak RSS
(sampled sum over the whole process tree, workers included), the ratio of the two walls,
and the start-up time of ``provmint --help``.

    python benchmarks/bench_mint.py                          # 1M rows, 3 rounds
    python benchmarks/bench_mint.py --rows 1000000 10000000  # and 10M (one round)
    python benchmarks/bench_mint.py --rows 1000000 10000000 --big   # and 30M
    python benchmarks/bench_mint.py --rows 200000 --rounds 5 --json
    python benchmarks/bench_mint.py --rounds 1 --days 30     # then 1M a day, 30 days

Targets (2-core machine): at 1M, wall <= 0.35 x reference and peak RSS <= 1 GB; at 10M,
peak RSS <= 1.5 GB and time per product within 1.15 x of 1M; flat memory at 30M;
``provmint --help`` < 0.3 s. The reference runs only up to 1M rows (``--reference-max``):
it holds the whole batch in memory.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "scripts"))
from make_products import write_csv  # noqa: E402


def run_measured(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Run ``cmd``; return (wall seconds, peak RSS of the process tree in MB, stdout)."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    root = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
            total = 0
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    total += p.memory_info().rss
            peak = max(peak, total)
        except psutil.Error:
            pass
        # Sampled every 50 ms, but the clock stops when the process ends, not at the
        # next sample (a sleep added 25 ms to every run on average).
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.05)
    out, err = proc.communicate()
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err.decode()}")
    return wall, peak / 2**20, out.decode()


def help_time(env: dict[str, str], runs: int = 10) -> float:
    """Median wall time of ``provmint --help`` as a whole process."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "provmint", "--help"], env=env, check=True, capture_output=True
        )
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def mint_command(csv: Path, store: Path, workers: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "provmint",
        "batch",
        "create",
        str(csv),
        "--json",
        "--store",
        str(store),
        "--workers",
        str(workers),
    ]


def measure_size(
    work: Path, rows: int, rounds: int, workers: int, env: dict[str, str], reference: bool
) -> dict[str, Any]:
    """Median figures of ``rounds`` mints of a ``rows``-row CSV (and of the reference,
    alternating with them, when ``reference``)."""
    csv = work / f"products-{rows}.csv"
    write_csv(csv, rows, seed=7)
    ref: list[tuple[float, float]] = []
    mint: list[tuple[float, float]] = []
    try:
        for i in range(rounds):
            if reference:
                ref.append(
                    run_measured([sys.executable, str(HERE / "reference_mint.py"), str(csv)], env)[
                        :2
                    ]
                )
            store = work / f"store-{rows}-{i}"
            wall, rss, out = run_measured(mint_command(csv, store, workers), env)
            if json.loads(out)["products"] != rows:
                raise SystemExit(f"minted {json.loads(out)['products']} of {rows} rows")
            mint.append((wall, rss))
            shutil.rmtree(store)
            note = f", reference {ref[-1][0]:.2f} s (ratio {wall / ref[-1][0]:.2f})" if ref else ""
            print(
                f"{rows:,} rows, round {i + 1}: provmint {wall:.2f} s, peak {rss:.0f} MB{note}",
                file=sys.stderr,
            )
    finally:
        csv.unlink(missing_ok=True)
    mint_wall = statistics.median(w for w, _ in mint)
    figures: dict[str, Any] = {
        "rows": rows,
        "rounds": rounds,
        "wall_s": round(mint_wall, 3),
        "products_per_s": round(rows / mint_wall),
        "us_per_product": round(mint_wall / rows * 1e6, 3),
        "peak_rss_mb": round(max(r for _, r in mint), 1),
    }
    if ref:
        ref_wall = statistics.median(w for w, _ in ref)
        figures |= {
            "reference_wall_s": round(ref_wall, 3),
            "reference_peak_rss_mb": round(max(r for _, r in ref), 1),
            "ratio_to_reference": round(mint_wall / ref_wall, 3),
        }
    return figures


def measure_days(
    work: Path, days: int, rows: int, workers: int, env: dict[str, str], keep: Path | None
) -> list[dict[str, Any]]:
    """A ``rows``-product batch a day into one store, ``days`` times (a factory's daily
    order into its growing store; every CSV made before the timing): wall time and peak
    RSS of each day's mint, with the products the store held before it. The store is
    ``keep`` if given (kept afterwards; days it already holds are not minted again)."""
    store = keep or work / "store-days"
    first = len(list((store / "batches").glob("*"))) if keep and store.exists() else 0
    csvs = []
    for day in range(first, first + days):
        csvs.append(work / f"day-{day}.csv")
        write_csv(csvs[-1], rows, seed=1000 + day)  # other seeds, other serials
    out = []
    try:
        for day, csv in enumerate(csvs, start=first):
            wall, rss, stdout = run_measured(mint_command(csv, store, workers), env)
            if json.loads(stdout)["products"] != rows:
                raise SystemExit(
                    f"day {day + 1}: minted {json.loads(stdout)['products']} of {rows}"
                )
            out.append({"day": day + 1, "store_before": day * rows, "wall_s": round(wall, 3),
                        "peak_rss_mb": round(rss, 1)})  # fmt: skip
            print(f"day {day + 1}: {day * rows:,} products before, {wall:.2f} s, peak {rss:.0f} MB",
                  file=sys.stderr)  # fmt: skip
            csv.unlink()
    finally:
        if keep is None:
            shutil.rmtree(store, ignore_errors=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rows",
        type=int,
        nargs="+",
        default=[1_000_000],
        help="batch sizes to measure (e.g. --rows 1000000 10000000)",
    )
    parser.add_argument("--big", action="store_true", help="also measure 30M rows (one round)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds at 1M rows or less")
    parser.add_argument(
        "--big-rounds", type=int, default=1, help="rounds above 1M rows (default 1)"
    )
    parser.add_argument(
        "--reference-max",
        type=int,
        default=1_000_000,
        help="run the reference for sizes up to this many rows (it holds a batch in memory)",
    )
    parser.add_argument(
        "--days",
        type=int,
        default=0,
        help="then mint a 1M batch a day into one store for this many days (each day's wall "
        "against the first: does minting slow down as the store grows?)",
    )
    parser.add_argument(
        "--days-store",
        type=Path,
        help="mint the days into this store and keep it (a later run adds more days)",
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    sizes = sorted(set(args.rows) | ({30_000_000} if args.big else set()))

    from provmint.engine import NATIVE

    work = Path(tempfile.mkdtemp(prefix="provmint-bench-"))
    try:
        env = {  # bytecode cached, as installed by pip
            **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
            "PROVMINT_KEY_FILE": str(work / "keys.json"),
            "PROVMINT_CONFIG": str(work / "none.toml"),
        }
        (work / "none.toml").write_text("")
        subprocess.run(
            [sys.executable, "-m", "provmint", "keys", "init"],
            env=env,
            check=True,
            capture_output=True,
        )
        results = [
            measure_size(
                work,
                rows,
                args.rounds if rows <= 1_000_000 else args.big_rounds,
                args.workers,
                env,
                rows <= args.reference_max,
            )
            for rows in sizes
        ]
        daily = (
            measure_days(work, args.days, 1_000_000, args.workers, env, args.days_store)
            if args.days
            else []
        )
        figures = {
            "workers": args.workers,
            "native_hashing": NATIVE,
            "cpus": os.cpu_count(),
            "sizes": results,
            "help_s": round(help_time(env), 3),
        }
        if daily:
            figures["days"] = daily
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    first = results[0]
    print(f"provmint batch create, {args.workers} workers, native hashing {NATIVE} (medians)")
    print(
        f"{'rows':>12} {'wall s':>8} {'products/s':>11} {'us/product':>11} {'x smallest':>10} "
        f"{'peak MB':>8} {'reference s':>11} {'ratio':>6}"
    )
    for f in results:
        per = float(f["us_per_product"]) / float(first["us_per_product"])
        ref = (
            f"{f['reference_wall_s']:>11.2f} {f['ratio_to_reference']:>6.2f}"
            if "reference_wall_s" in f
            else f"{'-':>11} {'-':>6}"
        )
        print(
            f"{f['rows']:>12,} {f['wall_s']:>8.2f} {f['products_per_s']:>11,} "
            f"{f['us_per_product']:>11.3f} {per:>10.2f} {f['peak_rss_mb']:>8.0f} {ref}"
        )
    if daily:
        print(f"\n1M a day into one store{'':>14} {'wall s':>8} {'x day 1':>8} {'peak MB':>8}")
        for d in daily:
            print(
                f"day {d['day']:>3} ({d['store_before']:>11,} before) {d['wall_s']:>8.2f} "
                f"{d['wall_s'] / daily[0]['wall_s']:>8.2f} {d['peak_rss_mb']:>8.0f}"
            )
    print(f"provmint --help {figures['help_s']:.3f} s (target < 0.3)")
    print(
        "targets: 1M ratio <= 0.35 and peak <= 1 GB; 10M peak <= 1.5 GB and us/product "
        "within 1.15 x of 1M; memory flat at 30M"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
