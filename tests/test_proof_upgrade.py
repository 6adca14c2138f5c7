"""``provmint proof upgrade`` and ``provmint verify --offline``, through the CLI.

A proof exported before its batch was anchored is upgraded from the store and from a
real ``provmint serve`` after a real anchor on anvil, then verified on chain; what must
be refused (another batch, a tampered proof, a bad --from) is refused with nothing
written. ``verify --offline`` checks everything up to the anchor digest, with exit 12.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Anvil
from helpers import anchor_json, example_store, mint_example

from provmint.errors import (
    EXIT_INVALID,
    EXIT_OFFLINE,
    EXIT_OK,
    EXIT_PENDING,
    EXIT_UNCHECKED,
    EXIT_USAGE,
)

GTIN, SERIAL = "09520123450014", "546CAWQDCR56"


def _export(cli: Any, path: Path, *args: object) -> bytes:
    r = cli("proof", "export", "--gtin", GTIN, "--serial", SERIAL, "-o", path, *args)
    assert r.exit_code == 0, r.output
    return path.read_bytes()


def _run(cli: Any, code: int, *args: object) -> Any:
    r = cli(*args)
    assert r.exit_code == code, (r.exit_code, r.stdout, r.stderr, r.exception)
    assert "Traceback" not in r.output
    return r


def _token(cli: Any) -> str:
    r = _run(cli, EXIT_OK, "product", "show", "--gtin", GTIN, "--serial", SERIAL, "--json")
    return str(json.loads(r.stdout)["token"])


def test_upgrade_from_the_store_then_verify_on_chain(
    cli, keyed, chain_env: Anvil, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mint_example(cli)
    proof = tmp_path / "proof.json"
    original = _export(cli, proof)
    assert json.loads(original)["anchor"] is None

    # Not anchored yet: pending (4), nothing written, and no hint from verify.
    r = _run(cli, EXIT_PENDING, "proof", "upgrade", proof)
    assert "not anchored yet" in r.stdout
    assert proof.read_bytes() == original and not Path(f"{proof}.bak").exists()
    r = _run(cli, EXIT_PENDING, "verify", proof)
    assert "hint:" not in r.stdout
    _run(cli, EXIT_PENDING, "verify", "--offline", proof)

    anchor = anchor_json(cli)["anchor"]

    # verify says an upgrade is available (people's output and JSON).
    r = _run(cli, EXIT_PENDING, "verify", proof)
    assert f"hint: this batch is anchored now: provmint proof upgrade {proof}" in r.stdout
    r = _run(cli, EXIT_PENDING, "verify", proof, "--json")
    assert "provmint proof upgrade" in json.loads(r.stdout)["hint"]

    r = _run(cli, EXIT_OK, "proof", "upgrade", proof)
    assert "UPGRADED" in r.stdout and f"{proof}.bak" in r.stdout
    assert Path(f"{proof}.bak").read_bytes() == original
    before, after = json.loads(original), json.loads(proof.read_bytes())
    assert after["anchor"]["tx_hash"] == anchor["tx_hash"]
    assert after["anchor"]["digest"] == anchor["digest"]
    assert {**after, "anchor": None} == before  # nothing else changed
    assert list(after) == list(before)

    r = _run(cli, EXIT_OK, "verify", proof, "--rpc-url", chain_env.url, "--json")
    assert json.loads(r.stdout)["verdict"] == "valid"
    # Without a node (and without --offline) an anchored proof still exits 5.
    with monkeypatch.context() as mp:
        mp.delenv("PROVMINT_RPC_URL")
        r = _run(cli, EXIT_UNCHECKED, "verify", proof, "--json")
        assert json.loads(r.stdout)["verdict"] == "unchecked"

    # Already anchored: exit 0, nothing written.
    upgraded = proof.read_bytes()
    Path(f"{proof}.bak").unlink()
    r = _run(cli, EXIT_OK, "proof", "upgrade", proof)
    assert "already anchored" in r.stdout
    assert proof.read_bytes() == upgraded and not Path(f"{proof}.bak").exists()

    # --no-backup, --json.
    other = tmp_path / "other.json"
    other.write_bytes(original)
    r = _run(cli, EXIT_OK, "proof", "upgrade", other, "--no-backup", "--json")
    report = json.loads(r.stdout)
    assert report["state"] == "upgraded" and report["backup"] is None
    assert report["anchor"]["tx_hash"] == anchor["tx_hash"]
    assert not Path(f"{other}.bak").exists()
    assert other.read_bytes() == upgraded


def test_verify_offline(cli, keyed, chain_env: Anvil, tmp_path: Path) -> None:
    mint_example(cli)
    proof = tmp_path / "proof.json"
    anchor_json(cli)
    _export(cli, proof)

    # PROVMINT_RPC_URL is set, but --offline asks no node.
    r = _run(cli, EXIT_OFFLINE, "verify", "--offline", proof)
    assert "anchor not checked on chain" in r.stdout
    assert "ok   anchor tree" in r.stdout
    r = _run(cli, EXIT_OFFLINE, "verify", "--offline", proof, "--json")
    assert json.loads(r.stdout)["verdict"] == "offline"
    _run(cli, EXIT_USAGE, "verify", "--offline", proof, "--rpc-url", chain_env.url)

    doc = json.loads(proof.read_bytes())
    for tamper in ("path", "digest"):
        bad = json.loads(json.dumps(doc))
        if tamper == "path":
            bad["anchor"]["tree"]["path"] = ["00" * 32]
            bad["anchor"]["tree"]["size"] = 2
        else:
            bad["anchor"]["digest"] = "11" * 32
        path = tmp_path / f"bad-{tamper}.json"
        path.write_text(json.dumps(bad))
        r = _run(cli, EXIT_INVALID, "verify", "--offline", path)
        assert "FAIL anchor tree" in r.stdout


def test_upgrade_refuses_another_batch_and_tampered_proofs(cli, keyed, tmp_path: Path) -> None:
    mint_example(cli)
    proof = tmp_path / "proof.json"
    original = _export(cli, proof)

    # The same product minted in another store, under another key: another batch.
    with example_store(tmp_path / "elsewhere") as (other, _):
        pass
    r = _run(cli, EXIT_INVALID, "proof", "upgrade", proof, "--store", other.store)
    assert "not upgraded" in r.stderr and "batch" in r.stderr
    assert proof.read_bytes() == original and not Path(f"{proof}.bak").exists()

    # A proof that does not verify is refused before any source is asked.
    doc = json.loads(original)
    doc["product"]["record"]["lot"] = "OTHER"
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(doc))
    before = tampered.read_bytes()
    r = _run(cli, EXIT_INVALID, "proof", "upgrade", tampered)
    assert "does not verify" in r.stderr
    assert tampered.read_bytes() == before and not Path(f"{tampered}.bak").exists()

    _run(cli, 7, "proof", "upgrade", tmp_path / "missing.json")


def test_upgrade_from_a_running_service(
    cli, keyed, chain_env: Anvil, serve_store, tmp_path: Path
) -> None:
    mint_example(cli)
    proof = tmp_path / "proof.json"
    original = _export(cli, proof)
    token = _token(cli)
    server = serve_store()
    elsewhere = tmp_path / "no-store"  # the upgrade asks the service, not a store

    # Usage: the token is needed, and must be this product's; https or loopback only.
    _run(cli, EXIT_USAGE, "proof", "upgrade", proof, "--from", server.url)
    wrong = "AAAAAAAAAAAAAAAAAAAAAA"
    _run(cli, EXIT_USAGE, "proof", "upgrade", proof, "--from", server.url, "--token", wrong)
    _run(
        cli, EXIT_USAGE, "proof", "upgrade", proof, "--from", "http://example.com", "--token", token
    )

    args = ("proof", "upgrade", proof, "--from", server.url, "--token", token, "--store", elsewhere)
    r = _run(cli, EXIT_PENDING, *args)
    assert "not anchored yet" in r.stdout
    assert proof.read_bytes() == original

    anchor = anchor_json(cli)["anchor"]
    deadline = time.monotonic() + 20  # the service reloads its catalog when it changes
    while (r := cli(*args)).exit_code == EXIT_PENDING and time.monotonic() < deadline:
        time.sleep(0.3)
    assert r.exit_code == EXIT_OK, (r.stdout, r.stderr)
    assert Path(f"{proof}.bak").read_bytes() == original
    assert json.loads(proof.read_bytes())["anchor"]["tx_hash"] == anchor["tx_hash"]
    r = _run(cli, EXIT_OK, "verify", proof, "--rpc-url", chain_env.url, "--json")
    assert json.loads(r.stdout)["verdict"] == "valid"
