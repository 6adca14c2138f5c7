#!/usr/bin/env python3
"""Benchmark the verification service and label rendering.

Mints a store of N products (1M by default), starts ``provmint serve`` on loopback and
drives it with an asyncio HTTP/1.1 keep-alive load generator (a second process, random
valid codes): requests/s and latency percentiles of the verification endpoint, HTML and
JSON. Then times ``provmint labels`` in SVG on a slice-sized batch and CSV-only on the
big one.

    python benchmarks/bench_serve.py                       # 1M products
    python benchmarks/bench_serve.py --products 200000 --requests 20000 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from make_products import write_csv  # noqa: E402


async def _client(
    host: str, port: int, paths: list[str], accept: str, latencies: list[float], errors: list[int]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for path in paths:
            request = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: {accept}\r\n\r\n").encode()
            started = time.perf_counter()
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if status != 200:
                errors.append(status)
    finally:
        writer.close()


async def _load(
    host: str, port: int, paths: list[str], connections: int, accept: str
) -> tuple[float, list[float], list[int]]:
    latencies: list[float] = []
    errors: list[int] = []
    shares = [paths[i::connections] for i in range(connections)]
    started = time.perf_counter()
    await asyncio.gather(
        *(_client(host, port, share, accept, latencies, errors) for share in shares)
    )
    return time.perf_counter() - started, latencies, errors


def load(url: str, paths: list[str], connections: int, accept: str) -> dict[str, float]:
    """Requests/s and latency percentiles (ms) for ``paths``."""
    host, port = url.removeprefix("http://").split(":")
    wall, latencies, errors = asyncio.run(_load(host, int(port), paths, connections, accept))
    latencies.sort()

    def pct(p: float) -> float:
        return round(1000 * latencies[min(len(latencies) - 1, int(p * len(latencies)))], 2)

    return {
        "requests": len(latencies),
        "errors": len(errors),
        "wall_s": round(wall, 3),
        "rps": round(len(latencies) / wall),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "mean_ms": round(1000 * statistics.fmean(latencies), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=30_000)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--svg-labels", type=int, default=20_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    work = Path(tempfile.mkdtemp(prefix="provmint-serve-bench-"))
    env = {
        **os.environ,
        "PROVMINT_STORE": str(work / "store"),
        "PROVMINT_KEY_FILE": str(work / "keys.json"),
        "PROVMINT_CONFIG": str(work / "x.toml"),
    }
    (work / "x.toml").write_text("")
    figures: dict[str, object] = {"products": args.products}
    server = None
    try:

        def provmint(*argv: str) -> subprocess.CompletedProcess[str]:
            done = subprocess.run(
                [sys.executable, "-m", "provmint", *argv], env=env, capture_output=True, text=True
            )
            if done.returncode != 0:
                raise SystemExit(done.stderr)
            return done

        provmint("keys", "init")
        write_csv(work / "big.csv", args.products, seed=5)
        big = json.loads(provmint("batch", "create", str(work / "big.csv"), "--json").stdout)
        write_csv(work / "svg.csv", args.svg_labels, seed=6)
        small = json.loads(provmint("batch", "create", str(work / "svg.csv"), "--json").stdout)
        parts = sorted(
            (work / "store" / "batches" / big["batch_id"] / "products").glob("*.parquet")
        )
        urls = pc.utf8_slice_codeunits(
            pq.read_table(parts[0], columns=["url"]).column("url"), len("https://id.example.com")
        ).to_pylist()
        for part in parts[1:3]:
            urls += pc.utf8_slice_codeunits(
                pq.read_table(part, columns=["url"]).column("url"), len("https://id.example.com")
            ).to_pylist()
        rng = random.Random(1)
        paths = [rng.choice(urls) for _ in range(args.requests)]

        server = subprocess.Popen(
            [sys.executable, "-m", "provmint", "serve", "--port", "0"],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert server.stderr is not None
        line = server.stderr.readline()
        url = re.search(r"(http://127\.0\.0\.1:\d+)", line).group(1)  # type: ignore[union-attr]
        load(url, paths[:2000], args.connections, "application/json")  # warm the caches
        figures["serve_json"] = load(url, paths, args.connections, "application/json")
        figures["serve_html"] = load(url, paths, args.connections, "text/html")
        server.terminate()
        server.wait(10)
        server = None

        started = time.perf_counter()
        provmint("labels", small["batch_id"], "--out", str(work / "svg"), "--json")
        wall = time.perf_counter() - started
        figures["labels_svg"] = {
            "labels": args.svg_labels,
            "wall_s": round(wall, 3),
            "labels_per_s": round(args.svg_labels / wall),
        }
        started = time.perf_counter()
        provmint("labels", big["batch_id"], "--out", str(work / "csv"), "--format", "none")
        wall = time.perf_counter() - started
        figures["labels_csv_only"] = {
            "labels": args.products,
            "wall_s": round(wall, 3),
            "labels_per_s": round(args.products / wall),
        }
    finally:
        if server is not None:
            server.terminate()
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        for kind in ("serve_json", "serve_html"):
            f = figures[kind]
            assert isinstance(f, dict)
            print(
                f"{kind}: {f['rps']:,} requests/s, p50 {f['p50_ms']} ms, p99 {f['p99_ms']} ms "
                f"({f['requests']:,} requests, {args.connections} connections, "
                f"{f['errors']} non-200) over {args.products:,} products"
            )
        for kind in ("labels_svg", "labels_csv_only"):
            f = figures[kind]
            assert isinstance(f, dict)
            print(f"{kind}: {f['labels_per_s']:,} labels/s ({f['labels']:,} in {f['wall_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
