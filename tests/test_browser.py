"""What a phone shows: a real headless Chromium opens the verification page served by a
real ``provmint serve`` for a batch anchored on a real local chain.

Needs Node (with the pinned playwright-core from ``npm ci``) and Chromium
(``/usr/bin/chromium`` or ``$CHROMIUM_BIN``): without them the test fails, never skips.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from conftest import EXAMPLE_CSV, ROOT, require_marker

GTIN = "09520123450014"
SERIAL = "546CAWQDCR56"
SCRIPT = ROOT / "tests" / "browser" / "open_page.mjs"


def _ok(r: Any, code: int = 0) -> Any:
    assert r.exit_code == code, (r.exit_code, r.stdout, r.stderr, r.exception)
    return json.loads(r.stdout)


def _browser_ready() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: the browser test needs Node >= 20", pytrace=False)
    chromium = os.environ.get("CHROMIUM_BIN") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.fail(
            f"Chromium not found at {chromium}: install it or set CHROMIUM_BIN", pytrace=False
        )
    if not (ROOT / "node_modules" / "playwright-core").is_dir():
        pytest.fail(f"playwright-core missing: run `npm ci` in {ROOT}", pytrace=False)
    return node


def open_page(url: str, screenshot: Path) -> dict[str, Any]:
    """Open ``url`` in headless Chromium; what the page showed."""
    require_marker("browser")
    node = _browser_ready()
    done = subprocess.run(
        [node, str(SCRIPT), url, str(screenshot)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"open_page.mjs failed:\n{done.stdout}\n{done.stderr}"
    lines = [ln for ln in done.stdout.splitlines() if ln.strip()]
    assert lines, done.stderr
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def test_phone_sees_genuine_product_and_can_check_the_proof(
    cli, keyed, chain_env, serve_store, tmp_path: Path
) -> None:
    _ok(cli("batch", "create", EXAMPLE_CSV, "--json"))
    anchor = _ok(cli("anchor", "--json"))["anchor"]
    assert anchor["state"] == "confirmed"
    product = _ok(cli("product", "show", "--gtin", GTIN, "--serial", SERIAL, "--json"))
    parts = urlsplit(product["url"])
    server = serve_store()

    shot = tmp_path / "page.png"
    page = open_page(f"{server.url}{parts.path}?{parts.query}", shot)
    assert page["status"] == 200
    assert page["verdict"] == "genuine"
    assert page["heading"] == "Genuine product"
    assert page["title"] == "Genuine product"
    text = page["text"]
    for value in (
        GTIN,
        SERIAL,
        "L2406A",
        "Aurora Serum 30 ml",
        product["batch_id"],
        f"block {anchor['block_number']} of chain 31337",
        anchor["tx_hash"],
    ):
        assert value in text, value
    assert shot.is_file()
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000, len(data)

    href = page["proofHref"]
    assert href and href.startswith(f"/proof/01/{GTIN}/10/L2406A/21/{SERIAL}?t=")
    proof = httpx.get(server.url + href, timeout=10)
    assert proof.status_code == 200
    doc = proof.json()
    assert doc["product"]["record"] == product["record"]
    assert doc["anchor"]["tx_hash"] == anchor["tx_hash"]
    path = tmp_path / "from-browser.json"
    path.write_text(proof.text, encoding="utf-8")
    report = _ok(
        cli("verify", path, "--rpc-url", chain_env.url, f"--token={product['token']}", "--json")
    )
    assert report["verdict"] == "valid"
    assert report["chain"]["block_number"] == anchor["block_number"]

    forged = f"{server.url}{parts.path}?t=AAAAAAAAAAAAAAAAAAAAAA"
    assert forged != f"{server.url}{parts.path}?{parts.query}"
    page = open_page(forged, tmp_path / "forged.png")
    assert page["status"] == 404
    assert page["verdict"] == "unknown"  # forged and unknown look the same to the public
    assert page["heading"] == "Not recognised"
    assert page["proofHref"] is None
    assert "Aurora" not in page["text"] and "L2406A" not in page["text"]
    assert (tmp_path / "forged.png").stat().st_size > 5_000
