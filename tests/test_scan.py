"""``provmint scan``: verdicts and exit codes for scanned codes (URL or bare token), the
scan log (shared, token-free) and clone detection.

Verdicts: genuine 0, pending 4, forged 3, unknown 7, suspect 11; a code that is not even
a Digital Link exits 2 with one ``error:`` line.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import EXAMPLE_CSV
from helpers import one_error as _one_error

from provmint.errors import (
    EXIT_INVALID,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_PENDING,
    EXIT_SUSPECT,
    EXIT_USAGE,
)
from provmint.tokens import format_token

GTIN = "09520123450014"
SERIAL = "546CAWQDCR56"
OTHER_SERIAL = "X67Y29DHPXTS"
LOT = "L2406A"


def _json(r: Any, code: int) -> dict[str, Any]:
    assert "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
    assert r.exit_code == code, (r.exit_code, r.stdout, r.stderr, r.exception)
    return json.loads(r.stdout)


def _product(cli, serial: str = SERIAL, gtin: str = GTIN) -> dict[str, Any]:
    return _json(cli("product", "show", "--gtin", gtin, "--serial", serial, "--json"), 0)


def _scan(cli, code: str, *args: str, exit_code: int) -> dict[str, Any]:
    # "--" before the code, as scripts may write it; a dash-led code also works without.
    return _json(cli("scan", *args, "--json", "--", code), exit_code)


@pytest.fixture
def minted(cli, keyed) -> dict[str, Any]:
    """The example minted through the CLI; the first product's show --json."""
    r = cli("batch", "create", EXAMPLE_CSV, "--json")
    summary = _json(r, 0)
    product = _product(cli)
    product["summary"] = summary
    return product


def _swap_token(url: str, token: str) -> str:
    base, _, _ = url.partition("?t=")
    return f"{base}?t={token}"


def _forged_token(real: str) -> str:
    """A well-formed token (22 base64url characters, 128 bits) that is not the real one."""
    while True:
        fake = format_token(secrets.token_bytes(16))
        if fake != real:
            return fake


# --------------------------------------------------------------------------- pending / genuine


def test_url_and_bare_token_are_pending_before_anchoring(cli, minted) -> None:
    url, token = minted["url"], minted["token"]
    assert url.startswith(f"https://id.example.com/01/{GTIN}/10/{LOT}/21/{SERIAL}?t=")
    by_url = _scan(cli, url, exit_code=EXIT_PENDING)
    assert by_url["verdict"] == "pending"
    assert "not anchored" in by_url["reason"]
    assert by_url["record"] == minted["record"]
    assert by_url["batch_id"] == minted["batch_id"]
    assert by_url["anchor"] is None
    assert by_url["scans"]["count"] == 1
    assert by_url["scans"]["recent"][0]["verdict"] == "pending"
    assert by_url["scans"]["recent"][0]["source"] == "cli"

    by_token = _scan(cli, f"  {token}\n", exit_code=EXIT_PENDING)
    assert by_token["verdict"] == "pending"
    assert by_token["record"] == minted["record"]
    assert by_token["scans"]["count"] == 2  # same code, same log

    # The same code under another resolver host and path prefix, and with a GTIN-13.
    path = urlsplit(url)
    other = f"https://scan.example.org/x/y{path.path}?{path.query}"
    assert _scan(cli, other, exit_code=EXIT_PENDING)["record"]["serial"] == SERIAL
    gtin13 = url.replace(f"/01/{GTIN}/", f"/01/{GTIN[1:]}/")
    assert _scan(cli, gtin13, exit_code=EXIT_PENDING)["record"]["gtin"] == GTIN

    text = cli("scan", url)
    assert text.exit_code == EXIT_PENDING
    assert text.stdout.startswith("PENDING: ")
    assert SERIAL in text.stdout and minted["batch_id"] in text.stdout
    assert token not in text.stdout  # the text report never echoes the token


def test_genuine_after_anchoring_on_a_real_chain(cli, minted, chain_env) -> None:
    run = _json(cli("anchor", "--json"), 0)
    anchor = run["anchor"]
    assert anchor["state"] == "confirmed"

    report = _scan(cli, minted["url"], exit_code=EXIT_OK)
    assert report["verdict"] == "genuine"
    assert report["reason"] == "genuine product"
    assert report["anchor"]["block_number"] == anchor["block_number"]
    assert report["anchor"]["tx_hash"] == anchor["tx_hash"]
    assert report["anchor"]["chain_id"] == 31337
    receipt = chain_env.rpc("eth_getTransactionReceipt", anchor["tx_hash"])
    assert int(receipt["blockNumber"], 16) == report["anchor"]["block_number"]
    assert int(receipt["status"], 16) == 1

    by_token = _scan(cli, minted["token"], exit_code=EXIT_OK)
    assert by_token["verdict"] == "genuine"
    assert by_token["anchor"]["tx_hash"] == anchor["tx_hash"]

    text = cli("scan", minted["url"])
    assert text.exit_code == EXIT_OK
    assert text.stdout.startswith("GENUINE: ")
    assert f"block {anchor['block_number']} of chain 31337" in text.stdout
    assert anchor["tx_hash"] in text.stdout


# --------------------------------------------------------------------------- forged / unknown


def test_forged_token_of_valid_format_is_forged(cli, minted) -> None:
    fake = _forged_token(minted["token"])
    report = _scan(cli, _swap_token(minted["url"], fake), exit_code=EXIT_INVALID)
    assert report["verdict"] == "forged"
    assert "does not match" in report["reason"]
    # Another product's real token on this product's URL is forged too.
    other = _product(cli, OTHER_SERIAL)["token"]
    report = _scan(cli, _swap_token(minted["url"], other), exit_code=EXIT_INVALID)
    assert report["verdict"] == "forged"


def test_malformed_or_missing_token_in_url_is_forged(cli, minted) -> None:
    for bad in ("abc", minted["token"][:-1], minted["token"] + "A", "!" * 22):
        report = _scan(cli, _swap_token(minted["url"], bad), exit_code=EXIT_INVALID)
        assert report["verdict"] == "forged", bad
        assert report["reason"] == "the token is malformed", bad
    no_token = minted["url"].partition("?")[0]
    report = _scan(cli, no_token, exit_code=EXIT_INVALID)
    assert report["verdict"] == "forged"
    assert report["reason"] == "the code carries no token"


def test_malformed_bare_token_is_an_unknown_code(cli, minted) -> None:
    """Without a URL there is no product to compare with: a string that is not even a
    token is an unknown code (7), not a crash or a usage error."""
    for bad in ("hello", "abc def", minted["token"][:-3]):
        report = _scan(cli, bad, exit_code=EXIT_NOT_FOUND)
        assert report["verdict"] == "unknown"
        assert report["record"] is None and report["scans"] is None


def test_lot_on_the_code_that_differs_from_the_record_is_forged(cli, minted) -> None:
    wrong = minted["url"].replace(f"/10/{LOT}/", "/10/L2407B/")
    assert wrong != minted["url"]
    report = _scan(cli, wrong, exit_code=EXIT_INVALID)
    assert report["verdict"] == "forged"
    assert "lot" in report["reason"]
    # The lot is optional on the code: without it the token alone decides.
    no_lot = minted["url"].replace(f"/10/{LOT}", "")
    assert _scan(cli, no_lot, exit_code=EXIT_PENDING)["verdict"] == "pending"


def test_unknown_serial_and_unknown_bare_token(cli, minted) -> None:
    unknown = minted["url"].replace(f"/21/{SERIAL}", "/21/NOSUCHSERIAL1")
    report = _scan(cli, unknown, exit_code=EXIT_NOT_FOUND)
    assert report["verdict"] == "unknown"
    assert report["record"] is None and report["batch_id"] is None
    assert report["scans"] is None
    report = _scan(cli, _forged_token(minted["token"]), exit_code=EXIT_NOT_FOUND)
    assert report["verdict"] == "unknown"
    text = cli("scan", unknown)
    assert text.exit_code == EXIT_NOT_FOUND and text.stdout.startswith("UNKNOWN: ")


def test_url_with_bad_gtin_is_a_clean_usage_error(cli, minted) -> None:
    for code in (
        f"https://id.example.com/01/12345/21/{SERIAL}?t={minted['token']}",
        f"https://id.example.com/01/09520123450015/21/{SERIAL}?t={minted['token']}",
        f"https://id.example.com/01/{GTIN}/21/{SERIAL}/extra?t={minted['token']}",
    ):
        line = _one_error(cli("scan", code, "--json"), EXIT_USAGE, "not a verification code")
        assert minted["token"] not in line
    r = cli("scan", minted["url"], "--clone-threshold", "0")
    assert r.exit_code == EXIT_USAGE and "Traceback" not in r.stderr
    assert "--clone-threshold" in r.stderr


# --------------------------------------------------------------------------- clones and log


def _scan_from(settings, client: str, location: str | None = None) -> None:
    """A genuine-token scan of the minted code logged by another client (a phone on
    the web service), straight into the store's scan log."""
    from provmint.store.scanlog import open_scan_log

    with open_scan_log(settings, pool_size=0) as log:
        log.record(
            GTIN,
            SERIAL,
            "pending",
            location=location,
            source="serve",
            address="198.51.100.7",
            user_agent=f"Mozilla/5.0 ({client})",
        )


def test_two_places_from_two_clients_are_suspect(cli, minted, settings) -> None:
    """This machine is one client: its own scans from two places never flag the code;
    another client giving another place does, and the reason names the places."""
    first = _scan(cli, minted["url"], "--location", "Warehouse A", exit_code=EXIT_PENDING)
    assert first["scans"]["locations"] == ["Warehouse A"]
    again = _scan(cli, minted["url"], "--location", "Warehouse A", exit_code=EXIT_PENDING)
    assert again["scans"]["count"] == 2
    moved = _scan(cli, minted["token"], "--location", "Shop B", exit_code=EXIT_PENDING)
    assert sorted(moved["scans"]["locations"]) == ["Shop B", "Warehouse A"]
    assert moved["scans"]["window"]["clients"] == 1
    assert moved["scans"]["window"]["placing_clients"] == 1

    _scan_from(settings, "phone", location="Market C")
    second = _scan(cli, minted["token"], exit_code=EXIT_SUSPECT)
    assert second["verdict"] == "suspect"
    assert second["scans"]["window"]["placing_clients"] == 2
    assert "Market C" in second["reason"] and "Shop B" in second["reason"]
    assert "by different clients within 7 days" in second["reason"]
    assert second["record"] == minted["record"]
    # Other products are not affected.
    other = _product(cli, OTHER_SERIAL)
    assert (
        _scan(cli, other["url"], "--location", "Shop B", exit_code=EXIT_PENDING)["verdict"]
        == "pending"
    )


def test_more_clients_than_the_threshold_is_suspect(cli, minted, settings) -> None:
    """Scans count by client: this machine's many scans are one client, and the code is
    flagged once more distinct clients than the threshold have seen it."""
    for count in (1, 2, 3):
        report = _scan(cli, minted["url"], "--clone-threshold", "2", exit_code=EXIT_PENDING)
        assert report["scans"]["count"] == count
        assert report["scans"]["window"]["clients"] == 1
    _scan_from(settings, "phone 1")
    assert _scan(cli, minted["url"], "--clone-threshold", "2", exit_code=EXIT_PENDING)
    _scan_from(settings, "phone 2")
    report = _scan(cli, minted["url"], "--clone-threshold", "2", exit_code=EXIT_SUSPECT)
    assert report["verdict"] == "suspect"
    assert report["scans"]["window"]["clients"] == 3
    assert "seen by more than 2 different clients within 7 days" in report["reason"]
    # The default threshold (5) still allows them; a [copy_signal] setting replaces it.
    assert _scan(cli, minted["url"], exit_code=EXIT_PENDING)["scans"]["count"] == 8
    config = settings.store.parent / "copy.toml"
    config.write_text("[copy_signal]\nmax_clients = 2\n")
    _scan(cli, minted["url"], "--config", config, exit_code=EXIT_SUSPECT)
    _scan(cli, minted["url"], "--config", config, "--clone-threshold", "3", exit_code=EXIT_PENDING)


def test_forged_scans_do_not_make_the_genuine_label_suspect(cli, minted) -> None:
    """Someone without the token submits this product's GTIN and serial with made-up
    tokens from two places. Those are scans of a forgery, not of the printed label: the
    genuine label must still check out (pending), or anyone could brand any product
    a "possible copy" without ever seeing its token."""
    for place in ("Elsewhere 1", "Elsewhere 2"):
        fake = _swap_token(minted["url"], _forged_token(minted["token"]))
        assert _scan(cli, fake, "--location", place, exit_code=EXIT_INVALID)["verdict"] == "forged"
    r = cli("scan", minted["url"], "--json")
    report = json.loads(r.stdout)
    assert (report["verdict"], r.exit_code) == ("pending", EXIT_PENDING), report["reason"]


def test_scan_log_records_every_scan_and_holds_no_token(cli, minted, tmp_path: Path) -> None:
    url, token = minted["url"], minted["token"]
    _scan(cli, url, exit_code=EXIT_PENDING)
    _scan(cli, token, "--location", "Dock 1", exit_code=EXIT_PENDING)
    _scan(cli, _swap_token(url, _forged_token(token)), exit_code=EXIT_INVALID)
    _scan(cli, url.replace(f"/10/{LOT}/", "/10/LOTX/"), exit_code=EXIT_INVALID)
    _scan(cli, url.replace(SERIAL, "UNKNOWN1"), exit_code=EXIT_NOT_FOUND)  # not logged
    last = _scan(cli, url, "--location", "Dock 1", exit_code=EXIT_PENDING)
    assert last["scans"]["all"] == 5  # every scan of the code is logged...
    assert last["scans"]["count"] == 3  # ...but only genuine-token scans count towards copies
    assert [s["verdict"] for s in last["scans"]["recent"]] == [
        "pending",
        "forged",
        "forged",
        "pending",
        "pending",
    ]
    assert [s["location"] for s in last["scans"]["recent"]] == [
        "Dock 1",
        None,
        None,
        "Dock 1",
        None,
    ]

    log = tmp_path / "store" / "scans.sqlite"
    assert log.is_file()
    con = sqlite3.connect(log)
    try:
        rows = con.execute(
            "SELECT gtin, serial, verdict, location, source FROM scans ORDER BY id"
        ).fetchall()
        assert rows == [
            (GTIN, SERIAL, "pending", None, "cli"),
            (GTIN, SERIAL, "pending", "Dock 1", "cli"),
            (GTIN, SERIAL, "forged", None, "cli"),
            (GTIN, SERIAL, "forged", None, "cli"),
            (GTIN, SERIAL, "pending", "Dock 1", "cli"),
        ]
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for row in con.execute(f'SELECT * FROM "{table}"'):
                for value in row:
                    assert token not in str(value), (table, row)
    finally:
        con.close()
    # Nor does the WAL or the database file carry it in any form.
    for path in log.parent.glob("scans.sqlite*"):
        assert token.encode() not in path.read_bytes(), path


def test_key_file_without_the_batch_key(cli, minted, tmp_path: Path) -> None:
    """The batch was minted with a key that the current key file does not hold (the file
    was deleted and recreated): the code cannot be authenticated. The scan says so,
    naming the key, rather than calling the label genuine; with no key file at all the
    command stops: not found (7), as for every missing file."""
    key_id = minted["summary"]["key_id"]
    key_file = tmp_path / "keys" / "keys.json"
    key_file.unlink()
    line = _one_error(cli("scan", minted["url"], "--json"), EXIT_NOT_FOUND)
    assert f"issuer key file not found: {key_file}" in line

    new = _json(cli("keys", "init", "--json"), 0)
    assert new["key"]["id"] != key_id
    report = _scan(cli, minted["url"], exit_code=EXIT_INVALID)
    assert report["verdict"] == "forged"
    assert key_id in report["reason"] and "not in this key file" in report["reason"]
    report = _scan(cli, minted["token"], exit_code=EXIT_INVALID)
    assert report["verdict"] == "forged" and key_id in report["reason"]


def test_bare_token_starting_with_a_dash_needs_no_double_dash(cli, minted) -> None:
    """A base64url token may begin with "-": scan reads it as the code, not an option."""
    r = cli("scan", "-" + "A" * 21, "--json")
    assert _json(r, EXIT_NOT_FOUND)["verdict"] == "unknown"
