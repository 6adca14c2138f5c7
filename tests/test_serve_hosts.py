"""The hosts ``provmint serve`` answers codes on ([serve] check_host), over real uvicorn.

A code asked on another host than the service's is answered as an unknown code. The
service's hosts are not only today's url base's: labels already on shelves carry the
url base their batch was minted or printed with, and a brand that moves to a new domain
must not have its genuine products called "not recognised" on the old one. So the
hosts are the url base's, ``[serve] hosts``, and those of every url base in the batches'
manifests and print records, a print made while the service runs included.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from test_serve import _path, _product
from test_url_base import BRAND, _get, _minted, _serve_config

from provmint.edge import HostCheck, base_host


def _status(server: Any, path: str, host: str) -> int:
    return _get(server, path, {"Host": host}).status_code


def test_labels_of_earlier_url_bases_stay_genuine(
    cli, keyed, serve_store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROVMINT_URL_BASE", BRAND)  # minted on id.brand.test
    _minted(cli)
    path = _path(_product(cli)["url"])
    # The brand moved: today's base is another domain, and one more is configured.
    monkeypatch.setenv("PROVMINT_URL_BASE", "https://new.brand.test")
    _serve_config(tmp_path, hosts=["Other.Brand.Test."])
    server = serve_store()
    for host in ("id.brand.test", "new.brand.test", "other.brand.test", "NEW.brand.test:443"):
        assert _status(server, path, host) == 200, host
    for host in ("evil.test", "print.brand.test", "brand.test"):
        assert _status(server, path, host) == 404, host

    # Labels printed now, on a third domain, while the service runs: found by looking
    # again (at most every 2 s), with no restart.
    out = tmp_path / "labels.csv"
    r = cli("batch", "export", "latest", "-o", out, "--url-base", "https://print.brand.test")
    assert r.exit_code == 0, r.output
    deadline = time.monotonic() + 10
    while _status(server, path, "print.brand.test") != 200:
        assert time.monotonic() < deadline, "the printed host was never accepted"
        time.sleep(0.5)
    assert _status(server, path, "evil.test") == 404
    server.stop()


@pytest.mark.parametrize(
    "value",
    ["https://id.brand.test", "id.brand.test:8443", "id.brand.test/x", "a_b.test", "", 7],
)
def test_a_hosts_setting_that_is_not_host_names_stops_serve(
    keyed, tmp_path: Path, value: Any
) -> None:
    _serve_config(tmp_path, hosts=[value])
    done = subprocess.run(
        [sys.executable, "-m", "provmint", "serve", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "[serve] hosts" in done.stderr and "Traceback" not in done.stderr


def test_base_host_reads_url_bases_and_names_alike() -> None:
    assert base_host("https://ID.Brand.test:8443/scan/") == "id.brand.test"
    assert base_host("https://user@id.brand.test") == "id.brand.test"
    assert base_host("id.brand.test.") == "id.brand.test"
    assert base_host("https://[2001:db8::1]/") == "2001:db8::1"
    assert base_host("https://é.test") == "" and base_host("") == ""
    check = HostCheck("https://id.brand.test", also=["https://old.brand.test/x", "more.test"])
    assert check.allows(b"old.brand.test") and check.allows(b"MORE.test:80")
    assert check.allows(b"printed.test", frozenset({"printed.test"}))
    assert not check.allows(b"printed.test") and not check.allows(b"")
