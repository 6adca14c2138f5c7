#!/usr/bin/env python3
"""Benchmark point lookups through the key index and the record parts (issue 8), and the
bounded memory of the external sort and merges (issue 9).

For each size N it builds a synthetic store directly from random data (no CSV, no
minting), laid out as a real store grows: batches of ``--batch`` products (1M), each
with record parts of 65,536 realistic 7-field records (``provmint-records/1``) and a
sorted run per key kind (``provmint-keyrun/1``, rows = leaf indexes), merged into the
store's index with ``plan_merge`` and the batch's base as row offset. Then it measures:

- lookup latency p50/p99, by (gtin, serial) and by token, warm (every file in the page
  cache) and cold (before each lookup the index maps and files and the record part are
  evicted from this process and the page cache: madvise + posix_fadvise DONTNEED). A
  lookup is the whole path: key hash, index find, global row -> (batch, leaf), record
  block read, decode and confirm (gtin and serial, or the whole token);
- the RSS of the opened index per product (fences, block tables: anonymous memory) and
  its open time; the store's bytes per product; the build rates;
- with ``--sort-keys K``: peak extra RSS (VmHWM, reset per phase) of SpillSorter,
  merge_runs, equal_keys and common_keys over K random keys with their default
  budgets, in a fresh process.

    python benchmarks/bench_lookup.py                             # 1M and 10M
    python benchmarks/bench_lookup.py --products 100000000        # ~10 GB of disk, ~15 min
    python benchmarks/bench_lookup.py --products 1000000 --sort-keys 50000000 --json

Targets (issues 8 and 9, 2-core machine): lookup latency flat within 2x from 1M to 100M,
tens of microseconds warm; the index at most 12 bytes per product in RAM; the sort and
merges well under 200 MB of extra memory at 50M keys.
"""

from __future__ import annotations

import argparse
import bisect
import hmac
import json
import mmap
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from provmint import canonical
from provmint.engine import record_bytes_column
from provmint.ingest import key_hash, key_hashes
from provmint.store.keyindex import (
    FENCE_STRIDE,
    KeyIndex,
    KeyRun,
    RunKind,
    SpillSorter,
    common_keys,
    equal_keys,
    merge_runs,
    plan_merge,
)
from provmint.store.records import RecordPart, write_records

PART_ROWS = 1 << 16
CROCKFORD = np.frombuffer(b"0123456789ABCDEFGHJKMNPQRSTVWXYZ", dtype=np.uint8)
PRODUCTS = ["Aurora Serum 30 ml", "Borealis Tablets 20 x 500 mg", "Cirrus Eye Drops 10 ml",
            "Delta Syrup 100 ml", "Equinox Capsules 30 x 250 mg", "Fjord Nasal Spray 15 ml",
            "Glacier Gel 40 g", "Halo Lotion 200 ml"]  # fmt: skip
SITES = ["Plant 1 Line 2", "Plant 1 Line 3", "Plant 3 Line 1", "Contract Packer 7"]


def gtin14(item: int) -> str:
    body = f"0952012345{item:03d}"
    total = sum(int(c) * (3 if i % 2 == 0 else 1) for i, c in enumerate(reversed(body)))
    return body + str((10 - total % 10) % 10)


SKU_GTINS = [gtin14(i) for i in range(40)]


# -- building a synthetic store ---------------------------------------------------------


@dataclass
class Sample:
    """A product to look up: its global row, identity and token."""

    row: int
    gtin: str
    serial: str
    token: bytes


@dataclass
class Store:
    """A synthetic store on disk: batch bases, part files, live index runs."""

    root: Path
    products: int
    bases: list[int] = field(default_factory=list)
    parts: list[list[Path]] = field(default_factory=list)
    runs: dict[RunKind, list[Path]] = field(default_factory=dict)
    sizes: dict[RunKind, list[int]] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    rewritten: dict[RunKind, int] = field(default_factory=dict)


def batch_table(first: int, n: int, rng: np.random.Generator) -> pa.Table:
    """``n`` realistic products: GTIN of 40 SKUs, a unique random-looking 12-character
    Crockford serial, lot, expiry, product name, site and a production timestamp."""
    index = np.arange(first, first + n, dtype=np.uint64)
    with np.errstate(over="ignore"):  # a bijection of 60-bit numbers: serials stay unique
        mixed = (index * np.uint64(0x9E3779B97F4A7C15) + np.uint64(0x5DEECE66D)) & np.uint64(
            (1 << 60) - 1
        )
    digits = (mixed[:, None] >> (np.arange(11, -1, -1, dtype=np.uint64) * np.uint64(5))) & 31
    serial = pa.array(CROCKFORD[digits].view("S12").ravel()).cast(pa.string())
    sku = rng.integers(0, len(SKU_GTINS), n)
    lot = rng.integers(0, 60, n)
    lots = np.array([f"L26{1 + i % 12:02d}{chr(65 + i % 26)}" for i in range(60)], dtype="S7")
    expiry = np.array([f"2028-{1 + i % 12:02d}-{28 - i % 3}" for i in range(60)], dtype="S10")
    second = (index // np.uint64(40)).astype(np.int64)  # 40 products a second: strftime once
    first_second = int(second[0]) if n else 0
    seconds = np.arange(first_second, int(second[-1]) + 1 if n else 0) + 1_790_000_000
    stamps = pc.strftime(pa.array(seconds, pa.timestamp("s")), format="%Y-%m-%dT%H:%M:%SZ")
    return pa.table({
        "gtin": pa.array(np.array(SKU_GTINS, dtype="S14")[sku]).cast(pa.string()),
        "serial": serial,
        "lot": pa.array(lots[lot]).cast(pa.string()),
        "expiry": pa.array(expiry[lot]).cast(pa.string()),
        "product_name": pa.array(np.array(PRODUCTS, dtype="S40")[sku % 8]).cast(pa.string()),
        "site": pa.array(np.array(SITES, dtype="S20")[lot % len(SITES)]).cast(pa.string()),
        "timestamp": stamps.take(pa.array(second - first_second)),
    })  # fmt: skip


def add_batch(store: Store, size: int, samples: int, rng: np.random.Generator) -> None:
    """Write one batch's record parts, sort its key runs and merge them into the index."""
    seq, base = len(store.bases), store.products
    started = time.perf_counter()
    table = batch_table(base, size, rng)
    records = record_bytes_column(table)
    tokens = rng.bytes(16 * size)
    keys = {
        RunKind.KEY: key_hashes(table.column("gtin").chunk(0), table.column("serial").chunk(0)),
        RunKind.TOKEN: np.frombuffer(tokens, dtype="<u8")[::2].astype(np.uint64),
    }
    store.timings["generate"] += time.perf_counter() - started
    for i in rng.choice(size, min(size, samples), replace=False).tolist():
        store.samples.append(Sample(base + i, table["gtin"][i].as_py(), table["serial"][i].as_py(),
                                    tokens[16 * i : 16 * i + 16]))  # fmt: skip
    directory = store.root / "batches" / f"b{seq:05d}"
    directory.mkdir(parents=True)
    started = time.perf_counter()
    paths = []
    for part, start in enumerate(range(0, size, PART_ROWS)):
        stop = min(size, start + PART_ROWS)
        paths.append(directory / f"part-{part:05d}.rec")
        write_records(paths[-1], records.slice(start, stop - start), tokens[16 * start : 16 * stop])
    store.timings["write records"] += time.perf_counter() - started
    store.parts.append(paths)
    scratch = store.root / "tmp"
    for kind, values in keys.items():
        started = time.perf_counter()
        with SpillSorter(scratch, kind) as sorter:
            sorter.add(values, np.arange(size, dtype=np.uint32))
            batch_run = sorter.finish(scratch / f"batch-{seq}-{kind.name}.run")
        store.timings["sort batch runs"] += time.perf_counter() - started
        started = time.perf_counter()
        live, sizes = store.runs.setdefault(kind, []), store.sizes.setdefault(kind, [])
        absorbed = plan_merge(sizes, size)
        inputs = [KeyRun.open(p) for p in live[len(live) - absorbed :]] + [batch_run]
        target = store.root / "index" / f"{kind.name.lower()}-{seq:05d}.run"
        merged = merge_runs(inputs, target, row_offsets=[0] * absorbed + [base])
        for run in inputs:
            run.close()
            run.path.unlink()
        del live[len(live) - absorbed :], sizes[len(sizes) - absorbed :]
        live.append(target)
        sizes.append(merged.count)
        merged.close()
        store.rewritten[kind] = store.rewritten.get(kind, 0) + (merged.count if absorbed else 0)
        store.timings["merge into index"] += time.perf_counter() - started
    store.bases.append(base)
    store.products += size


def build_store(root: Path, products: int, batch: int, lookups: int, seed: int) -> Store:
    store = Store(root, 0)
    for name in ("generate", "write records", "sort batch runs", "merge into index"):
        store.timings[name] = 0.0
    (root / "index").mkdir(parents=True)
    (root / "tmp").mkdir()
    rng = np.random.default_rng(seed)
    batches = -(-products // batch)
    per_batch = -(-lookups // batches)
    check_records(batch_table(0, 50, rng))
    while store.products < products:
        add_batch(store, min(batch, products - store.products), per_batch, rng)
        print(f"  built {store.products:,} products", file=sys.stderr, end="\r")
    print(file=sys.stderr)
    rng.shuffle(store.samples)
    return store


def check_records(table: pa.Table) -> None:
    """The benchmark's records are real provmint-record/1 (the fast builder agrees with
    the canonical encoder)."""
    built = record_bytes_column(table).to_pylist()
    for i, row in enumerate(table.to_pylist()):
        assert built[i] == canonical.encode_record(row)


# -- measuring --------------------------------------------------------------------------


def memory() -> dict[str, int]:
    """This process's RSS, anonymous and file-backed, in bytes (from /proc)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            out[name] = int(value.split()[0]) * 1024
    return out


class OpenStore:
    """The store opened as a lookup service would: both indexes, every part's table."""

    def __init__(self, store: Store, fence_stride: int) -> None:
        self.store = store
        before = memory()
        started = time.perf_counter()
        self.index = {
            kind: KeyIndex.open(paths, kind=kind, fence_stride=fence_stride)
            for kind, paths in store.runs.items()
        }
        self.open_index = time.perf_counter() - started
        middle = memory()
        started = time.perf_counter()
        self.parts = [[RecordPart.open(p) for p in paths] for paths in store.parts]
        self.open_parts = time.perf_counter() - started
        after = memory()
        self.index_anon = middle["RssAnon"] - before["RssAnon"]
        self.index_file = middle["RssFile"] - before["RssFile"]
        self.parts_anon = after["RssAnon"] - middle["RssAnon"]

    def record(self, row: int) -> tuple[bytes, bytes]:
        batch = bisect.bisect_right(self.store.bases, row) - 1
        leaf = row - self.store.bases[batch]
        return self.parts[batch][leaf >> 16].get(leaf & 0xFFFF)

    def by_serial(self, gtin: str, serial: str) -> dict[str, str] | None:
        """Find a product by (gtin, serial) and confirm it against its record."""
        for row in self.index[RunKind.KEY].candidates(key_hash(gtin, serial)):
            fields = canonical.decode_record(self.record(row)[0])
            if fields["gtin"] == gtin and fields["serial"] == serial:
                return fields
        return None

    def by_token(self, token: bytes) -> dict[str, str] | None:
        """Find a product by its raw token and confirm the whole token."""
        for row in self.index[RunKind.TOKEN].candidates(int.from_bytes(token[:8], "little")):
            record, stored = self.record(row)
            if hmac.compare_digest(stored, token):
                return canonical.decode_record(record)
        return None

    def evict(self, sample: Sample) -> None:
        """Drop the index runs and the sample's record part from this process and from
        the page cache, so that the next lookup reads them from the disk."""
        for index in self.index.values():
            for run in index.runs:
                run._map.madvise(mmap.MADV_DONTNEED)  # type: ignore[union-attr]  # benchmark only
                os.posix_fadvise(run._fd, 0, 0, os.POSIX_FADV_DONTNEED)  # type: ignore[arg-type]
        batch = bisect.bisect_right(self.store.bases, sample.row) - 1
        part = self.parts[batch][(sample.row - self.store.bases[batch]) >> 16]
        os.posix_fadvise(part._fd, 0, 0, os.POSIX_FADV_DONTNEED)  # type: ignore[arg-type]

    def close(self) -> None:
        for index in self.index.values():
            index.close()
        for parts in self.parts:
            for part in parts:
                part.close()


def percentiles(timings: tuple[list[float], list[float]]) -> dict[str, float]:
    """p50/p99 of wall time, and of this thread's CPU time (the wall time without the
    waits for the disk and for the other processes on this shared machine)."""
    out: dict[str, float] = {}
    for name, values in zip(("", "cpu_"), timings, strict=True):
        ordered = sorted(values)
        for p in (50, 99):
            at = min(len(ordered) - 1, p * len(ordered) // 100)
            out[f"{name}p{p}_us"] = round(ordered[at] * 1e6, 1)
    out["n"] = len(timings[0])
    return out


def timed(
    lookup: Any, samples: list[Sample], before: Any = None
) -> tuple[list[float], list[float]]:
    walls, cpus = [], []
    for sample in samples:
        if before is not None:
            before(sample)
        cpu, started = time.thread_time(), time.perf_counter()
        found = lookup(sample)
        walls.append(time.perf_counter() - started)
        cpus.append(time.thread_time() - cpu)
        if found is None or found["serial"] != sample.serial:
            raise SystemExit(f"lookup of row {sample.row} failed")
    return walls, cpus


def best_of(rounds: int, lookup: Any, samples: list[Sample]) -> dict[str, float]:
    """The round with the lowest p50: the machine is shared, and the other processes
    only ever add to a round's figures."""
    figures = [percentiles(timed(lookup, samples)) for _ in range(rounds)]
    return {**min(figures, key=lambda f: f["p50_us"]), "rounds": rounds}


def read_through(paths: list[Path]) -> None:
    """Bring files into the page cache."""
    for path in paths:
        with open(path, "rb", buffering=0) as fh:
            while fh.read(1 << 23):
                pass


def disk_bytes(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in paths)


def measure(store: Store, cold_lookups: int, fence_stride: int, rounds: int) -> dict[str, Any]:
    opened = OpenStore(store, fence_stride)
    part_files = [p for paths in store.parts for p in paths]
    run_files = [p for paths in store.runs.values() for p in paths]
    read_through(part_files + run_files)
    by_serial = lambda s: opened.by_serial(s.gtin, s.serial)  # noqa: E731
    by_token = lambda s: opened.by_token(s.token)  # noqa: E731
    result: dict[str, Any] = {
        "products": store.products,
        "fence_stride": fence_stride,
        "batches": len(store.bases),
        "runs": {kind.name.lower(): len(paths) for kind, paths in store.runs.items()},
        "index_open_s": round(opened.open_index, 4),
        "parts_open_s": round(opened.open_parts, 4),
        "index_ram_bytes_per_product": round(
            sum(run._fences.nbytes for index in opened.index.values() for run in index.runs)
            / store.products,
            4,
        ),
        "part_tables_ram_bytes_per_product": round(
            sum(
                len(p._offsets) * p._offsets.itemsize + len(p._sizes) * p._sizes.itemsize
                for ps in opened.parts
                for p in ps
            )
            / store.products,
            4,
        ),
        "index_rss_bytes_per_product": round(opened.index_anon / store.products, 4),
        "index_file_rss_after_open_bytes": opened.index_file,
        "part_tables_rss_bytes_per_product": round(opened.parts_anon / store.products, 4),
        "disk_bytes_per_product": {
            "records": round(disk_bytes(part_files) / store.products, 2),
            "index": round(disk_bytes(run_files) / store.products, 2),
        },
    }
    samples = store.samples
    timed(by_serial, samples)  # a serving process has touched its maps already
    timed(by_token, samples)
    result["warm"] = {"serial": best_of(rounds, by_serial, samples),
                      "token": best_of(rounds, by_token, samples)}  # fmt: skip
    result["file_rss_after_warm_MB"] = round(memory()["RssFile"] / 2**20, 1)
    cold = samples[:cold_lookups]
    result["cold"] = {"serial": percentiles(timed(by_serial, cold, opened.evict)),
                      "token": percentiles(timed(by_token, cold, opened.evict))}  # fmt: skip
    opened.close()
    return result


def measure_write(directory: Path, repeats: int = 15) -> dict[str, Any]:
    """write_records of one part (65,536 realistic rows) into new files: wall and CPU
    time, best and median, without and with the fsyncs."""
    rng = np.random.default_rng(3)
    records = record_bytes_column(batch_table(0, PART_ROWS, rng))
    tokens = rng.bytes(16 * PART_ROWS)
    directory.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {"rows": PART_ROWS}
    for durable in (False, True):
        walls, cpus = [], []
        for i in range(repeats):
            path = directory / f"w{int(durable)}-{i}.rec"
            cpu, started = time.process_time(), time.perf_counter()
            write_records(path, records, tokens, durable=durable)
            walls.append(time.perf_counter() - started)
            cpus.append(time.process_time() - cpu)
        walls.sort()
        cpus.sort()
        out["durable" if durable else "no_fsync"] = {
            "best_ms": round(walls[0] * 1e3, 1),
            "median_ms": round(walls[repeats // 2] * 1e3, 1),
            "cpu_best_ms": round(cpus[0] * 1e3, 1),
            "cpu_median_ms": round(cpus[repeats // 2] * 1e3, 1),
        }
        out["bytes_per_row"] = round(path.stat().st_size / PART_ROWS, 2)
    shutil.rmtree(directory)
    return out


# -- bounded memory of the streaming operations ------------------------------------------


def reset_peak() -> None:
    """Start a new VmHWM measurement (Linux: write 5 to clear_refs)."""
    Path("/proc/self/clear_refs").write_text("5")


def sort_child(keys: int, directory: Path) -> dict[str, Any]:
    """SpillSorter, equal_keys, common_keys and merge_runs over ``keys`` random keys with
    their default budgets: time and peak RSS above the starting RSS, per phase."""
    rng = np.random.default_rng(1)
    base = memory()["VmRSS"]
    phases: dict[str, Any] = {}

    def phase(name: str, work: Any) -> Any:
        reset_peak()
        started = time.perf_counter()
        value = work()
        phases[name] = {"s": round(time.perf_counter() - started, 1),
                        "peak_extra_MB": round((memory()["VmHWM"] - base) / 2**20, 1)}  # fmt: skip
        return value

    def sort(count: int, name: str) -> KeyRun:
        with SpillSorter(directory, RunKind.KEY) as sorter:
            for start in range(0, count, 1 << 20):
                n = min(1 << 20, count - start)
                sorter.add(rng.integers(0, 2**64 - 1, n, dtype=np.uint64),
                           np.arange(start, start + n, dtype=np.uint32))  # fmt: skip
            phases.setdefault("spills", len(sorter.spills))
            return sorter.finish(directory / name)

    run = phase("SpillSorter", lambda: sort(keys, "sorted.run"))
    phase("equal_keys", lambda: sum(len(b.keys) for b in equal_keys(run)))
    phase("common_keys (self-join)", lambda: sum(len(m) for m in common_keys(run, [run])))
    with SpillSorter(directory, RunKind.KEY) as sorter:  # a new batch against the store
        shared = run.read(0, 1 << 18).keys[:: (1 << 18) // 1000][:1000]
        sorter.add(shared, np.arange(1000, dtype=np.uint32))
        sorter.add(rng.integers(0, 2**64 - 1, 999_000, dtype=np.uint64),
                   np.arange(1000, 1_000_000, dtype=np.uint32))  # fmt: skip
        batch = sorter.finish(directory / "batch.run")
    found = phase("common_keys (1M new, 1,000 in the run)",
                  lambda: sum(len(m) for m in common_keys(batch, [run])))  # fmt: skip
    assert found >= 1000
    batch.close()
    other = sort(keys // 10, "other.run")
    merged = phase("merge_runs (+10%)", lambda: merge_runs([run, other], directory / "merged.run",
                                                           row_offsets=[0, keys]))  # fmt: skip
    assert merged.count == keys + keys // 10
    for item in (run, other, merged):
        item.close()
    return {"keys": keys, "phases": phases}


# -- main ---------------------------------------------------------------------------------


def simulate_merges(products: int, batch: int) -> dict[str, Any]:
    """plan_merge at factors 2 and 4 over batches of ``batch``: runs and rewrites."""
    out = {}
    for factor in (2.0, 4.0):
        sizes: list[int] = []
        most = rewritten = 0
        total = 0
        while total < products:
            new = min(batch, products - total)
            absorbed = plan_merge(sizes, new, factor=factor)
            merged = new + sum(sizes[len(sizes) - absorbed :])
            del sizes[len(sizes) - absorbed :]
            sizes.append(merged)
            rewritten += merged if absorbed else 0
            total += new
            most = max(most, len(sizes))
        out[f"factor {factor:g}"] = {
            "runs_at_end": len(sizes),
            "most_runs": most,
            "rewritten_per_product": round(rewritten / total, 2),
        }
    return out


def report(size: dict[str, Any]) -> None:
    print(f"\n{size['products']:,} products in {size['batches']} batches, runs {size['runs']}, "
          f"fence stride {size['fence_stride']}")  # fmt: skip
    for name, key in (("build", "build_s"), ("disk bytes/product", "disk_bytes_per_product")):
        print(f"  {name}: {size[key]}")
    print(f"  open: index {size['index_open_s'] * 1e3:.1f} ms, part tables "
          f"{size['parts_open_s'] * 1e3:.1f} ms; RAM/product: index "
          f"{size['index_ram_bytes_per_product']} B (RSS {size['index_rss_bytes_per_product']} B),"
          f" part tables {size['part_tables_ram_bytes_per_product']} B (RSS "
          f"{size['part_tables_rss_bytes_per_product']} B); file-backed RSS after the warm "
          f"lookups {size['file_rss_after_warm_MB']} MB")  # fmt: skip
    for state in ("warm", "cold"):
        for by in ("serial", "token"):
            figures = size[state][by]
            print(f"  {state} by {by}: p50 {figures['p50_us']} us, p99 {figures['p99_us']} us; "
                  f"CPU p50 {figures['cpu_p50_us']} us, p99 {figures['cpu_p99_us']} us "
                  f"({figures['n']} lookups)")  # fmt: skip
    print(f"  merges (factor 2 vs 4): {size['merge_policy']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--batch", type=int, default=1_000_000, help="products per batch")
    parser.add_argument("--lookups", type=int, default=20_000, help="warm lookups per size")
    parser.add_argument("--cold-lookups", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=3, help="warm rounds (the best is shown)")
    parser.add_argument("--fence-stride", type=int, nargs="+", default=[FENCE_STRIDE],
                        help="measure with these fence strides")  # fmt: skip
    parser.add_argument("--sort-keys", type=int, default=0, help="also measure the sort at K keys")
    parser.add_argument("--dir", type=Path, help="where to build (default: a temporary dir)")
    parser.add_argument("--keep", action="store_true", help="keep the stores built")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--sort-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="bench-lookup-", dir=args.dir))
    if args.sort_child:
        print(json.dumps(sort_child(args.sort_child, base)))
        shutil.rmtree(base)
        return 0
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # one open file per part
    results: dict[str, Any] = {"sizes": []}
    try:
        results["write_records"] = measure_write(base / "write")
        if not args.json:
            print(f"write_records: {results['write_records']}")
        for products in args.products:
            root = base / f"n{products}"
            started = time.perf_counter()
            store = build_store(root, products, args.batch, args.lookups, args.seed)
            build: dict[str, Any] = {name: round(t, 1) for name, t in store.timings.items()}
            build["total"] = round(time.perf_counter() - started, 1)
            build["rewritten_per_product"] = {k.name.lower(): round(v / products, 2)
                                              for k, v in store.rewritten.items()}  # fmt: skip
            for stride in args.fence_stride:
                figures = measure(store, args.cold_lookups, stride, args.rounds)
                figures["build_s"] = build
                figures["merge_policy"] = simulate_merges(products, args.batch)
                results["sizes"].append(figures)
                if not args.json:
                    report(figures)
            if not args.keep:
                shutil.rmtree(root)
        if args.sort_keys:
            child = subprocess.run(
                [sys.executable, __file__, "--sort-child", str(args.sort_keys), "--dir", str(base)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            results["sort"] = json.loads(child.stdout)
            if not args.json:
                print(f"\nstreaming operations over {args.sort_keys:,} keys (default budgets): "
                      f"{results['sort']['phases']}")  # fmt: skip
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
