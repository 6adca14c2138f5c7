"""The copy signal's counts a scan is logged with equal the counts read back from the log
at that moment, and the counts the definition gives over every scan logged, whatever the
history: the write path counts from each code's latest clients kept in its row (see
``provmint.store.scanlog.latest``), which must stay exact, since ``provmint scan`` shows
the counts and the service flags codes by them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provmint.config import CopySignalSettings, resolve_settings
from provmint.store.scanlog import open_scan_log
from provmint.store.scanlog.sqlite import SqliteScanLog

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
GTIN = "09520123450014"
BOT = "Mozilla/5.0 (compatible; facebookexternalhit/1.1)"

_SCAN = st.tuples(
    st.integers(0, 3),  # which of two codes (0-1), or a forged scan of code 0 (2-3)
    st.integers(0, 3),  # which client (3: a link-preview bot)
    st.sampled_from([None, None, "Dock 9", "Shop 1"]),  # the place given
    st.integers(1, 60 * 24 * 9),  # minutes after the previous scan (the window is 7 days)
    st.booleans(),  # the operator clears the code just before
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(history=st.lists(_SCAN, min_size=1, max_size=25))
def test_logged_counts_equal_the_counts_read_back(tmp_path_factory, history) -> None:
    path: Path = tmp_path_factory.mktemp("log") / "scans.sqlite"
    log = open_scan_log(resolve_settings(scan_log=f"sqlite:{path}"), pool_size=0)
    try:
        at = T0
        for which, client, place, minutes, clear in history:
            at += timedelta(minutes=minutes)
            serial = "S1" if which == 1 else "S0"
            if clear and which < 2:
                log.clear("09520123450014", serial, at=at - timedelta(seconds=1))
            logged = log.record(
                "09520123450014",
                serial,
                "forged" if which >= 2 else "genuine",
                location=place,
                source="serve",
                at=at,
                recent=0,
                address=f"198.51.{client}.20",
                user_agent=BOT if client == 3 else f"Phone {client}",
            )
            if which >= 2:
                continue
            read = log.stats("09520123450014", serial, recent=0, at=at)
            for name in ("count", "clients", "window_places", "placing_clients", "since"):
                assert getattr(logged, name) == getattr(read, name), (name, history)
    finally:
        log.close()


_STEP = st.tuples(
    st.integers(0, 3),  # which of two codes (0-1), or a forged scan of code 0 (2-3)
    st.integers(0, 7),  # which client (7: a link-preview bot)
    st.sampled_from([None, None, "Dock 9", "Shop 1", "Quay 3"]),  # the place given
    st.integers(-60 * 24 * 3, 60 * 24 * 6),  # minutes from the previous scan: also back
    st.integers(0, 9),  # 0: the operator clears the code just before; 1: a new rule
    st.integers(1, 4),  # the new rule's max_clients
    st.integers(1, 2),  # the new rule's max_places
)


def _model(
    scans: list[tuple[str, bool, int, str | None, datetime]],
    cleared: datetime | None,
    serial: str,
    at: datetime,
    rule: CopySignalSettings,
) -> dict[str, int]:
    """The copy signal's counts straight from the definition, over every scan logged."""
    since = max(at - rule.window, cleared) if cleared else at - rule.window
    mine = [(c, p, t) for s, good, c, p, t in scans if s == serial and good]
    counted = [(c, p, t) for c, p, t in mine if c != 7 and t >= since]
    return {
        "count": len(mine),
        "clients": min(rule.max_clients + 1, len({c for c, _, _ in counted})),
        "placing_clients": min(rule.max_places + 1, len({c for c, p, _ in counted if p})),
        "window_places": min(rule.max_places + 1, len({p for _, p, _ in counted if p})),
    }


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(history=st.lists(_STEP, min_size=1, max_size=30))
def test_logged_counts_equal_the_definition(tmp_path_factory, history) -> None:
    """Whatever the order scans arrive in, and however the thresholds change between
    runs (the log keeps each code's latest clients for the rule it was written with),
    every count equals the definition's over all the scans logged."""
    path: Path = tmp_path_factory.mktemp("log") / "scans.sqlite"
    rule = CopySignalSettings(max_clients=2, max_places=1)
    log = SqliteScanLog(path, rule=rule)
    scans: list[tuple[str, bool, int, str | None, datetime]] = []
    cleared: dict[str, datetime] = {}
    try:
        at = T0
        for which, client, place, minutes, event, max_clients, max_places in history:
            at += timedelta(minutes=minutes)
            serial = "S1" if which == 1 else "S0"
            if event == 1:
                rule = CopySignalSettings(max_clients=max_clients, max_places=max_places)
                log.close()
                log = SqliteScanLog(path, rule=rule)
            if event == 0 and which < 2 and any(s == serial for s, *_ in scans):
                when = at - timedelta(seconds=1)
                log.clear(GTIN, serial, at=when)
                cleared[serial] = max(cleared.get(serial, when), when)
            good = which < 2
            logged = log.record(
                GTIN,
                serial,
                "genuine" if good else "forged",
                location=place,
                source="serve",
                at=at,
                recent=0,
                address=f"198.51.{client}.20",
                user_agent=BOT if client == 7 else f"Phone {client}",
            )
            scans.append((serial, good, client, place if good else None, at))
            if not good:
                continue
            expected = _model(scans, cleared.get(serial), serial, at, rule)
            got = {name: getattr(logged, name) for name in expected}
            assert got == expected, history
            read = log.stats(GTIN, serial, recent=0, at=at)
            assert {name: getattr(read, name) for name in expected} == expected, history
    finally:
        log.close()
