"""``provmint serve``: the verification service behind the printed URLs, over real HTTP.

Every test starts a real ``provmint serve --port 0`` subprocess over its own store and
talks to it on loopback (httpx; ``http.client`` where a path must reach the server byte
for byte, since httpx normalizes dot segments). Checked: verdict pages and JSON, the
proof endpoint (fed back to ``provmint verify``), malformed and hostile paths, that no
response carries the token (outside the proof link), the key or the store path, scan
logging shared with ``provmint scan``, clone detection, concurrency, and catalog reload.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import http.client
import json
import re
import secrets
import sqlite3
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest
from conftest import EXAMPLE_CSV

from provmint.errors import EXIT_OK, EXIT_PENDING
from provmint.store.scanlog import FORGED_ROWS_PER_DAY
from provmint.tokens import format_token

GTIN = "09520123450014"
GTIN13 = GTIN[1:]
SERIAL = "546CAWQDCR56"
OTHER_SERIAL = "X67Y29DHPXTS"
LOT = "L2406A"
JSON = {"Accept": "application/json"}


# --------------------------------------------------------------------------- helpers


def _ok(r: Any, code: int = 0) -> Any:
    assert r.exit_code == code, (r.exit_code, r.stdout, r.stderr, r.exception)
    return json.loads(r.stdout) if r.stdout.strip().startswith("{") else r.stdout


def _product(cli, serial: str = SERIAL, gtin: str = GTIN) -> dict[str, Any]:
    return _ok(cli("product", "show", "--gtin", gtin, "--serial", serial, "--json"))


def _path(url: str) -> str:
    """Path and query of a printed URL, as the phone sends them to our server."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


def _fake_token(real: str) -> str:
    while True:
        fake = format_token(secrets.token_bytes(16))
        if fake != real:
            return fake


def _with_token(path: str, token: str) -> str:
    return path.partition("?")[0] + f"?t={token}"


def _secrets(tmp_path: Path) -> list[str]:
    """Every issuer secret in the test's key file, as stored and as hex."""
    doc = json.loads((tmp_path / "keys" / "keys.json").read_text())
    out = []
    for key in doc["keys"]:
        out.append(key["secret"])
        out.append(base64.urlsafe_b64decode(key["secret"]).hex())
    return out


def _clean(body: str, tmp_path: Path, *tokens: str) -> None:
    """No store path, key secret or given token in a response body."""
    assert str(tmp_path) not in body
    assert "/store" not in body and "catalog.duckdb" not in body and "scans.sqlite" not in body
    for secret in _secrets(tmp_path):
        assert secret not in body
    for token in tokens:
        assert token not in body


def _raw(
    server, path: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, str]:
    """Send ``path`` exactly as given (no normalization) and return (status, body)."""
    parts = urlsplit(server.url)
    con = http.client.HTTPConnection(parts.hostname, parts.port, timeout=15)
    try:
        con.request(method, path, headers=headers or {})
        response = con.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        con.close()


def _heading(page: str) -> str:
    found = re.search(
        r'<div class="verdict" id="verdict" data-verdict="([a-z]+)"><h1>(.*?)</h1>', page
    )
    assert found, page[:500]
    return f"{found.group(1)}: {found.group(2)}"


def _poll(fn: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def _scan_rows(tmp_path: Path) -> list[tuple[str, str, str | None, str]]:
    con = sqlite3.connect(tmp_path / "store" / "scans.sqlite")
    try:
        return con.execute(
            "SELECT serial, verdict, location, source FROM scans ORDER BY id"
        ).fetchall()
    finally:
        con.close()


@pytest.fixture
def example(cli, keyed) -> dict[str, Any]:
    """The example minted through the CLI: the first product's show --json, plus the
    second product and the batch summary."""
    summary = _ok(cli("batch", "create", EXAMPLE_CSV, "--json"))
    product = _product(cli)
    product["other"] = _product(cli, OTHER_SERIAL)
    product["summary"] = summary
    product["path"] = _path(product["url"])
    return product


# --------------------------------------------------------------------------- pages and JSON


def test_healthz_reports_counts(example, serve_store, tmp_path: Path) -> None:
    server = serve_store()
    r = httpx.get(server.url + "/healthz", timeout=10)
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "batches": 1, "products": 9, "scans_not_logged": 0}
    _clean(r.text, tmp_path)


def test_valid_code_page_and_json_before_anchoring(example, serve_store, tmp_path: Path) -> None:
    server = serve_store()
    token, record = example["token"], example["record"]
    assert example["path"] == f"/01/{GTIN}/10/{LOT}/21/{SERIAL}?t={token}"

    page = httpx.get(server.url + example["path"], timeout=10)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-store"
    assert _heading(page.text) == "pending: Genuine, being registered"
    assert "still being added to a public ledger" in page.text
    assert '<p class="product" id="product">Aurora Serum 30 ml</p>' in page.text
    for value in (GTIN, SERIAL, LOT, "2027-06-30", "2024-06-12", example["batch_id"]):
        assert f"<td>{value}</td>" in page.text, value
    assert "<th>Scans of this code</th><td>1</td>" in page.text
    # The token is in the page twice: in the link to this code's proof (which needs it),
    # and in the link to the browser verifier, which fetches that proof.
    assert page.text.count(token) == 2
    proof = f"/proof/01/{GTIN}/10/{LOT}/21/{SERIAL}?t={token}"
    assert f'<a id="proof" href="{proof}">' in page.text
    assert f'<a id="verify" href="/verify?proof={quote(proof, safe="/")}">' in page.text
    _clean(page.text.replace(token, ""), tmp_path)

    r = httpx.get(server.url + example["path"], headers=JSON, timeout=10)
    assert r.status_code == 200
    body = r.json()
    assert body == {
        "verdict": "pending",
        "reason": "genuine record; its batch is not anchored on chain yet",
        "record": record,
        "batch_id": example["batch_id"],
        "anchor": None,
        "scans": {"count": 2},
        "logged": True,
    }
    _clean(r.text, tmp_path, token)


def test_forged_and_unknown_codes_are_not_recognised(example, serve_store, tmp_path: Path) -> None:
    server = serve_store()
    forged = _with_token(example["path"], _fake_token(example["token"]))
    other_token = _with_token(example["path"], example["other"]["token"])
    wrong_lot = example["path"].replace(f"/10/{LOT}/", "/10/L2407B/")
    unknown = example["path"].replace(SERIAL, "NOSUCHSERIAL")
    # Forged codes get exactly the answer unknown ones get: nobody learns which serials exist.
    cases = [
        (forged, "unknown"),
        (other_token, "unknown"),
        (wrong_lot, "unknown"),
        (example["path"].partition("?")[0], "unknown"),
        (unknown, "unknown"),
    ]
    for path, verdict in cases:
        page = httpx.get(server.url + path, timeout=10)
        assert page.status_code == 404, path
        assert _heading(page.text) == f"{verdict}: Not recognised", path
        for field in (
            SERIAL,
            LOT,
            "Aurora",
            "2027-06-30",
            "2024-06-12",
            example["batch_id"],
            "<table>",
            'id="proof"',
            "/proof/",
        ):
            assert field not in page.text, (path, field)
        _clean(page.text, tmp_path, example["token"], example["other"]["token"])

        r = httpx.get(server.url + path, headers=JSON, timeout=10)
        assert r.status_code == 404
        body = r.json()
        assert body["verdict"] == verdict
        assert body["record"] is None and body["batch_id"] is None and body["anchor"] is None
        _clean(r.text, tmp_path, example["token"], example["other"]["token"])
    bodies = {httpx.get(server.url + path, headers=JSON, timeout=10).text for path, _ in cases}
    assert len(bodies) == 1  # byte for byte the same answer for every one of them


def test_lot_is_optional_and_gtin13_is_normalized(example, serve_store) -> None:
    server = serve_store()
    token = example["token"]
    for path in (
        f"/01/{GTIN}/21/{SERIAL}?t={token}",
        f"/01/{GTIN13}/10/{LOT}/21/{SERIAL}?t={token}",
        f"/01/{GTIN13}/21/{SERIAL}?t={token}",
    ):
        r = httpx.get(server.url + path, headers=JSON, timeout=10)
        assert r.status_code == 200, path
        body = r.json()
        assert body["verdict"] == "pending", path
        assert body["record"]["gtin"] == GTIN and body["record"]["lot"] == LOT
    page = httpx.get(server.url + f"/01/{GTIN13}/21/{SERIAL}?t={token}", timeout=10)
    assert page.status_code == 200 and f"<td>{GTIN}</td>" in page.text
    # The proof link points at the code as requested (no lot), and it works.
    proof = re.search(r'id="proof" href="([^"]+)"', page.text)
    assert proof and proof.group(1) == f"/proof/01/{GTIN13}/21/{SERIAL}?t={token}"
    served = httpx.get(server.url + proof.group(1), timeout=10).json()
    assert served["product"]["record"]["serial"] == SERIAL


SPECIAL = [
    # serial, lot, product name
    ("A/B%C", "L&1", "<script>alert(1)</script>"),
    ('Q,"1', "L/2", 'Comma, "quoted" name'),
    ("P+1", "L3", "Plus"),
    ("a?b=c", "L;4", "Query-like"),
]


@pytest.fixture
def special(cli, keyed, tmp_path: Path) -> dict[str, dict[str, Any]]:
    """A batch whose serials and lots need percent-encoding (and CSV quoting)."""
    path = tmp_path / "special.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["gtin", "serial", "lot", "expiry", "product_name"])
        for serial, lot, name in SPECIAL:
            out.writerow([GTIN, serial, lot, "2028-01-31", name])
    assert '"Q,""1"' in path.read_text()
    _ok(cli("batch", "create", path, "--json"))
    return {serial: _product(cli, serial) for serial, _, _ in SPECIAL}


def test_percent_encoded_serial_and_lot_resolve(special, serve_store, tmp_path: Path) -> None:
    server = serve_store()
    a = special["A/B%C"]
    assert a["url"] == (f"https://id.example.com/01/{GTIN}/10/L%261/21/A%2FB%25C?t={a['token']}")
    assert "/21/Q%2C%221?" in special['Q,"1']["url"]
    assert "/10/L%2F2/" in special['Q,"1']["url"]
    assert "/21/P%2B1?" in special["P+1"]["url"]
    assert "/21/a%3Fb%3Dc?" in special["a?b=c"]["url"]
    for serial, lot, name in SPECIAL:
        product = special[serial]
        r = httpx.get(server.url + _path(product["url"]), headers=JSON, timeout=10)
        assert r.status_code == 200, serial
        body = r.json()
        assert body["verdict"] == "pending"
        assert (body["record"]["serial"], body["record"]["lot"]) == (serial, lot)
        assert body["record"]["product_name"] == name
        proof = httpx.get(server.url + "/proof" + _path(product["url"]), timeout=10)
        assert proof.status_code == 200
        assert proof.json()["product"]["record"]["serial"] == serial
    # A literal '+' is a '+' (not a space): the unencoded form finds the same product.
    r = httpx.get(
        server.url + f"/01/{GTIN}/21/P+1?t={special['P+1']['token']}", headers=JSON, timeout=10
    )
    assert r.status_code == 200 and r.json()["record"]["serial"] == "P+1"
    # The page escapes what it shows.
    page = httpx.get(server.url + _path(a["url"]), timeout=10)
    assert page.status_code == 200
    assert "<script>" not in page.text
    assert 'id="product">&lt;script&gt;alert(1)&lt;/script&gt;</p>' in page.text
    assert "<td>A/B%C</td>" in page.text and "<td>L&amp;1</td>" in page.text
    # A valid token of another product with this serial's path is still forged.
    r = httpx.get(
        server.url + _with_token(_path(a["url"]), special["P+1"]["token"]), headers=JSON, timeout=10
    )
    assert r.status_code == 404 and r.json()["verdict"] == "unknown"


def test_malformed_digital_links_are_400(special, serve_store, tmp_path: Path) -> None:
    server = serve_store()
    token = special["A/B%C"]["token"]
    bad = [
        f"/01/{GTIN}/10/L%261/21/A/B%25C?t={token}",  # unencoded slash in the serial
        f"/01/{GTIN}/21/A/B%25C?t={token}",
        f"/01/0952012345%2F0014/21/P%2B1?t={token}",  # %2F in the GTIN
        f"/01/{GTIN}/21/%C3%28?t={token}",  # invalid UTF-8
        f"/01/{GTIN}/21/A%C3?t={token}",  # truncated UTF-8
        f"/01/{GTIN}/21/{SERIAL}/10/{LOT}?t={token}",  # wrong AI order
        f"/01/{GTIN}/21/{SERIAL}/?t={token}",  # trailing slash
        f"/01/{GTIN}/99/X/21/{SERIAL}?t={token}",  # unknown AI
        f"/01/{GTIN}/10/{LOT}?t={token}",  # no serial
        f"/01/09520123450015/21/{SERIAL}?t={token}",  # bad check digit
        f"/01/{GTIN}/21/{'X' * 21}?t={token}",  # serial too long
        f"/01/{GTIN}/21/A%00B?t={token}",  # control character
        f"/01/{GTIN}/21/{SERIAL}?t={token}&t={token}",  # two tokens
        f"/01/{GTIN}/21/{SERIAL}?t=%C3%28",  # token not UTF-8
        f"/01/{GTIN}/21/{SERIAL}?t={token}&loc={'x' * 300}",  # query too long
    ]
    for path in bad:
        status, body = _raw(server, path, headers=JSON)
        assert status == 400, (path, status, body)
        assert set(json.loads(body)) == {"error"}
        _clean(body, tmp_path, token)
        status, page = _raw(server, path)
        assert status == 400 and _heading(page) == "error: Invalid link"
        _clean(page, tmp_path, token)
    # None of them was logged as a scan.
    assert not (tmp_path / "store" / "scans.sqlite").exists() or _scan_rows(tmp_path) == []


def test_invalid_percent_escape_is_400(example, serve_store) -> None:
    """``%ZZ`` is not a percent-encoding (RFC 3986: ``%`` HEXDIG HEXDIG). A serial that
    holds a ``%`` is printed as ``%25``, so a bare ``%`` in a scanned path is a damaged or
    hand-made address and should be refused like ``%C3%28``, not looked up as the literal
    serial ``%ZZ``."""
    server = serve_store()
    for path in (
        f"/01/{GTIN}/21/%ZZ?t={example['token']}",
        f"/01/{GTIN}/21/546CA%G1?t={example['token']}",
        f"/01/{GTIN}/10/L%2/21/{SERIAL}?t={example['token']}",
    ):
        status, body = _raw(server, path, headers=JSON)
        assert status == 400, (path, status, body)


def test_proof_endpoint_needs_the_token_and_verifies(
    example, serve_store, cli, tmp_path: Path
) -> None:
    server = serve_store()
    token = example["token"]
    r = httpx.get(server.url + "/proof" + example["path"], timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.headers["cache-control"] == "no-store"
    proof = r.json()
    assert proof["format"] == "provmint-proof/1"
    assert proof["product"]["record"] == example["record"]
    assert proof["anchor"] is None
    _clean(r.text, tmp_path, token)
    path = tmp_path / "served-proof.json"
    path.write_text(r.text, encoding="utf-8")
    report = _ok(cli("verify", path, "--json"), EXIT_PENDING)
    assert report["verdict"] == "pending"
    # The printed token matches the served proof's commitment.
    assert (
        _ok(cli("verify", path, f"--token={token}", "--json"), EXIT_PENDING)["verdict"] == "pending"
    )

    for bad in (
        _with_token(example["path"], _fake_token(token)),
        _with_token(example["path"], example["other"]["token"]),
        example["path"].partition("?")[0],
        example["path"].replace(SERIAL, "NOSUCHSERIAL"),
    ):
        r = httpx.get(server.url + "/proof" + bad, timeout=10)
        assert r.status_code == 404, bad
        assert r.json() == {
            "error": {
                "code": "not_found",
                "status": 404,
                "message": "no proof for this code",
                "hint": None,
            }
        }
    status, body = _raw(server, f"/proof/01/{GTIN}/21/A/B?t={token}")
    assert status == 400
    status, body = _raw(server, "/proof/etc/passwd")
    assert status == 404 and "root:" not in body


def test_anchoring_while_serving_turns_pending_into_genuine(
    example, serve_store, cli, chain_env, tmp_path: Path
) -> None:
    server = serve_store("--clone-threshold", "1000")  # polling below scans many times
    url = server.url + example["path"]
    assert httpx.get(url, headers=JSON, timeout=10).json()["verdict"] == "pending"
    run = _ok(cli("anchor", "--json"))
    anchor = run["anchor"]
    assert anchor["state"] == "confirmed"

    body = _poll(
        lambda: (b := httpx.get(url, headers=JSON, timeout=10).json())["verdict"] == "genuine" and b
    )
    assert body, "the server did not pick up the anchor"
    assert body["reason"] == "genuine product"
    assert body["anchor"]["block_number"] == anchor["block_number"]
    assert body["anchor"]["tx_hash"] == anchor["tx_hash"]
    assert body["anchor"]["chain_id"] == 31337

    page = httpx.get(url, timeout=10)
    assert page.status_code == 200
    assert _heading(page.text) == "genuine: Genuine product"
    assert f"block {anchor['block_number']} of chain 31337" in page.text
    # The transaction is shortened on the page (no explorer is configured: the full
    # hash is its title, and in the proof).
    tx = anchor["tx_hash"]
    assert f'<span id="transaction" title="{tx}">{tx[:6]}…{tx[-4:]}</span>' in page.text

    proof = httpx.get(server.url + "/proof" + example["path"], timeout=10)
    assert proof.status_code == 200 and proof.json()["anchor"]["tx_hash"] == anchor["tx_hash"]
    path = tmp_path / "anchored-proof.json"
    path.write_text(proof.text, encoding="utf-8")
    report = _ok(
        cli("verify", path, "--rpc-url", chain_env.url, f"--token={example['token']}", "--json"),
        EXIT_OK,
    )
    assert report["verdict"] == "valid"
    assert report["chain"]["block_number"] == anchor["block_number"]


# --------------------------------------------------------------------------- other paths


def test_non_gs1_paths_are_404_and_leak_nothing(example, serve_store, tmp_path: Path) -> None:
    server = serve_store()
    for path in (
        "/",
        "/etc/passwd",
        "/../catalog.duckdb",
        "/%2e%2e/catalog.duckdb",
        "/batches/",
        "/catalog.duckdb",
        "/scans.sqlite",
        "/store/",
        "/01",
        f"/x/01/{GTIN}/21/{SERIAL}?t={example['token']}",
        "/proof/",
        "/healthz/x",
        "/../../../../etc/passwd",
    ):
        status, body = _raw(server, path)
        assert status == 404, (path, status)
        assert _heading(body) == "error: Not recognised"
        assert "root:" not in body and "DUCK" not in body
        _clean(body, tmp_path, example["token"])
        status, body = _raw(server, path, headers=JSON)
        assert status == 404 and json.loads(body)["error"]["message"] == "no such page"


def test_methods_and_over_long_paths(example, serve_store, tmp_path: Path) -> None:
    server = serve_store()
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        status, body = _raw(server, example["path"], method=method)
        assert status == 405, method
        assert _heading(body) == "error: Not allowed", method
        _clean(body, tmp_path, example["token"])
        assert _raw(server, "/healthz", method=method)[0] == 405, method
    status, body = _raw(server, example["path"], method="HEAD")
    assert status == 200 and body == ""

    long_serial = "/01/" + GTIN + "/21/" + "A" * 600
    assert len(long_serial) > 512
    for headers in ({}, JSON):
        status, body = _raw(server, long_serial + f"?t={example['token']}", headers=headers)
        assert status == 414
        _clean(body, tmp_path, example["token"])
    status, _ = _raw(server, "/" + "x" * 600)
    assert status == 414
    # Just under the limit is parsed (and refused as a code, not as a length).
    near = "/01/" + GTIN + "/21/" + "%41" * ((512 - 22) // 3)
    assert len(near) <= 512
    status, _ = _raw(server, near, headers=JSON)
    assert status == 400


# --------------------------------------------------------------------------- scans


def test_concurrent_requests_are_all_answered_and_logged(
    example, serve_store, cli, tmp_path: Path
) -> None:
    server = serve_store("--clone-threshold", "100000")
    valid = example["path"]
    forged = _with_token(_path(example["other"]["url"]), _fake_token(example["other"]["token"]))
    unknown = valid.replace(SERIAL, "NOSUCHSERIAL")
    kinds = [
        ("valid", valid, 200, "pending"),
        ("forged", forged, 404, "unknown"),
        ("unknown", unknown, 404, "unknown"),
    ]
    plan = [kinds[i % 3] for i in range(200)]

    async def run() -> list[tuple[str, int, str]]:
        gate = asyncio.Semaphore(32)
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=30) as client:

            async def one(kind: str, path: str, json_wanted: bool) -> tuple[str, int, str]:
                async with gate:
                    if json_wanted:
                        r = await client.get(path, headers=JSON)
                        return kind, r.status_code, r.json()["verdict"]
                    r = await client.get(path)
                    return kind, r.status_code, _heading(r.text).split(":")[0]

            return await asyncio.gather(
                *(one(kind, path, i % 2 == 0) for i, (kind, path, _, _) in enumerate(plan))
            )

    started = time.monotonic()
    results = asyncio.run(run())
    elapsed = time.monotonic() - started
    expected = {kind: (status, verdict) for kind, _, status, verdict in kinds}
    for kind, status, verdict in results:
        assert (status, verdict) == expected[kind], kind
    assert elapsed < 30

    n_valid = sum(1 for k, *_ in plan if k == "valid")
    n_forged = sum(1 for k, *_ in plan if k == "forged")
    rows = _scan_rows(tmp_path)
    assert (
        sum(1 for s, v, _, src in rows if s == SERIAL and v == "pending" and src == "serve")
        == n_valid
    )
    # A forger cannot grow the log without bound: past FORGED_ROWS_PER_DAY rows a day
    # per code, forged scans are only counted.
    kept = min(n_forged, FORGED_ROWS_PER_DAY)
    assert sum(1 for s, v, _, _ in rows if s == OTHER_SERIAL and v == "forged") == kept
    assert len(rows) == n_valid + kept  # unknown codes have no product to log against
    shown = _ok(cli("scans", "show", example["other"]["url"], "--json"))
    assert shown["evidence"]["all_scans"] == n_forged
    assert (shown["evidence"]["genuine_scans"], shown["flagged"]) == (0, False)
    r = cli("scan", example["url"], "--clone-threshold", "100000", "--json")
    assert r.exit_code == EXIT_PENDING
    assert json.loads(r.stdout)["scans"]["count"] == n_valid + 1


def _mint_later(cli, write_csv) -> dict[str, Any]:
    later = write_csv(
        "later.csv",
        "gtin,serial,lot,product_name\n"
        f"{GTIN},LATER0001,L9,Late Lotion\n"
        f"{GTIN},LATER0002,L9,Late Lotion\n",
    )
    return _ok(cli("batch", "create", later, "--json"))


def test_batch_minted_after_start_is_served(example, serve_store, cli, write_csv) -> None:
    server = serve_store()
    assert httpx.get(server.url + "/healthz", timeout=10).json()["products"] == 9
    summary = _mint_later(cli, write_csv)
    product = _product(cli, "LATER0002")
    url = server.url + _path(product["url"])
    r = _poll(lambda: (x := httpx.get(url, headers=JSON, timeout=10)).status_code == 200 and x)
    assert r, "the server did not pick up the new batch"
    body = r.json()
    assert body["verdict"] == "pending" and body["batch_id"] == summary["batch_id"]
    assert body["record"]["product_name"] == "Late Lotion"
    assert httpx.get(server.url + "/healthz", timeout=10).json() == {
        "status": "ok",
        "batches": 2,
        "products": 11,
        "scans_not_logged": 0,
    }
    # The first batch is still served.
    assert httpx.get(server.url + example["path"], timeout=10).status_code == 200


def test_healthz_reflects_a_batch_minted_after_start(example, serve_store, cli, write_csv) -> None:
    """A monitor polls /healthz only: it must see the new batch within a few seconds
    without anyone scanning a code first."""
    server = serve_store()
    assert httpx.get(server.url + "/healthz", timeout=10).json()["products"] == 9
    _mint_later(cli, write_csv)
    health = _poll(
        lambda: (
            (h := httpx.get(server.url + "/healthz", timeout=10).json())["products"] == 11 and h
        ),
        timeout=6,
    )
    assert health == {"status": "ok", "batches": 2, "products": 11, "scans_not_logged": 0}, (
        httpx.get(server.url + "/healthz", timeout=10).json()
    )


def test_server_and_cli_share_the_scan_log(example, serve_store, cli, tmp_path: Path) -> None:
    server = serve_store()
    url = server.url + example["path"]
    assert httpx.get(url, headers=JSON, timeout=10).json()["scans"] == {"count": 1}
    assert httpx.get(url, timeout=10).status_code == 200
    r = cli("scan", example["url"], "--json")
    assert r.exit_code == EXIT_PENDING
    assert json.loads(r.stdout)["scans"]["count"] == 3
    assert httpx.get(url, headers=JSON, timeout=10).json()["scans"] == {"count": 4}
    assert [row[3] for row in _scan_rows(tmp_path)] == ["serve", "serve", "cli", "serve"]


def test_clone_detection_by_location(example, serve_store, tmp_path: Path) -> None:
    server = serve_store()
    base = server.url + example["path"]
    phone_a, phone_b = {**JSON, "User-Agent": "phone A"}, {**JSON, "User-Agent": "phone B"}
    first = httpx.get(base + "&loc=Paris", headers=phone_a, timeout=10)
    assert first.status_code == 200 and first.json()["verdict"] == "pending"
    # One client in two places is someone travelling with the product, not a copy.
    again = httpx.get(base + "&loc=Berlin", headers=phone_a, timeout=10)
    assert again.json()["verdict"] == "pending"
    other = httpx.get(base + "&loc=Berlin", headers=phone_b, timeout=10)
    assert other.status_code == 200
    body = other.json()
    assert body["verdict"] == "suspect"
    # The public answer never repeats places: visitors typed them.
    assert "Berlin" not in other.text and "Paris" not in other.text
    assert body["record"] == example["record"] and body["scans"] == {"count": 3}
    page = httpx.get(base, timeout=10)
    assert page.status_code == 200 and _heading(page.text) == "suspect: Possible copy"
    assert 'id="proof"' in page.text
    # Locations are logged (and capped at 64 characters).
    httpx.get(base + "&loc=" + "Z" * 100, timeout=10)
    places = [row[2] for row in _scan_rows(tmp_path)]
    assert places == ["Paris", "Berlin", "Berlin", None, "Z" * 64]
    # Another product of the batch is unaffected.
    r = httpx.get(
        server.url + _path(example["other"]["url"]) + "&loc=Berlin", headers=JSON, timeout=10
    )
    assert r.json()["verdict"] == "pending"


PHISHING = "FAKE - call +1-555-0100 for refund"


def test_visitor_text_is_never_shown_to_other_visitors(
    example, serve_store, tmp_path: Path
) -> None:
    """``loc`` is whatever a visitor put in the link. Once the code looks copied, later
    visitors see that it may be a copy, never the places (or any text) earlier visitors
    supplied: otherwise anyone could write on the brand's own page."""
    server = serve_store()
    base = server.url + example["path"]
    for i, place in enumerate((PHISHING, PHISHING + " 2", "<b>Berlin</b>")):
        agent = {"User-Agent": f"visitor {i}"}  # three clients: the code looks copied
        r = httpx.get(base + "&loc=" + quote(place), headers=agent, timeout=10)
        assert r.status_code == 200
    assert {row[2] for row in _scan_rows(tmp_path)} >= {PHISHING}  # the operator has it
    for headers in ({}, JSON):
        r = httpx.get(base, headers=headers, timeout=10)
        assert r.status_code == 200
        for fragment in ("FAKE", "555-0100", "refund", "Berlin", "&lt;b&gt;"):
            assert fragment not in r.text, (headers, fragment)
    assert httpx.get(base, headers=JSON, timeout=10).json()["verdict"] == "suspect"


def test_forged_requests_do_not_brand_the_genuine_code_a_copy(example, serve_store) -> None:
    """Anyone can request this product's GTIN and serial with made-up tokens and any
    ``loc``; those requests are forgeries (404), not scans of the printed label. The
    genuine code must still be answered as genuine (pending here), not "Possible copy"."""
    server = serve_store()
    for place in ("Lagos", "Lima", "Oslo"):
        forged = _with_token(example["path"], _fake_token(example["token"])) + f"&loc={place}"
        assert httpx.get(server.url + forged, headers=JSON, timeout=10).status_code == 404
    r = httpx.get(server.url + example["path"], headers=JSON, timeout=10)
    assert r.json()["verdict"] == "pending", r.json()["reason"]


def test_one_scan_from_one_place_is_not_a_copy(example, serve_store, tmp_path: Path) -> None:
    """A single scan, from a single (odd) place name: nothing to suspect. A location is
    free text from the query string; a control character in it (here U+001F, sent as
    ``%1F``) must not turn one place into two."""
    server = serve_store()
    r = httpx.get(server.url + example["path"] + "&loc=Dock%1F7", headers=JSON, timeout=10)
    assert r.status_code == 200
    assert len(_scan_rows(tmp_path)) == 1
    assert r.json()["verdict"] == "pending", r.json()["reason"]
