"""``provmint stats``: the store and its scans at a glance, through the CLI and the
library, on both scan-log backends; the suspect codes and why they are flagged."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import EXAMPLE_CSV
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provmint.config import Settings, resolve_settings
from provmint.stats import VERDICTS, daily_scans, format_eth, store_stats
from provmint.store.scanlog import DayCount, ScanRequest, open_scan_log

GTIN = "09520123450014"
GENUINE, FORGED, COPIED, CLEARED = "546CAWQDCR56", "X67Y29DHPXTS", "ZCTYQW3VJVYP", "MVY1MJDXQBXJ"
HOSTILE = (
    "<script>window.__pwned=1</script>",
    '"><img src=x onerror="window.__pwned=1">',
)
"""Places strangers typed into the link (``?loc=``): text, never markup."""
NOW = datetime.now(UTC)


@dataclass(frozen=True)
class Fill:
    """What :func:`fill_log` logged: scans per (day, verdict)."""

    counts: Counter[tuple[str, str]]


def fill_log(cfg: Settings) -> Fill:
    """Scans of four codes of the example batch through ``ScanLog.record_many``: a
    genuine code (one scan three days ago), a forged one, a copied one (two hostile
    places from two clients: flagged), and one flagged, then cleared and scanned again."""

    def scan(serial: str, verdict: str, hours: float, client: int, place: str | None = None):
        return ScanRequest(
            GTIN,
            serial,
            verdict,
            place,
            "serve",
            at=NOW - timedelta(hours=hours),
            address=f"198.51.{client}.7",
            user_agent="Mozilla/5.0 (test phone)",
        )

    scans = [
        scan(GENUINE, "pending", 72, 1),
        scan(GENUINE, "pending", 0.5, 1),
        scan(FORGED, "forged", 0.4, 2),
        scan(FORGED, "forged", 0.3, 3),
        scan(COPIED, "pending", 0.2, 4, HOSTILE[0]),
        scan(COPIED, "suspect", 0.1, 5, HOSTILE[1]),
        scan(CLEARED, "pending", 0.25, 6, "Lyon"),
        scan(CLEARED, "suspect", 0.2, 7, "Oslo"),
    ]
    with open_scan_log(cfg, pool_size=0) as log:
        log.migrate()
        log.record_many(scans)
        log.clear(GTIN, CLEARED, at=NOW - timedelta(minutes=10))
        after = scan(CLEARED, "pending", 0.1, 8)
        log.record_many([after])
    logged = [*scans, after]
    return Fill(Counter((s.at.date().isoformat(), s.verdict) for s in logged if s.at))


def _json(r: Any) -> Any:
    assert r.exit_code == 0, (r.exit_code, r.output, r.exception)
    return json.loads(r.stdout)


def _report_day(report: dict[str, Any]) -> date:
    """The UTC day the report was made: its window ends there (the suite may have
    started the day before)."""
    return date.fromisoformat(report["at"][:10])


def _check_report(report: dict[str, Any], fill: Fill, days_back: int) -> None:
    """What stats says of the example batch (9 products, pending) and the filled log,
    over a window of ``days_back`` whole UTC days before the report's day."""
    today = _report_day(report)
    since = (today - timedelta(days=days_back)).isoformat()
    assert report["batches"] == {"total": 1, "anchored": 0, "anchoring": 0, "pending": 1}
    assert report["products"] == {"total": 9, "anchored": 0, "anchoring": 0, "pending": 9}
    assert report["anchors"]["total"] == 0 and report["anchors"]["fee_wei"] == "0"
    days = report["scans"]["days"]
    assert days[0]["day"] == since and days[-1]["day"] == today.isoformat()
    seen = Counter({(d["day"], v): n for d in days for v, n in d["verdicts"].items() if n})
    expected = Counter({k: n for k, n in fill.counts.items() if k[0] >= since})
    assert seen == expected
    assert report["scans"]["total"] == sum(expected.values())
    assert all(list(d["verdicts"]) == list(VERDICTS) for d in days)
    codes = report["suspect_codes"]["codes"]
    assert report["suspect_codes"]["complete"] is True
    assert [c["code"] for c in codes] == [f"01/{GTIN}/21/{COPIED}"]  # CLEARED was scanned since
    copied = codes[0]
    assert copied["flagged"] is True and copied["suspect_scans"] == 1
    for place in HOSTILE:
        assert place in copied["reason"]  # the places, as typed: the page escapes them


def test_stats_through_the_cli_and_the_library(cli, keyed: Settings, tmp_path: Path) -> None:
    assert cli("batch", "create", "-j", "1", EXAMPLE_CSV).exit_code == 0
    empty = _json(cli("stats", "--json"))
    assert empty["scans"]["total"] == 0 and empty["suspect_codes"]["codes"] == []
    assert not (keyed.store / "scans.sqlite").exists()  # reading never creates the log

    fill = fill_log(keyed)
    report = _json(cli("stats", "--json"))
    _check_report(report, fill, 30)
    # The reason is the copy signal's, as provmint scans show gives it.
    shown = cli("scans", "show", f"01/{GTIN}/21/{COPIED}", "--json")
    assert report["suspect_codes"]["codes"][0]["reason"] == json.loads(shown.stdout)["reason"]

    # --since counts whole UTC days: two days back leaves the scan of three days ago out.
    recent = _json(cli("stats", "--since", "2d", "--json"))
    _check_report(recent, fill, 2)
    assert recent["scans"]["total"] == report["scans"]["total"] - 1

    # The library gives the same document.
    library = store_stats(keyed, since=_report_day(report) - timedelta(days=30)).to_json()
    assert {k: v for k, v in library.items() if k != "at"} == {
        k: v for k, v in report.items() if k != "at"
    }

    # Sizes on disk: the scan log's files, and the store's parts.
    disk = report["disk"]
    log_files = [keyed.store / n for n in ("scans.sqlite", "scans.sqlite-wal", "scans.sqlite-shm")]
    assert disk["scan_log"] == sum(p.stat().st_size for p in log_files if p.exists())
    assert disk["batches"] > 0 and disk["catalog"] > 0 and disk["index"] > 0
    assert disk["total"] == sum(v for k, v in disk.items() if k != "total")
    _check_piped(cli)


def _check_piped(cli: Any) -> None:
    """For people, tables; in a pipe (as here), tab-separated lines under a header."""
    r = cli("stats", "--since", "7d")
    assert r.exit_code == 0, r.output
    blocks = r.stdout.split("\n\n")
    assert [b.splitlines()[0] for b in blocks] == [
        "what\tcount\tdetail",
        "day\tgenuine\tpending\tsuspect\tforged\ttotal",
        "code\tlast suspect\tscans\tflagged now\twhy",
    ]
    summary = dict(line.split("\t")[:2] for line in blocks[0].splitlines()[1:])
    assert summary["products"] == "9" and summary["batches"] == "1"
    assert len(blocks[1].splitlines()) == 1 + 8  # a line for every day of the window
    suspect = blocks[2].splitlines()[1].split("\t")
    assert suspect[0] == f"01/{GTIN}/21/{COPIED}" and suspect[3] == "yes"
    assert HOSTILE[0] in suspect[4]
    assert not any(ch in r.stdout for ch in "│─┃━")


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.text(max_size=12))
def test_since_is_an_age_or_exit_2(cli, text: str) -> None:
    r = cli("stats", "--since", text, "--json")
    assert r.exit_code in (1, 2), r.output  # 1: no store here; 2: not an age
    assert r.exception is None or isinstance(r.exception, SystemExit)
    if r.exit_code == 2:
        assert "--since" in r.stderr


@given(wei=st.integers(min_value=0, max_value=10**40))
def test_fees_in_ether_are_exact(wei: int) -> None:
    text = format_eth(wei)
    assert "e" not in text.lower()
    whole, _, fraction = text.partition(".")
    assert len(fraction) <= 18 and not fraction.endswith("0")
    assert int(whole) * 10**18 + int(fraction.ljust(18, "0")) == wei


def test_every_day_of_the_window_is_listed() -> None:
    today = NOW.date()
    counts = [
        DayCount(today - timedelta(days=2), "forged", 3),
        DayCount(today, "genuine", 1),
        DayCount(today, "later-verdict", 2),
    ]
    days = daily_scans(counts, today - timedelta(days=4), today)
    assert [d.day for d in days] == [today - timedelta(days=n) for n in (4, 3, 2, 1, 0)]
    assert days[2].verdicts == {
        "genuine": 0,
        "pending": 0,
        "suspect": 0,
        "forged": 3,
        "later-verdict": 0,
    }
    assert days[-1].total == 3


@pytest.mark.postgres
def test_stats_on_postgresql(cli, keyed: Settings, pg_url: str) -> None:
    assert cli("batch", "create", "-j", "1", EXAMPLE_CSV).exit_code == 0
    cfg = resolve_settings(scan_log=pg_url)
    fill = fill_log(cfg)
    report = _json(cli("stats", "--scan-log", pg_url, "--json"))
    _check_report(report, fill, 30)
    assert report["disk"]["scan_log"] is None  # the database server's
    assert "@127.0.0.1" in report["scan_log"]
    assert not (keyed.store / "scans.sqlite").exists()


def test_anchor_costs_count_every_receipt() -> None:
    """Gas and fees of anchors in a block and of reverted ones (both paid); none for an
    anchor still on its way."""
    from provmint.stats import anchor_costs
    from provmint.store.anchors import AnchorRecord, AnchorState

    def record(n: int, state: AnchorState, gas: int | None, fee: str | None) -> AnchorRecord:
        return AnchorRecord(
            n, "t", "t", 31337, "calldata", None, "0xabc", 1, "00", "00", state, 1,
            None, None, None, None, gas, fee, None,
        )  # fmt: skip

    costs = anchor_costs(
        [
            record(1, AnchorState.CONFIRMED, 22_480, str(10**18 + 1)),
            record(2, AnchorState.FAILED, 30_000, "5"),
            record(3, AnchorState.BROADCAST, None, None),
        ]
    )
    assert costs.total == 3 and costs.gas_used == 52_480 and costs.fee_wei == 10**18 + 6
    assert costs.states["confirmed"] == costs.states["failed"] == costs.states["broadcast"] == 1
    assert costs.to_json()["fee_eth"] == "1.000000000000000006"
