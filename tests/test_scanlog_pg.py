"""The scan log on both backends (SQLite in the store, a real PostgreSQL server), and
replicas of the verification service sharing one PostgreSQL scan log.

The PostgreSQL server is real (conftest.py's ``postgres`` fixture: Debian's binaries,
``initdb`` and ``pg_ctl`` in a temp dir); these tests fail, never skip, without it.
Checked: counts, places, first scan and history on both backends; the counters agree with
the scan rows after concurrent writers, concurrent migrations and pruning; the clone
query reads one indexed row; ``provmint scans prune``; two ``provmint serve`` replicas on
one store and one database share counts and the clone flag; a PostgreSQL outage and a
read-only store answer 503 saying the scan was not logged, never a traceback.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
from conftest import EXAMPLE_CSV, Postgres, Server
from helpers import one_error

from provmint.config import resolve_settings
from provmint.errors import EXIT_PENDING, EXIT_SUSPECT
from provmint.store.scanlog import SCHEMA_VERSION, ScanLog, ScanLogError, open_scan_log
from provmint.store.scanlog.sqlite import SqliteScanLog

GTIN = "09520123450014"
SERIAL = "546CAWQDCR56"
OTHER_SERIAL = "X67Y29DHPXTS"
JSON = {"Accept": "application/json"}
GOOD = ("genuine", "pending", "suspect")


def _sqlite(tmp_path: Path) -> ScanLog:
    return SqliteScanLog(tmp_path / "scans.sqlite")


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str | None]]:
    """(kind, scan_log setting) for each backend: None is the store's SQLite file."""
    if request.param == "sqlite":
        yield "sqlite", "sqlite:" + str(tmp_path / "scans.sqlite")
    else:
        yield "postgresql", request.getfixturevalue("pg_url")


@pytest.fixture
def log(backend: tuple[str, str | None], tmp_path: Path) -> Iterator[ScanLog]:
    """An empty scan log of each backend."""
    opened = open_scan_log(resolve_settings(scan_log=backend[1]))
    yield opened
    opened.close()


def _rows(backend: tuple[str, str | None]) -> list[tuple[Any, ...]]:
    """Every scan row, oldest first: (gtin, serial, verdict, location, source)."""
    kind, url = backend
    sql = "SELECT gtin, serial, verdict, location, source FROM scans ORDER BY id"
    if kind == "sqlite":
        assert url is not None
        con = sqlite3.connect(url[len("sqlite:") :])
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()
    with psycopg.connect(url) as con:
        return con.execute(sql).fetchall()


def _recount(backend: tuple[str, str | None]) -> dict[tuple[str, str], tuple[int, int, int]]:
    """(good, all, places) per code, counted from the scan rows themselves."""
    out: dict[tuple[str, str], tuple[int, int, int]] = {}
    rows = _rows(backend)
    for gtin, serial in {(r[0], r[1]) for r in rows}:
        mine = [r for r in rows if (r[0], r[1]) == (gtin, serial)]
        good = [r for r in mine if r[2] in GOOD]
        places = {r[3] for r in good if r[3] is not None}
        out[(gtin, serial)] = (len(good), len(mine), len(places))
    return out


def _counters(log: ScanLog, codes: set[tuple[str, str]]) -> dict[tuple[str, str], tuple[int, ...]]:
    out = {}
    for gtin, serial in codes:
        stats = log.stats(gtin, serial, recent=0)
        if stats.all_scans:
            out[(gtin, serial)] = (stats.count, stats.all_scans, stats.places)
    return out


# --------------------------------------------------------------------------- the log itself


def test_counts_places_and_history(log: ScanLog, backend) -> None:
    t0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    plan = [
        ("pending", None),
        ("pending", "Dock 1"),
        ("forged", "Lagos"),
        ("genuine", "Dock 1"),
        ("forged", None),
        ("suspect", "Dock 2"),
    ]
    for i, (verdict, place) in enumerate(plan):
        stats = log.record(
            GTIN, SERIAL, verdict, location=place, source="cli", at=t0 + timedelta(minutes=i)
        )
    assert stats.count == 4  # forged scans never count towards copies...
    assert stats.all_scans == 6  # ...but every scan is logged
    assert stats.places == 2 and stats.locations == ("Dock 1", "Dock 2")  # not Lagos
    assert stats.first_seen == "2026-01-01T12:00:00.000000Z"
    assert [s.verdict for s in stats.recent] == [v for v, _ in reversed(plan)]
    assert stats.recent[0].at == "2026-01-01T12:05:00.000000Z"
    # Another code is separate; stats() reads without logging.
    other = log.record(GTIN, OTHER_SERIAL, "pending", location="Oslo", source="serve", recent=0)
    assert (other.count, other.all_scans, other.places, other.recent) == (1, 1, 1, ())
    again = log.stats(GTIN, SERIAL, recent=2)
    assert (again.count, again.all_scans, len(again.recent)) == (4, 6, 2)
    assert len(_rows(backend)) == 7
    assert log.stats("00000000000000", "NONE").all_scans == 0


def test_many_places_are_counted_and_some_listed(log: ScanLog) -> None:
    t0 = datetime.now(UTC) - timedelta(hours=1)
    for i in range(14):
        stats = log.record(
            GTIN,
            SERIAL,
            "genuine",
            location=f"Shop {i:02d}",
            source="serve",
            recent=1,  # 0 (the service's) asks for the counts alone: no places by name
            at=t0 + timedelta(minutes=i),
            address=f"10.{i}.0.1",  # a client each
            user_agent="phone",
        )
    assert stats.places == 14
    assert stats.locations == tuple(f"Shop {i:02d}" for i in range(10))
    # The copy signal counts only up to one past its threshold (max_places 1)...
    assert (stats.window_places, stats.placing_clients) == (2, 2)
    # ...and then names the latest places, for the operator.
    assert stats.window_locations == tuple(f"Shop {i:02d}" for i in range(13, 3, -1))
    from provmint.config import CopySignalSettings
    from provmint.scan import suspicious

    why = suspicious(stats, CopySignalSettings(max_clients=100))
    assert why == (
        "seen from 10+ places by different clients within 7 days: "
        + ", ".join(stats.window_locations)
    )


def test_clone_query_reads_one_indexed_row(log: ScanLog, backend) -> None:
    """The counts behind clone detection come from the per-code counter row, looked up by
    its primary key: the plan has no scan of the scans table, whatever its size."""
    for i in range(200):
        log.record(GTIN, f"S{i}", "genuine", location=None, source="cli", recent=0)
    kind, url = backend
    query = "SELECT good, total, first_at, places FROM scan_codes WHERE gtin = {p} AND serial = {p}"
    if kind == "sqlite":
        con = sqlite3.connect(url[len("sqlite:") :])
        plan = " ".join(
            str(r)
            for r in con.execute(
                "EXPLAIN QUERY PLAN " + query.format(p="?"), (GTIN, "S7")
            ).fetchall()
        )
        con.close()
        assert "USING PRIMARY KEY" in plan and "scans" not in plan.replace("scan_codes", ""), plan
    else:
        with psycopg.connect(url) as con:
            con.execute("ANALYZE")
            con.execute("SET enable_seqscan = off")  # a tiny table would be scanned anyway
            plan = " ".join(
                r[0]
                for r in con.execute("EXPLAIN " + query.format(p="%s"), (GTIN, "S7")).fetchall()
            )
        assert "scan_codes_pkey" in plan and "Seq Scan" not in plan, plan


def test_prune_deletes_old_scans_and_recounts(log: ScanLog, backend) -> None:
    now = datetime.now(UTC)
    old, recent = now - timedelta(days=400), now - timedelta(days=10)
    # SERIAL: two old genuine scans from Paris and Berlin, one recent from Paris.
    log.record(GTIN, SERIAL, "genuine", location="Paris", source="cli", at=old)
    log.record(GTIN, SERIAL, "genuine", location="Berlin", source="cli", at=old)
    log.record(GTIN, SERIAL, "forged", location=None, source="cli", at=old)
    log.record(GTIN, SERIAL, "genuine", location="Paris", source="cli", at=recent)
    # OTHER_SERIAL: only old scans; it disappears from the counters.
    for _ in range(3):
        log.record(GTIN, OTHER_SERIAL, "pending", location="Rome", source="serve", at=old)
    before = log.stats(GTIN, SERIAL)
    assert (before.count, before.all_scans, before.places) == (3, 4, 2)

    removed = log.prune(now - timedelta(days=365), chunk=2)  # several chunks
    assert removed == 6
    after = log.stats(GTIN, SERIAL)
    assert (after.count, after.all_scans, after.places) == (1, 1, 1)
    assert after.locations == ("Paris",)
    assert after.first_seen is not None and after.first_seen.startswith(
        recent.strftime("%Y-%m-%dT%H:%M")
    )
    gone = log.stats(GTIN, OTHER_SERIAL)
    assert (gone.count, gone.all_scans, gone.places, gone.first_seen) == (0, 0, 0, None)
    assert _counters(log, {(GTIN, SERIAL), (GTIN, OTHER_SERIAL)}) == _recount(backend)
    # Nothing more to prune; new scans count on top.
    assert log.prune(now - timedelta(days=365)) == 0
    assert log.record(GTIN, OTHER_SERIAL, "pending", location="Rome", source="cli").count == 1


def _record_many(url: str, worker: int, n: int, barrier: Any) -> None:
    # Odd workers log as a web worker does (SQLite: their own short busy waits).
    log = open_scan_log(resolve_settings(scan_log=url), service=worker % 2 == 1)
    barrier.wait()
    for i in range(n):
        place = f"P{(worker * n + i) % 7}"
        log.record(
            GTIN,
            SERIAL,
            "genuine" if i % 15 else "forged",  # at most 20 forged rows per code and day
            location=place,
            source=f"w{worker}",
            recent=0,
        )
    log.close()


def test_concurrent_writers_lose_no_count(log: ScanLog, backend) -> None:
    """Four processes log scans of one code at once (three pooled connections each on
    PostgreSQL, taking turns on SQLite, two of them as web workers): the counters equal
    a recount of the rows."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_record_many, args=(backend[1], w, 60, barrier)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    stats = log.stats(GTIN, SERIAL, recent=0)
    assert stats.all_scans == 240
    assert stats.count == 4 * 56
    assert stats.places == 7
    assert _counters(log, {(GTIN, SERIAL)}) == _recount(backend)


def _prune_while_writing(url: str, barrier: Any) -> None:
    log = open_scan_log(resolve_settings(scan_log=url))
    barrier.wait()
    for _ in range(20):
        log.prune(datetime.now(UTC) - timedelta(days=30), chunk=7)
    log.close()


def test_pruning_while_scans_arrive_keeps_counters_exact(log: ScanLog, backend) -> None:
    old = datetime.now(UTC) - timedelta(days=90)
    for i in range(150):
        log.record(
            GTIN,
            f"S{i % 10}",
            "genuine" if i % 3 else "forged",
            location=f"P{i % 4}",
            source="cli",
            at=old,
        )
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(3)
    procs = [ctx.Process(target=_record_many, args=(backend[1], w, 40, barrier)) for w in range(2)]
    procs.append(ctx.Process(target=_prune_while_writing, args=(backend[1], barrier)))
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
        assert p.exitcode == 0
    codes = {(GTIN, f"S{i}") for i in range(10)} | {(GTIN, SERIAL)}
    assert _counters(log, codes) == _recount(backend)
    assert log.stats(GTIN, SERIAL).all_scans == 80
    assert log.prune(datetime.now(UTC) - timedelta(days=30)) == 0  # all old ones went


def _hold_write_lock(path: Path, seconds: float, taken: threading.Event) -> None:
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("BEGIN IMMEDIATE")
    taken.set()
    time.sleep(seconds)
    con.execute("COMMIT")
    con.close()


def test_a_web_workers_sqlite_log_waits_for_the_lock_in_short_steps(tmp_path: Path) -> None:
    """Another process holds the write lock: a web worker's scan waits and is logged
    within milliseconds of the lock's release. SQLite's own busy handler would sleep
    up to 100 ms at a time on the worker's event loop (finishing 78 ms late here)."""
    path = tmp_path / "scans.sqlite"
    log = SqliteScanLog(path, service=True)
    log.migrate()
    late = []
    for attempt in range(3):
        taken = threading.Event()
        holder = threading.Thread(target=_hold_write_lock, args=(path, 0.25, taken))
        holder.start()
        taken.wait()
        started = time.monotonic()
        stats = log.record(GTIN, SERIAL, "genuine", location=None, source="cli", recent=0)
        late.append(time.monotonic() - started - 0.25)
        holder.join()
        assert stats.count == attempt + 1
    log.close()
    assert min(late) < 0.03, late


def test_a_web_workers_sqlite_log_checkpoints_in_the_background(tmp_path: Path) -> None:
    """A web worker's scans reach the database file without any scan's commit copying
    the WAL (which waits for fsync); a command's log leaves that to SQLite's threshold.
    Closing the log stops the checkpoint thread."""
    sizes = {}
    for service in (False, True):
        path = tmp_path / f"scans-{service}.sqlite"
        log = SqliteScanLog(path, service=service)
        log.migrate()
        empty = path.stat().st_size
        for i in range(100):
            log.record(GTIN, f"S{i}", "genuine", location=None, source="cli", recent=0)
        deadline = time.monotonic() + 5
        while path.stat().st_size == empty and service and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.6 if not service else 0)
        sizes[service] = (empty, path.stat().st_size)
        log.close()
        assert not [t for t in threading.enumerate() if t.name == "scan-log-checkpoints"]
        assert SqliteScanLog(path).stats(GTIN, "S99").count == 1
    assert sizes[False][1] == sizes[False][0], sizes  # still all in the WAL
    assert sizes[True][1] > sizes[True][0], sizes  # copied by the background thread


def _migrate(url: str, barrier: Any) -> None:
    log = open_scan_log(resolve_settings(scan_log=url), pool_size=0)
    barrier.wait()
    log.migrate()
    log.record(GTIN, SERIAL, "genuine", location=None, source="m", recent=0)
    log.close()


def test_replicas_migrating_at_once(pg_url: str) -> None:
    """Six processes create the schema of an empty database at the same instant: the
    advisory lock makes them take turns; all succeed and the schema is there once."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(6)
    procs = [ctx.Process(target=_migrate, args=(pg_url, barrier)) for _ in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with psycopg.connect(pg_url) as con:
        assert con.execute("SELECT version FROM scan_log_version").fetchall() == [(SCHEMA_VERSION,)]
        assert con.execute("SELECT good, total FROM scan_codes").fetchall() == [(6, 6)]


def test_newer_schema_is_refused(log: ScanLog, backend) -> None:
    log.record(GTIN, SERIAL, "genuine", location=None, source="cli")
    log.close()
    kind, url = backend
    if kind == "sqlite":
        con = sqlite3.connect(url[len("sqlite:") :])
        con.execute("UPDATE scan_log_version SET version = 99")
        con.commit()
        con.close()
    else:
        with psycopg.connect(url) as con:
            con.execute("UPDATE scan_log_version SET version = 99")
    fresh = open_scan_log(resolve_settings(scan_log=url), pool_size=0)
    with pytest.raises(ScanLogError, match="schema version 99, newer than"):
        fresh.record(GTIN, SERIAL, "genuine", location=None, source="cli")
    fresh.close()


def test_an_old_sqlite_log_is_upgraded_with_its_counts(tmp_path: Path) -> None:
    """A scans.sqlite written before the counters (schema 1: the scans table alone) is
    upgraded in place on first use, its scans counted."""
    path = tmp_path / "scans.sqlite"
    con = sqlite3.connect(path)
    con.executescript("""
        CREATE TABLE scans (id INTEGER PRIMARY KEY, at TEXT NOT NULL, gtin TEXT NOT NULL,
            serial TEXT NOT NULL, verdict TEXT NOT NULL, location TEXT, source TEXT NOT NULL);
        CREATE INDEX scans_by_code ON scans (gtin, serial);
    """)
    rows = [
        (f"2025-01-0{i + 1}T00:00:00.000000Z", GTIN, SERIAL, v, loc, "cli")
        for i, (v, loc) in enumerate([("pending", "A"), ("forged", "B"), ("genuine", "C")])
    ]
    con.executemany(
        "INSERT INTO scans (at, gtin, serial, verdict, location, source) VALUES (?, ?, ?, ?, ?, ?)",
        rows,
    )
    con.commit()
    con.close()
    log = SqliteScanLog(path)
    stats = log.record(GTIN, SERIAL, "pending", location="A", source="cli")
    assert (stats.count, stats.all_scans, stats.places) == (3, 4, 2)
    assert stats.locations == ("A", "C") and stats.first_seen == rows[0][0]
    log.close()


# --------------------------------------------------------------------------- settings and CLI


def test_scan_log_setting_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_settings().scan_log is None  # the store's scans.sqlite
    config = tmp_path / "c.toml"
    config.write_text('scan_log = "postgresql://u@db.example/file"\n')
    assert resolve_settings(config_file=config).scan_log == "postgresql://u@db.example/file"
    monkeypatch.setenv("PROVMINT_SCAN_LOG", "postgres://u@db.example/env")
    assert resolve_settings(config_file=config).scan_log == "postgres://u@db.example/env"
    assert resolve_settings(config_file=config, scan_log="sqlite:rel.sqlite").scan_log == (
        "sqlite:" + str(tmp_path / "rel.sqlite")
    )
    secret = resolve_settings(scan_log="postgresql://u:hunter2@db.example/x")
    assert "hunter2" not in repr(secret)


@pytest.mark.parametrize(
    "value",
    [
        "mysql://db/x",
        "scans.sqlite",
        "postgresql://db.example",
        "sqlite:",
        "postgresql://u:hunter2@db.example",
    ],
)
def test_bad_scan_log_settings_are_usage_errors(cli, value: str) -> None:
    r = cli("scans", "prune", "--older-than", "30d", "--scan-log", value)
    line = one_error(r, 2, "scan log")
    assert "hunter2" not in r.stderr, line


@pytest.mark.parametrize(
    "age", ["", "30", "d", "30x", "-5d", "0d", "1.5d", "30 days", "99999999d", "36600w"]
)
def test_prune_refuses_bad_ages(cli, age: str) -> None:
    one_error(cli("scans", "prune", "--older-than", age), 2, "--older-than")


def test_prune_command_on_both_backends(cli, backend, tmp_path: Path) -> None:
    _, url = backend
    log = open_scan_log(resolve_settings(scan_log=url))
    now = datetime.now(UTC)
    for days in (500, 400, 40, 1):
        log.record(
            GTIN, SERIAL, "genuine", location=None, source="cli", at=now - timedelta(days=days)
        )
    log.close()
    r = cli("scans", "prune", "--older-than", "365d", "--scan-log", url, "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["removed"] == 2 and report["older_than"] == "365d"
    assert report["before"] < (now - timedelta(days=364)).strftime("%Y-%m-%dT%H:%M:%S")
    r = cli("scans", "prune", "--older-than", "52w", "--scan-log", url)
    assert r.exit_code == 0 and "Removed 0 scans older than 52w" in r.stdout, r.output
    r = cli("scans", "prune", "--older-than", "12h", "--scan-log", url)
    assert "Removed 2 scans" in r.stdout, r.output
    assert _rows(backend) == []


def test_prune_default_log_of_a_store(cli, keyed, tmp_path: Path) -> None:
    r = cli("scans", "prune", "--older-than", "30d")  # no store yet
    one_error(r, 1, "no provmint store")
    assert cli("batch", "create", EXAMPLE_CSV).exit_code == 0
    r = cli("scans", "prune", "--older-than", "30d", "--json")  # never scanned: no file
    assert r.exit_code == 0 and json.loads(r.stdout)["removed"] == 0, r.output
    assert not (tmp_path / "store" / "scans.sqlite").exists()


def _url(cli, serial: str = SERIAL) -> str:
    r = cli("product", "show", "--gtin", GTIN, "--serial", serial, "--json")
    assert r.exit_code == 0, r.output
    return str(json.loads(r.stdout)["url"])


def test_cli_scan_logs_to_postgresql(
    cli, keyed, pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli("batch", "create", EXAMPLE_CSV).exit_code == 0
    url = _url(cli)
    r = cli("scan", url, "--scan-log", pg_url, "--location", "Dock 1", "--json")
    assert r.exit_code == EXIT_PENDING, r.output
    monkeypatch.setenv("PROVMINT_SCAN_LOG", pg_url)
    r = cli("scan", url, "--location", "Dock 2", "--json")
    assert r.exit_code == EXIT_PENDING, r.output  # one machine in two places: one client
    scans = json.loads(r.stdout)["scans"]
    assert (scans["count"], scans["places"], scans["locations"]) == (2, 2, ["Dock 1", "Dock 2"])
    with open_scan_log(resolve_settings(), pool_size=0) as log:  # a phone, elsewhere
        log.record(GTIN, SERIAL, "pending", location="Dock 3", source="serve", user_agent="p")
    r = cli("scan", url, "--json")
    assert r.exit_code == EXIT_SUSPECT, r.output
    assert not (tmp_path / "store" / "scans.sqlite").exists()
    token = urlsplit(url).query.removeprefix("t=")
    with psycopg.connect(pg_url) as con:
        tables = ("scans", "scan_codes", "scan_places", "scan_clients", "scan_log_version")
        for table in tables:
            for row in con.execute(f"SELECT * FROM {table}"):
                assert token not in " ".join(map(str, row)), (table, row)


def test_cli_scan_with_postgresql_down_is_one_error(cli, keyed, own_postgres: Postgres) -> None:
    assert cli("batch", "create", EXAMPLE_CSV).exit_code == 0
    url = own_postgres.url().replace("postgres@", "postgres:s3cret@")
    own_postgres.stop()
    r = cli("scan", _url(cli), "--scan-log", url)
    line = one_error(r, 1, "cannot", "scan log", f"127.0.0.1:{own_postgres.port}")
    assert "s3cret" not in r.stderr, line


# --------------------------------------------------------------------------- replicas


def _get(server: Server, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(server.url + path, timeout=30, **kwargs)


def _path(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def test_two_replicas_share_counts_and_the_clone_flag(
    cli, keyed, pg_url: str, serve_store, tmp_path: Path
) -> None:
    """Two ``provmint serve`` processes (one with two workers) on one store and one
    database: one code scanned on both is counted once across them, and a second place
    given by a second client on the other replica makes it a possible copy (the replicas
    share the log's client salt, so one phone is one client on both)."""
    assert cli("batch", "create", EXAMPLE_CSV).exit_code == 0
    path = _path(_url(cli))
    a = serve_store("--scan-log", pg_url, "--workers", "2")
    b = serve_store("--scan-log", pg_url, "--workers", "1")
    assert _get(a, "/healthz").status_code == 200 and _get(b, "/healthz").status_code == 200

    phone_a = {**JSON, "User-Agent": "phone A"}
    first = _get(a, path + "&loc=Paris", headers=phone_a).json()
    second = _get(b, path + "&loc=Paris", headers=phone_a).json()
    assert (first["scans"], first["verdict"], first["logged"]) == ({"count": 1}, "pending", True)
    assert (second["scans"], second["verdict"]) == ({"count": 2}, "pending")
    third = _get(a, path + "&loc=Berlin", headers={**JSON, "User-Agent": "phone B"}).json()
    assert third["scans"] == {"count": 3} and third["verdict"] == "suspect"
    assert "Berlin" not in third["reason"] and "Paris" not in third["reason"]  # visitors' text
    page = _get(b, path)
    assert page.status_code == 200 and 'data-verdict="suspect"' in page.text
    assert "<th>Scans of this code</th><td>4</td>" in page.text
    # A forged request on either replica is not a scan of the label.
    forged = path.partition("?t=")[0] + "?t=" + "A" * 22
    assert _get(a, forged, headers=JSON).status_code == 404
    # The command line sees the same log.
    r = cli("scan", _url(cli), "--scan-log", pg_url, "--json")
    assert r.exit_code == EXIT_SUSPECT
    assert json.loads(r.stdout)["scans"]["count"] == 5
    with psycopg.connect(pg_url) as con:
        sources = [r[0] for r in con.execute("SELECT source FROM scans ORDER BY id")]
    assert sources == ["serve", "serve", "serve", "serve", "serve", "cli"]
    assert not (tmp_path / "store" / "scans.sqlite").exists()
    for server in (a, b):
        err = server.stop()
        assert "Traceback" not in err, err


def _poll(fn: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.25)


def test_postgresql_outage_answers_503_and_service_resumes(
    cli, keyed, own_postgres: Postgres, serve_store
) -> None:
    assert cli("batch", "create", EXAMPLE_CSV).exit_code == 0
    path = _path(_url(cli))
    server = serve_store("--scan-log", own_postgres.url(), "--workers", "2")
    assert _get(server, path, headers=JSON).json()["logged"] is True
    assert _get(server, "/healthz").status_code == 200

    own_postgres.stop()
    health = _get(server, "/healthz")
    assert health.status_code == 503
    assert health.json() | {"scans_not_logged": 0} == {
        "status": "unavailable",
        "reason": "scans cannot be logged now",
        "scans_not_logged": 0,
    }
    for _ in range(4):  # both workers, some of them during the fail-fast window
        r = _get(server, path + "&loc=Oslo", headers=JSON)
        assert r.status_code == 503
        body = r.json()
        assert body["verdict"] == "pending" and body["logged"] is False
        assert body["scans"] is None and "could not be recorded" in body["notice"]
    page = _get(server, path)
    assert page.status_code == 503
    assert 'data-verdict="pending"' in page.text and 'id="not-logged"' in page.text
    assert "This scan could not be recorded" in page.text
    assert "127.0.0.1" not in page.text and "postgres" not in page.text
    # Unknown codes get the usual answer; nothing to log.
    unknown = path.replace(SERIAL, "NOSUCHSERIAL")
    assert _get(server, unknown, headers=JSON).status_code == 404

    own_postgres.start()
    resumed = _poll(
        lambda: (x := _get(server, path + "&loc=Oslo", headers=JSON)).status_code == 200 and x,
        timeout=30,
    )
    assert resumed, "the service did not log scans again after PostgreSQL came back"
    assert resumed.json()["logged"] is True and resumed.json()["scans"] == {"count": 2}
    assert _poll(lambda: _get(server, "/healthz").status_code == 200, timeout=15)
    # Each worker reports for itself, on its next scan: give both workers scans (a new
    # connection each, spread by SO_REUSEPORT) so the one that warned can say it recovered.
    # A worker may still be in its fail-fast window: wait for 24 logged scans in a row.
    in_row, deadline = 0, time.monotonic() + 30
    while in_row < 24 and time.monotonic() < deadline:
        in_row = in_row + 1 if _get(server, path, headers=JSON).json()["logged"] else 0
    assert in_row == 24, "a worker did not log scans again after PostgreSQL came back"
    err = server.stop()
    assert "Traceback" not in err, err
    warned = err.count("warning: scans are not being logged: cannot")
    assert warned >= 1, err
    assert err.count("scans are being logged again") == warned, err


# --------------------------------------------------------------------------- read-only stores


_READ_ONLY_SERVE = """
import subprocess, sys, os, re, json, time, urllib.request, urllib.error
store, path = sys.argv[1], sys.argv[2]
subprocess.run(["mount", "--bind", "-o", "ro", store, store], check=True)
proc = subprocess.Popen([sys.executable, "-m", "provmint", "serve", "--port", "0",
                         *sys.argv[3:]], stderr=subprocess.PIPE, text=True)
seen = line = proc.stderr.readline()
while "Serving" not in line and line:
    line = proc.stderr.readline()
    seen += line
base = re.search(r"(http://127\\.0\\.0\\.1:\\d+)", line).group(1)
out = {}
for name, url, accept in [("health", base + "/healthz", "application/json"),
                          ("json", base + path, "application/json"),
                          ("html", base + path, "text/html")]:
    request = urllib.request.Request(url, headers={"Accept": accept})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            out[name] = [r.status, r.read().decode()]
    except urllib.error.HTTPError as e:
        out[name] = [e.code, e.read().decode()]
proc.terminate()
out["stderr"] = seen + proc.communicate(timeout=30)[1]
print(json.dumps(out))
"""


def _serve_read_only(store: Path, path: str, *args: str) -> dict[str, Any]:
    """Serve ``store`` mounted read-only (a bind mount in a private user and mount
    namespace: a real EROFS) and fetch /healthz and ``path`` as JSON and HTML."""
    probe = subprocess.run(["unshare", "-r", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"user namespaces unavailable here: {probe.stderr.decode().strip()}")
    done = subprocess.run(
        ["unshare", "-r", "-m", sys.executable, "-c", _READ_ONLY_SERVE, str(store), path, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def test_read_only_store_with_postgresql_scan_log(cli, keyed, pg_url: str, tmp_path: Path) -> None:
    assert cli("batch", "create", EXAMPLE_CSV).exit_code == 0
    store = tmp_path / "store"
    (store / ".lock").unlink()  # a copy made without it
    out = _serve_read_only(store, _path(_url(cli)), "--scan-log", pg_url, "--workers", "2")
    assert out["health"][0] == 200, out
    assert out["json"][0] == 200 and json.loads(out["json"][1])["logged"] is True, out
    assert out["html"][0] == 200 and "Scans of this code</th><td>2</td>" in out["html"][1]
    assert "Traceback" not in out["stderr"] and "warning" not in out["stderr"], out["stderr"]
    assert not (store / "scans.sqlite").exists()


def test_read_only_store_with_the_sqlite_default(cli, keyed, tmp_path: Path) -> None:
    """The default log cannot be created in a read-only store: the service still gives
    verdicts, says the scan was not logged (503), fails /healthz, and says why at start."""
    assert cli("batch", "create", EXAMPLE_CSV).exit_code == 0
    store = tmp_path / "store"
    (store / ".lock").unlink()
    out = _serve_read_only(store, _path(_url(cli)))
    assert out["health"][0] == 503, out
    status, body = out["json"]
    assert status == 503 and json.loads(body)["verdict"] == "pending", out
    assert json.loads(body)["logged"] is False and "could not be recorded" in body
    assert out["html"][0] == 503 and 'id="not-logged"' in out["html"][1]
    assert str(tmp_path) not in body + out["html"][1]
    assert "Traceback" not in out["stderr"], out["stderr"]
    assert "warning: scans cannot be logged" in out["stderr"], out["stderr"]
    assert "read-only" in out["stderr"], out["stderr"]
    assert not (store / "scans.sqlite").exists()


def test_cli_scan_on_a_read_only_store_is_one_error(cli, keyed, tmp_path: Path) -> None:
    assert cli("batch", "create", EXAMPLE_CSV).exit_code == 0
    store = tmp_path / "store"
    url = _url(cli)
    script = (
        "import subprocess, sys\n"
        f"subprocess.run(['mount', '--bind', '-o', 'ro', {str(store)!r}, {str(store)!r}],"
        " check=True)\n"
        "r = subprocess.run([sys.executable, '-m', 'provmint', 'scan', sys.argv[1]])\n"
        "sys.exit(r.returncode)\n"
    )
    probe = subprocess.run(["unshare", "-r", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"user namespaces unavailable here: {probe.stderr.decode().strip()}")
    done = subprocess.run(
        ["unshare", "-r", "-m", sys.executable, "-c", script, url],
        capture_output=True,
        text=True,
        timeout=120,
    )

    class Result:
        exit_code, stdout, stderr = done.returncode, done.stdout, done.stderr

    one_error(Result, 1, "cannot", "scan log", "read-only")
