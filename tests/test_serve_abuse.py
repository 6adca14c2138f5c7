"""The public service under abuse, over real HTTP: a locked scan log stalls nothing (each
answer waits a bounded time, /healthz and other codes answer at once), and a forged
code (a real serial with a made-up token) takes the same time as an unknown one, so
timing does not tell which serials exist."""

from __future__ import annotations

import asyncio
import sqlite3
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
from conftest import EXAMPLE_CSV
from test_serve import JSON, SERIAL, _fake_token, _ok, _path, _product, _with_token

from provmint.server import LOG_WAIT_SECONDS


def _minted(cli) -> dict[str, Any]:
    _ok(cli("batch", "create", EXAMPLE_CSV, "--json"))
    product = _product(cli)
    product["path"] = _path(product["url"])
    return product


def test_a_locked_scan_log_stalls_nothing(cli, keyed, serve_store, tmp_path: Path) -> None:
    example = _minted(cli)
    server = serve_store()
    url = server.url + example["path"]
    unknown = server.url + example["path"].replace(SERIAL, "NOSUCHSERIAL1")
    assert httpx.get(url, headers=JSON, timeout=10).json()["logged"] is True

    holder = sqlite3.connect(tmp_path / "store" / "scans.sqlite", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process holds the write lock

    async def meanwhile() -> tuple[httpx.Response, float, httpx.Response, float, float]:
        async with httpx.AsyncClient(timeout=40) as client:
            started = time.monotonic()
            scan = asyncio.create_task(client.get(url, headers=JSON))
            await asyncio.sleep(0.3)  # the scan is now waiting on the lock
            other = await client.get(unknown, headers=JSON)
            other_took = time.monotonic() - started - 0.3
            assert other.status_code == 404
            health = await client.get(server.url + "/healthz")
            health_took = time.monotonic() - started - 0.3
            answered = await scan
            return answered, time.monotonic() - started, health, health_took, other_took

    try:
        answered, took, health, health_took, other_took = asyncio.run(meanwhile())
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    # The waiting scan held up nothing: another code is answered at once...
    assert other_took < 1.0
    # ...and the scan itself is answered within its bound (not SQLite's 30 s), with its
    # verdict and the notice that it was not logged.
    assert answered.status_code == 503 and took < LOG_WAIT_SECONDS + 2.0, took
    body = answered.json()
    assert body["verdict"] == "pending" and body["logged"] is False
    assert health.status_code == 503 and health_took < LOG_WAIT_SECONDS + 2.0
    assert health.json()["scans_not_logged"] >= 1
    # Once the lock is gone, scans are logged again.
    deadline = time.monotonic() + 40
    while not httpx.get(url, headers=JSON, timeout=40).json()["logged"]:
        assert time.monotonic() < deadline, "scans were not logged again"
    assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200


def test_forged_and_unknown_codes_take_the_same_time(cli, keyed, serve_store) -> None:
    """Means within 10% over 1,500 requests each, interleaved (the machine's noise hits
    both alike). Both answers are also identical."""
    example = _minted(cli)
    server = serve_store()
    forged = server.url + _with_token(example["path"], _fake_token(example["token"]))
    unknown = forged.replace(SERIAL, "NOSUCHSERIAL1")
    times: dict[str, list[float]] = {"forged": [], "unknown": []}
    bodies: dict[str, set[str]] = {"forged": set(), "unknown": set()}
    with httpx.Client(timeout=10, headers=JSON) as client:
        for _ in range(50):  # warm up: connections, caches, the index
            client.get(forged)
            client.get(unknown)
        for i in range(3000):
            kind = ("forged", "unknown")[(i + i // 2) % 2]  # f u u f f u u f ...
            started = time.perf_counter()
            r = client.get(forged if kind == "forged" else unknown)
            times[kind].append(time.perf_counter() - started)
            assert r.status_code == 404
            bodies[kind].add(r.text)
    assert bodies["forged"] == bodies["unknown"]
    forged_mean, unknown_mean = (statistics.fmean(times[k]) for k in ("forged", "unknown"))
    assert abs(forged_mean - unknown_mean) <= 0.10 * min(forged_mean, unknown_mean), (
        f"forged {forged_mean * 1e3:.3f} ms, unknown {unknown_mean * 1e3:.3f} ms"
    )
