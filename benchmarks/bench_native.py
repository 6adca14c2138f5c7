#!/usr/bin/env python3
"""Time the C functions of ``provmint._native`` on a realistic input, the way minting calls
them (65,536-row chunks), optionally comparing several builds of the module in one run.

    python benchmarks/bench_native.py                      # the installed module, 1M rows
    python benchmarks/bench_native.py --rows 200000 --rounds 7
    python benchmarks/bench_native.py --module old=/tmp/a.so --module new=/tmp/b.so

Builds are timed alternately, round by round, so that the machine's noise hits each of them
alike. The figures are CPU seconds of the calling thread (the functions run in it, GIL
released or not) per ``--rows`` rows, median and best over the rounds: on a shared machine
CPU time is steadier than wall time.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "scripts"))
from make_products import write_csv  # noqa: E402

from provmint import engine  # noqa: E402
from provmint.canonical import COMMIT_TAG, RECORD_MAGIC, TOKEN_TAG  # noqa: E402

SECRET = bytes(range(7, 39))


def load(path: Path) -> ModuleType:
    """Load a built ``_native`` extension from ``path`` (any file name)."""
    loader = importlib.machinery.ExtensionFileLoader("provmint._native", str(path))
    spec = importlib.util.spec_from_file_location("provmint._native", path, loader=loader)
    if spec is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def chunks(rows: int) -> list[pa.Table]:
    """A generated products table (every column text), cut like minting cuts it."""
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "products.csv"
        write_csv(csv, rows)
        names = ["gtin", "serial", "lot", "expiry", "product_name", "production_date"]
        table = pacsv.read_csv(
            csv,
            convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string())),
        )
    return [table.slice(lo, engine.CHUNK_ROWS) for lo in range(0, rows, engine.CHUNK_ROWS)]


def column(table: pa.Table, name: str) -> tuple[Any, Any]:
    return engine._buffers(engine._column(table, name))


def hash_args(table: pa.Table) -> tuple[Any, ...]:
    names = sorted(table.column_names)
    fields = []
    for name in names:
        offsets, data = column(table, name)
        fields.append((struct.pack(">B", len(name)) + name.encode(), offsets, data))
    header = RECORD_MAGIC + struct.pack(">H", len(names))
    return (
        SECRET,
        TOKEN_TAG,
        COMMIT_TAG,
        header,
        *column(table, "gtin"),
        *column(table, "serial"),
        fields,
    )


def record_parts(table: pa.Table) -> tuple[int, list[Any]]:
    names = sorted(table.column_names)
    parts: list[Any] = [RECORD_MAGIC + struct.pack(">H", len(names))]
    for name in names:
        offsets, data = column(table, name)
        parts += [
            struct.pack(">B", len(name)) + name.encode(),
            ("len32", offsets, data),
            ("col", offsets, data),
        ]
    return table.num_rows, parts


def calls(function: str, arglists: list[tuple[Any, ...]]) -> Callable[[ModuleType], None]:
    """A workload: ``function`` of the module called with each argument tuple in turn."""

    def run(mod: ModuleType) -> None:
        call = getattr(mod, function)
        for args in arglists:
            call(*args)

    return run


def workloads(tables: list[pa.Table], rows: int) -> dict[str, Callable[[ModuleType], None]]:
    """What to time: each function over every chunk (reduce_level over a whole tree)."""
    leaves = np.random.default_rng(1).integers(0, 256, rows * 32, dtype=np.uint8).tobytes()

    def tree(mod: ModuleType) -> None:
        level = leaves
        while len(level) > 32:
            level = mod.reduce_level(level)

    return {
        "hash_products": calls("hash_products", [hash_args(t) for t in tables]),
        "key_hashes": calls(
            "key_hashes", [(*column(t, "gtin"), *column(t, "serial")) for t in tables]
        ),
        "concat (records)": calls("concat", [record_parts(t) for t in tables]),
        "reduce_level (tree)": tree,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--module",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a built _native .so to time (repeatable); default: the installed",
    )
    args = parser.parse_args()
    if args.module:
        mods = {spec.split("=", 1)[0]: load(Path(spec.split("=", 1)[1])) for spec in args.module}
    else:
        from provmint import _native

        mods = {"installed": _native}
    tables = chunks(args.rows)
    jobs = workloads(tables, args.rows)
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for job, run in jobs.items():
            for name, mod in mods.items():
                started = time.thread_time()
                run(mod)
                times.setdefault((job, name), []).append(time.thread_time() - started)
    print(f"{args.rows} rows, {args.rounds} rounds: median (best) CPU seconds")
    print(f"{'function':22}" + "".join(f"{name:>20}" for name in mods))
    for job in jobs:
        cells = "".join(
            f"{statistics.median(times[job, name]):11.4f} ({min(times[job, name]):.4f})"
            for name in mods
        )
        print(f"{job:22}{cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
