#!/usr/bin/env python3
"""Benchmark ``provmint labels``: labels per second for each format and symbol.

Mints N products (``scripts/make_products.py``) into a temporary store, then runs
``provmint labels`` once per case as a whole process, with the machine's CPU count as
workers, and reports the labels/s the command measured (reading the store, drawing,
writing every file and labels.csv, syncing) and the peak memory of the process and its
workers. PDF sheets are timed on a smaller batch (``--pdf``): office printing is not a
million-label job. Creating files is part of the figure: run it on the file system the
labels will go to (``--dir``).

    python benchmarks/bench_labels.py                # 100,000 products
    python benchmarks/bench_labels.py --products 1000000 --dir /srv/scratch --json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from make_products import write_csv  # noqa: E402

BASE = "https://id.brand.test"
CASES = [
    ("svg", "qr", "url"),
    ("png", "qr", "url"),
    ("zpl", "qr", "url"),
    ("svg", "datamatrix", "element-string"),
    ("png", "datamatrix", "element-string"),
    ("zpl", "datamatrix", "element-string"),
    ("none", "qr", "url"),
]


def provmint(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "provmint", *args], env=env, capture_output=True, text=True
    )


def mint(work: Path, products: int, env: dict[str, str]) -> str:
    source = work / f"products-{products}.csv"
    write_csv(source, products, seed=11)
    done = provmint("batch", "create", str(source), "--json", env=env)
    if done.returncode:
        raise SystemExit(done.stderr)
    return str(json.loads(done.stdout)["batch_id"])


def _peak_rss(command: list[str], env: dict[str, str]) -> tuple[int, str, str, int]:
    """Run ``command``; its exit code, output, and the peak of the resident memory of
    it and its workers together (sampled every 50 ms, so a peak may be missed)."""
    import psutil

    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    watched = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            tree = [watched, *watched.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree))
        except psutil.Error:
            pass
        time.sleep(0.05)
    out, err = proc.communicate()
    return proc.returncode, out, err, peak


def run_case(batch: str, out: Path, case: tuple[str, str, str], env: dict[str, str]) -> dict:
    fmt, symbol, content = case
    started = time.perf_counter()
    code, stdout, stderr, peak = _peak_rss(
        [sys.executable, "-m", "provmint", "labels", batch, "-o", str(out), "-f", fmt,
         "--symbol", symbol, "--content", content, "--url-base", BASE, "--json"],
        env,
    )  # fmt: skip
    wall = time.perf_counter() - started
    if code:
        raise SystemExit(stderr)
    summary = json.loads(stdout)
    shutil.rmtree(out)
    return {
        "format": fmt,
        "symbol": symbol,
        "content": content,
        "labels": summary["labels"],
        "elapsed_s": summary["elapsed_s"],
        "wall_s": round(wall, 2),
        "labels_per_s": summary["labels_per_s"],
        "peak_rss_mb": round(peak / 2**20),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--pdf", type=int, default=5_000, help="products for the PDF case")
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to work (default: the temp directory)"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="provmint-labels-bench-", dir=args.dir))
    env = {
        **os.environ,
        "PROVMINT_STORE": str(work / "store"),
        "PROVMINT_KEY_FILE": str(work / "keys.json"),
        "PROVMINT_CONFIG": str(work / "none.toml"),
    }
    (work / "none.toml").write_text("")
    try:
        keys = provmint("keys", "init", env=env)
        if keys.returncode:
            raise SystemExit(keys.stderr)
        batch = mint(work, args.products, env)
        results = [run_case(batch, work / "out", case, env) for case in CASES]
        small = mint(work, args.pdf, env)
        for symbol, content in (("qr", "url"), ("datamatrix", "element-string")):
            results.append(run_case(small, work / "out", ("pdf", symbol, content), env))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps({"cpus": os.cpu_count(), "results": results}, indent=2))
        return 0
    print(f"provmint labels, {os.cpu_count()} CPUs")
    print(f"{'format':<6} {'symbol':<10} {'content':<14} {'labels':>9} {'s':>7} "
          f"{'labels/s':>9} {'peak MB':>8}")  # fmt: skip
    for r in results:
        print(
            f"{r['format']:<6} {r['symbol']:<10} {r['content']:<14} {r['labels']:>9,} "
            f"{r['elapsed_s']:>7.2f} {r['labels_per_s'] or 0:>9,.0f} "
            f"{r['peak_rss_mb']:>8}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
