"""The copy signal: when a genuine code is flagged as a possible copy, and why.

Checked: the client key (a salted hash of the network prefix and the user agent, never
the raw text; generated hostile input never makes it raise); the ``[copy_signal]``
settings; the rule on both backends with an injected clock (reloads by one client count
once, one client in two places is not a copy, six clients are, and the flag decays when
the window passes or an operator clears it; preview bots and forged scans do not count);
forged scans not growing the log; the upgrade of a version 2 log, keeping its scans; a
flooded code costing the same to check (query plans, and SQLite's own count of the
instructions a batch of scans runs); ``provmint scans show`` and ``clear`` through the
command line; and the service over real HTTP telling reloads from distinct clients.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from conftest import EXAMPLE_CSV
from helpers import one_error
from hypothesis import given, settings
from hypothesis import strategies as st

from provmint.config import CopySignalSettings, resolve_settings
from provmint.errors import EXIT_NOT_FOUND, EXIT_OK, EXIT_PENDING, EXIT_SUSPECT, ConfigError
from provmint.scan import suspicious
from provmint.store.scanlog import (
    FORGED_ROWS_PER_DAY,
    SCHEMA_VERSION,
    ScanLog,
    ScanRequest,
    open_scan_log,
)
from provmint.store.scanlog.clients import (
    CLIENT_BYTES,
    UNKNOWN_CLIENT,
    ClientKeys,
    client_key,
    is_preview_bot,
    network_prefix,
)
from provmint.store.scanlog.latest import Latest
from provmint.store.scanlog.sqlite import SqliteScanLog

GTIN = "09520123450014"
SERIAL = "546CAWQDCR56"
OTHER_SERIAL = "X67Y29DHPXTS"
JSON = {"Accept": "application/json"}
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
RULE = CopySignalSettings()  # 7 days, more than 5 clients, more than 1 place


def _phone(i: int) -> dict[str, str]:
    """A distinct client: its own network and its own phone."""
    return {"address": f"198.51.{i}.20", "user_agent": f"Mozilla/5.0 (Phone {i})"}


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The scan_log setting of each backend (a file, or a fresh PostgreSQL database)."""
    if request.param == "sqlite":
        yield "sqlite:" + str(tmp_path / "scans.sqlite")
    else:
        yield request.getfixturevalue("pg_url")


@pytest.fixture
def log(backend: str) -> Iterator[ScanLog]:
    opened = open_scan_log(resolve_settings(scan_log=backend), pool_size=0)
    yield opened
    opened.close()


def _scan(log: ScanLog, minutes: float, client: int | None, **kwargs: Any) -> Any:
    """A genuine-token scan of the code ``minutes`` after T0 from phone ``client`` (None:
    no client given, the unknown one)."""
    who = _phone(client) if client is not None else {}
    kwargs.setdefault("location", None)
    return log.record(
        GTIN,
        kwargs.pop("serial", SERIAL),
        kwargs.pop("verdict", "genuine"),
        source="serve",
        at=T0 + timedelta(minutes=minutes),
        recent=0,
        **who,
        **kwargs,
    )


# --------------------------------------------------------------------------- clients


def test_network_prefixes() -> None:
    assert network_prefix("203.0.113.77") == "203.0.113.0/24"
    assert network_prefix("::ffff:203.0.113.77") == "203.0.113.0/24"
    assert network_prefix("2001:db8:abcd:12::1") == "2001:db8:abcd::/48"
    assert network_prefix("fe80::1%eth0") == "fe80::/48"
    assert network_prefix(" cli:factory-3 ") == "cli:factory-3"
    assert network_prefix("") == network_prefix(None) == ""


def test_client_keys() -> None:
    salt = bytes(range(32))
    key = client_key(salt, "203.0.113.77", "Phone")
    assert len(key) == CLIENT_BYTES
    assert key == client_key(salt, "203.0.113.9", "Phone")  # one household, one phone
    assert key != client_key(salt, "203.0.114.9", "Phone")  # another network
    assert key != client_key(salt, "203.0.113.77", "Phone 2")  # another phone
    assert key != client_key(bytes(32), "203.0.113.77", "Phone")  # another log
    keys = ClientKeys(salt)
    assert keys.of("203.0.113.77", "Phone") == (key, True)
    assert keys.of(None, None) == (UNKNOWN_CLIENT, True)
    assert keys.of("203.0.113.77", "Slackbot-LinkExpanding 1.0")[1] is False
    assert "\\x" not in repr(keys) and "********" in repr(keys)


BOTS = [
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    "Slackbot 1.0 (+https://api.slack.com/robots)",
    "Twitterbot/1.0",
    "WhatsApp/2.23.20.0 A",
    "TelegramBot (like TwitterBot)",
    "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
    "LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient +http://www.linkedin.com)",
    "Mozilla/5.0 (Windows NT 6.1; WOW64) SkypeUriPreview Preview/0.5",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_5) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/13.1.1 Safari/605.1.15 (Applebot/0.1)",
    "Mozilla/5.0 (compatible; redditbot/1.0; +http://www.reddit.com/feedback)",
    "Pinterest/0.2 (+https://www.pinterest.com/bot.html)",
    "Mozilla/5.0 (compatible; Embedly/0.2; +http://support.embed.ly/)",
    "Iframely/1.3.1 (+https://iframely.com/docs/about)",
    "Mozilla/5.0 (compatible; vkShare; +http://vk.com/dev/Share)",
]
PEOPLE = [
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 9; CUBOT X19) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/90.0 Mobile Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/460.0]",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148 Instagram 330.0",
    "",
]


@pytest.mark.parametrize("agent", BOTS)
def test_link_preview_bots_are_recognised(agent: str) -> None:
    assert is_preview_bot(agent)


@pytest.mark.parametrize("agent", PEOPLE)
def test_people_are_not_bots(agent: str) -> None:
    assert not is_preview_bot(agent)


@settings(max_examples=300, deadline=None)
@given(
    salt=st.binary(min_size=32, max_size=32),
    address=st.one_of(st.none(), st.text(max_size=600), st.ip_addresses().map(str)),
    agent=st.one_of(st.none(), st.text(max_size=600)),
)
def test_client_key_never_raises_nor_holds_its_input(
    salt: bytes, address: str | None, agent: str | None
) -> None:
    key = client_key(salt, address, agent)
    assert isinstance(key, bytes) and len(key) == CLIENT_BYTES
    assert key == client_key(salt, address, agent)
    for raw in (address, agent, network_prefix(address)):
        data = (raw or "").encode("utf-8", "surrogatepass")
        if len(data) >= 4:
            assert data not in key
    assert is_preview_bot(agent) in (True, False)
    assert ClientKeys(salt).of(address, agent)[0] in (key, UNKNOWN_CLIENT)


def test_the_log_keeps_neither_addresses_nor_user_agents(tmp_path: Path) -> None:
    path = tmp_path / "scans.sqlite"
    log = SqliteScanLog(path)
    agent = "Mozilla/5.0 (UniquePhone-XYZ123)"
    log.record(
        GTIN,
        SERIAL,
        "genuine",
        location=None,
        source="serve",
        address="203.0.113.77",
        user_agent=agent,
    )
    log.close()
    with sqlite3.connect(path) as con:
        salt = con.execute("SELECT value FROM scan_log_meta").fetchone()[0]
        clients = [r[0] for r in con.execute("SELECT client FROM scans")]
        (latest,) = con.execute("SELECT latest FROM scan_codes").fetchone()
    assert clients[0] in latest  # the code's latest clients hold the key alone
    assert len(salt) == 32 and clients == [client_key(salt, "203.0.113.77", agent)]
    for file in tmp_path.glob("scans.sqlite*"):
        data = file.read_bytes()
        for raw in (agent, "UniquePhone", "203.0.113.77", "203.0.113.0"):
            assert raw.encode() not in data, (file, raw)


# --------------------------------------------------------------------------- settings


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "copy.toml"
    path.write_text(text)
    return path


def test_copy_signal_settings(tmp_path: Path) -> None:
    assert resolve_settings().copy_signal == RULE
    assert CopySignalSettings(timedelta(days=7), 5, 1) == RULE
    found = resolve_settings(
        config_file=_config(
            tmp_path, '[copy_signal]\nwindow = "36h"\nmax_clients = 20\nmax_places = 3\n'
        )
    ).copy_signal
    assert found == CopySignalSettings(timedelta(hours=36), 20, 3)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('window = "7x"', "window '7x' is not an age"),
        ("window = 7", "window 7 is not an age"),
        ('window = "0d"', "more than 0"),
        ('window = "36600w"', "at most 100 years"),
        ("max_clients = 0", "max_clients must be a whole number"),
        ("max_clients = 2.5", "max_clients must be a whole number"),
        ("max_clients = true", "max_clients must be a whole number"),
        ('max_places = "2"', "max_places must be a whole number"),
        ("threshold = 3", "unknown setting 'threshold'"),
    ],
)
def test_bad_copy_signal_settings(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected) as raised:
        resolve_settings(config_file=_config(tmp_path, "[copy_signal]\n" + text + "\n"))
    assert "[copy_signal]" in str(raised.value)


# --------------------------------------------------------------------------- the rule


def test_reloads_by_one_client_never_flag(log: ScanLog) -> None:
    """A consumer reloading the page 50 times, from one place or two, is one client."""
    for i in range(50):
        stats = _scan(log, i, 1, location=("Paris", "Berlin")[i % 2])
        assert (stats.clients, stats.placing_clients) == (1, 1)
        assert suspicious(stats, RULE) is None, i
    assert (stats.count, stats.places, stats.window_places) == (50, 2, 2)


def test_two_places_from_one_client_never_flag(log: ScanLog) -> None:
    _scan(log, 0, 1, location="Paris")
    stats = _scan(log, 1, 1, location="Lagos")
    assert (stats.window_places, stats.placing_clients) == (2, 1)
    assert suspicious(stats, RULE) is None
    # Other clients that give no place add none.
    stats = _scan(log, 2, 2)
    assert (stats.clients, stats.window_places, stats.placing_clients) == (2, 2, 1)
    assert suspicious(stats, RULE) is None
    # Another client giving a place: two places (Paris by one, Oslo by the other).
    stats = _scan(log, 3, 3, location="Oslo")
    assert (stats.window_places, stats.placing_clients) == (2, 2)  # counted up to 2
    assert stats.window_locations == ("Oslo", "Lagos", "Paris")
    why = suspicious(stats, RULE)
    assert why == "seen from 3 places by different clients within 7 days: Oslo, Lagos, Paris"


def test_two_clients_in_one_place_never_flag(log: ScanLog) -> None:
    for i in range(1, 6):
        stats = _scan(log, i, i, location="Dock 1")
    assert (stats.clients, stats.window_places, stats.placing_clients) == (5, 1, 2)
    assert suspicious(stats, RULE) is None


def test_six_clients_flag_and_the_flag_decays(log: ScanLog) -> None:
    for i in range(1, 6):
        stats = _scan(log, i, i)
        assert stats.clients == i and suspicious(stats, RULE) is None
    stats = _scan(log, 6, 6)
    assert stats.clients == 6
    assert suspicious(stats, RULE) == "seen by more than 5 different clients within 7 days"
    # Later within the window, still flagged, for every client (and with no new scan).
    assert suspicious(_scan(log, 60 * 24 * 6, 1), RULE) is not None
    later = log.stats(GTIN, SERIAL, at=T0 + timedelta(days=6, hours=23))
    assert suspicious(later, RULE) is not None
    # Once the window has passed, the same six clients count only as they come back.
    after = T0 + timedelta(days=14)
    assert log.stats(GTIN, SERIAL, at=after).clients == 0
    for i in range(1, 6):
        stats = _scan(log, 60 * 24 * 14 + i, i)
        assert stats.clients == i and suspicious(stats, RULE) is None
    assert stats.count == 12  # every scan stays counted


def test_the_places_signal_decays(log: ScanLog) -> None:
    _scan(log, 0, 1, location="Paris")
    assert suspicious(_scan(log, 1, 2, location="Berlin"), RULE) is not None
    stats = _scan(log, 60 * 24 * 8, 2, location="Berlin")  # Paris is 8 days old
    assert (stats.window_places, stats.placing_clients) == (1, 1)
    assert suspicious(stats, RULE) is None


def test_the_window_and_thresholds_are_settings(backend: str) -> None:
    rule = CopySignalSettings(timedelta(hours=1), max_clients=2, max_places=2)
    settings = replace(resolve_settings(scan_log=backend), copy_signal=rule)
    with open_scan_log(settings, pool_size=0) as log:
        assert suspicious(_scan(log, 0, 1, location="A"), rule) is None
        assert suspicious(_scan(log, 1, 2, location="B"), rule) is None
        stats = _scan(log, 2, 3, location="C")  # three clients, three places
        assert (stats.clients, stats.window_places, stats.placing_clients) == (3, 3, 3)
        assert suspicious(stats, rule) == "seen by more than 2 different clients within 1 hour"
        assert suspicious(_scan(log, 62, 3), rule) is None  # an hour later: one client


def test_bots_and_forgeries_do_not_count(log: ScanLog, backend: str) -> None:
    for i, agent in enumerate(BOTS):
        stats = _scan(log, i, None, address=f"66.249.{i}.1", user_agent=agent, location=f"X{i}")
        assert (stats.clients, stats.window_places) == (0, 0)
    assert suspicious(stats, RULE) is None
    assert stats.count == len(BOTS)  # logged, and counted as scans of the label
    for i in range(10):
        stats = _scan(log, 100 + i, 10 + i, verdict="forged", location=f"F{i}")
    stats = _scan(log, 200, 1)
    assert (stats.clients, stats.window_places, stats.all_scans) == (1, 0, len(BOTS) + 11)
    assert suspicious(stats, RULE) is None
    if backend.startswith("sqlite:"):
        with sqlite3.connect(backend[len("sqlite:") :]) as con:
            counted = con.execute("SELECT counted, count(*) FROM scans GROUP BY 1").fetchall()
        assert sorted(counted) == [(0, len(BOTS)), (1, 11)]


def test_clearing_a_code(log: ScanLog) -> None:
    for i in range(1, 7):
        _scan(log, i, i, location=f"Shop {i}")
    assert log.evidence(GTIN, OTHER_SERIAL, at=T0) is None
    assert log.clear(GTIN, OTHER_SERIAL, at=T0) is None  # nothing to clear
    cleared = log.clear(GTIN, SERIAL, at=T0 + timedelta(minutes=10))
    assert cleared is not None
    assert (cleared.clients, cleared.window_places, cleared.placing_clients) == (6, 6, 6)
    assert cleared.cleared_at is None
    assert suspicious(cleared, RULE) == (
        "seen by 6 different clients within 7 days"  # the operator's counts are exact
    )
    now = log.evidence(GTIN, SERIAL, at=T0 + timedelta(minutes=11))
    assert now is not None
    assert now.cleared_at == now.since == "2026-03-01T12:10:00.000000Z"
    assert (now.clients, now.window_places, now.places) == (0, 0, ())
    assert (now.first_seen, now.genuine_scans, now.all_scans) == (
        "2026-03-01T12:01:00.000000Z",
        6,
        6,
    )
    # Evidence counts again from the clear on: a returning client, one new client.
    stats = _scan(log, 12, 1, location="Shop 1")
    assert (stats.clients, stats.window_places, stats.since) == (1, 1, now.since)
    stats = _scan(log, 13, 7, location="Shop 7")
    assert suspicious(stats, RULE) is not None  # two places from two clients, after it
    # An earlier clear time never moves the clear back.
    log.clear(GTIN, SERIAL, at=T0)
    again = log.evidence(GTIN, SERIAL, at=T0 + timedelta(minutes=14))
    assert again is not None and again.since == now.since


def test_evidence_lists_places_with_their_counts(log: ScanLog) -> None:
    for i, place in enumerate(["Paris", "Paris", "Berlin", "[bold]Oslo[/]"]):
        _scan(log, i, i + 1, location=place)
    found = log.evidence(GTIN, SERIAL, at=T0 + timedelta(hours=1))
    assert found is not None
    assert [(p.location, p.scans) for p in found.places] == [
        ("[bold]Oslo[/]", 1),
        ("Berlin", 1),
        ("Paris", 2),
    ]
    assert found.places[0].last_at == "2026-03-01T12:03:00.000000Z"
    assert found.last_seen == "2026-03-01T12:03:00.000000Z"
    assert (found.clients, found.placing_clients, found.window_places) == (4, 4, 3)
    assert found.to_json()["listed_places"][2] == {
        "location": "Paris",
        "scans": 2,
        "last_at": "2026-03-01T12:01:00.000000Z",
    }


def test_forged_scans_are_kept_a_few_a_day(log: ScanLog, backend: str) -> None:
    """A forger hammering one code adds at most FORGED_ROWS_PER_DAY rows a day to the
    log; the rest are counted on the code."""
    for i in range(FORGED_ROWS_PER_DAY + 30):
        stats = _scan(log, i, 1, verdict="forged")
    assert stats.all_scans == FORGED_ROWS_PER_DAY + 30 and stats.count == 0
    for i in range(5):  # the next day: rows again
        stats = _scan(log, 60 * 24 + i, 1, verdict="forged")
    assert _scan(log, 60 * 24 + 10, 1).all_scans == FORGED_ROWS_PER_DAY + 36
    rows = _rows(backend, "SELECT verdict, count(*) FROM scans GROUP BY verdict ORDER BY 1")
    assert rows == [("forged", FORGED_ROWS_PER_DAY + 5), ("genuine", 1)]
    # Pruning recounts from the rows, keeping the scans that were only counted.
    assert log.prune(T0 + timedelta(hours=20)) == FORGED_ROWS_PER_DAY
    assert log.stats(GTIN, SERIAL, at=T0 + timedelta(days=1)).all_scans == 36


def _rows(backend: str, sql: str) -> list[tuple[Any, ...]]:
    if backend.startswith("sqlite:"):
        with sqlite3.connect(backend[len("sqlite:") :]) as con:
            return con.execute(sql).fetchall()
    with psycopg.connect(backend) as con:
        return con.execute(sql).fetchall()


def test_replicas_share_the_salt(backend: str) -> None:
    """Two processes' logs (replicas of the service) key one phone alike."""
    settings = resolve_settings(scan_log=backend)
    with open_scan_log(settings, pool_size=0) as first, open_scan_log(settings) as second:
        _scan(first, 0, 1)
        stats = _scan(second, 1, 1)
        assert stats.clients == 1
        assert _scan(second, 2, 2).clients == 2


# --------------------------------------------------------------------------- upgrades

_V2_SQLITE = """
CREATE TABLE scans (id INTEGER PRIMARY KEY, at TEXT NOT NULL, gtin TEXT NOT NULL,
    serial TEXT NOT NULL, verdict TEXT NOT NULL, location TEXT, source TEXT NOT NULL);
CREATE INDEX scans_by_code ON scans (gtin, serial);
CREATE TABLE scan_codes (gtin TEXT NOT NULL, serial TEXT NOT NULL, good INTEGER NOT NULL,
    total INTEGER NOT NULL, first_at TEXT NOT NULL, places INTEGER NOT NULL,
    PRIMARY KEY (gtin, serial)) WITHOUT ROWID;
CREATE TABLE scan_places (gtin TEXT NOT NULL, serial TEXT NOT NULL, location TEXT NOT NULL,
    PRIMARY KEY (gtin, serial, location)) WITHOUT ROWID;
CREATE TABLE scan_log_version (version INTEGER);
INSERT INTO scan_log_version VALUES (2);
"""
_V2_PG = [
    """CREATE TABLE scans (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at timestamptz NOT NULL, gtin text NOT NULL, serial text NOT NULL,
        verdict text NOT NULL, location text, source text NOT NULL)""",
    "CREATE INDEX scans_by_code ON scans (gtin, serial)",
    "CREATE INDEX scans_by_time ON scans USING brin (at)",
    """CREATE TABLE scan_codes (gtin text NOT NULL, serial text NOT NULL, good bigint NOT NULL,
        total bigint NOT NULL, first_at timestamptz NOT NULL, places bigint NOT NULL,
        PRIMARY KEY (gtin, serial))""",
    """CREATE TABLE scan_places (gtin text NOT NULL, serial text NOT NULL,
        location text NOT NULL, PRIMARY KEY (gtin, serial, location))""",
    "CREATE TABLE scan_log_version (version integer NOT NULL)",
    "INSERT INTO scan_log_version VALUES (2)",
]
# A version 2 log as provmint 2 wrote it: code SERIAL scanned 3 times from Paris and
# Berlin (once forged), OTHER_SERIAL once.
_V2_SCANS = [
    ("2026-02-27T09:00:00.000000Z", SERIAL, "pending", "Paris"),
    ("2026-02-27T10:00:00.000000Z", SERIAL, "forged", "Lagos"),
    ("2026-02-28T10:00:00.000000Z", SERIAL, "genuine", "Berlin"),
    ("2026-02-28T11:00:00.000000Z", OTHER_SERIAL, "genuine", None),
]
_V2_CODES = [
    (SERIAL, 2, 3, "2026-02-27T09:00:00.000000Z", 2),
    (OTHER_SERIAL, 1, 1, "2026-02-28T11:00:00.000000Z", 0),
]


def _write_v2(backend: str) -> None:
    scans = [(at, GTIN, serial, v, loc, "cli") for at, serial, v, loc in _V2_SCANS]
    codes = [(GTIN, *code) for code in _V2_CODES]
    places = [(GTIN, SERIAL, "Paris"), (GTIN, SERIAL, "Berlin")]
    insert = "INSERT INTO scans (at, gtin, serial, verdict, location, source) VALUES "
    if backend.startswith("sqlite:"):
        with sqlite3.connect(backend[len("sqlite:") :]) as con:
            con.executescript(_V2_SQLITE)
            con.executemany(insert + "(?, ?, ?, ?, ?, ?)", scans)
            con.executemany("INSERT INTO scan_codes VALUES (?, ?, ?, ?, ?, ?)", codes)
            con.executemany("INSERT INTO scan_places VALUES (?, ?, ?)", places)
        return
    with psycopg.connect(backend) as con:
        for statement in _V2_PG:
            con.execute(statement)
        with con.cursor() as cur:
            cur.executemany(insert + "(%s, %s, %s, %s, %s, %s)", scans)
            cur.executemany("INSERT INTO scan_codes VALUES (%s, %s, %s, %s, %s, %s)", codes)
            cur.executemany("INSERT INTO scan_places VALUES (%s, %s, %s)", places)


def test_a_version_2_log_is_upgraded_keeping_its_scans(backend: str) -> None:
    """The upgrade keeps every scan and counter; the old scans have no client, so they
    count as one (unknown) client, with their places."""
    _write_v2(backend)
    settings = resolve_settings(scan_log=backend)
    with open_scan_log(settings, pool_size=0) as log:
        at = T0  # 2026-03-01: the old scans are within the window
        stats = log.stats(GTIN, SERIAL, recent=10, at=at)
        assert (stats.count, stats.all_scans, stats.places) == (2, 3, 2)
        assert [s.location for s in stats.recent] == ["Berlin", "Lagos", "Paris"]
        assert stats.first_seen == "2026-02-27T09:00:00.000000Z"
        assert (stats.clients, stats.window_places, stats.placing_clients) == (1, 2, 1)
        assert suspicious(stats, RULE) is None  # two places, but one (unknown) client
        found = log.evidence(GTIN, SERIAL, at=at)
        assert found is not None
        assert [(p.location, p.scans) for p in found.places] == [("Berlin", 1), ("Paris", 1)]
        assert found.last_seen == "2026-02-28T10:00:00.000000Z"
        # New scans count on top: a phone from a third place makes two clients.
        stats = _scan(log, 0, 1, location="Oslo")
        assert (stats.count, stats.clients, stats.placing_clients) == (3, 2, 2)
        assert suspicious(stats, RULE) is not None
        assert log.stats(GTIN, OTHER_SERIAL, at=at).clients == 1
        # The days of the old scans were counted by the upgrade (the new scan is today's).
        old_days = [(c.day.isoformat(), c.verdict, c.scans) for c in log.daily()][:3]
        assert old_days == [
            ("2026-02-27", "forged", 1),
            ("2026-02-27", "pending", 1),
            ("2026-02-28", "genuine", 2),
        ]
    assert _rows(backend, "SELECT version FROM scan_log_version") == [(SCHEMA_VERSION,)]
    assert len(_rows(backend, "SELECT value FROM scan_log_meta")[0][0]) == 32
    phone = client_key(_salt(backend), **_phone(1))
    if backend.startswith("sqlite:"):  # each code's latest clients, in its row
        rows = _rows(backend, "SELECT serial, latest FROM scan_codes ORDER BY 1")
        kept = {s: Latest.load(blob, 1, 1).scanned.entries for s, blob in rows}
        assert [c for _, c in kept[SERIAL]] == [phone, UNKNOWN_CLIENT]
        assert [c for _, c in kept[OTHER_SERIAL]] == [UNKNOWN_CLIENT]
    else:
        clients = _rows(backend, "SELECT serial, client, scans FROM scan_clients ORDER BY 1, 3")
        assert [(s, bytes(c), n) for s, c, n in clients] == [
            (SERIAL, phone, 1),
            (SERIAL, UNKNOWN_CLIENT, 2),
            (OTHER_SERIAL, UNKNOWN_CLIENT, 1),
        ]
    assert len(_rows(backend, "SELECT id FROM scans")) == 5


def _salt(backend: str) -> bytes:
    return bytes(_rows(backend, "SELECT value FROM scan_log_meta")[0][0])


# --------------------------------------------------------------------------- bounded cost


def _flood(log: ScanLog, serial: str, n: int) -> None:
    """``n`` scans of one code from many clients, places and forgers, in batches."""
    batch = []
    for i in range(n):
        batch.append(
            ScanRequest(
                GTIN,
                serial,
                "forged" if i % 10 == 0 else "genuine",
                f"Place {i % 700}",
                "serve",
                T0 + timedelta(seconds=i),
                f"10.{i % 250}.{i // 250 % 250}.1",
                f"phone {i % 3}",
            )
        )
        if len(batch) == 500:
            log.record_many(batch)
            batch = []
    if batch:
        log.record_many(batch)


def test_a_flooded_code_costs_no_more_to_check(tmp_path: Path) -> None:
    """The copy signal's queries are index range scans stopped by LIMIT: after 20,000
    scans of one code (thousands of clients and places), a batch of 50 more scans runs
    as many SQLite instructions as the same batch on a fresh code."""
    log = SqliteScanLog(tmp_path / "scans.sqlite")
    _flood(log, "WARM", 50)  # a code with a few clients and places: a fair comparison

    def steps(serial: str, start: int) -> int:
        con = log._con()
        assert con is not None
        count = [0]

        def tick() -> int:
            count[0] += 1
            return 0

        con.set_progress_handler(tick, 1)
        try:
            log.record_many(
                [
                    ScanRequest(
                        GTIN,
                        serial,
                        "genuine",
                        f"Shop {i % 5}",
                        "serve",
                        T0 + timedelta(days=1, seconds=start + i),
                        f"172.16.{i}.1",
                        "phone",
                    )
                    for i in range(50)
                ]
            )
        finally:
            con.set_progress_handler(None, 1)
        return count[0]

    fresh = steps("WARM", 0)
    _flood(log, SERIAL, 20_000)
    stats = log.stats(GTIN, SERIAL, at=T0 + timedelta(days=1))
    assert stats.all_scans == 20_000 and stats.clients == RULE.max_clients + 1
    flooded = steps(SERIAL, 100)
    assert flooded < 1.25 * fresh, (fresh, flooded)
    con = log._con()
    assert con is not None
    from provmint.store.scanlog.sqlite import _WINDOW_PLACE_COUNT

    plan = " | ".join(
        row[3]
        for row in con.execute("EXPLAIN QUERY PLAN " + _WINDOW_PLACE_COUNT, (GTIN, SERIAL, "x", 2))
    )
    assert "SEARCH scan_places USING COVERING INDEX scan_places_by_time" in plan, plan
    assert "SCAN scan" not in plan, plan
    forged = con.execute(
        "SELECT count(*) FROM scans WHERE serial = ? AND verdict = 'forged'", (SERIAL,)
    ).fetchone()[0]
    assert forged == FORGED_ROWS_PER_DAY  # 2,000 forged scans, 20 rows
    log.close()


def test_postgresql_checks_a_flooded_code_through_its_indexes(pg_url: str) -> None:
    log = open_scan_log(resolve_settings(scan_log=pg_url), pool_size=0)
    _flood(log, SERIAL, 3000)
    log.close()
    from provmint.store.scanlog.postgres import _READ

    with psycopg.connect(pg_url) as con:
        con.execute("ANALYZE")
        con.execute("SET enable_seqscan = off")
        plan = " ".join(
            r[0]
            for r in con.execute(
                "EXPLAIN " + _READ,
                {
                    "gtin": GTIN,
                    "serial": SERIAL,
                    "start": T0,
                    "clients_cap": 6,
                    "places_cap": 2,
                },
            )
        )
    for index in ("scan_clients_by_time", "scan_places_by_time", "scan_clients_by_place"):
        assert index in plan, plan
    assert "Seq Scan" not in plan, plan


# --------------------------------------------------------------------------- the command line


@pytest.fixture
def minted(cli, keyed) -> dict[str, Any]:
    """The example minted; the first product's ``product show --json``."""
    assert cli("batch", "create", EXAMPLE_CSV).exit_code == 0
    r = cli("product", "show", "--gtin", GTIN, "--serial", SERIAL, "--json")
    assert r.exit_code == 0, r.output
    return dict(json.loads(r.stdout))


def _log_phones(settings: Any, phones: range, place: str | None = None) -> None:
    with open_scan_log(settings, pool_size=0) as log:
        for i in phones:
            log.record(
                GTIN, SERIAL, "pending", location=place or f"Shop {i}", source="serve", **_phone(i)
            )


def test_scans_show_and_clear(cli, minted, settings) -> None:
    url, token = minted["url"], minted["token"]
    path = _path(url)[1:]  # 01/.../21/...?t=..., as printed under a QR code
    r = cli("scans", "show", url)
    assert r.exit_code == EXIT_OK, r.output
    assert "not flagged; the scan log has no scans of it" in r.stdout

    _log_phones(settings, range(1, 7))
    _log_phones(settings, range(7, 8), place="[bold]Dock[/] 9")
    r = cli("scans", "show", url, "--json")
    assert r.exit_code == EXIT_SUSPECT, r.output
    shown = json.loads(r.stdout)
    assert shown["flagged"] is True and shown["code"] == f"01/{GTIN}/21/{SERIAL}"
    assert shown["reason"] == "seen by 7 different clients within 7 days"
    assert shown["rule"] == {
        "window": "7 days",
        "window_seconds": 7 * 86400,
        "max_clients": 5,
        "max_places": 1,
    }
    evidence = shown["evidence"]
    assert (evidence["clients"], evidence["places"], evidence["placing_clients"]) == (7, 7, 7)
    assert evidence["listed_places"][0]["location"] == "[bold]Dock[/] 9"
    assert evidence["cleared_at"] is None and evidence["genuine_scans"] == 7
    assert token not in r.stdout

    for code in (url, path, token):  # a URL, a path as printed, a bare token
        r = cli("scans", "show", code)
        assert r.exit_code == EXIT_SUSPECT, (code, r.output)
        assert f"01/{GTIN}/21/{SERIAL}: FLAGGED as a possible copy" in r.stdout
        assert "[bold]Dock[/] 9: 1 scan, last" in r.stdout  # the place, shown as it is
        assert "clients        7 (distinct" in r.stdout and "cleared        never" in r.stdout
        assert token not in r.stdout

    r = cli("scans", "clear", path, "--json")
    assert r.exit_code == EXIT_OK, r.output
    cleared = json.loads(r.stdout)
    assert cleared["flagged"] is True and cleared["evidence"]["clients"] == 7  # what it cleared
    assert cleared["cleared"] == cleared["evidence"]["at"]
    r = cli("scans", "show", url, "--json")
    assert r.exit_code == EXIT_OK, r.output
    after = json.loads(r.stdout)
    assert after["flagged"] is False and after["evidence"]["clients"] == 0
    assert after["evidence"]["cleared_at"] == cleared["cleared"] == after["evidence"]["since"]
    # The command line's own scans see the clear too.
    r = cli("scan", url, "--json")
    assert r.exit_code == EXIT_PENDING, r.output
    assert json.loads(r.stdout)["scans"]["window"]["clients"] == 1

    r = cli("scans", "clear", token)
    assert r.exit_code == EXIT_OK, r.output
    assert f"Cleared the copy signal of 01/{GTIN}/21/{SERIAL} at " in r.stdout
    assert "it was         not flagged" in r.stdout


def test_scans_show_and_clear_refuse_what_they_cannot_read(cli, minted) -> None:
    other = f"01/{GTIN}/21/{OTHER_SERIAL}"
    one_error(cli("scans", "clear", other), EXIT_NOT_FOUND, "no scans of", "nothing to clear")
    one_error(cli("scans", "show", f"01/{GTIN}/21/A/B"), 2, "not a verification code")
    one_error(cli("scans", "show", "01/12345/21/A"), 2, "not a verification code")
    one_error(cli("scans", "show", "A" * 22), EXIT_NOT_FOUND, "no product with token")
    one_error(cli("scans", "show", "not a token"), 2, "token")
    r = cli("scans", "show", other, "--json")
    assert r.exit_code == EXIT_OK and json.loads(r.stdout)["evidence"] is None


def test_scans_show_needs_the_store_of_its_default_log(cli, tmp_path: Path) -> None:
    one_error(cli("scans", "show", f"01/{GTIN}/21/{SERIAL}"), 1, "no provmint store")


def test_scans_show_on_postgresql_needs_no_store(cli, pg_url: str) -> None:
    settings = resolve_settings(scan_log=pg_url)
    _log_phones(settings, range(1, 3))
    r = cli("scans", "show", f"01/{GTIN}/21/{SERIAL}", "--scan-log", pg_url, "--json")
    assert r.exit_code == EXIT_SUSPECT, r.output  # Shop 1 and Shop 2, from two phones
    assert json.loads(r.stdout)["reason"].startswith("seen from 2 places by 2 different clients")
    r = cli("scans", "clear", f"01/{GTIN}/21/{SERIAL}", "--scan-log", pg_url)
    assert r.exit_code == EXIT_OK, r.output
    r = cli("scans", "show", f"01/{GTIN}/21/{SERIAL}", "--scan-log", pg_url, "--json")
    assert r.exit_code == EXIT_OK and json.loads(r.stdout)["flagged"] is False


# --------------------------------------------------------------------------- over HTTP


def test_the_service_counts_clients_not_page_loads(
    cli, minted, serve_store, tmp_path: Path
) -> None:
    """All test requests come from 127.0.0.1: distinct user agents are distinct clients.
    One phone reloading never flags the code; preview bots do not count; six phones do,
    and the operator's clear takes effect on the running service at once."""
    server = serve_store()
    base = server.url + _path(minted["url"])
    r = cli("product", "show", "--gtin", GTIN, "--serial", OTHER_SERIAL, "--json")
    other = server.url + _path(json.loads(r.stdout)["url"])

    def load(url: str, agent: str, place: str | None = None) -> dict[str, Any]:
        query = f"&loc={place}" if place else ""
        r = httpx.get(url + query, headers={**JSON, "User-Agent": agent}, timeout=10)
        assert r.status_code == 200, r.text
        return dict(r.json())

    for i in range(20):
        body = load(base, "phone 1", ("Paris", "Berlin")[i % 2])
        assert body["verdict"] == "pending", i
    for agent in BOTS:
        assert load(other, agent, "Preview")["verdict"] == "pending"
    assert load(other, "phone 1")["verdict"] == "pending"
    for i in range(2, 6):
        assert load(base, f"phone {i}")["verdict"] == "pending"
    flagged = load(base, "phone 6")
    assert flagged["verdict"] == "suspect" and flagged["scans"] == {"count": 25}
    assert "client" not in flagged["reason"] and "Paris" not in json.dumps(flagged)
    assert load(base, "phone 1")["verdict"] == "suspect"  # flagged for everyone now

    r = cli("scans", "clear", minted["url"])
    assert r.exit_code == EXIT_OK, r.output
    assert load(base, "phone 1")["verdict"] == "pending"
    with sqlite3.connect(tmp_path / "store" / "scans.sqlite") as con:
        counted = dict(con.execute("SELECT counted, count(*) FROM scans GROUP BY 1").fetchall())
    assert counted == {0: len(BOTS), 1: 28}
    assert "Traceback" not in server.stop()


def test_the_service_uses_the_copy_signal_settings(
    cli, minted, serve_store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "serve.toml"
    config.write_text('[serve]\nrate_limit = 0\n[copy_signal]\nmax_clients = 1\nwindow = "1h"\n')
    monkeypatch.setenv("PROVMINT_CONFIG", str(config))
    headers = [{**JSON, "User-Agent": f"phone {i}"} for i in (1, 2)]

    def verdict(server: Any, phone: int) -> str:
        r = httpx.get(server.url + _path(minted["url"]), headers=headers[phone], timeout=10)
        return str(r.json()["verdict"])

    server = serve_store()
    assert verdict(server, 0) == "pending"
    assert verdict(server, 1) == "suspect"  # two clients: more than max_clients
    r = cli("scans", "show", minted["url"], "--json")
    assert r.exit_code == EXIT_SUSPECT
    assert json.loads(r.stdout)["rule"]["window"] == "1 hour"
    assert "Traceback" not in server.stop()
    # --clone-threshold replaces max_clients (for the command line too).
    server = serve_store("--clone-threshold", "2")
    assert verdict(server, 1) == "pending"
    r = cli("scans", "show", minted["url"], "--clone-threshold", "2", "--json")
    assert r.exit_code == EXIT_OK


def _path(url: str) -> str:
    """The path and query of a printed URL, as a phone asks for them."""
    return "/" + url.split("://", 1)[1].split("/", 1)[1]
