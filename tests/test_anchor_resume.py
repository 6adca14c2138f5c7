"""Anchoring survives what happens to real runs: ``kill -9`` at exact points, a node
that stops and comes back, a reorg, a dropped transaction, a nonce taken by another
transaction. Each time the next ``provmint anchor`` finishes the job with exactly one
anchor on chain, and the proofs say the truth about it.

Real parts only: real anvil nodes, real ``provmint`` processes, a real SIGKILL (the
process kills itself at a chosen function, as an unlucky outside kill would).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Anvil, dev_key, run_provmint
from helpers import KILLER, anchor_json, mint_example, status_json

EXAMPLE_GTIN, EXAMPLE_SERIAL = "09520123450014", "546CAWQDCR56"
CALLDATA_PREFIX = "0x504d4e5401"  # "PMNT" || version 1


# --------------------------------------------------------------------------- helpers


def kill_at(module: str, target: str, skip: int, *args: object) -> None:
    """Run ``provmint *args`` and SIGKILL it at ``module.target`` (after ``skip`` calls)."""
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, module, target, str(skip), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == -9, (killed.returncode, killed.stderr)


def offline_status(cli, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """``anchor status --json`` from the store alone (no node consulted, nothing driven)."""
    with monkeypatch.context() as m:
        m.delenv("PROVMINT_RPC_URL", raising=False)
        return status_json(cli)


def nonce(node: Anvil, address: str, block: str = "latest") -> int:
    return int(str(node.rpc("eth_getTransactionCount", address, block)), 16)


def pending_count(node: Anvil) -> int:
    return int(str(node.rpc("txpool_status")["pending"]), 16)


def export_proof(cli, path: Path) -> Path:
    r = cli("proof", "export", "--gtin", EXAMPLE_GTIN, "--serial", EXAMPLE_SERIAL, "-o", path)
    assert r.exit_code == 0, r.output
    return path


def verify(cli, proof: Path) -> tuple[int, dict[str, Any]]:
    r = cli("verify", proof, "--json")
    return r.exit_code, json.loads(r.stdout)


def assert_one_confirmed_anchor(
    cli, node: Anvil, batch_id: str, tmp_path: Path, sends: int = 1
) -> dict[str, Any]:
    """The end state after any trouble: one confirmed anchor covering the batch, ``sends``
    transactions from the sender (the anchor's is the last), a proof valid on chain."""
    sender = dev_key(0)[0]
    report = status_json(cli)
    assert report["pending_batches"] == []
    (anchor,) = report["anchors"]
    assert anchor["state"] == "confirmed" and anchor["tree_size"] == 1
    assert anchor["confirmations"] >= 1
    assert nonce(node, sender) == sends
    tx = node.rpc("eth_getTransactionByHash", anchor["tx_hash"])
    assert tx["input"] == CALLDATA_PREFIX + anchor["digest"]
    assert int(tx["nonce"], 16) == sends - 1
    receipt = node.rpc("eth_getTransactionReceipt", anchor["tx_hash"])
    assert int(receipt["status"], 16) == 1
    assert int(receipt["blockNumber"], 16) == anchor["block_number"]
    assert receipt["blockHash"] == anchor["block_hash"]
    # Exactly one transaction anywhere carries this digest.
    carrying = []
    for number in range(int(str(node.rpc("eth_blockNumber")), 16) + 1):
        block = node.rpc("eth_getBlockByNumber", hex(number), True)
        carrying += [
            t["hash"]
            for t in block["transactions"]
            if t["input"] == CALLDATA_PREFIX + anchor["digest"]
        ]
    assert carrying == [anchor["tx_hash"]]

    code, verdict = verify(cli, export_proof(cli, tmp_path / "final-proof.json"))
    assert (code, verdict["verdict"]) == (0, "valid"), verdict
    assert verdict["batch_id"] == batch_id
    assert verdict["anchor"]["tx_hash"] == anchor["tx_hash"]
    assert verdict["chain"]["block_number"] == anchor["block_number"]
    assert report["anchors"][0]["anchor_id"] == 1
    return anchor


@pytest.fixture
def quiet_node(monkeypatch: pytest.MonkeyPatch) -> Iterator[Anvil]:
    """A node that mines nothing on its own (transactions wait in the pool), with
    provmint pointed at it and dev account 0 as the chain key."""
    node = Anvil("--no-mining")
    monkeypatch.setenv("PROVMINT_RPC_URL", node.url)
    monkeypatch.setenv("PROVMINT_CHAIN_KEY", dev_key(0)[1])
    yield node
    node.stop()


# --------------------------------------------------------------------------- kill -9


@pytest.mark.slow
@pytest.mark.parametrize(
    ("module", "target", "state_after", "on_chain"),
    [
        # anchor recorded, nothing signed yet
        ("provmint.anchor.lifecycle", "AnchorDriver.sign", "built", False),
        # signed transaction saved, never broadcast
        ("provmint.chain", "Node.send_raw", "signed", False),
        # broadcast (and mined at once by anvil), "broadcast" not recorded yet
        ("provmint.anchor.lifecycle", "AnchorDriver.update", "signed", True),
        # broadcast recorded, receipt never looked at
        ("provmint.anchor.lifecycle", "AnchorDriver.find_receipt", "broadcast", True),
        # receipt found, inclusion not recorded
        ("provmint.anchor.lifecycle", "AnchorDriver.record_inclusion", "broadcast", True),
    ],
)
def test_kill_at_exact_points_then_rerun(
    cli,
    keyed,
    chain_env: Anvil,
    monkeypatch,
    tmp_path: Path,
    module: str,
    target: str,
    state_after: str,
    on_chain: bool,
) -> None:
    batch_id = mint_example(cli)
    sender = dev_key(0)[0]
    kill_at(module, target, 0, "anchor")

    (killed,) = offline_status(cli, monkeypatch)["anchors"]
    assert killed["state"] == state_after
    assert nonce(chain_env, sender) == (1 if on_chain else 0)
    signed = killed["attempts"]
    assert len(signed) == (0 if state_after == "built" else 1)
    # A killed run's batch is being anchored, not pending: no second anchor for it.
    assert offline_status(cli, monkeypatch)["pending_batches"] == []

    rerun = run_provmint("anchor", "--json")
    assert rerun.returncode == 0, rerun.stderr
    run = json.loads(rerun.stdout)
    assert run["plan"] is None and run["anchor"] is None  # nothing new to anchor
    (resumed,) = run["resumed"]
    assert resumed["state"] == "confirmed"
    if signed:  # the very bytes signed before the kill, not a new transaction
        assert resumed["attempts"] == signed and resumed["tx_hash"] == signed[0]
    anchor = assert_one_confirmed_anchor(cli, chain_env, batch_id, tmp_path)
    assert anchor["anchor_id"] == killed["anchor_id"]

    again = anchor_json(cli)
    assert again["plan"] is None and again["resumed"] == []
    assert nonce(chain_env, sender) == 1


@pytest.mark.slow
def test_two_concurrent_runs_anchor_once(cli, keyed, chain_env: Anvil, tmp_path: Path) -> None:
    batch_id = mint_example(cli)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "provmint", "anchor", "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outputs]
    runs = [json.loads(out) for out, _ in outputs]
    anchors = [r["anchor"] for r in runs if r["anchor"] is not None]
    assert len(anchors) == 1, runs  # the other run found nothing left to anchor
    assert anchors[0]["state"] == "confirmed"
    assert_one_confirmed_anchor(cli, chain_env, batch_id, tmp_path)


# --------------------------------------------------------------------------- node restart


@pytest.mark.slow
@pytest.mark.chain
def test_node_stopped_mid_anchor_and_restarted_with_its_state(
    cli, keyed, monkeypatch, tmp_path: Path
) -> None:
    state_file = tmp_path / "anvil-state.json"
    node = Anvil("--no-mining", "--state", str(state_file))
    try:
        monkeypatch.setenv("PROVMINT_RPC_URL", node.url)
        monkeypatch.setenv("PROVMINT_CHAIN_KEY", dev_key(0)[1])
        batch_id = mint_example(cli)
        node.mine(3)  # some history the saved state must keep
        run = anchor_json(cli, "--no-wait")
        sent = run["anchor"]
        assert sent["state"] == "broadcast" and len(sent["attempts"]) == 1
        assert pending_count(node) == 1
        assert nonce(node, dev_key(0)[0]) == 0
        port = node.port
    finally:
        node.stop()
    assert state_file.exists()

    # While the node is down: a clean chain error, nothing lost.
    r = cli("anchor")
    assert r.exit_code == 10 and "cannot reach the node" in r.stderr, r.output
    assert offline_status(cli, monkeypatch)["anchors"][0]["state"] == "broadcast"

    restarted = Anvil("--state", str(state_file), port=port)
    try:
        assert int(str(restarted.rpc("eth_blockNumber")), 16) == 3  # same chain, same height
        resumed = anchor_json(cli)["resumed"]
        assert [a["state"] for a in resumed] == ["confirmed"]
        assert resumed[0]["tx_hash"] == sent["tx_hash"]  # the saved bytes, re-sent
        assert resumed[0]["attempts"] == sent["attempts"]
        assert resumed[0]["block_number"] > 3
        assert_one_confirmed_anchor(cli, restarted, batch_id, tmp_path)
    finally:
        restarted.stop()


# --------------------------------------------------------------------------- reorg


def test_reorg_drops_the_anchor_block_and_the_next_run_re_anchors(
    cli, keyed, chain_env: Anvil, tmp_path: Path
) -> None:
    batch_id = mint_example(cli)
    snapshot = chain_env.rpc("evm_snapshot")
    first = anchor_json(cli)["anchor"]
    assert first["state"] == "confirmed"
    old_proof = export_proof(cli, tmp_path / "old-proof.json")
    code, verdict = verify(cli, old_proof)
    assert (code, verdict["verdict"]) == (0, "valid")

    assert chain_env.rpc("evm_revert", snapshot) is True
    assert chain_env.rpc("eth_getTransactionReceipt", first["tx_hash"]) is None
    chain_env.mine(2)  # the new branch is longer: the anchor's height now holds another block
    assert nonce(chain_env, dev_key(0)[0]) == 0

    # The old proof names a block that is no longer the chain's.
    code, verdict = verify(cli, old_proof)
    assert (code, verdict["verdict"]) == (3, "invalid"), verdict

    report = status_json(cli)  # with the node: the reorg is noticed
    (noticed,) = report["anchors"]
    assert noticed["state"] != "confirmed"
    assert noticed["block_number"] is None and noticed["confirmations"] is None
    assert report["pending_batches"] == []  # still this anchor's batch, not a new anchor's
    # Until it is back in a block, a freshly exported proof has no anchor.
    code, verdict = verify(cli, export_proof(cli, tmp_path / "between.json"))
    assert (code, verdict["verdict"]) == (4, "pending")

    run = anchor_json(cli)
    (resumed,) = run["resumed"]
    assert run["anchor"] is None
    assert resumed["state"] == "confirmed" and resumed["anchor_id"] == first["anchor_id"]
    assert resumed["block_number"] != first["block_number"]
    assert resumed["block_hash"] != first["block_hash"]
    assert resumed["tx_hash"] == first["tx_hash"]  # the saved transaction, re-sent
    second = assert_one_confirmed_anchor(cli, chain_env, batch_id, tmp_path)
    assert second["block_number"] == resumed["block_number"]

    code, verdict = verify(cli, old_proof)  # still rejected: its block is gone for good
    assert (code, verdict["verdict"]) == (3, "invalid")
    assert "reorg" in verdict["reason"] or "canonical" in verdict["reason"]


def test_reorg_is_noticed_by_anchor_itself(cli, keyed, chain_env: Anvil, tmp_path: Path) -> None:
    batch_id = mint_example(cli)
    snapshot = chain_env.rpc("evm_snapshot")
    first = anchor_json(cli)["anchor"]
    chain_env.rpc("evm_revert", snapshot)
    chain_env.mine(3)
    run = anchor_json(cli)  # no status call in between
    (resumed,) = run["resumed"]
    assert resumed["state"] == "confirmed"
    assert resumed["block_number"] == 4 != first["block_number"]
    assert_one_confirmed_anchor(cli, chain_env, batch_id, tmp_path)


# A reorged *confirmed* anchor goes back to "broadcast"; `anchor status --wait` must then
# drive it again (not trust the record it read before noticing the reorg).
def test_status_wait_re_anchors_after_a_reorg(cli, keyed, chain_env: Anvil, tmp_path: Path) -> None:
    mint_example(cli)
    snapshot = chain_env.rpc("evm_snapshot")
    first = anchor_json(cli)["anchor"]
    chain_env.rpc("evm_revert", snapshot)
    chain_env.mine(2)
    r = cli("anchor", "status", "--wait", "--json")
    assert r.exit_code == 0, r.output
    (anchor,) = json.loads(r.stdout)["anchors"]
    assert anchor["state"] == "confirmed"
    assert anchor["block_number"] not in (None, first["block_number"])


# --------------------------------------------------------------------------- dropped


def test_dropped_transaction_is_sent_again(cli, keyed, quiet_node: Anvil, tmp_path: Path) -> None:
    batch_id = mint_example(cli)
    sent = anchor_json(cli, "--no-wait")["anchor"]
    assert sent["state"] == "broadcast"
    assert pending_count(quiet_node) == 1

    # Resuming without a block changes nothing and sends no second transaction.
    again = anchor_json(cli, "--no-wait")
    assert [a["state"] for a in again["resumed"]] == ["broadcast"]
    assert again["resumed"][0]["attempts"] == sent["attempts"]
    assert pending_count(quiet_node) == 1

    quiet_node.rpc("anvil_dropAllTransactions")
    assert pending_count(quiet_node) == 0
    quiet_node.rpc("evm_setAutomine", True)
    (resumed,) = anchor_json(cli)["resumed"]
    assert resumed["state"] == "confirmed"
    assert resumed["tx_hash"] == sent["tx_hash"]
    assert_one_confirmed_anchor(cli, quiet_node, batch_id, tmp_path)


def test_nonce_taken_by_another_transaction_signs_again(
    cli, keyed, quiet_node: Anvil, tmp_path: Path
) -> None:
    batch_id = mint_example(cli)
    sender = dev_key(0)[0]
    sent = anchor_json(cli, "--no-wait")["anchor"]
    quiet_node.rpc("anvil_dropAllTransactions")
    # The issuer's wallet sends something else with the same nonce, and it is mined.
    other = quiet_node.rpc(
        "eth_sendTransaction", {"from": sender, "to": dev_key(5)[0], "value": "0x1"}
    )
    quiet_node.mine(1)
    assert int(quiet_node.rpc("eth_getTransactionByHash", other)["nonce"], 16) == 0
    quiet_node.rpc("evm_setAutomine", True)

    (resumed,) = anchor_json(cli)["resumed"]
    assert resumed["state"] == "confirmed"
    assert len(resumed["attempts"]) == 2 and resumed["attempts"][0] == sent["tx_hash"]
    assert resumed["tx_hash"] == resumed["attempts"][1] != sent["tx_hash"]
    assert_one_confirmed_anchor(cli, quiet_node, batch_id, tmp_path, sends=2)


# --------------------------------------------------------------------------- known bugs


# A resumed anchor is signed with the method and registry recorded with it, not the
# current run's: a registry anchor resumed by a plain `provmint anchor` stays registry.
@pytest.mark.slow
def test_resumed_anchor_keeps_its_method(cli, keyed, chain_env: Anvil, tmp_path: Path) -> None:
    r = cli("anchor", "deploy-registry", "--json")
    assert r.exit_code == 0, r.output
    registry = json.loads(r.stdout)["address"]
    mint_example(cli)
    kill_at(
        "provmint.anchor.lifecycle",
        "AnchorDriver.sign",
        0,
        "anchor",
        "--method",
        "registry",
        "--registry",
        registry,
    )
    rerun = run_provmint("anchor", "--json")  # the default method: calldata
    assert rerun.returncode == 0, rerun.stderr
    (resumed,) = json.loads(rerun.stdout)["resumed"]
    assert resumed["method"] == "registry"
    tx = chain_env.rpc("eth_getTransactionByHash", resumed["tx_hash"])
    assert tx["to"].lower() == registry.lower()
    code, verdict = verify(cli, export_proof(cli, tmp_path / "p.json"))
    assert (code, verdict["verdict"]) == (0, "valid"), verdict


# A resumed anchor may only be signed by the key that started it (its proofs name that
# sender); another key is refused.
@pytest.mark.slow
def test_resume_with_another_key_never_yields_a_false_anchor(
    cli, keyed, chain_env: Anvil, monkeypatch, tmp_path: Path
) -> None:
    mint_example(cli)
    kill_at("provmint.anchor.lifecycle", "AnchorDriver.sign", 0, "anchor")
    other_address, other_key = dev_key(1)
    rerun = run_provmint("anchor", "--json", env={"PROVMINT_CHAIN_KEY": other_key})
    if rerun.returncode == 0:  # resuming is fine only if the result is true
        code, verdict = verify(cli, export_proof(cli, tmp_path / "p.json"))
        assert (code, verdict["verdict"]) == (0, "valid"), verdict
    else:  # or refusing, clearly, without sending anything
        assert rerun.returncode == 10, rerun.stderr
        assert dev_key(0)[0] in rerun.stderr
        assert nonce(chain_env, other_address) == 0


# A stuck transaction is replaced with higher fees, but never above --max-fee-gwei /
# max_fee_gwei: when the bump would cross the cap, provmint stops (the tx stays saved).
@pytest.mark.slow
def test_fee_bumps_respect_the_fee_cap(cli, keyed, quiet_node: Anvil, tmp_path: Path) -> None:
    mint_example(cli)
    config = tmp_path / "chains.toml"
    # The cap is exactly today's max fee (2 x base fee + tip): the first send fits.
    base = int(quiet_node.rpc("eth_getBlockByNumber", "latest", False)["baseFeePerGas"], 16)
    tip = int(str(quiet_node.rpc("eth_maxPriorityFeePerGas")), 16)
    cap_gwei = (2 * base + tip) / 10**9
    config.write_text(f"[chains.local]\nreceipt_timeout = 1\nmax_fee_gwei = {cap_gwei}\n")
    r = cli("anchor", "--config", config, "--chain", "local")
    assert r.exit_code == 10, r.output  # never mined: gives up after its fee bumps
    assert "Traceback" not in r.output
    pool = quiet_node.rpc("txpool_content")["pending"]
    offered = [int(tx["maxFeePerGas"], 16) for txs in pool.values() for tx in txs.values()]
    assert offered, "the anchor transaction is not in the pool"
    assert "is stuck" in r.stderr and "above the cap" in r.stderr  # refused to bump past it
    assert max(offered) <= cap_gwei * 10**9
