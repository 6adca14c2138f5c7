#!/usr/bin/env python3
"""Benchmark ``provmint stats`` (and so the dashboard's pages) against a large SQLite scan
log: does it answer in the same time whatever the number of scans?

Builds a store with the example batch and a scan log of N synthetic scans spread over a
year (rows written straight into the log's tables, with its day counters rebuilt from
them, as its migration does: logging them one by one would take hours), plus a few real
scans through ``ScanLog.record_many``: a suspect code among them. Then times
``store_stats`` (the library, warm) and ``provmint stats --json`` (a whole process):

- ``recent``: the suspect scans are the latest ones (the common case);
- ``old suspect``: one suspect scan from the window's first day, logged before the
  window's other scans: the suspect listing reads the log back to it, the worst case
  (about a window's worth of scan rows).

    python benchmarks/bench_stats.py                 # 2,000,000 scans
    python benchmarks/bench_stats.py --scans 20000000 --json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GTIN = "09520123450014"
WINDOW_DAYS = 30


def provmint(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "provmint", *args],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )


def bulk_scans(path: Path, count: int, first: datetime, last: datetime, first_id: int) -> int:
    """``count`` scans evenly spread from ``first`` to ``last`` (oldest first), with ids
    from ``first_id``: 90% genuine, 5% pending, 5% forged, over 100,000 codes. The next
    free id."""
    span = (last - first).total_seconds()
    start = first.timestamp()
    con = sqlite3.connect(path)
    try:
        con.execute("BEGIN")
        con.execute(
            "INSERT INTO scans (id, at, gtin, serial, verdict, location, source) "
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ? - 1) "
            "SELECT ? + i, strftime('%Y-%m-%dT%H:%M:%f', ? + ? * i / ?, 'unixepoch') || '000Z', "
            "?, printf('B%08d', i % 100000), "
            "CASE WHEN i % 20 = 0 THEN 'forged' WHEN i % 20 = 1 THEN 'pending' "
            "ELSE 'genuine' END, NULL, 'serve' FROM n",
            (count, first_id, start, span, max(count, 1), GTIN),
        )
        con.execute("DELETE FROM scan_days")
        con.execute(
            "INSERT INTO scan_days SELECT substr(at, 1, 10), verdict, count(*) FROM scans "
            "GROUP BY 1, 2"
        )
        con.execute("COMMIT")
    finally:
        con.close()
    return first_id + count


def old_suspect(path: Path, scan_id: int, at: datetime) -> None:
    """A suspect scan from ``at`` with an early id (a row ``record`` would have written
    then), counted in its day."""
    con = sqlite3.connect(path)
    try:
        con.execute("BEGIN")
        stamp = at.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
        con.execute(
            "INSERT INTO scans (id, at, gtin, serial, verdict, location, source) "
            "VALUES (?, ?, ?, 'OLDSUSPECT01', 'suspect', 'Oslo', 'serve')",
            (scan_id, stamp, GTIN),
        )
        con.execute(
            "INSERT INTO scan_days VALUES (?, 'suspect', 1) "
            "ON CONFLICT (day, verdict) DO UPDATE SET scans = scans + 1",
            (stamp[:10],),
        )
        con.execute("COMMIT")
    finally:
        con.close()


def suspect_scans(cfg: Any, at: datetime, serial: str) -> None:
    """Two places from two clients, the second judged suspect: a flagged code."""
    from provmint.store.scanlog import ScanRequest, open_scan_log

    with open_scan_log(cfg, pool_size=0) as log:
        log.record_many(
            [
                ScanRequest(GTIN, serial, "pending", "Lyon", "serve", at=at,
                            address="198.51.1.7", user_agent="phone a"),
                ScanRequest(GTIN, serial, "suspect", "Oslo", "serve",
                            at=at + timedelta(seconds=1), address="198.51.2.7",
                            user_agent="phone b"),
            ]
        )  # fmt: skip


def _children_cpu() -> float:
    """CPU seconds (user and system) of the child processes waited for so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cfg: Any, since: date, rounds: int) -> float:
    """The median seconds of ``store_stats`` over ``rounds`` calls."""
    from provmint.stats import store_stats

    spent = []
    for _ in range(rounds):
        begun = time.perf_counter()
        store_stats(cfg, since=since)
        spent.append(time.perf_counter() - begun)
    return statistics.median(spent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scans", type=int, default=2_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from provmint.config import resolve_settings
    from provmint.store.scanlog import open_scan_log

    base = Path(tempfile.mkdtemp(prefix="provmint-bench-stats-"))
    env = {
        **os.environ,
        "PROVMINT_STORE": str(base / "store"),
        "PROVMINT_KEY_FILE": str(base / "keys.json"),
        "PROVMINT_CONFIG": str(base / "none.toml"),
    }
    (base / "none.toml").write_text("")
    provmint(env, "keys", "init")
    provmint(env, "batch", "create", "-j", "1", str(ROOT / "examples" / "products.csv"))
    cfg = resolve_settings(store=base / "store", key_file=base / "keys.json", env=env)
    with open_scan_log(cfg, pool_size=0) as log:
        log.migrate()
    now = datetime.now(UTC)
    since = (now - timedelta(days=WINDOW_DAYS - 1)).date()
    log_path = base / "store" / "scans.sqlite"

    # A gap of ids between the year's scans and the window's, for the old suspect scan.
    window_start = datetime.combine(since, datetime.min.time(), UTC)
    in_window = int(args.scans * WINDOW_DAYS / 365)
    begun = time.perf_counter()
    gap = bulk_scans(log_path, args.scans - in_window, now - timedelta(days=365), window_start, 1)
    bulk_scans(log_path, in_window, window_start + timedelta(minutes=10), now, gap + 10)
    filled = time.perf_counter() - begun
    suspect_scans(cfg, now - timedelta(seconds=5), "NEWSUSPECT01")
    recent = timed(cfg, since, args.rounds)
    old_suspect(log_path, gap + 5, window_start + timedelta(minutes=5))
    worst = timed(cfg, since, args.rounds)
    begun, cpu = time.perf_counter(), _children_cpu()
    report = json.loads(provmint(env, "stats", "--json", "--since", f"{WINDOW_DAYS}d").stdout)
    process, process_cpu = time.perf_counter() - begun, _children_cpu() - cpu
    assert report["scans"]["total"] >= in_window, report["scans"]["total"]
    codes = [c["serial"] for c in report["suspect_codes"]["codes"]]
    assert codes == ["NEWSUSPECT01", "OLDSUSPECT01"], codes

    figures = {
        "scans": args.scans,
        "scans_in_window": report["scans"]["total"],
        "scan_log_bytes": report["disk"]["scan_log"],
        "fill_seconds": round(filled, 1),
        "stats_seconds_recent_suspects": round(recent, 4),
        "stats_seconds_old_suspect": round(worst, 4),
        "stats_process_seconds": round(process, 3),
        "stats_process_cpu_seconds": round(process_cpu, 3),
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"scan log: {args.scans:,} scans ({figures['scan_log_bytes'] / 1e6:,.0f} MB), "
          f"{figures['scans_in_window']:,} in the last {WINDOW_DAYS} days; filled in "
          f"{filled:.1f} s")  # fmt: skip
    print(f"store_stats, suspect scans the latest:        {recent * 1000:8.1f} ms (median)")
    print(f"store_stats, a suspect scan from day one:     {worst * 1000:8.1f} ms (median)")
    print(
        f"provmint stats --json (a whole process):      {process * 1000:8.1f} ms "
        f"({process_cpu * 1000:.0f} ms of CPU)"
    )


if __name__ == "__main__":
    main()
