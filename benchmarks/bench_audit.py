#!/usr/bin/env python3
"""Benchmark ``provmint verify --batch`` (the audit of a whole stored batch).

Builds a batch of ``--rows`` products (1M by default) in a temporary store with
``scripts/make_products.py`` and ``provmint batch create``, or reuses the store given
with ``--store`` (its newest batch, or ``--batch``; its key file with ``--key-file``),
then times ``provmint verify --batch ID`` as a whole process, with the token check (the
key file present) and without it (no key file). Reports the median wall time of
``--rounds`` runs, and the CPU time of the whole process tree (parent, forkserver and
workers: less sensitive than wall time to other load on a shared machine).

``--against REV`` also times the audit module of git revision REV (``src/provmint/
audit.py`` at REV, everything else as checked out), alternating the two run by run so
that both see the same load, and reports the ratio of the medians.

    python benchmarks/bench_audit.py                          # 1M products, 3 rounds
    python benchmarks/bench_audit.py --store /tmp/s --keep    # build once, keep the store
    python benchmarks/bench_audit.py --store /tmp/s --against main --rounds 5 --json

Target (issue 9, 2-core machine): 1M products in 4 s or less, token check included.
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
from dataclasses import dataclass
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# Runs the CLI with provmint.audit replaced by the module file in argv[1]. Worker
# processes unpickle the audit functions by that module's name, so its directory is put
# on sys.path (which the forkserver inherits).
AGAINST_RUNNER = """
import sys
path = sys.argv.pop(1)
sys.path.insert(0, path.rsplit("/", 1)[0])
import provmint_audit_against as audit
sys.modules["provmint.audit"] = audit
from provmint.cli import main
sys.argv[0] = "provmint"
main()
"""


@dataclass(frozen=True, slots=True)
class Run:
    wall: float
    cpu: float
    peak_mb: float
    exit_code: int
    report: dict[str, object]


def run_measured(cmd: list[str], env: dict[str, str]) -> Run:
    """Run ``cmd``; wall time, CPU time and peak RSS summed over its process tree."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    root = psutil.Process(proc.pid)
    cpu: dict[int, float] = {}
    peak = 0
    while proc.poll() is None:
        with contextlib.suppress(psutil.Error):
            total = 0
            for p in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    times = p.cpu_times()
                    cpu[p.pid] = max(cpu.get(p.pid, 0.0), times.user + times.system)
                    total += p.memory_info().rss
            peak = max(peak, total)
        # The clock stops when the process ends, not at the next sample.
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.02)
    out, err = proc.communicate()
    wall = time.perf_counter() - started
    try:
        report = json.loads(out)
    except ValueError:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err.decode()}") from None
    return Run(wall, sum(cpu.values()), peak / 2**20, proc.returncode, report)


def build_store(store: Path, rows: int, work: Path, env: dict[str, str]) -> str:
    """Mint ``rows`` products into ``store``; the batch id."""
    csv = work / "products.csv"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_products.py"), str(rows), "-o", str(csv)],
        check=True,
        capture_output=True,
    )
    proc = subprocess.run(
        [sys.executable, "-m", "provmint", "batch", "create", str(csv), "--json"],
        env={**env, "PROVMINT_STORE": str(store)},
        check=True,
        capture_output=True,
    )
    csv.unlink()
    return str(json.loads(proc.stdout)["batch_id"])


def newest_batch(store: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "provmint", "batch", "list", "--json"],
        env={**env, "PROVMINT_STORE": str(store)},
        check=True,
        capture_output=True,
    )
    batches = json.loads(proc.stdout)
    if isinstance(batches, dict):  # {"batches": [...]}; a bare list before
        batches = batches["batches"]
    if not batches:
        raise SystemExit(f"no batch in {store}")
    return str(max(batches, key=lambda b: str(b.get("created_at", "")))["batch_id"])


def audit_module_at(rev: str, work: Path) -> Path:
    """``src/provmint/audit.py`` at git revision ``rev``, written under ``work``."""
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:src/provmint/audit.py"],
        check=True,
        capture_output=True,
    ).stdout
    path = work / "against" / "provmint_audit_against.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(source)
    return path


def median_run(runs: list[Run]) -> dict[str, float]:
    return {
        "wall_s": round(statistics.median(r.wall for r in runs), 3),
        "wall_min_s": round(min(r.wall for r in runs), 3),
        "cpu_s": round(statistics.median(r.cpu for r in runs), 3),
        "peak_rss_mb": round(max(r.peak_mb for r in runs), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--store", type=Path, help="reuse (or build once into) this store")
    parser.add_argument("--batch", help="the batch to audit in --store (default: the newest)")
    parser.add_argument(
        "--key-file", type=Path, help="the store's key file (default: STORE.keys.json beside it)"
    )
    parser.add_argument("--keep", action="store_true", help="keep a store built into --store")
    parser.add_argument("--against", metavar="REV", help="also time audit.py at git REV")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="provmint-bench-audit-"))
    store = args.store or work / "store"
    keys = args.key_file or (store.parent if args.store else work) / f"{store.name}.keys.json"
    env = {  # bytecode cached, as installed by pip
        **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
        "PROVMINT_STORE": str(store),
        "PROVMINT_KEY_FILE": str(keys),
        "PROVMINT_CONFIG": str(work / "none.toml"),
    }
    (work / "none.toml").write_text("")
    built = False
    try:
        if args.batch:
            batch = args.batch
        elif (store / "catalog.duckdb").exists():
            batch = newest_batch(store, env)
        else:
            if not keys.exists():
                subprocess.run(
                    [sys.executable, "-m", "provmint", "keys", "init"],
                    env=env,
                    check=True,
                    capture_output=True,
                )
            print(f"minting {args.rows:,} products into {store} ...", file=sys.stderr)
            batch, built = build_store(store, args.rows, work, env), True
        variants = {"provmint": [sys.executable, "-m", "provmint"]}
        if args.against:
            module = audit_module_at(args.against, work)
            variants = {
                args.against: [sys.executable, "-c", AGAINST_RUNNER, str(module)],
                **variants,
            }
        without_key = {**env, "PROVMINT_KEY_FILE": str(work / "no-such-keys.json")}
        runs: dict[tuple[str, str], list[Run]] = {}
        for i in range(args.rounds):
            for mode, mode_env in (("tokens", env), ("no tokens", without_key)):
                for name, cmd in variants.items():
                    run = run_measured([*cmd, "verify", "--batch", batch, "--json"], mode_env)
                    if run.report.get("verdict") not in ("valid", "pending", "unchecked"):
                        raise SystemExit(f"{name}: the audit failed: {run.report.get('reason')}")
                    runs.setdefault((name, mode), []).append(run)
                    print(
                        f"round {i + 1} {mode:9s} {name}: {run.wall:.2f} s wall, "
                        f"{run.cpu:.2f} s CPU",
                        file=sys.stderr,
                    )
        products = next(iter(runs.values()))[0].report.get("products")
        figures: dict[str, object] = {
            "batch": batch,
            "products": products,
            "rounds": args.rounds,
            "cpus": os.cpu_count(),
            "runs": {f"{name}, {mode}": median_run(r) for (name, mode), r in runs.items()},
        }
        if args.against:
            figures["wall_ratio"] = {
                mode: round(
                    statistics.median(r.wall for r in runs[("provmint", mode)])
                    / statistics.median(r.wall for r in runs[(args.against, mode)]),
                    3,
                )
                for mode in ("tokens", "no tokens")
            }
    finally:
        if built and args.keep:
            print(f"kept {store} (key file {keys})", file=sys.stderr)
        elif built and args.store:
            shutil.rmtree(store, ignore_errors=True)
            keys.unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"provmint verify --batch of {products:,} products ({args.rounds} rounds, medians)")
    for label, f in figures["runs"].items():  # type: ignore[attr-defined]
        print(
            f"  {label:28s} {f['wall_s']:6.2f} s wall (min {f['wall_min_s']:.2f}), "
            f"{f['cpu_s']:6.2f} s CPU, peak {f['peak_rss_mb']:.0f} MB (process tree)"
        )
    if args.against:
        for mode, ratio in figures["wall_ratio"].items():  # type: ignore[attr-defined]
            print(f"  wall ratio, {mode:9s}        {ratio:.2f} x {args.against}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
