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
        f"{anchor['tx_hash'][:6]}…{anchor['tx_hash'][-4:]}",  # shortened on the page
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


# --------------------------------------------------------------------------- each verdict


LATER_SERIAL = "LATER0001"
PHISHING = "FAKE call +1-555-0100 for refund"
ENGLISH = {
    "genuine": "Genuine product",
    "pending": "Genuine, being registered",
    "suspect": "Possible copy",
    "unknown": "Not recognised",
}
STATUS = {"genuine": 200, "pending": 200, "suspect": 200, "unknown": 404}


def open_pages(specs: list[dict[str, Any]], tmp_path: Path) -> list[dict[str, Any]]:
    """Open each page of ``specs`` ({url, screenshot, width?, locale?}) in one headless
    Chromium; what each showed, measured (see tests/browser/open_page.mjs)."""
    require_marker("browser")
    node = _browser_ready()
    listing = tmp_path / "pages.json"
    listing.write_text(json.dumps(specs), encoding="utf-8")
    done = subprocess.run(
        [node, str(SCRIPT), "--pages", str(listing)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"open_page.mjs failed:\n{done.stdout}\n{done.stderr}"
    pages = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert len(pages) == len(specs), done.stderr
    return pages


def _png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A small one-colour PNG (the brand's logo in these tests)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\x00" + bytes(rgb) * width
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


def _hex(rgba: list[float]) -> str:
    assert rgba[3] == 1, rgba  # the page draws no text in a translucent colour
    return "#" + "".join(f"{round(c):02x}" for c in rgba[:3])


def _low_contrast(page: dict[str, Any]) -> list[tuple[str, str, float]]:
    """The texts of a measured page whose contrast with what is behind them is below
    WCAG AA's 4.5:1."""
    from provmint.config import contrast_ratio

    low = []
    for item in page["texts"]:
        ratio = contrast_ratio(_hex(item["color"]), _hex(item["background"]))
        if ratio < 4.5:
            low.append((item["element"], item["text"], round(ratio, 2)))
    return low


def _make_suspect(url: str) -> None:
    """Scan ``url`` as several different phones (each its own user agent), each giving a
    place, until the service flags the code as a possible copy."""
    for n in range(8):
        r = httpx.get(
            f"{url}&loc={PHISHING.replace(' ', '%20')}%20{n}",
            headers={
                "Accept": "application/json",
                "User-Agent": f"Mozilla/5.0 (Linux; Android 14; Phone {n}) Mobile",
            },
            timeout=10,
        )
        if r.json()["verdict"] == "suspect":
            return
    pytest.fail(f"the code was not flagged after 8 clients: {r.json()}")


@pytest.fixture
def branded(tmp_path: Path) -> Path:
    """A [brand] table in the test's config file, with a logo: the logo's path."""
    logo = tmp_path / "logo.png"
    logo.write_bytes(_png(48, 16, (11, 92, 173)))
    (tmp_path / "no-config.toml").write_text(
        "[brand]\n"
        'name = "Aurora Labs"\n'
        f'logo = "{logo}"\n'
        'contact = "quality@aurora.example"\n'
        'colour = "#0b5cad"\n'
        'explorer = "https://explorer.example/tx/{tx}"\n',
        encoding="utf-8",
    )
    return logo


def test_each_verdict_in_two_languages_on_a_narrow_phone(
    cli, keyed, chain_env, serve_store, write_csv, branded: Path, tmp_path: Path
) -> None:
    """Genuine, pending, possible copy and not recognised, each in English and in
    Portuguese (the phone's Accept-Language) at 360 px wide: the heading is in the
    phone's language, nothing is wider than the screen, every text passes WCAG AA
    against its background, the page loads nothing from elsewhere (the logo is the
    service's own), and no text another visitor gave (``loc``) is shown."""
    from provmint.publicpage.i18n import translations

    _ok(cli("batch", "create", EXAMPLE_CSV, "--json"))
    anchor = _ok(cli("anchor", "--json"))["anchor"]
    later = write_csv("later.csv", f"gtin,serial,lot,product_name\n{GTIN},{LATER_SERIAL},L9,Late\n")
    _ok(cli("batch", "create", later, "--json"))  # minted after the anchor: pending

    def path(serial: str) -> str:
        url = _ok(cli("product", "show", "--gtin", GTIN, "--serial", serial, "--json"))["url"]
        parts = urlsplit(url)
        return f"{parts.path}?{parts.query}"

    server = serve_store("--clone-threshold", "1")
    genuine = path(SERIAL)
    codes = {
        "genuine": genuine,
        "pending": path(LATER_SERIAL),
        "suspect": path("X67Y29DHPXTS"),
        "unknown": genuine.partition("?")[0] + "?t=AAAAAAAAAAAAAAAAAAAAAA",
    }
    _make_suspect(server.url + codes["suspect"])

    portuguese = translations("pt").gettext
    specs, expected = [], []
    for verdict, code in codes.items():
        for lang, locale in (("en", "en-GB"), ("pt", "pt-BR")):
            shot = tmp_path / f"{verdict}-{lang}.png"
            specs.append(
                {"url": server.url + code, "screenshot": str(shot), "width": 360, "locale": locale}
            )
            heading = ENGLISH[verdict] if lang == "en" else portuguese(ENGLISH[verdict])
            assert lang == "en" or heading != ENGLISH[verdict]
            expected.append((verdict, lang, heading, shot))
    # ?lang= overrides the phone's language.
    specs.append(
        {
            "url": server.url + codes["unknown"] + "&lang=de",
            "screenshot": str(tmp_path / "unknown-de.png"),
            "width": 360,
            "locale": "pt-BR",
        }
    )
    expected.append(("unknown", "de", "Nicht erkannt", tmp_path / "unknown-de.png"))

    for page, (verdict, lang, heading, shot) in zip(
        open_pages(specs, tmp_path), expected, strict=True
    ):
        where = f"{verdict} in {lang}"
        assert page["status"] == STATUS[verdict], where
        assert page["verdict"] == verdict, where
        assert page["lang"] == lang and page["heading"] == heading, (where, page["heading"])
        assert page["title"] == f"{heading} · Aurora Labs", where
        assert page["viewport"] == 360 and page["documentWidth"] <= 360, where
        assert page["overflowing"] == [], (where, page["overflowing"])
        assert _low_contrast(page) == [], where
        assert all(url.startswith(server.url + "/") for url in page["requests"]), page["requests"]
        assert [image["loaded"] for image in page["images"]] == [True], page["images"]
        # "555-0100", not "555": three fives can be in a batch id or a shortened hash.
        for fragment in ("FAKE", "555-0100", "refund"):
            assert fragment not in page["text"], (where, fragment)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 5_000
    logo = httpx.get(server.url + "/brand/logo", timeout=10)
    assert logo.status_code == 200 and logo.headers["content-type"] == "image/png"
    assert logo.content == branded.read_bytes()
    assert anchor["state"] == "confirmed"
