"""``provmint anchor`` on a real local chain (anvil), mostly through the CLI.

Calldata and registry anchors of one and of fifty batches in one transaction, proofs
checked on chain, confirmations, dry runs, ``--batch``, every chain error (exit 10)
without a traceback or the key, and the read commands after anchoring. Nothing here
pretends an anchor happened: every transaction is read back from the node.
"""

from __future__ import annotations

import csv
import json
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, Anvil, dev_key, run_provmint
from helpers import anchor_json, mint_example, status_json

sys.path.insert(0, str(ROOT / "scripts"))
from make_products import write_csv as write_products

EXAMPLE_GTIN, EXAMPLE_SERIAL = "09520123450014", "546CAWQDCR56"
CALLDATA_PREFIX = "0x504d4e5401"  # "PMNT" || version 1


# --------------------------------------------------------------------------- helpers


def mint_many(
    settings: Any, tmp_path: Path, seeds: range | list[int], rows: int = 3
) -> list[tuple[str, str, str]]:
    """Mint one small generated batch per seed: [(batch id, gtin, serial of row 1)]."""
    from provmint.batch import mint_batch

    minted = []
    for seed in seeds:
        path = tmp_path / f"products-{seed}.csv"
        write_products(path, rows, seed=seed)
        summary = mint_batch(path, settings=settings)
        with path.open(encoding="utf-8") as fh:
            first = next(csv.DictReader(fh))
        minted.append((summary.batch_id, first["gtin"], first["serial"]))
    return minted


def nonce(node: Anvil, address: str) -> int:
    return int(str(node.rpc("eth_getTransactionCount", address, "latest")), 16)


def export_proof(cli, path: Path, gtin: str, serial: str) -> Path:
    r = cli("proof", "export", "--gtin", gtin, "--serial", serial, "-o", path)
    assert r.exit_code == 0, r.output
    return path


def verify(cli, proof: Path, *args: object) -> tuple[int, dict[str, Any]]:
    """Verify a proof (on chain when PROVMINT_RPC_URL is set): (exit code, report)."""
    r = cli("verify", proof, "--json", *args)
    return r.exit_code, json.loads(r.stdout)


def assert_valid_on_chain(cli, proof: Path, anchor: dict[str, Any]) -> dict[str, Any]:
    code, report = verify(cli, proof)
    assert (code, report["verdict"]) == (0, "valid"), report
    assert report["chain"]["block_number"] == anchor["block_number"]
    assert report["anchor"]["tx_hash"] == anchor["tx_hash"]
    assert report["anchor"]["digest"] == anchor["digest"]
    return report


def assert_clean_failure(r, code: int, *needles: str, secret: str | None = None) -> None:
    """A handled failure: the exit code, an error line with ``needles``, no traceback,
    never the secret."""
    assert r.exit_code == code, r.output
    assert isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output
    assert "error:" in r.stderr
    for needle in needles:
        assert needle in r.stderr, r.stderr
    if secret is not None:
        assert secret.lower().removeprefix("0x") not in r.output.lower()


def assert_nothing_anchored(cli, node: Anvil, batch_ids: list[str]) -> None:
    """No anchor recorded, the batches still pending, nothing sent by dev account 0."""
    report = status_json(cli)
    assert report["anchors"] == []
    assert report["pending_batches"] == batch_ids
    assert nonce(node, dev_key(0)[0]) == 0


def anchored_at(node: Anvil, registry: str, issuer: str, digest: str) -> int:
    """``AnchorRegistry.anchoredAt(issuer, digest)`` read with a raw eth_call."""
    from web3 import Web3

    selector = bytes(Web3.keccak(text="anchoredAt(address,bytes32)"))[:4].hex()
    data = "0x" + selector + "00" * 12 + issuer[2:].lower() + digest
    return int(str(node.rpc("eth_call", {"to": registry, "data": data}, "latest")), 16)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- calldata


def test_calldata_anchor_of_one_batch(cli, keyed, chain_env: Anvil, tmp_path: Path) -> None:
    batch_id = mint_example(cli)
    sender = dev_key(0)[0]
    run = anchor_json(cli)
    plan, anchor = run["plan"], run["anchor"]
    assert plan["batches"] == [batch_id] and plan["tree_size"] == 1
    assert plan["method"] == "calldata" and plan["transaction"]["to"] == sender
    assert anchor["state"] == "confirmed" and anchor["tree_size"] == 1
    assert anchor["sender"] == sender and anchor["chain_id"] == 31337
    assert anchor["tx_hash"].startswith("0x") and len(anchor["tx_hash"]) == 66
    assert run["pending_left"] == 0 and run["dry_run"] is False

    assert nonce(chain_env, sender) == 1
    tx = chain_env.rpc("eth_getTransactionByHash", anchor["tx_hash"])
    assert tx["input"] == CALLDATA_PREFIX + anchor["digest"]
    assert tx["from"].lower() == tx["to"].lower() == sender.lower()
    assert int(tx["value"], 16) == 0
    receipt = chain_env.rpc("eth_getTransactionReceipt", anchor["tx_hash"])
    assert int(receipt["status"], 16) == 1
    assert int(receipt["blockNumber"], 16) == anchor["block_number"]
    assert receipt["blockHash"] == anchor["block_hash"]

    proof = export_proof(cli, tmp_path / "p.json", EXAMPLE_GTIN, EXAMPLE_SERIAL)
    report = assert_valid_on_chain(cli, proof, anchor)
    assert report["anchor"]["tree"]["size"] == 1
    assert status_json(cli)["pending_batches"] == []
    # Without a node the proof cannot be checked on chain: exit 5, never "valid".
    code, report = verify(cli, proof, "--rpc-url", f"http://127.0.0.1:{closed_port()}")
    assert (code, report["verdict"]) == (5, "unchecked")


@pytest.mark.slow
def test_fifty_pending_batches_in_one_calldata_transaction(
    cli, keyed, chain_env: Anvil, tmp_path: Path
) -> None:
    minted = mint_many(keyed, tmp_path, range(1, 51))
    ids = [b for b, _, _ in minted]
    assert len(set(ids)) == 50
    assert status_json(cli)["pending_batches"] == ids
    sender = dev_key(0)[0]

    run = anchor_json(cli)
    anchor = run["anchor"]
    assert run["plan"]["tree_size"] == 50 and sorted(run["plan"]["batches"]) == sorted(ids)
    assert anchor["state"] == "confirmed" and anchor["tree_size"] == 50
    assert run["pending_left"] == 0

    # Exactly one transaction from the sender, carrying the digest, alone in its block.
    assert nonce(chain_env, sender) == 1
    tx = chain_env.rpc("eth_getTransactionByHash", anchor["tx_hash"])
    assert tx["input"] == CALLDATA_PREFIX + anchor["digest"]
    block = chain_env.rpc("eth_getBlockByNumber", hex(anchor["block_number"]), False)
    assert block["transactions"] == [anchor["tx_hash"]]

    leaves = set()
    for index in (0, 17, 33, 49):
        batch_id, gtin, serial = minted[index]
        proof = export_proof(cli, tmp_path / f"p{index}.json", gtin, serial)
        report = assert_valid_on_chain(cli, proof, anchor)
        assert report["batch_id"] == batch_id
        assert report["anchor"]["tree"]["size"] == 50
        leaves.add(report["anchor"]["tree"]["leaf_index"])
    assert len(leaves) == 4, "different batches must be different leaves of the anchor tree"
    report = status_json(cli)
    assert report["pending_batches"] == []
    assert [a["state"] for a in report["anchors"]] == ["confirmed"]


# --------------------------------------------------------------------------- registry


def test_deploy_registry_keeps_the_fee_and_spend_caps(cli, keyed, chain_env: Anvil) -> None:
    """The deployment is held to the caps an anchor is held to: above --max-fee-gwei it
    is refused (not quietly sent at the cap), and --max-spend-eth bounds its cost."""
    sender = dev_key(0)[0]
    r = cli("anchor", "deploy-registry", "--max-fee-gwei", "0.000001")
    assert_clean_failure(r, 10, "above the cap of 1e-06 gwei", "--max-fee-gwei")
    r = cli("anchor", "deploy-registry", "--max-spend-eth", "0.0000001")
    assert_clean_failure(r, 10, "the deploy could cost up to", "above the cap of 1e-07 ETH")
    assert nonce(chain_env, sender) == 0  # nothing was sent
    r = cli("anchor", "deploy-registry", "--max-fee-gwei", "1000", "--max-spend-eth", "1", "--json")
    assert r.exit_code == 0, r.output
    assert nonce(chain_env, sender) == 1


@pytest.mark.slow
def test_registry_method_for_one_and_fifty_batches(
    cli, keyed, chain_env: Anvil, tmp_path: Path
) -> None:
    sender = dev_key(0)[0]
    r = cli("anchor", "deploy-registry", "--json")
    assert r.exit_code == 0, r.output
    deployment = json.loads(r.stdout)
    registry = deployment["address"]
    assert deployment["chain_id"] == 31337
    assert str(chain_env.rpc("eth_getCode", registry, "latest")) not in ("0x", "0x0", "")
    assert nonce(chain_env, sender) == 1

    first = mint_example(cli)
    # Without the registry's address: a usage error pointing at deploy-registry.
    r = cli("anchor", "--method", "registry")
    assert_clean_failure(r, 2, "registry", "deploy-registry")
    # An address without code: a chain error, nothing recorded or sent.
    r = cli("anchor", "--method", "registry", "--registry", "0x" + "11" * 20)
    assert_clean_failure(r, 10, "no contract")
    assert status_json(cli)["anchors"] == []
    assert nonce(chain_env, sender) == 1

    one = anchor_json(cli, "--method", "registry", "--registry", registry)["anchor"]
    assert one["state"] == "confirmed" and one["tree_size"] == 1
    assert one["method"] == "registry" and one["contract"].lower() == registry.lower()
    assert nonce(chain_env, sender) == 2
    tx = chain_env.rpc("eth_getTransactionByHash", one["tx_hash"])
    assert tx["to"].lower() == registry.lower()
    assert tx["input"].endswith(one["digest"])
    assert anchored_at(chain_env, registry, sender, one["digest"]) == one["block_time"] > 0
    assert anchored_at(chain_env, registry, dev_key(1)[0], one["digest"]) == 0
    first_proof = export_proof(cli, tmp_path / "first.json", EXAMPLE_GTIN, EXAMPLE_SERIAL)
    report = assert_valid_on_chain(cli, first_proof, one)
    assert report["anchor"]["method"] == "registry"
    assert report["anchor"]["contract"].lower() == registry.lower()

    minted = mint_many(keyed, tmp_path, range(101, 151))
    run = anchor_json(cli, "--method", "registry", "--registry", registry)
    fifty = run["anchor"]
    assert sorted(run["plan"]["batches"]) == sorted(b for b, _, _ in minted)
    assert first not in run["plan"]["batches"]
    assert fifty["state"] == "confirmed" and fifty["tree_size"] == 50
    assert nonce(chain_env, sender) == 3
    assert anchored_at(chain_env, registry, sender, fifty["digest"]) == fifty["block_time"] > 0
    for index in (0, 24, 49):
        _, gtin, serial = minted[index]
        proof = export_proof(cli, tmp_path / f"r{index}.json", gtin, serial)
        assert assert_valid_on_chain(cli, proof, fifty)["anchor"]["tree"]["size"] == 50
    assert_valid_on_chain(cli, first_proof, one)  # the earlier anchor is untouched
    assert [a["state"] for a in status_json(cli)["anchors"]] == ["confirmed", "confirmed"]


# --------------------------------------------------------------------------- confirmations


def test_confirmations_no_wait_then_status_wait_then_verify(
    cli, keyed, chain_env: Anvil, tmp_path: Path
) -> None:
    mint_example(cli)
    run = anchor_json(cli, "--confirmations", "3", "--no-wait")
    anchor = run["anchor"]
    assert anchor["state"] == "included" and anchor["confirmations_required"] == 3
    assert anchor["block_number"] is not None

    report = status_json(cli)
    (listed,) = report["anchors"]
    assert listed["state"] == "included" and listed["confirmations"] == 1
    assert report["pending_batches"] == []  # being anchored is not pending

    # A proof exported now already carries the block; on chain it is pending (1 < 3).
    proof = export_proof(cli, tmp_path / "p.json", EXAMPLE_GTIN, EXAMPLE_SERIAL)
    code, verdict = verify(cli, proof, "--confirmations", "3")
    assert (code, verdict["verdict"]) == (4, "pending")

    chain_env.mine(2)
    r = cli("anchor", "status", "--wait", "--json")
    assert r.exit_code == 0, r.output
    (listed,) = json.loads(r.stdout)["anchors"]
    assert listed["state"] == "confirmed" and listed["confirmations"] == 3
    assert listed["block_number"] == anchor["block_number"]  # same block, just deeper

    code, verdict = verify(cli, proof, "--confirmations", "5")
    assert (code, verdict["verdict"]) == (4, "pending")
    assert "not enough confirmations" in verdict["reason"]
    assert verdict["chain"]["confirmations"] == 3
    chain_env.mine(2)
    code, verdict = verify(cli, proof, "--confirmations", "5")
    assert (code, verdict["verdict"]) == (0, "valid"), verdict
    assert verdict["chain"]["confirmations"] == 5
    assert nonce(chain_env, dev_key(0)[0]) == 1


# --------------------------------------------------------------------------- planning


def test_nothing_pending_exits_zero(cli, keyed, chain_env: Anvil) -> None:
    # No store yet: a clean error with a hint, nothing sent.
    r = cli("anchor")
    assert_clean_failure(r, 1, "no provmint store", "batch create")
    assert nonce(chain_env, dev_key(0)[0]) == 0

    mint_example(cli)
    assert anchor_json(cli)["anchor"]["state"] == "confirmed"
    r = cli("anchor")  # everything anchored: nothing to do, nothing sent
    assert r.exit_code == 0, r.output
    assert "Nothing to anchor" in r.stdout
    run = anchor_json(cli)
    assert run["plan"] is None and run["anchor"] is None and run["resumed"] == []
    assert run["pending_left"] == 0
    assert nonce(chain_env, dev_key(0)[0]) == 1
    assert chain_env.rpc("txpool_status")["pending"] == "0x0"


def test_dry_run_sends_nothing(cli, keyed, chain_env: Anvil) -> None:
    batch_id = mint_example(cli)
    sender = dev_key(0)[0]
    r = cli("anchor", "--dry-run")
    assert r.exit_code == 0, r.output
    assert "Dry run" in r.stdout and "1 batch(es)" in r.stdout
    assert "gas " in r.stdout and "gwei" in r.stdout and "ETH" in r.stdout
    assert batch_id in r.stdout

    run = anchor_json(cli, "--dry-run")
    plan = run["plan"]
    assert run["dry_run"] is True and run["anchor"] is None
    assert plan["batches"] == [batch_id] and plan["sender"] == sender
    tx = plan["transaction"]
    assert tx["gas"] > 21_000  # the node estimated it (37 bytes of data)
    assert plan["max_cost_wei"] == tx["gas"] * tx["max_fee_per_gas"] > 0
    assert plan["balance_wei"] > plan["max_cost_wei"]
    assert tx["data"] == CALLDATA_PREFIX + plan["digest"] and tx["value"] == 0

    assert_nothing_anchored(cli, chain_env, [batch_id])
    assert chain_env.rpc("txpool_status")["pending"] == "0x0"
    # The plan is what a real run then sends.
    anchor = anchor_json(cli)["anchor"]
    assert anchor["digest"] == plan["digest"]


def test_anchor_only_the_chosen_batch(cli, keyed, chain_env: Anvil, tmp_path: Path) -> None:
    (first, gtin1, serial1), (second, gtin2, serial2) = mint_many(keyed, tmp_path, [7, 8])
    run = anchor_json(cli, "--batch", first)
    assert run["plan"]["batches"] == [first]
    assert run["anchor"]["tree_size"] == 1 and run["anchor"]["state"] == "confirmed"
    assert status_json(cli)["pending_batches"] == [second]

    code, report = verify(cli, export_proof(cli, tmp_path / "b.json", gtin2, serial2))
    assert (code, report["verdict"]) == (4, "pending")
    assert_valid_on_chain(
        cli, export_proof(cli, tmp_path / "a.json", gtin1, serial1), run["anchor"]
    )

    r = cli("anchor", "--batch", first)
    assert_clean_failure(r, 7, first, "already anchored")
    r = cli("anchor", "--batch", "19990101-0000")
    assert_clean_failure(r, 7, "19990101-0000")
    assert nonce(chain_env, dev_key(0)[0]) == 1
    assert status_json(cli)["pending_batches"] == [second]

    second_run = anchor_json(cli)
    assert second_run["plan"]["batches"] == [second]
    assert nonce(chain_env, dev_key(0)[0]) == 2


# --------------------------------------------------------------------------- errors


def test_wrong_chain_id_names_both_chains(cli, keyed, chain_env: Anvil, tmp_path: Path) -> None:
    batch_id = mint_example(cli)
    config = tmp_path / "chains.toml"
    config.write_text(f'[chains.x]\nrpc_url = "{chain_env.url}"\nchain_id = 1\n')
    r = cli("anchor", "--config", config, "--chain", "x")
    assert_clean_failure(r, 10, "chain 31337", "chain 1")
    assert_nothing_anchored(cli, chain_env, [batch_id])


def test_insufficient_funds_records_nothing(keyed, chain_env: Anvil, cli) -> None:
    from eth_account import Account

    batch_id = mint_example(cli)
    poor = Account.create()
    key_hex = "0x" + bytes(poor.key).hex()
    # A real process: whatever it prints, it is what a user sees.
    result = run_provmint("anchor", env={"PROVMINT_CHAIN_KEY": key_hex})
    assert result.returncode == 10, result.stderr
    assert "needs" in result.stderr and "has" in result.stderr
    assert poor.address in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert key_hex[2:] not in (result.stderr + result.stdout).lower()
    assert_nothing_anchored(cli, chain_env, [batch_id])
    assert nonce(chain_env, poor.address) == 0


def test_unreachable_node_leaves_the_store_unchanged(
    cli, keyed, monkeypatch, tmp_path: Path
) -> None:
    batch_id = mint_example(cli)
    before = status_json(cli)
    catalog = tmp_path / "store" / "catalog.duckdb"
    catalog_bytes = catalog.read_bytes()
    monkeypatch.setenv("PROVMINT_CHAIN_KEY", dev_key(0)[1])
    monkeypatch.setenv("PROVMINT_RPC_URL", f"http://127.0.0.1:{closed_port()}")
    r = cli("anchor")
    assert_clean_failure(r, 10, "cannot reach the node", secret=dev_key(0)[1])
    r = cli("anchor", "--dry-run")
    assert_clean_failure(r, 10, "cannot reach the node")
    monkeypatch.delenv("PROVMINT_RPC_URL")
    assert status_json(cli) == before
    assert before["pending_batches"] == [batch_id] and before["anchors"] == []
    assert catalog.read_bytes() == catalog_bytes


def test_fee_and_spend_caps_refuse_before_sending(cli, keyed, chain_env: Anvil) -> None:
    batch_id = mint_example(cli)
    r = cli("anchor", "--max-fee-gwei", "0.000000001")
    assert_clean_failure(r, 10, "cap", "gwei")
    r = cli("anchor", "--max-spend-eth", "1e-12")
    assert_clean_failure(r, 10, "cap", "ETH")
    assert_nothing_anchored(cli, chain_env, [batch_id])
    # Generous caps do not get in the way.
    run = anchor_json(cli, "--max-fee-gwei", "1000", "--max-spend-eth", "1")
    assert run["anchor"]["state"] == "confirmed"
    assert run["plan"]["transaction"]["max_fee_per_gas"] <= 1000 * 10**9


@pytest.mark.parametrize(
    "bad_key",
    [
        "not-a-hex-key",
        dev_key(3)[1][:-2] + "zz",  # almost a key: one byte is not hex
        dev_key(3)[1] + "00",  # too long
        "0x" + "00" * 32,  # hex, but not a secp256k1 key
    ],
)
def test_bad_chain_key(cli, keyed, chain_env: Anvil, monkeypatch, bad_key: str) -> None:
    batch_id = mint_example(cli)
    monkeypatch.setenv("PROVMINT_CHAIN_KEY", bad_key)
    r = cli("anchor")
    assert_clean_failure(r, 10, "PROVMINT_CHAIN_KEY", secret=bad_key)
    assert dev_key(3)[1][2:-2] not in r.output
    assert_nothing_anchored(cli, chain_env, [batch_id])


def test_keystore_key_and_wrong_password(
    cli, keyed, chain_env: Anvil, monkeypatch, tmp_path: Path
) -> None:
    from eth_account import Account

    address, key_hex = dev_key(1)
    keystore = tmp_path / "issuer.keystore.json"
    keystore.write_text(json.dumps(Account.encrypt(key_hex, "pw", iterations=2)))
    mint_example(cli)
    monkeypatch.delenv("PROVMINT_CHAIN_KEY")

    r = cli("anchor", "--keystore", keystore)  # no password, no terminal to ask on
    assert_clean_failure(r, 10, "password", secret=key_hex)
    monkeypatch.setenv("PROVMINT_KEYSTORE_PASSWORD", "not-pw")
    r = cli("anchor", "--keystore", keystore)
    assert_clean_failure(r, 10, "wrong keystore password", secret=key_hex)
    r = cli("anchor", "--keystore", tmp_path / "missing.json")
    assert_clean_failure(r, 7, "keystore file not found")
    assert nonce(chain_env, address) == 0
    assert status_json(cli)["anchors"] == []

    monkeypatch.setenv("PROVMINT_KEYSTORE_PASSWORD", "pw")
    run = anchor_json(cli, "--keystore", keystore)
    assert run["anchor"]["state"] == "confirmed"
    assert run["anchor"]["sender"] == address
    assert nonce(chain_env, address) == 1
    proof = export_proof(cli, tmp_path / "p.json", EXAMPLE_GTIN, EXAMPLE_SERIAL)
    assert_valid_on_chain(cli, proof, run["anchor"])
    code, report = verify(cli, proof, "--issuer", dev_key(0)[0])  # not the anchor's sender
    assert (code, report["verdict"]) == (3, "invalid")


# The requests exception text names the request path ("... with url: /v3/<api key>");
# errors show the RPC URL without path or query, so that text is left out.
def test_unreachable_node_error_hides_the_rpc_url_path(cli, keyed, monkeypatch) -> None:
    mint_example(cli)
    monkeypatch.setenv("PROVMINT_CHAIN_KEY", dev_key(0)[1])
    api_key = "f3a9c0ffee00api00key0000000000000"
    monkeypatch.setenv("PROVMINT_RPC_URL", f"http://127.0.0.1:{closed_port()}/v3/{api_key}")
    r = cli("anchor")
    assert_clean_failure(r, 10, "cannot reach the node")
    assert api_key not in r.output


# --------------------------------------------------------------------------- reading


def test_status_and_read_commands_after_anchoring(
    cli, keyed, chain_env: Anvil, tmp_path: Path
) -> None:
    (first, gtin, serial), (second, _, _) = mint_many(keyed, tmp_path, [21, 22])
    anchor = anchor_json(cli, "--batch", first)["anchor"]
    chain_env.mine(1)

    report = status_json(cli)
    assert report["chain_id"] == 31337
    (listed,) = report["anchors"]
    assert listed["state"] == "confirmed"
    assert listed["tx_hash"] == anchor["tx_hash"]
    assert listed["block_number"] == anchor["block_number"]
    assert listed["confirmations"] == 2
    assert listed["attempts"] == [anchor["tx_hash"]]
    assert report["pending_batches"] == [second]
    r = cli("anchor", "status")
    assert r.exit_code == 0, r.output
    assert anchor["tx_hash"] in r.stdout and "confirmed" in r.stdout
    assert f"Pending batches (1): {second}" in r.stdout

    r = cli("batch", "list", "--json")
    assert r.exit_code == 0, r.output
    assert [b["batch_id"] for b in json.loads(r.stdout)["batches"]] == [first, second]
    r = cli("batch", "show", first, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["batch_id"] == first
    for args in (
        ("batch", "list"),
        ("batch", "show", first),
        ("product", "show", "--gtin", gtin, "--serial", serial),
    ):
        r = cli(*args)
        assert r.exit_code == 0, r.output
    r = cli("product", "show", "--gtin", gtin, "--serial", serial, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["batch_id"] == first
    assert cli("verify", "--batch", first).exit_code == 0


# The human-readable views show a batch's anchor (state, block, chain) once anchored.
@pytest.mark.parametrize("view", ["batch list", "batch show", "product show"])
def test_read_views_show_the_anchor_after_anchoring(
    cli, keyed, chain_env: Anvil, view: str
) -> None:
    batch_id = mint_example(cli)
    assert anchor_json(cli)["anchor"]["state"] == "confirmed"
    args = {
        "batch list": ("batch", "list"),
        "batch show": ("batch", "show", batch_id),
        "product show": ("product", "show", "--gtin", EXAMPLE_GTIN, "--serial", EXAMPLE_SERIAL),
    }[view]
    r = cli(*args)
    assert r.exit_code == 0, r.output
    assert "not anchored yet" not in r.stdout
    assert "pending" not in r.stdout
