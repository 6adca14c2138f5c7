"""``provmint scans list``: the newest scans, filtered by code, verdict and time, on both
scan-log backends; ``ScanLog.list_scans`` underneath."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import EXAMPLE_CSV
from helpers import one_error

from provmint.config import resolve_settings
from provmint.errors import EXIT_PENDING
from provmint.store.scanlog import ScanLog, ScanQuery, open_scan_log

GTIN = "09520123450014"
SERIAL = "546CAWQDCR56"
NOW = datetime.now(UTC)


_FILL = [
    (50, SERIAL, "pending", "phone-a"),
    (30, "OTHER1", "forged", "phone-b"),
    (5, SERIAL, "pending", "facebookexternalhit/1.1"),
    (2, SERIAL, "forged", "phone-c"),
    (1, "OTHER1", "pending", "phone-d"),
]
_FILLED = [(hours, verdict) for hours, _, verdict, _ in _FILL]


def _fill(settings: Any) -> None:
    """Scans of two codes over three days, one from a link-preview bot."""
    with open_scan_log(settings, pool_size=0) as log:
        log.migrate()
        for hours, serial, verdict, agent in _FILL:
            log.record(
                GTIN,
                serial,
                verdict,
                location="Dock 9" if hours == 1 else None,
                source="serve",
                at=NOW - timedelta(hours=hours),
                address="198.51.100.7",
                user_agent=agent,
            )


def _check_queries(settings: Any) -> None:
    with open_scan_log(settings, pool_size=0) as log:
        every = log.list_scans(ScanQuery(limit=100))
        assert [(s.serial, s.verdict) for s in every] == [
            ("OTHER1", "pending"),
            (SERIAL, "forged"),
            (SERIAL, "pending"),
            ("OTHER1", "forged"),
            (SERIAL, "pending"),
        ]
        assert [s.counted for s in every] == [True, True, False, True, True]
        assert every[0].location == "Dock 9" and every[0].source == "serve"
        assert every[0].at > every[1].at  # newest first, stored stamps
        assert len(log.list_scans(ScanQuery(limit=2))) == 2
        mine = log.list_scans(ScanQuery(gtin=GTIN, serial=SERIAL))
        assert [s.verdict for s in mine] == ["forged", "pending", "pending"]
        forged = log.list_scans(ScanQuery(verdict="forged"))
        assert [s.serial for s in forged] == [SERIAL, "OTHER1"]
        recent = log.list_scans(ScanQuery(since=NOW - timedelta(hours=10)))
        assert len(recent) == 3
        both = log.list_scans(
            ScanQuery(gtin=GTIN, serial=SERIAL, verdict="pending", since=NOW - timedelta(hours=10))
        )
        assert len(both) == 1 and not both[0].counted
        _check_days(log)


def _check_days(log: ScanLog) -> None:
    """Scans per day and verdict: every scan counted once on its UTC day (the bot's
    too), whatever the backend; ``since`` drops the days before it."""
    expected = Counter(((NOW - timedelta(hours=h)).date(), v) for h, v in _FILLED)
    days = log.daily()
    assert {(d.day, d.verdict): d.scans for d in days} == expected
    assert [(d.day, d.verdict) for d in days] == sorted(expected)
    today = NOW.date()
    assert {(d.day, d.verdict) for d in log.daily(today)} == {k for k in expected if k[0] >= today}
    assert log.daily(today + timedelta(days=1)) == []
    assert days[0].to_json() == {
        "day": days[0].day.isoformat(),
        "verdict": days[0].verdict,
        "scans": days[0].scans,
    }
    assert log.prune(NOW + timedelta(seconds=1)) == len(_FILL)  # every row is gone...
    assert log.list_scans(ScanQuery()) == []
    assert log.daily() == days  # ...and the days keep their counts


def test_list_scans_on_sqlite(tmp_path: Path) -> None:
    settings = resolve_settings(
        store=tmp_path / "store",
        key_file=tmp_path / "k.json",
        scan_log=f"sqlite:{tmp_path / 'scans.sqlite'}",
        env={"HOME": str(tmp_path)},
    )
    _fill(settings)
    _check_queries(settings)


@pytest.mark.postgres
def test_list_scans_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    settings = resolve_settings(
        store=tmp_path / "store",
        key_file=tmp_path / "k.json",
        scan_log=pg_url,
        env={"HOME": str(tmp_path)},
    )
    _fill(settings)
    _check_queries(settings)


def test_scans_list_through_the_cli(cli, keyed, tmp_path: Path) -> None:
    assert cli("batch", "create", EXAMPLE_CSV).exit_code == 0
    r = cli("scans", "list")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == ["at\tgtin\tserial\tverdict\tplace\tsource\tcounted"]
    product = json.loads(
        cli("product", "show", "--gtin", GTIN, "--serial", SERIAL, "--json").stdout
    )
    assert cli("scan", product["url"], "--location", "Shop\t7").exit_code == EXIT_PENDING
    assert (
        cli(
            "scan", f"https://id.example.com/01/{GTIN}/21/{SERIAL}?t=AAAAAAAAAAAAAAAAAAAAAA"
        ).exit_code
        == 3
    )
    listed = json.loads(cli("scans", "list", "--json").stdout)["scans"]
    assert [s["verdict"] for s in listed] == ["forged", "pending"]
    assert listed[1]["location"] == "Shop7"  # control characters dropped when logged
    assert set(listed[0]) == {"at", "gtin", "serial", "verdict", "location", "source", "counted"}
    by_code = json.loads(cli("scans", "list", "--code", product["token"], "--json").stdout)
    assert len(by_code["scans"]) == 2
    forged = cli("scans", "list", "--verdict", "forged", "--since", "1h")
    rows = [line.split("\t") for line in forged.stdout.splitlines()[1:]]
    assert [row[3] for row in rows] == ["forged"] and rows[0][5] == "cli"
    one_error(cli("scans", "list", "--since", "yesterday"), 2, "--since 'yesterday' is not an age")
    assert cli("scans", "list", "--verdict", "maybe").exit_code == 2


def test_suspect_scans_are_listed_through_their_own_index(tmp_path: Path) -> None:
    """Operators list suspect scans (``provmint stats``, the dashboard) over logs of
    hundreds of millions of scans: that listing reads an index of suspect scans alone
    (a partial one, which costs the other scans nothing), never the whole log."""
    from provmint.store.scanlog import stamp
    from provmint.store.scanlog.sqlite import SqliteScanLog

    log = SqliteScanLog(tmp_path / "scans.sqlite")
    for verdict in ("genuine", "suspect", "forged", "suspect"):
        log.record(GTIN, SERIAL, verdict, location=None, source="serve")
    query = ScanQuery(verdict="suspect", since=NOW - timedelta(days=30))
    assert [s.verdict for s in log.list_scans(query)] == ["suspect", "suspect"]
    where, args = query.where("?", stamp)
    con = log._con()
    assert con is not None
    plan = con.execute(
        f"EXPLAIN QUERY PLAN SELECT * FROM scans{where} ORDER BY id DESC LIMIT ?", (*args, 5)
    ).fetchall()
    assert "USING INDEX scans_suspect" in plan[0][3], plan
    log.close()
