#!/usr/bin/env python3
"""Benchmark ``provmint batch create`` against the issue's plain-Python reference.

Generates a realistic CSV (1M rows by default), then alternately runs, in fresh
processes: the reference (``benchmarks/reference_mint.py``: pyarrow read, ``hmac.digest``
token and SHA-256 leaf per row, RFC 6962 root, nothing stored) and ``provmint batch
create`` into an empty store. Reports medians of wall time, products/s and peak RSS
(sampled sum over the whole process tree, workers included), the ratio of the two walls,
and the start-up time of ``provmint --help``.

    python benchmarks/bench_mint.py                 # 1M rows, 3 rounds
    python benchmarks/bench_mint.py --rows 200000 --rounds 5 --json

Targets (issue 2, 2-core machine): wall <= 0.5 x reference, peak RSS <= 1.5 GB,
``provmint --help`` < 0.3 s.
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
        time.sleep(0.05)
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    from provmint.engine import NATIVE

    work = Path(tempfile.mkdtemp(prefix="provmint-bench-"))
    try:
        csv = work / "products.csv"
        write_csv(csv, args.rows, seed=7)
        env = {
            **os.environ,
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
        ref, mint = [], []
        for i in range(args.rounds):
            wall, rss, out = run_measured(
                [sys.executable, str(HERE / "reference_mint.py"), str(csv)], env
            )
            ref.append((wall, rss))
            store = work / f"store-{i}"
            wall, rss, out = run_measured(
                [
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
                    str(args.workers),
                ],
                env,
            )
            summary = json.loads(out)
            if summary["products"] != args.rows:
                raise SystemExit(f"minted {summary['products']} of {args.rows} rows")
            mint.append((wall, rss))
            shutil.rmtree(store)
            print(
                f"round {i + 1}: reference {ref[-1][0]:.2f} s, provmint {wall:.2f} s "
                f"(ratio {wall / ref[-1][0]:.2f})",
                file=sys.stderr,
            )
        ref_wall = statistics.median(w for w, _ in ref)
        mint_wall = statistics.median(w for w, _ in mint)
        figures = {
            "rows": args.rows,
            "rounds": args.rounds,
            "workers": args.workers,
            "native_hashing": NATIVE,
            "cpus": os.cpu_count(),
            "reference_wall_s": round(ref_wall, 3),
            "reference_peak_rss_mb": round(max(r for _, r in ref), 1),
            "provmint_wall_s": round(mint_wall, 3),
            "provmint_products_per_s": round(args.rows / mint_wall),
            "provmint_peak_rss_mb": round(max(r for _, r in mint), 1),
            "wall_ratio": round(mint_wall / ref_wall, 3),
            "help_s": round(help_time(env), 3),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"rows                 {figures['rows']:,} ({figures['rounds']} rounds, medians)")
        print(
            f"reference            {figures['reference_wall_s']:.2f} s, "
            f"peak {figures['reference_peak_rss_mb']:.0f} MB"
        )
        print(
            f"provmint batch create {figures['provmint_wall_s']:.2f} s, "
            f"{figures['provmint_products_per_s']:,} products/s, "
            f"peak {figures['provmint_peak_rss_mb']:.0f} MB (process tree), "
            f"{figures['workers']} workers, native hashing {figures['native_hashing']}"
        )
        print(f"wall ratio           {figures['wall_ratio']:.2f} x reference (target <= 0.5)")
        print(f"provmint --help      {figures['help_s']:.3f} s (target < 0.3)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
