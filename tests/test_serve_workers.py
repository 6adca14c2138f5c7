"""``provmint serve --workers N``: several real processes on one port, and a replica
store picking up batches copied from the factory.

Workers are found by process inspection (psutil: the serve process's children and the
TCP connections each holds), never through anything the service answers. Checked: the
default is one worker per CPU; connections are answered by more than one worker;
SIGTERM and Ctrl-C stop every worker; no worker outlives a parent killed with SIGKILL;
a worker that dies is reported and replaced; workers that keep dying stop the service; a
worker that cannot start stops it with that error. Then the replica pickup: a batch
copied into a served replica in the README's order is answered within the refresh
interval, and nothing errors while the files arrive.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil
import pytest
from conftest import EXAMPLE_CSV, Server

from provmint.keys import init_keyring

GTIN = "09520123450014"
SERIAL = "546CAWQDCR56"
JSON = {"Accept": "application/json"}


@pytest.fixture
def launch() -> Any:
    """Start services with ``launch(*args)``; all are stopped after the test."""
    started: list[Server] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Server:
        server = Server(*args, env=env, one_worker=False, must_start=False)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def minted(cli, keyed) -> dict[str, Any]:
    r = cli("batch", "create", EXAMPLE_CSV, "--json")
    assert r.exit_code == 0, r.output
    shown = cli("product", "show", "--gtin", GTIN, "--serial", SERIAL, "--json")
    product = json.loads(shown.stdout)
    parts = urlsplit(product["url"])
    product["path"] = f"{parts.path}?{parts.query}"
    product["batch"] = json.loads(r.stdout)
    return product


def _gone(pids: list[int], timeout: float) -> list[int]:
    """The pids of ``pids`` still running after waiting up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [
            p
            for p in alive
            if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
        ]
        time.sleep(0.1)
    return alive


def _poll(fn: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


# --------------------------------------------------------------------------- workers


def test_default_is_one_worker_per_cpu(minted, launch) -> None:
    server = launch()
    assert len(server.workers()) == os.cpu_count()
    n = os.cpu_count()
    assert (f"with {n} workers" in server.stderr) if n and n > 1 else True, server.stderr
    assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200
    one = launch("--workers", "1")
    assert one.workers() == []  # serves in its own process
    assert httpx.get(one.url + "/healthz", timeout=10).status_code == 200


def test_connections_are_served_by_more_than_one_worker(minted, launch) -> None:
    server = launch("--workers", "3")
    workers = server.workers()
    assert len(workers) == 3
    parts = urlsplit(server.url)
    connections = []
    for _ in range(24):  # keep-alive connections, each answered once
        con = http.client.HTTPConnection(parts.hostname, parts.port, timeout=15)
        con.request("GET", minted["path"], headers=JSON)
        response = con.getresponse()
        assert response.status == 200 and json.loads(response.read())["logged"] is True
        connections.append(con)
    client_ports = {con.sock.getsockname()[1] for con in connections}
    serving: dict[int, set[int]] = {}
    for worker in workers:
        for c in worker.net_connections(kind="tcp"):
            if c.raddr and c.raddr.port in client_ports and c.laddr.port == parts.port:
                serving.setdefault(worker.pid, set()).add(c.raddr.port)
    for con in connections:
        con.close()
    assert sum(len(ports) for ports in serving.values()) == 24, serving
    assert len(serving) >= 2, f"every connection went to one worker: {serving}"
    # Every scan went to the one log, whichever worker answered.
    r = httpx.get(server.url + minted["path"], headers=JSON, timeout=10)
    assert r.json()["scans"] == {"count": 25}


@pytest.mark.parametrize("workers", ["2", "1"])
def test_sigterm_stops_every_worker(minted, launch, workers: str) -> None:
    server = launch("--workers", workers)
    pids = [w.pid for w in server.workers()]
    assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200
    server.proc.send_signal(signal.SIGTERM)
    assert server.wait(30) == 0
    assert _gone(pids, 5) == []
    assert "Traceback" not in server.stderr, server.stderr


def test_ctrl_c_stops_every_worker(minted, launch) -> None:
    server = launch("--workers", "2")
    pids = [w.pid for w in server.workers()]
    server.proc.send_signal(signal.SIGINT)
    assert server.wait(30) == 130
    assert _gone(pids, 5) == []
    assert "interrupted" in server.stderr and "Traceback" not in server.stderr, server.stderr


def test_no_worker_outlives_a_killed_parent(minted, launch) -> None:
    server = launch("--workers", "2")
    pids = [w.pid for w in server.workers()]
    assert len(pids) == 2
    server.proc.kill()
    server.wait(10)
    assert _gone(pids, 20) == [], "workers kept running after their parent was killed"


def test_a_dead_worker_is_reported_and_replaced(minted, launch) -> None:
    server = launch("--workers", "2")
    victim = server.workers()[0].pid
    os.kill(victim, signal.SIGKILL)
    assert _poll(
        lambda: len(server.workers()) == 2 and victim not in [w.pid for w in server.workers()], 30
    )
    assert _poll(
        lambda: f"(pid {victim}) killed by signal SIGKILL; starting a new one" in server.stderr, 10
    ), server.stderr
    for _ in range(6):  # whichever worker answers
        r = httpx.get(server.url + minted["path"], headers=JSON, timeout=10)
        assert r.status_code == 200
    assert server.proc.poll() is None


def test_workers_that_keep_dying_stop_the_service(minted, launch) -> None:
    server = launch("--workers", "2")
    killed: set[int] = set()
    deadline = time.monotonic() + 60
    while server.proc.poll() is None and time.monotonic() < deadline:
        for worker in server.workers():
            if worker.pid not in killed:
                killed.add(worker.pid)
                os.kill(worker.pid, signal.SIGKILL)
        time.sleep(0.05)
    assert server.wait(30) == 1
    assert "workers keep dying (5 exits in 60 s" in server.stderr, server.stderr
    assert "Traceback" not in server.stderr
    assert _gone(list(killed), 10) == []


def test_a_worker_that_cannot_start_stops_the_service(minted, launch, tmp_path: Path) -> None:
    other_keys = tmp_path / "other" / "keys.json"
    init_keyring(other_keys)
    for workers in ("2", "1"):
        server = launch("--workers", workers, "--key-file", str(other_keys))
        assert server.wait(60) == 9, server.stderr
        errors = [ln for ln in server.stderr.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and "lacks key" in errors[0], server.stderr
        assert "Traceback" not in server.stderr


def test_port_in_use_is_one_clear_error(minted, launch) -> None:
    first = launch("--workers", "2")
    port = urlsplit(first.url).port
    for workers in ("2", "1"):
        r = subprocess.run(
            [sys.executable, "-m", "provmint", "serve", "--port", str(port), "--workers", workers],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 1, r.stderr
        assert r.stderr.startswith(
            f"error: cannot listen on 127.0.0.1:{port}: address already in use"
        ), r.stderr
        assert "Traceback" not in r.stderr


# --------------------------------------------------------------------------- replica pickup


def _rsync_file(source: Path, target: Path) -> None:
    """One file as ``rsync -a`` copies it: skipped when size and time match, otherwise
    written under a temporary name and renamed over the old one (never rewritten in
    place, which a reader holding it memory-mapped would see torn)."""
    if target.exists():
        old, new = target.stat(), source.stat()
        if (old.st_size, old.st_mtime_ns) == (new.st_size, new.st_mtime_ns):
            return
    temporary = target.with_name(f".{target.name}.incoming")
    shutil.copy2(source, temporary)
    os.replace(temporary, target)


def copy_to_replica(factory: Path, replica: Path) -> None:
    """The README's copy, step for step (there: rsync under ``flock -s`` on the store's
    lock): everything but the lock, the catalog and the scan log first (batches are
    immutable and appear whole), then the catalog and its snapshot, so that a reader
    never finds a catalog row before its files."""
    first = [
        path
        for path in sorted(factory.rglob("*"))
        if path.is_file()
        and not (
            path.parent == factory
            and (path.name == ".lock" or path.name.startswith(("catalog.", "scans.sqlite")))
        )
    ]
    for path in first:
        target = replica / path.relative_to(factory)
        target.parent.mkdir(parents=True, exist_ok=True)
        _rsync_file(path, target)
    assert not (factory / "catalog.duckdb.wal").exists()  # no writer running
    for name in ("catalog.duckdb", "catalog.view.json"):
        if (factory / name).exists():
            _rsync_file(factory / name, replica / name)


def test_a_replica_picks_up_a_copied_batch(cli, keyed, launch, write_csv, tmp_path: Path) -> None:
    factory = tmp_path / "store"
    replica = tmp_path / "replica"
    assert cli("batch", "create", EXAMPLE_CSV).exit_code == 0
    replica.mkdir()
    copy_to_replica(factory, replica)
    old_path = _path_of(cli, SERIAL)
    server = launch("--store", str(replica), "--workers", "2")
    assert httpx.get(server.url + old_path, headers=JSON, timeout=10).status_code == 200

    # The factory mints a second batch; a reader polls the replica during the copy.
    later = write_csv(
        "later.csv",
        "gtin,serial,lot,product_name\n"
        f"{GTIN},LATER0001,L9,Late Lotion\n"
        f"{GTIN},LATER0002,L9,Late Lotion\n",
    )
    r = cli("batch", "create", later, "--json")
    assert r.exit_code == 0, r.output
    new_batch = json.loads(r.stdout)["batch_id"]
    new_path = _path_of(cli, "LATER0002")
    seen: list[tuple[str, int]] = []
    stop = threading.Event()

    def poll() -> None:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            while not stop.is_set():
                for name, path in (("old", old_path), ("new", new_path), ("health", "/healthz")):
                    seen.append((name, client.get(path, headers=JSON).status_code))

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        time.sleep(0.5)
        copy_to_replica(factory, replica)
        copied = time.monotonic()
        answered = _poll(
            lambda: (
                (x := httpx.get(server.url + new_path, headers=JSON, timeout=10)).status_code == 200
                and x
            ),
            10,
        )
        waited = time.monotonic() - copied
        time.sleep(3)  # every worker has refreshed by now
    finally:
        stop.set()
        reader.join(30)
    assert answered, "the replica never answered for the copied batch"
    assert answered.json()["batch_id"] == new_batch
    assert waited < 2.0 + 2.0  # the refresh interval, and a margin for a loaded machine
    assert seen, "the poller made no request"
    assert {code for name, code in seen if name in ("old", "health")} == {200}, seen
    new_codes = [code for name, code in seen if name == "new"]
    assert set(new_codes) <= {404, 200}, new_codes  # unknown, then found: never an error
    assert new_codes[-1] == 200
    first_found = new_codes.index(200)
    assert set(new_codes[first_found:]) == {200}, "an answer for the new batch went away"
    err = server.stderr
    assert "Traceback" not in err and "error" not in err, err


def _path_of(cli, serial: str) -> str:
    r = cli("product", "show", "--gtin", GTIN, "--serial", serial, "--json")
    assert r.exit_code == 0, r.output
    parts = urlsplit(json.loads(r.stdout)["url"])
    return f"{parts.path}?{parts.query}"
