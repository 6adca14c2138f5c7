#!/usr/bin/env python3
"""Benchmark ``provmint labels``: labels per second for each format and symbol.

Mints N products (``scripts/make_products.py``) into a temporary store, then runs
``provmint labels`` once per case as a whole process, with the machine's CPU count as
workers, and reports the labels/s the command measured (reading the store, drawing,
writing every file and labels.csv, syncing) and the peak memory of the process and its
workers. PDF sheets are timed on a smaller batch (``--pdf``): office printing is not a
million-label job. Creating files is part of the figure: run it on the file system the
labels will go to (``--dir``). What the file system alone costs is measured first and
shown as ``files/s``: one process creating and writing 20,000 files of 2 KB, named as
labels are (on a virtual machine's disk it ranged from 35 to 680 microseconds of CPU a
file between directories and runs, which bounds the SVG and PNG cases). Each case's
labels are kept until the end, in their own directory, so no case creates its files
just after another's were deleted: DataMatrix SVG, run after the QR cases deleted
theirs, gave 1,888 labels/s on ext4, and 6,347/s with every case's files kept.

CPU is the process tree's CPU time per label (user and system, as last sampled): on a
machine shared with other work it says more than labels/s, which depends on the cores
the run got. Memory is the resident set of the whole process tree (the command, its pool workers and
the forkserver), sampled every 50 ms; besides the peak, the peak of each quarter of the
run is shown, so a job whose memory grows with the labels drawn shows it (flat: the last
quarter's peak is about the first's, and the peak does not grow from 100k to 1M).

    python benchmarks/bench_labels.py                # 100,000 products, every case
    python benchmarks/bench_labels.py --count 1000000 --cases svg-qr,zpl-qr --dir /var/tmp
    python benchmarks/bench_labels.py --store S --key-file K --batch ID --cases zpl-qr
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from make_products import write_csv  # noqa: E402

BASE = "https://id.brand.test"
CASES = {
    "svg-qr": ("svg", "qr", "url"),
    "png-qr": ("png", "qr", "url"),
    "zpl-qr": ("zpl", "qr", "url"),
    "svg-dm": ("svg", "datamatrix", "element-string"),
    "png-dm": ("png", "datamatrix", "element-string"),
    "zpl-dm": ("zpl", "datamatrix", "element-string"),
    "zpl-qrgs1": ("zpl", "qr", "element-string"),
    "none": ("none", "qr", "url"),
}
"""Cases on the main batch: QR with the URL, GS1 DataMatrix (and GS1 QR in ZPL)."""
PDF_CASES = {
    "pdf-qr": ("pdf", "qr", "url"),
    "pdf-dm": ("pdf", "datamatrix", "element-string"),
}
"""Cases on the small batch (``--pdf`` products)."""
_DEFAULT = [name for name in CASES if name != "zpl-qrgs1"]


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


def _tree_sample(root: psutil.Process, cpu: dict[int, float]) -> int | None:
    """Resident memory of ``root`` and all its descendants (a process that ends while
    being read counts nothing; None once ``root`` itself is gone); each one's CPU time
    so far goes into ``cpu`` by pid."""
    import psutil

    try:
        tree = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    total = 0
    for process in tree:
        with contextlib.suppress(psutil.Error), process.oneshot():
            total += process.memory_info().rss
            times = process.cpu_times()
            cpu[process.pid] = times.user + times.system
    return total


def _run_sampled(command: list[str], env: dict[str, str]) -> tuple[int, str, str, list[int], float]:
    """Run ``command``; its exit code, output, the resident memory of it and its workers
    together, sampled every 50 ms (so a short peak may be missed), and the CPU seconds
    they used (as last sampled: a little is missed at the end of each process)."""
    import psutil

    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    watched = psutil.Process(proc.pid)
    samples: list[int] = []
    cpu: dict[int, float] = {}
    while proc.poll() is None:
        rss = _tree_sample(watched, cpu)
        if rss:
            samples.append(rss)
        time.sleep(0.05)
    out, err = proc.communicate()
    return proc.returncode, out, err, samples, sum(cpu.values())


def _quarter_peaks(samples: list[int]) -> list[int]:
    """The peak of each quarter of the samples (in MB): flat memory has four alike."""
    if len(samples) < 4:
        return [round(max(samples, default=0) / 2**20)] * 4
    size = len(samples) / 4
    return [round(max(samples[int(i * size) : int((i + 1) * size)]) / 2**20) for i in range(4)]


def file_floor(where: Path, count: int = 20_000) -> float:
    """Files of 2 KB one process creates and writes a second in ``where`` (CPU time:
    the kernel's work for each file, which no label format avoids)."""
    directory = Path(tempfile.mkdtemp(prefix="floor-", dir=where))
    data = b"x" * 2048
    started = time.process_time()
    for i in range(count):
        name = directory / f"{i:07d}-09520123450014-SER{i:010d}.svg"
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, data)
        os.close(fd)
    return count / max(time.process_time() - started, 1e-9)


def run_case(batch: str, out: Path, case: tuple[str, str, str], env: dict[str, str]) -> dict:
    fmt, symbol, content = case
    started = time.perf_counter()
    code, stdout, stderr, samples, cpu = _run_sampled(
        [sys.executable, "-m", "provmint", "labels", batch, "-o", str(out), "-f", fmt,
         "--symbol", symbol, "--content", content, "--url-base", BASE, "--json"],
        env,
    )  # fmt: skip
    wall = time.perf_counter() - started
    if code:
        raise SystemExit(stderr)
    summary = json.loads(stdout)
    peak = max(samples, default=0)
    return {
        "format": fmt,
        "symbol": symbol,
        "content": content,
        "labels": summary["labels"],
        "elapsed_s": summary["elapsed_s"],
        "wall_s": round(wall, 2),
        "labels_per_s": summary["labels_per_s"],
        "cpu_us_per_label": round(cpu / max(summary["labels"], 1) * 1e6),
        "peak_rss_mb": round(peak / 2**20),
        "quarter_peaks_mb": _quarter_peaks(samples),
    }


def _cases(text: str | None) -> list[str]:
    names = _DEFAULT + list(PDF_CASES) if text is None else text.split(",")
    unknown = [name for name in names if name not in CASES and name not in PDF_CASES]
    if unknown:
        known = ", ".join([*CASES, *PDF_CASES])
        raise SystemExit(f"unknown case(s) {', '.join(unknown)}; use {known}")
    return names


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--count",
        "--products",
        dest="count",
        type=int,
        default=100_000,
        help="products to mint and label in each case (default 100,000)",
    )
    parser.add_argument("--pdf", type=int, default=5_000, help="products for the PDF cases")
    parser.add_argument(
        "--cases", default=None, help=f"comma-separated, of {', '.join([*CASES, *PDF_CASES])}"
    )
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to work (default: the temp directory)"
    )
    parser.add_argument(
        "--store",
        type=Path,
        default=None,
        help="label --batch of this store instead of minting (PDF cases mint theirs into it)",
    )
    parser.add_argument("--key-file", type=Path, default=None, help="the --store's key file")
    parser.add_argument("--batch", default=None, help="the batch of --store to label")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    cases = _cases(args.cases)
    if (args.store is None) != (args.batch is None) or (args.store and not args.key_file):
        parser.error("--store, --key-file and --batch go together")
    work = Path(tempfile.mkdtemp(prefix="provmint-labels-bench-", dir=args.dir))
    env = {
        **os.environ,
        "PROVMINT_STORE": str(args.store or work / "store"),
        "PROVMINT_KEY_FILE": str(args.key_file or work / "keys.json"),
        "PROVMINT_CONFIG": str(work / "none.toml"),
    }
    (work / "none.toml").write_text("")
    results = []
    try:
        floor = file_floor(work)
        if args.store is None:
            keys = provmint("keys", "init", env=env)
            if keys.returncode:
                raise SystemExit(keys.stderr)
        main_cases = [CASES[name] for name in cases if name in CASES]
        if main_cases:
            batch = args.batch or mint(work, args.count, env)
            results += [
                run_case(batch, work / f"out-{i}", case, env) for i, case in enumerate(main_cases)
            ]
        pdf_cases = [PDF_CASES[name] for name in cases if name in PDF_CASES]
        if pdf_cases:
            small = mint(work, args.pdf, env)
            results += [
                run_case(small, work / f"out-pdf-{i}", case, env)
                for i, case in enumerate(pdf_cases)
            ]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(
            json.dumps(
                {"cpus": os.cpu_count(), "files_per_s": round(floor), "results": results}, indent=2
            )
        )
        return 0
    print(f"provmint labels, {os.cpu_count()} CPUs; the file system alone: {floor:,.0f} files/s")
    print(f"{'format':<6} {'symbol':<10} {'content':<14} {'labels':>9} {'s':>7} "
          f"{'labels/s':>9} {'CPU us':>7} {'peak MB':>8}  peak MB by quarter")  # fmt: skip
    for r in results:
        print(
            f"{r['format']:<6} {r['symbol']:<10} {r['content']:<14} {r['labels']:>9,} "
            f"{r['elapsed_s']:>7.2f} {r['labels_per_s'] or 0:>9,.0f} "
            f"{r['cpu_us_per_label']:>7} {r['peak_rss_mb']:>8}  "
            + " ".join(map(str, r["quarter_peaks_mb"]))
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
