#!/usr/bin/env python3
"""Benchmark the verification service and the consumer commands at store scale (issue 8).

For each ``--products`` size it mints a store of that many products with ``provmint
batch create`` (a CSV from ``scripts/make_products.py``, one batch), then measures:

- startup: from launching ``provmint serve --port 0`` (``--workers``, default the CPU
  count) until ``/healthz`` answers 200;
- load: ``wrk`` (the reference load generator, as in the issue: 2 threads, 32 keep-alive
  connections, 20 s) over ``--paths`` random valid verification paths sampled from the
  whole store (every Parquet part of every batch), once with ``Accept:
  application/json`` and once with ``text/html``: requests/s, p50, p99 and errors
  (responses other than 200, and socket errors and timeouts);
- the RSS of the serve process tree (the parent and its workers) after the load;
- whole-process wall time (median of ``--runs``, one random product per run) of
  ``provmint product show --gtin G --serial S``, ``provmint scan URL`` and ``provmint
  proof export --gtin G --serial S -o /dev/null``, with the server stopped;
- with ``--labels``: ``provmint labels`` in SVG on a small batch of its own, and CSV-only
  on each size's batch.

Scans go to a fresh SQLite scan log per size (``PROVMINT_SCAN_LOG``), outside the store,
so a store kept with ``--keep`` is reused as minted. wrk runs a Lua script (written to
the work directory) that picks a random path per request and prints its figures as one
JSON line from ``done()``.

    python benchmarks/bench_serve.py --products 1000000
    python benchmarks/bench_serve.py --products 1000000 10000000 --keep /var/tmp/serve-stores
    python benchmarks/bench_serve.py --products 100000 --duration 5 --json
    python benchmarks/bench_serve.py --products 1000000 --keep /var/tmp/serve-stores --metrics-ab 5

Targets (issue 8, 2-core machine, at 10M products): startup <= 2 s; JSON >= 2,000
requests/s with p99 <= 50 ms; serve process tree <= 1 GB RSS; each command <= 0.35 s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from make_products import write_csv  # noqa: E402

PROVMINT = [sys.executable, "-m", "provmint"]
ORIGIN = "https://id.example.com"
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no http_proxy
ACCEPTS = {"json": "application/json", "html": "text/html"}
TARGETS = {
    "at_products": 10_000_000,
    "startup_s": 2.0,
    "json_rps_min": 2_000,
    "json_p99_ms": 50.0,
    "serve_rss_mb": 1024.0,
    "command_s": 0.35,
}
WRK_MARK = "BENCH_SERVE_JSON "
WRK_SCRIPT = """\
-- Written by benchmarks/bench_serve.py: a random path from args[1] per request; counts
-- responses other than 200 per thread and prints the figures as one JSON line.
local threads = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
  table.insert(threads, thread)
end

function init(args)
  paths = {}
  for line in io.lines(args[1]) do paths[#paths + 1] = line end
  math.randomseed(tonumber(args[2]) + 7919 * id)
  non200 = 0
end

function request()
  return wrk.format("GET", paths[math.random(#paths)])
end

function response(status, headers, body)
  if status ~= 200 then non200 = non200 + 1 end
end

function done(summary, latency, requests)
  local non = 0
  for _, thread in ipairs(threads) do non = non + thread:get("non200") end
  local e = summary.errors
  io.write(string.format(
    '%s{"requests":%d,"duration_us":%d,"non_200":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"mean_us":%.1f}\\n',
    "MARK", summary.requests, summary.duration, non, e.connect, e.read, e.write,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
""".replace("MARK", WRK_MARK)


@dataclass(frozen=True)
class Sample:
    """One product picked at random from the store."""

    gtin: str
    serial: str
    path: str  # the verification URL without its origin, as a request target


@dataclass(frozen=True)
class SizedStore:
    """A minted store of ``products`` products and the environment that reaches it."""

    products: int
    root: Path
    batch_id: str
    env: dict[str, str]

    @property
    def store(self) -> Path:
        """The store directory."""
        return self.root / "store"


@dataclass
class Load:
    """One wrk run's figures."""

    accept: str
    requests: int
    duration_s: float
    rps: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    non_200: int
    socket_errors: int

    @property
    def errors(self) -> int:
        """Responses other than 200 plus socket errors and timeouts."""
        return self.non_200 + self.socket_errors


@dataclass
class Figures:
    """Everything measured at one size."""

    products: int
    batch_id: str
    workers: int
    startup_s: float
    load: dict[str, Load]
    serve_rss_mb: float
    commands_s: dict[str, float]
    command_runs_s: dict[str, list[float]]
    labels: dict[str, dict[str, float]] = field(default_factory=dict)


def provmint(env: dict[str, str], *argv: str, ok: frozenset[int] = frozenset({0})) -> str:
    """Run ``provmint argv`` in ``env``; its stdout, or exit with its stderr on failure."""
    done = subprocess.run([*PROVMINT, *argv], env=env, capture_output=True, text=True)
    if done.returncode not in ok:
        raise SystemExit(f"provmint {' '.join(argv)} failed ({done.returncode}):\n{done.stderr}")
    return done.stdout


def note(message: str) -> None:
    """Progress on stderr (a 10M run takes a while)."""
    print(f"[bench_serve] {message}", file=sys.stderr, flush=True)


def prepare_store(root: Path, products: int, scan_log: Path) -> SizedStore:
    """A store of ``products`` products under ``root``: reused when ``root/batch.json``
    says it was minted completely, else minted into an empty ``root``."""
    env = {
        **os.environ,
        "PROVMINT_STORE": str(root / "store"),
        "PROVMINT_KEY_FILE": str(root / "keys.json"),
        "PROVMINT_CONFIG": str(root / "bench.toml"),
        "PROVMINT_URL_BASE": ORIGIN,
        "PROVMINT_SCAN_LOG": f"sqlite:{scan_log}",
    }
    marker = root / "batch.json"
    root.mkdir(parents=True, exist_ok=True)
    # wrk is one client sending thousands of requests a second: the per-client rate
    # limit (60 a minute by default) would answer nearly all of them 429.
    (root / "bench.toml").write_text("[serve]\nrate_limit = 0\n")
    if marker.exists():
        batch = json.loads(marker.read_text())
        note(f"{products:,} products: reusing {root} (batch {batch['batch_id']})")
        return SizedStore(products, root, batch["batch_id"], env)
    if any(p.name != "bench.toml" for p in root.iterdir()):
        raise SystemExit(f"{root} holds files but no batch.json (an unfinished mint?); remove it")
    provmint(env, "keys", "init")
    csv = root / "products.csv"
    note(f"{products:,} products: writing the CSV")
    write_csv(csv, products, seed=5)
    note(f"{products:,} products: minting into {root / 'store'}")
    started = time.perf_counter()
    out = provmint(env, "batch", "create", str(csv), "--json")
    csv.unlink()
    batch = json.loads(out)
    if batch["products"] != products:
        raise SystemExit(f"minted {batch['products']:,} of {products:,} products")
    note(f"{products:,} products: minted in {time.perf_counter() - started:.1f} s")
    marker.write_text(out)
    return SizedStore(products, root, batch["batch_id"], env)


def sample_products(store: Path, count: int, seed: int) -> list[Sample]:
    """``count`` distinct products drawn uniformly from every Parquet part of the store
    (all of them if it holds fewer), in random order; one part in memory at a time."""
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    parts = sorted(store.glob("batches/*/products/*.parquet"))
    rows = np.array([pq.ParquetFile(part).metadata.num_rows for part in parts], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(rows)])
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(int(starts[-1]), size=min(count, int(starts[-1])), replace=False))
    samples: list[Sample] = []
    for i, part in enumerate(parts):
        local = picks[(picks >= starts[i]) & (picks < starts[i + 1])] - starts[i]
        if local.size == 0:
            continue
        table = pq.read_table(part, columns=["gtin", "serial", "url"]).take(local)
        urls = table.column("url")
        if not pc.all(pc.starts_with(urls, ORIGIN + "/")).as_py():
            raise SystemExit(f"{part}: a url does not start with {ORIGIN}/")
        paths = pc.utf8_slice_codeunits(urls, len(ORIGIN)).to_pylist()
        gtins = table.column("gtin").to_pylist()
        serials = table.column("serial").to_pylist()
        samples += [Sample(g, s, p) for g, s, p in zip(gtins, serials, paths, strict=True)]
    order = rng.permutation(len(samples))
    return [samples[i] for i in order]


class Server:
    """A ``provmint serve --port 0`` process tree; its stderr is drained by a thread."""

    def __init__(
        self, env: dict[str, str], workers: int | None, extra: tuple[str, ...] = ()
    ) -> None:
        """Launch the server; ``started`` is the launch instant (``time.perf_counter``)."""
        argv = [*PROVMINT, "serve", "--port", "0", *extra]
        if workers is not None:
            argv += ["--workers", str(workers)]
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            argv,
            env={**env, "COLUMNS": "1000"},  # one line for the "Serving ... on URL" message
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.bound = threading.Event()
        self.url = ""
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            found = re.search(r"(http://[\d.]+:\d+)", line)
            if found and not self.url:
                self.url = found.group(1)
                self.bound.set()
        self.bound.set()  # the process ended: wake a waiter

    def wait_healthy(self, timeout: float = 300.0) -> float:
        """Seconds from launch until ``/healthz`` answers 200."""
        deadline = self.started + timeout
        if not self.bound.wait(timeout) or not self.url:
            raise SystemExit("provmint serve did not start:\n" + "".join(self.lines))
        while time.perf_counter() < deadline:
            # refused, reset, or 503 (an HTTPError): not yet
            with contextlib.suppress(OSError), DIRECT.open(self.url + "/healthz", timeout=5) as r:
                if r.status == 200:
                    return time.perf_counter() - self.started
            if self.proc.poll() is not None:
                break
            time.sleep(0.005)
        raise SystemExit("provmint serve never became healthy:\n" + "".join(self.lines))

    def workers(self) -> int:
        """How many worker processes the server runs (1 when it serves by itself)."""
        return len(psutil.Process(self.proc.pid).children(recursive=True)) or 1

    def tree_rss_mb(self) -> float:
        """Sum of the RSS of the server and all its descendants, in MB."""
        root = psutil.Process(self.proc.pid)
        total = 0
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total / 2**20

    def stop(self) -> None:
        """SIGTERM (the server stops its workers), SIGKILL after 20 s."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def run_wrk(
    url: str, paths_file: Path, accept: str, args: argparse.Namespace, seconds: int
) -> Load:
    """One wrk run of ``seconds`` against ``url`` with random paths from ``paths_file``."""
    script = paths_file.with_name("random_paths.lua")
    script.write_text(WRK_SCRIPT)
    argv = [
        args.wrk,
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{seconds}s",
        f"--timeout={args.timeout}s",
        "--latency",
        "-H",
        f"Accept: {accept}",
        "-s",
        str(script),
        url,
        "--",
        str(paths_file),
        str(args.seed),
    ]
    done = subprocess.run(argv, capture_output=True, text=True)
    lines = [x for x in done.stdout.splitlines() if x.startswith(WRK_MARK)]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    raw: dict[str, Any] = json.loads(lines[0].removeprefix(WRK_MARK))
    duration = raw["duration_us"] / 1e6
    return Load(
        accept=accept,
        requests=raw["requests"],
        duration_s=round(duration, 3),
        rps=round(raw["requests"] / duration),
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        mean_ms=round(raw["mean_us"] / 1000, 3),
        non_200=raw["non_200"],
        socket_errors=sum(raw[k] for k in ("connect", "read", "write", "timeout")),
    )


def measure_serve(
    sized: SizedStore, paths_file: Path, args: argparse.Namespace
) -> tuple[float, int, dict[str, Load], float]:
    """Startup seconds, workers, the wrk runs by kind and the tree RSS (MB) after them."""
    server = Server(sized.env, args.workers)
    try:
        startup = server.wait_healthy()
        note(f"{sized.products:,} products: healthy after {startup:.2f} s at {server.url}")
        if args.warmup > 0:
            run_wrk(server.url, paths_file, ACCEPTS["json"], args, args.warmup)
        loads: dict[str, Load] = {}
        for kind, accept in ACCEPTS.items():
            loads[kind] = run_wrk(server.url, paths_file, accept, args, args.duration)
            note(
                f"{sized.products:,} products, {kind}: {loads[kind].rps:,} requests/s, "
                f"p99 {loads[kind].p99_ms} ms, {loads[kind].errors} errors"
            )
        return startup, server.workers(), loads, server.tree_rss_mb()
    finally:
        server.stop()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def metrics_cost(sized: SizedStore, paths_file: Path, args: argparse.Namespace) -> dict[str, Any]:
    """JSON requests/s with ``--metrics-port`` off and on: ``args.metrics_ab`` pairs of
    runs, alternating which goes first (the machine's noise drifts), a fresh service per
    run, one scrape per on-run (the counts must match wrk's)."""
    rps: dict[str, list[int]] = {"off": [], "on": []}
    p99: dict[str, list[float]] = {"off": [], "on": []}
    for i in range(args.metrics_ab):
        for mode in ("off", "on") if i % 2 == 0 else ("on", "off"):
            port = free_port()
            extra = ("--metrics-port", str(port)) if mode == "on" else ()
            server = Server(sized.env, args.workers, extra)
            try:
                server.wait_healthy()
                if args.warmup > 0:
                    run_wrk(server.url, paths_file, ACCEPTS["json"], args, args.warmup)
                load = run_wrk(server.url, paths_file, ACCEPTS["json"], args, args.duration)
                if mode == "on":
                    with DIRECT.open(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
                        text = r.read().decode()
                    counted = sum(
                        float(line.rsplit(" ", 1)[1])
                        for line in text.splitlines()
                        if line.startswith("provmint_http_requests_total{")
                        and 'route="/01/' in line
                    )
                    note(f"  scrape counted {counted:,.0f} code requests ({len(text):,} bytes)")
            finally:
                server.stop()
            rps[mode].append(load.rps)
            p99[mode].append(load.p99_ms)
            note(f"metrics {mode}, run {i + 1}: {load.rps:,} requests/s, p99 {load.p99_ms} ms")
    off, on = statistics.median(rps["off"]), statistics.median(rps["on"])
    return {
        "requests_per_s": rps,
        "p99_ms": p99,
        "median_off": off,
        "median_on": on,
        "cost_percent": round(100 * (off - on) / off, 1),
    }


def time_commands(sized: SizedStore, samples: list[Sample], runs: int) -> dict[str, list[float]]:
    """Whole-process wall seconds of product show, scan and proof export, one random
    product per run."""
    walls: dict[str, list[float]] = {"product_show": [], "scan": [], "proof_export": []}
    # As installed by pip: bytecode cached (an environment that sets
    # PYTHONDONTWRITEBYTECODE would compile every module on every run).
    env = {k: v for k, v in sized.env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    for i, sample in enumerate(samples[: runs + 1]):  # the first (untimed) writes them
        key = ("--gtin", sample.gtin, "--serial", sample.serial)
        commands: dict[str, tuple[tuple[str, ...], frozenset[int]]] = {
            "product_show": (("product", "show", *key), frozenset({0})),
            # 4: genuine but not anchored (the batch is not), 11: suspect
            "scan": (("scan", ORIGIN + sample.path), frozenset({0, 4, 11})),
            "proof_export": (("proof", "export", *key, "-o", os.devnull), frozenset({0})),
        }
        for name, (argv, ok) in commands.items():
            started = time.perf_counter()
            provmint(env, *argv, ok=ok)
            if i:
                walls[name].append(round(time.perf_counter() - started, 4))
    return walls


def time_labels(env: dict[str, str], batch_id: str, out: Path, fmt: str) -> float:
    """Wall seconds of ``provmint labels`` of a batch into ``out`` (removed after)."""
    started = time.perf_counter()
    provmint(env, "labels", batch_id, "--out", str(out), "--format", fmt, "--json")
    wall = time.perf_counter() - started
    shutil.rmtree(out)
    return wall


def measure_size(sized: SizedStore, work: Path, args: argparse.Namespace) -> Figures:
    """All the figures of one size."""
    samples = sample_products(sized.store, args.paths, args.seed)
    if not samples:
        raise SystemExit(f"{sized.store} holds no products")
    paths_file = work / "paths.txt"
    paths_file.write_text("".join(s.path + "\n" for s in samples))
    note(f"{sized.products:,} products: {len(samples):,} random paths from the whole store")
    if args.metrics_ab:
        cost = metrics_cost(sized, paths_file, args)
        print(json.dumps(cost, indent=2))
        raise SystemExit(0)
    startup, workers, loads, rss = measure_serve(sized, paths_file, args)
    runs = time_commands(sized, samples, args.runs)
    figures = Figures(
        products=sized.products,
        batch_id=sized.batch_id,
        workers=workers,
        startup_s=round(startup, 3),
        load=loads,
        serve_rss_mb=round(rss, 1),
        commands_s={name: statistics.median(walls) for name, walls in runs.items()},
        command_runs_s=runs,
    )
    if args.labels:
        wall = time_labels(sized.env, sized.batch_id, work / "labels-csv", "none")
        figures.labels["csv_only"] = {
            "labels": sized.products,
            "wall_s": round(wall, 3),
            "labels_per_s": round(sized.products / wall),
        }
    return figures


def svg_labels(work: Path, count: int) -> dict[str, float]:
    """``provmint labels`` in SVG on a batch of ``count`` products in a store of its own."""
    sized = prepare_store(work / "svg-store", count, work / "svg-scans.sqlite")
    wall = time_labels(sized.env, sized.batch_id, work / "labels-svg", "svg")
    shutil.rmtree(sized.root)
    return {"labels": count, "wall_s": round(wall, 3), "labels_per_s": round(count / wall)}


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    """A temporary directory, removed on the way out."""
    path = Path(tempfile.mkdtemp(prefix="provmint-serve-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every size; the report as a JSON-ready dict."""
    sizes: list[Figures] = []
    report: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "wrk": {"threads": args.threads, "connections": args.connections},
        "duration_s": args.duration,
        "paths": args.paths,
        "command_runs": args.runs,
        "targets": TARGETS,
    }
    with scratch() as work:
        for products in args.products:
            keep = args.keep / f"products-{products}" if args.keep else None
            with scratch() as temp:
                scans = work / f"scans-{products}.sqlite"
                sized = prepare_store(keep or temp / "stores", products, scans)
                sizes.append(measure_size(sized, work, args))
                scans.unlink(missing_ok=True)
        if args.labels:
            report["labels_svg"] = svg_labels(work, args.svg_labels)
    report["sizes"] = [
        asdict(f) | {"load": {k: asdict(v) | {"errors": v.errors} for k, v in f.load.items()}}
        for f in sizes
    ]
    return report


def print_table(report: dict[str, Any]) -> None:
    """One row per size, then the targets."""
    w = report["wrk"]
    print(
        f"provmint serve under wrk ({w['threads']} threads, {w['connections']} connections, "
        f"{report['duration_s']:g} s, {report['paths']:,} random paths from the whole store); "
        f"latency in ms; commands: median of {report['command_runs']} whole processes"
    )
    heads = ["products", "workers", "startup s", "json rps", "json p50", "json p99", "html rps"]
    heads += ["html p99", "errors", "serve MB", "show s", "scan s", "proof s"]
    print(" ".join(f"{h:>10}" for h in heads))
    for f in report["sizes"]:
        js, html, cmd = f["load"]["json"], f["load"]["html"], f["commands_s"]
        cells = [
            f"{f['products']:,}",
            str(f["workers"]),
            f"{f['startup_s']:.2f}",
            f"{js['rps']:,}",
            f"{js['p50_ms']:.2f}",
            f"{js['p99_ms']:.2f}",
            f"{html['rps']:,}",
            f"{html['p99_ms']:.2f}",
            str(js["errors"] + html["errors"]),
            f"{f['serve_rss_mb']:.0f}",
            f"{cmd['product_show']:.3f}",
            f"{cmd['scan']:.3f}",
            f"{cmd['proof_export']:.3f}",
        ]
        print(" ".join(f"{c:>10}" for c in cells))
    t = TARGETS
    print(
        f"targets at {t['at_products']:,}: startup <= {t['startup_s']} s, json >= "
        f"{t['json_rps_min']:,} requests/s with p99 <= {t['json_p99_ms']:g} ms, 0 errors, "
        f"serve <= {t['serve_rss_mb']:g} MB, each command <= {t['command_s']} s"
    )
    for f in report["sizes"]:
        if "csv_only" in f["labels"]:
            lab = f["labels"]["csv_only"]
            print(f"labels CSV-only: {lab['labels_per_s']:,} labels/s ({lab['labels']:,})")
    if "labels_svg" in report:
        lab = report["labels_svg"]
        print(f"labels SVG: {lab['labels_per_s']:,} labels/s ({lab['labels']:,})")


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--products", type=int, nargs="+", default=[1_000_000, 10_000_000], help="store sizes"
    )
    parser.add_argument("--connections", type=int, default=32, help="wrk keep-alive connections")
    parser.add_argument("--duration", type=int, default=20, help="seconds per wrk run")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--timeout", type=int, default=10, help="wrk request timeout (s)")
    parser.add_argument("--warmup", type=int, default=3, help="unreported wrk run (s)")
    parser.add_argument("--paths", type=int, default=20_000, help="random verification paths")
    parser.add_argument("--runs", type=int, default=5, help="runs per timed command")
    parser.add_argument("--workers", type=int, help="serve --workers (default: its own)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the random picks")
    parser.add_argument("--wrk", default=shutil.which("wrk") or "/usr/bin/wrk")
    parser.add_argument("--labels", action="store_true", help="also time provmint labels")
    parser.add_argument("--svg-labels", type=int, default=20_000, help="SVG batch size")
    parser.add_argument(
        "--keep",
        type=Path,
        help="keep each store in KEEP/products-N and reuse it on later runs",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--metrics-ab",
        type=int,
        default=0,
        metavar="PAIRS",
        help="only measure JSON requests/s with serve --metrics-port off vs on, PAIRS "
        "alternating pairs of runs (of the first --products size)",
    )
    return parser.parse_args()


def main() -> int:
    """Run the benchmark and print its report."""
    args = parse_args()
    if not Path(args.wrk).exists():
        raise SystemExit(f"wrk not found at {args.wrk} (apt-get install wrk)")
    report = run(args)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
