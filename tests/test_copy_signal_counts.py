"""The copy signal's counts a scan is logged with equal the counts read back from the log
at that moment, whatever the history: the write path takes a shortcut (a code's first
genuine scan needs no window query) that must stay exact, since ``provmint
scan`` shows the counts and the service flags codes by them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provmint.config import resolve_settings
from provmint.store.scanlog import open_scan_log

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
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
