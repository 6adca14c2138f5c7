"""``provmint verify`` against a real chain (anvil): valid, pending, unchecked and invalid
anchors, every anchor field tampered with, hostile anchor sections, registry anchors, the
chain key's secrecy, and start-up staying free of web3 when no node is configured.

Most tests share one module-wide chain (``world``): three batches anchored in one calldata
transaction, a registry deployed and one batch anchored through it, one batch left
pending, plus some unrelated transactions sent with web3. Verification only reads the
chain, so sharing it is safe.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import secrets
import socket
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import EXAMPLE_CSV, Anvil, dev_key
from helpers import failed_checks, no_crash, verify_report
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from provmint.anchoring import anchor_digest, anchor_leaf, calldata_payload
from provmint.canonical import batch_commitment, manifest_digest
from provmint.config import Settings
from provmint.errors import EXIT_INVALID, EXIT_OK, EXIT_PENDING, EXIT_UNCHECKED

GTIN = "09520123450014"
SERIAL = "546CAWQDCR56"
DEV0, DEV0_KEY = dev_key(0)
DEV1, _ = dev_key(1)
DEV9, _ = dev_key(9)

# A contract that answers every call with uint256(1): "anchoredAt(anyone, anything) = 1".
FAKE_REGISTRY_RUNTIME = "600160005260206000f3"
FAKE_REGISTRY_INIT = "0x600a600c600039600a6000f3" + FAKE_REGISTRY_RUNTIME


def _csv(base: Path, prefix: str, n: int) -> Path:
    path = base / f"{prefix}.csv"
    path.write_text(
        "gtin,serial,lot\n" + "".join(f"{GTIN},{prefix}{i:04d},L{prefix}\n" for i in range(n))
    )
    return path


class World(SimpleNamespace):
    """The shared chain and its proofs (a short repr keeps failure reports readable)."""

    def __repr__(self) -> str:
        return f"World({self.url})"


def _build_world(base: Path, node: Anvil) -> World:
    from web3 import Web3

    from provmint.anchor import anchor_batches, deploy_registry
    from provmint.batch import mint_batch
    from provmint.chain import load_chain_key
    from provmint.config import resolve_chain
    from provmint.keys import init_keyring
    from provmint.products import export_proof

    config = base / "none.toml"
    config.write_text("")
    cfg = Settings(store=base / "store", key_file=base / "keys" / "keys.json", workers=1)
    init_keyring(cfg.key_file)
    env = {"PROVMINT_CHAIN_KEY": DEV0_KEY}
    calldata = resolve_chain(rpc_url=node.url, config_file=config, env=env)
    key = load_chain_key(calldata)

    mint_batch(EXAMPLE_CSV, settings=cfg)
    mint_batch(_csv(base, "BA", 4), settings=cfg)
    mint_batch(_csv(base, "BB", 4), settings=cfg)
    run = anchor_batches(cfg, calldata, key)
    assert run.anchor is not None and run.anchor.state == "confirmed"
    assert run.anchor.tree_size == 3

    registry = deploy_registry(calldata, key)
    mint_batch(_csv(base, "R", 3), settings=cfg)
    by_registry = resolve_chain(
        rpc_url=node.url, method="registry", registry=registry.address, config_file=config, env=env
    )
    reg_run = anchor_batches(cfg, by_registry, key)
    assert reg_run.anchor is not None and reg_run.anchor.state == "confirmed"
    mint_batch(_csv(base, "P", 2), settings=cfg)  # never anchored

    # the three batches of the calldata anchor; the one at leaf 0 has a path of two
    # hashes whatever the (random) batch ids sort to
    anchored = sorted(
        (export_proof(cfg, gtin=GTIN, serial=serial) for serial in (SERIAL, "BA0000", "BB0000")),
        key=lambda d: d["anchor"]["tree"]["leaf_index"],
    )
    assert [len(d["anchor"]["tree"]["path"]) for d in anchored] == [2, 2, 1]
    docs = {
        "calldata": anchored[0],
        "sibling": anchored[2],
        "registry": export_proof(cfg, gtin=GTIN, serial="R0000"),
        "pending": export_proof(cfg, gtin=GTIN, serial="P0000"),
    }
    assert docs["pending"]["anchor"] is None
    assert docs["calldata"]["anchor"]["tx_hash"] == run.anchor.tx_hash

    w3 = Web3(Web3.HTTPProvider(node.url))

    def send(sender: str, to: str | None, data: bytes = b"", value: int = 0) -> dict[str, Any]:
        tx: dict[str, Any] = {"from": sender, "value": value, "data": data}
        if to is not None:
            tx["to"] = to
        tx_hash = w3.eth.send_transaction(tx)  # anvil's dev accounts are unlocked
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
        assert receipt["status"] == 1
        block = w3.eth.get_block(receipt["blockNumber"])
        return {
            "tx_hash": "0x" + bytes(tx_hash).hex(),
            "block_number": receipt["blockNumber"],
            "block_hash": "0x" + bytes(receipt["blockHash"]).hex(),
            "block_time": int(block["timestamp"]),
            "contract": receipt.get("contractAddress"),
        }

    digest = bytes.fromhex(docs["calldata"]["anchor"]["digest"])
    txs = {
        "transfer by issuer": send(DEV0, DEV1, value=1),
        "transfer by other": send(DEV1, DEV0, value=1),
        "issuer anchors another digest": send(
            DEV0, DEV0, calldata_payload(hashlib.sha256(b"another digest").digest())
        ),
        # somebody else publishes the very same digest from their own account
        "copy by other": send(DEV1, DEV1, calldata_payload(digest)),
        "fake registry": send(DEV9, None, bytes.fromhex(FAKE_REGISTRY_INIT[2:])),
        "registry deployment": {"tx_hash": registry.tx_hash},
    }
    assert txs["fake registry"]["contract"]
    return World(
        url=node.url,
        node=node,
        settings=cfg,
        docs=docs,
        txs=txs,
        registry=registry.address,
        anchor=run.anchor,
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("world")
    node = Anvil()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("PROVMINT_STORE", str(base / "store"))
            mp.setenv("PROVMINT_KEY_FILE", str(base / "keys" / "keys.json"))
            mp.setenv("PROVMINT_CONFIG", str(base / "none.toml"))
            for name in ("PROVMINT_RPC_URL", "PROVMINT_CHAIN_KEY", "PROVMINT_CHAIN"):
                mp.delenv(name, raising=False)
            built = _build_world(base, node)
        yield built
    finally:
        node.stop()


# --------------------------------------------------------------------------- helpers


def write_doc(tmp_path: Path, doc: dict[str, Any], name: str = "p.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    return path


def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    sock.close()
    return port


def utc(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def flip_hex(text: str, at: int = -1) -> str:
    """``text`` with one hex digit changed (same case family, never the same value)."""
    i = at % len(text)
    new = "0" if text[i].lower() != "0" else "1"
    return text[:i] + new + text[i + 1 :]


def random_hash() -> str:
    return "0x" + secrets.token_hex(32)


# --------------------------------------------------------------------------- 1. the CLI flow


@pytest.fixture
def anchored_cli(cli, keyed, chain_env: Anvil, tmp_path: Path) -> SimpleNamespace:
    """The whole job through the CLI on this test's own node: mint, anchor, export."""
    assert cli("batch", "create", EXAMPLE_CSV).exit_code == 0
    r = cli("anchor", "--json")
    assert r.exit_code == 0, r.output
    run = json.loads(r.stdout)["anchor"]
    path = tmp_path / "p.json"
    r = cli("proof", "export", "--gtin", GTIN, "--serial", SERIAL, "-o", path)
    assert r.exit_code == 0, r.output
    block = chain_env.rpc("eth_getBlockByNumber", hex(run["block_number"]), False)
    assert isinstance(block, dict)
    return SimpleNamespace(
        path=path, run=run, node=chain_env, block_time=int(block["timestamp"], 16)
    )


def _head(node: Anvil) -> int:
    return int(str(node.rpc("eth_blockNumber")), 16)


def test_anchored_proof_receipt_states_block_chain_time_confirmations(cli, anchored_cli) -> None:
    a = anchored_cli
    number = a.run["block_number"]
    depth = _head(a.node) - number + 1
    r = cli("verify", a.path)
    no_crash(r)
    assert r.exit_code == EXIT_OK, r.output
    last = r.stdout.rstrip().splitlines()[-1]
    assert last == (
        f"VALID: anchored in block {number} of chain 31337 at {utc(a.block_time)}, "
        f"{depth} confirmation{'s' if depth != 1 else ''}"
    )
    assert re.search(r"^  ok\s+on chain: anchored in block \d+ of chain 31337$", r.stdout, re.M)
    assert re.search(
        rf"^anchor\s+chain 31337 tx {a.run['tx_hash']} block {number} \(calldata\)$", r.stdout, re.M
    )
    assert "not checked" not in r.stdout and "FAIL" not in r.stdout
    assert r.stderr == ""

    r, report = verify_report(cli, a.path)
    assert r.exit_code == EXIT_OK
    assert report["chain"] == {
        "chain_id": 31337,
        "block_number": number,
        "block_time": a.block_time,
        "confirmations": depth,
    }
    assert report["anchor"]["tx_hash"] == a.run["tx_hash"]
    assert report["anchor"]["sender"] == DEV0
    assert [c["name"] for c in report["checks"]][-2:] == ["anchor tree", "on chain"]
    assert failed_checks(report) == []


def test_same_proof_without_a_node_is_unchecked(cli, anchored_cli, monkeypatch) -> None:
    monkeypatch.delenv("PROVMINT_RPC_URL")
    r = cli("verify", anchored_cli.path)
    no_crash(r)
    assert r.exit_code == EXIT_UNCHECKED == 5
    assert r.stdout.rstrip().splitlines()[-1] == (
        "UNCHECKED: offline checks passed, anchor not checked"
    )
    assert "[not checked on chain]" in r.stdout
    r, report = verify_report(cli, anchored_cli.path)
    assert report["chain"] is None and failed_checks(report) == []
    assert "on chain" not in [c["name"] for c in report["checks"]]


def test_confirmations_pending_until_enough_blocks(cli, anchored_cli) -> None:
    a = anchored_cli
    depth = _head(a.node) - a.run["block_number"] + 1
    assert depth < 10
    r, report = verify_report(cli, a.path, "--confirmations", 10)
    assert r.exit_code == EXIT_PENDING
    unit = "confirmation" if depth == 1 else "confirmations"
    assert report["reason"].endswith(f"{depth} {unit}; not enough confirmations yet")
    assert report["chain"]["confirmations"] == depth
    a.node.mine(10)
    r, report = verify_report(cli, a.path, "--confirmations", 10)
    assert r.exit_code == EXIT_OK
    assert report["chain"]["confirmations"] == depth + 10
    assert report["reason"].endswith(f", {depth + 10} confirmations")


def test_unanchored_proof_is_pending_even_with_a_node(cli, world, tmp_path: Path) -> None:
    r, report = verify_report(
        cli, write_doc(tmp_path, world.docs["pending"]), "--rpc-url", world.url
    )
    assert r.exit_code == EXIT_PENDING == 4
    assert report["reason"] == "valid, but the batch is not anchored yet"
    assert report["chain"] is None


def test_shared_world_calldata_and_registry_proofs_are_valid(cli, world, tmp_path) -> None:
    for which in ("calldata", "sibling", "registry"):
        r, report = verify_report(
            cli, write_doc(tmp_path, world.docs[which]), "--rpc-url", world.url
        )
        assert r.exit_code == EXIT_OK, (which, report["reason"])
        anchor = world.docs[which]["anchor"]
        assert report["chain"]["block_number"] == anchor["block_number"]
        assert report["chain"]["block_time"] == anchor["block_time"]
        assert report["reason"].startswith(
            f"anchored in block {anchor['block_number']} of chain 31337 at "
        )


@pytest.mark.parametrize("issuer", [DEV0, DEV0.lower(), "0x" + DEV0[2:].upper()])
def test_expected_issuer_matches(cli, world, tmp_path: Path, issuer: str) -> None:
    r, _ = verify_report(
        cli, write_doc(tmp_path, world.docs["calldata"]), "--rpc-url", world.url, "--issuer", issuer
    )
    assert r.exit_code == EXIT_OK


def test_another_issuer_is_invalid(cli, world, tmp_path: Path) -> None:
    r, report = verify_report(
        cli, write_doc(tmp_path, world.docs["calldata"]), "--rpc-url", world.url, "--issuer", DEV1
    )
    assert r.exit_code == EXIT_INVALID == 3
    assert report["reason"] == f"on chain: anchored by {DEV0}, not by the expected issuer {DEV1}"
    assert failed_checks(report) == ["on chain"]


def test_a_copy_of_the_digest_by_someone_else_needs_the_issuer_check(cli, world, tmp_path):
    """Anyone can publish the same digest; the proof then honestly names that sender and
    is valid as such, and ``--issuer`` is what tells the two apart."""
    doc = copy.deepcopy(world.docs["calldata"])
    copied = world.txs["copy by other"]
    doc["anchor"].update(
        sender=DEV1,
        tx_hash=copied["tx_hash"],
        block_number=copied["block_number"],
        block_hash=copied["block_hash"],
        block_time=copied["block_time"],
    )
    path = write_doc(tmp_path, doc)
    r, report = verify_report(cli, path, "--rpc-url", world.url)
    assert r.exit_code == EXIT_OK and report["anchor"]["sender"] == DEV1
    r, report = verify_report(cli, path, "--rpc-url", world.url, "--issuer", DEV0)
    assert r.exit_code == EXIT_INVALID
    assert "not by the expected issuer" in report["reason"]


def test_unreachable_node_is_unchecked_with_a_clean_message(cli, world, tmp_path) -> None:
    port = closed_port()
    path = write_doc(tmp_path, world.docs["calldata"])
    r = cli("verify", path, "--rpc-url", f"http://127.0.0.1:{port}")
    no_crash(r)
    assert r.exit_code == EXIT_UNCHECKED
    last = r.stdout.rstrip().splitlines()[-1]
    assert last.startswith(
        "UNCHECKED: offline checks passed, anchor not checked: cannot reach "
        f"the node at http://127.0.0.1:{port} (eth_chainId)"
    )
    assert len(last) < 400
    assert r.stderr == ""
    r, report = verify_report(cli, path, "--rpc-url", f"http://127.0.0.1:{port}")
    assert "\n" not in report["reason"] and report["chain"] is None
    assert failed_checks(report) == []


@pytest.mark.parametrize("kind", ["closed port", "wrong path on a live node"])
def test_node_errors_do_not_leak_the_rpc_url_path(cli, world, tmp_path, kind: str) -> None:
    """Node errors show the masked URL only, never the path and query of the RPC URL
    (where providers put the API key), not even inside the requests error text."""
    base = f"http://127.0.0.1:{closed_port()}" if kind == "closed port" else world.url
    url = base + "/v3/PROVIDERAPIKEY42?apikey=QUERYSECRET42"
    r = cli("verify", write_doc(tmp_path, world.docs["calldata"]), "--rpc-url", url)
    no_crash(r)
    assert r.exit_code == EXIT_UNCHECKED
    assert f"{base}/…" in r.stdout
    assert "PROVIDERAPIKEY42" not in r.stdout + r.stderr
    assert "QUERYSECRET42" not in r.stdout + r.stderr


def test_node_of_another_chain_cannot_check(cli, world, tmp_path: Path) -> None:
    other = Anvil("--chain-id", "999")
    try:
        r, report = verify_report(
            cli, write_doc(tmp_path, world.docs["calldata"]), "--rpc-url", other.url
        )
    finally:
        other.stop()
    assert r.exit_code == EXIT_UNCHECKED
    assert report["reason"] == (
        "offline checks passed, anchor not checked: the proof was "
        "anchored on chain 31337, the node serves chain 999"
    )
    assert report["chain"] is None


def _profile(tmp_path: Path, url: str, chain_id: int) -> Path:
    path = tmp_path / "chains.toml"
    path.write_text(f'[chains.local]\nrpc_url = "{url}"\nchain_id = {chain_id}\n')
    return path


def test_profile_expecting_another_chain_id(cli, world, tmp_path: Path, monkeypatch) -> None:
    """verify exits 5 (could not check): a node that is not the chain the verifier asked
    for checks nothing, and on_chain_verdict turns every chain problem into UNCHECKED.
    ``anchor`` with the same profile stops with exit 10 (a chain problem)."""
    proof = write_doc(tmp_path, world.docs["calldata"])
    wrong = _profile(tmp_path, world.url, 1)
    r, report = verify_report(cli, proof, "--config", wrong, "--chain", "local")
    assert r.exit_code == EXIT_UNCHECKED
    assert report["reason"] == (
        "offline checks passed, anchor not checked: the node at "
        f"{world.url} serves chain 31337, but the profile expects chain 1"
    )
    monkeypatch.setenv("PROVMINT_CHAIN_KEY", DEV0_KEY)
    r = cli("anchor", "--config", wrong, "--chain", "local")
    no_crash(r)
    assert r.exit_code == 10
    assert "serves chain 31337, but the profile expects chain 1" in r.stderr
    right = _profile(tmp_path, world.url, 31337)
    r, _ = verify_report(cli, proof, "--config", right, "--chain", "local")
    assert r.exit_code == EXIT_OK


class _PoaProxy:
    """A tiny JSON-RPC proxy in front of anvil whose blocks carry a 97-byte extraData,
    as proof-of-authority chains' blocks do (anvil cannot produce one); it counts the
    methods asked (``poa=False``: a plain counting proxy)."""

    def __init__(self, upstream: str, *, poa: bool = True) -> None:
        import http.server
        import threading
        import urllib.request
        from collections import Counter

        self.methods: Counter[str] = Counter()
        """How often each JSON-RPC method was asked."""
        methods = self.methods

        def patch(value: Any) -> None:
            if poa and isinstance(value, dict) and "extraData" in value and "miner" in value:
                value["extraData"] = "0x" + "ab" * 97

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                asked = json.loads(body)
                for call in asked if isinstance(asked, list) else [asked]:
                    methods[call["method"]] += 1
                request = urllib.request.Request(
                    upstream, body, {"Content-Type": "application/json"}
                )
                with urllib.request.urlopen(request, timeout=10) as response:
                    answer = json.loads(response.read())
                for item in answer if isinstance(answer, list) else [answer]:
                    patch(item.get("result"))
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_proof_of_authority_node_verifies_without_a_profile(cli, world, tmp_path: Path) -> None:
    """Verification reads blocks over plain JSON-RPC, so a proof-of-authority chain's
    long extraData needs no ``poa`` profile (web3, which anchoring uses, would refuse
    it); the profile still works."""
    proxy = _PoaProxy(world.url)
    try:
        proof = write_doc(tmp_path, world.docs["calldata"])
        r, report = verify_report(cli, proof, "--rpc-url", proxy.url)
        assert r.exit_code == EXIT_OK, report["reason"]
        config = tmp_path / "poa.toml"
        config.write_text(f'[chains.poa]\nrpc_url = "{proxy.url}"\npoa = true\n')
        r, report = verify_report(cli, proof, "--config", config, "--chain", "poa")
        assert r.exit_code == EXIT_OK, report["reason"]
        assert report["chain"]["block_number"] == world.docs["calldata"]["anchor"]["block_number"]
    finally:
        proxy.stop()


# --------------------------------------------------------------------------- 2. tampering

Mutation = Callable[[dict[str, Any], SimpleNamespace], None]


def _tx(name: str) -> Mutation:
    return lambda a, w: a.update(tx_hash=w.txs[name]["tx_hash"])


def _path_item(i: int) -> Mutation:
    def mutate(a: dict[str, Any], w: SimpleNamespace) -> None:
        a["tree"]["path"][i] = flip_hex(a["tree"]["path"][i], 5)

    return mutate


def _other_block_hash(a: dict[str, Any], w: SimpleNamespace) -> None:
    block = w.node.rpc("eth_getBlockByNumber", hex(a["block_number"] + 1), False)
    a["block_hash"] = block["hash"]


CALLDATA_TAMPERS: list[tuple[str, Mutation, int, str]] = [
    (
        "tx_hash: transfer by the issuer",
        _tx("transfer by issuer"),
        3,
        "on chain: the transaction does not carry this anchor's digest",
    ),
    (
        "tx_hash: transfer by another account",
        _tx("transfer by other"),
        3,
        "on chain: the transaction was sent by another address",
    ),
    (
        "tx_hash: the issuer's anchor of another digest",
        _tx("issuer anchors another digest"),
        3,
        "on chain: the transaction does not carry this anchor's digest",
    ),
    (
        "tx_hash: a contract deployment by the issuer",
        _tx("registry deployment"),
        3,
        "on chain: the transaction does not carry this anchor's digest",
    ),
    (
        "tx_hash: the issuer's registry anchor",
        lambda a, w: a.update(tx_hash=w.docs["registry"]["anchor"]["tx_hash"]),
        3,
        "on chain: the transaction does not carry this anchor's digest",
    ),
    (
        "tx_hash: random",
        lambda a, w: a.update(tx_hash="0x" + "5a" * 32),
        3,
        "is not on chain 31337",
    ),
    (
        "block_number + 1",
        lambda a, w: a.update(block_number=a["block_number"] + 1),
        3,
        "not the canonical block of the transaction",
    ),
    (
        "block_number - 1",
        lambda a, w: a.update(block_number=a["block_number"] - 1),
        3,
        "not the canonical block of the transaction",
    ),
    (
        "block_number far ahead",
        lambda a, w: a.update(block_number=10**12),
        3,
        "not the canonical block of the transaction",
    ),
    (
        "block_hash: another block",
        _other_block_hash,
        3,
        "not the canonical block of the transaction",
    ),
    (
        "block_hash: random",
        lambda a, w: a.update(block_hash="0x" + "6b" * 32),
        3,
        "not the canonical block of the transaction",
    ),
    (
        "block_time + 1",
        lambda a, w: a.update(block_time=a["block_time"] + 1),
        3,
        "on chain: the proof's block time differs from the chain",
    ),
    (
        "block_time 0",
        lambda a, w: a.update(block_time=0),
        3,
        "on chain: the proof's block time differs from the chain",
    ),
    (
        "sender: another dev account",
        lambda a, w: a.update(sender=DEV1),
        3,
        "on chain: the transaction was sent by another address",
    ),
    (
        "digest",
        lambda a, w: a.update(digest=flip_hex(a["digest"])),
        3,
        "anchor tree: the anchor digest does not bind this root and size",
    ),
    (
        "tree.root",
        lambda a, w: a["tree"].update(root=flip_hex(a["tree"]["root"])),
        3,
        "anchor tree: the batch commitment does not lead to the anchor root",
    ),
    (
        "tree.path[0]",
        _path_item(0),
        3,
        "anchor tree: the batch commitment does not lead to the anchor root",
    ),
    (
        "tree.path[-1]",
        _path_item(-1),
        3,
        "anchor tree: the batch commitment does not lead to the anchor root",
    ),
    (
        "tree.path reversed",
        lambda a, w: a["tree"]["path"].reverse(),
        3,
        "anchor tree: the batch commitment does not lead to the anchor root",
    ),
    (
        "tree.path one more",
        lambda a, w: a["tree"]["path"].append("00" * 32),
        3,
        "anchor tree: anchor path: ",
    ),
    ("tree.path one less", lambda a, w: a["tree"]["path"].pop(), 3, "anchor tree: "),
    ("tree.path emptied", lambda a, w: a["tree"].update(path=[]), 3, "anchor tree: "),
    (
        "tree.size + 1",
        lambda a, w: a["tree"].update(size=a["tree"]["size"] + 1),
        3,
        "anchor tree: ",
    ),
    ("tree.size 4096", lambda a, w: a["tree"].update(size=4096), 3, "anchor tree: "),
    (
        "tree.leaf_index",
        lambda a, w: a["tree"].update(leaf_index=(a["tree"]["leaf_index"] + 1) % a["tree"]["size"]),
        3,
        "anchor tree: ",
    ),
    (
        "method: calldata -> registry",
        lambda a, w: a.update(method="registry", contract=w.registry),
        3,
        "on chain: the transaction is not this registry anchor",
    ),
    (
        "chain_id: 1",
        lambda a, w: a.update(chain_id=1),
        5,
        "anchor not checked: the proof was anchored on chain 1, the node serves chain 31337",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "code", "reason"), [pytest.param(m, c, r, id=i) for i, m, c, r in CALLDATA_TAMPERS]
)
def test_tampered_calldata_anchor_is_rejected(
    cli, world, tmp_path: Path, mutate: Mutation, code: int, reason: str
) -> None:
    doc = copy.deepcopy(world.docs["calldata"])
    mutate(doc["anchor"], world)
    assert doc != world.docs["calldata"]
    r, report = verify_report(cli, write_doc(tmp_path, doc), "--rpc-url", world.url)
    assert r.exit_code == code, report["reason"]
    assert reason in report["reason"]
    if code == EXIT_INVALID:
        assert report["chain"] is None or report["chain"]["chain_id"] == 31337
        assert failed_checks(report) in (["anchor tree"], ["on chain"])


def test_tampered_anchor_receipt_names_the_failed_check(cli, world, tmp_path: Path) -> None:
    doc = copy.deepcopy(world.docs["calldata"])
    doc["anchor"]["block_time"] += 1
    r = cli("verify", write_doc(tmp_path, doc), "--rpc-url", world.url)
    no_crash(r)
    assert r.exit_code == EXIT_INVALID
    assert re.search(
        r"^  FAIL on chain: the proof's block time differs from the chain$", r.stdout, re.M
    )
    assert r.stdout.rstrip().splitlines()[-1] == (
        "INVALID: on chain: the proof's block time differs from the chain"
    )


def test_chain_id_claim_of_another_chain_cannot_pass(cli, world, tmp_path: Path) -> None:
    """A proof claiming chain 1 checked against a chain-31337 node: exit 5, never 0 —
    and without any node it is 5 as every anchored proof."""
    doc = copy.deepcopy(world.docs["calldata"])
    doc["anchor"]["chain_id"] = 1
    path = write_doc(tmp_path, doc)
    r, report = verify_report(cli, path, "--rpc-url", world.url)
    assert r.exit_code == EXIT_UNCHECKED and report["chain"] is None
    r, _ = verify_report(cli, path)
    assert r.exit_code == EXIT_UNCHECKED


def _rebind(doc: dict[str, Any]) -> None:
    """Recompute the manifest digest and the batch commitment after a manifest change,
    so that every offline check up to the commitment passes again."""
    batch = doc["batch"]
    digest = manifest_digest(batch["manifest"])
    batch["manifest_digest"] = digest.hex()
    batch["commitment"] = batch_commitment(
        batch["id"], doc["tree"]["size"], bytes.fromhex(doc["tree"]["root"]), digest
    ).hex()


def test_consistently_changed_manifest_no_longer_matches_the_anchor(cli, world, tmp_path) -> None:
    doc = copy.deepcopy(world.docs["calldata"])
    doc["batch"]["manifest"]["url_base"] = "https://id.evil.example"
    _rebind(doc)
    r, report = verify_report(cli, write_doc(tmp_path, doc), "--rpc-url", world.url)
    assert r.exit_code == EXIT_INVALID
    assert failed_checks(report) == ["anchor tree"]
    assert report["reason"] == (
        "anchor tree: the batch commitment does not lead to the anchor root"
    )


def test_changed_commitment_is_invalid(cli, world, tmp_path: Path) -> None:
    doc = copy.deepcopy(world.docs["calldata"])
    doc["batch"]["commitment"] = flip_hex(doc["batch"]["commitment"])
    r, report = verify_report(cli, write_doc(tmp_path, doc), "--rpc-url", world.url)
    assert r.exit_code == EXIT_INVALID
    assert failed_checks(report) == ["batch commitment", "anchor tree"]
    assert report["reason"].startswith("batch commitment: ")


@pytest.mark.parametrize("target", ["pending", "sibling"])
def test_anchor_section_moved_to_another_batch_is_invalid(cli, world, tmp_path, target) -> None:
    """The anchor of batch A pasted into a proof of batch B (never anchored, or a sibling
    in the same anchor tree) must not verify."""
    doc = copy.deepcopy(world.docs[target])
    doc["anchor"] = copy.deepcopy(world.docs["calldata"]["anchor"])
    r, report = verify_report(cli, write_doc(tmp_path, doc), "--rpc-url", world.url)
    assert r.exit_code == EXIT_INVALID
    assert failed_checks(report) == ["anchor tree"]
    assert "on chain" not in [c["name"] for c in report["checks"]]


# -- structurally malformed anchor sections: a clean error, exit 3, no traceback

MALFORMED: list[tuple[str, Callable[[dict[str, Any]], Any], str]] = [
    (
        "uppercase tx hash",
        (lambda a: a.update(tx_hash="0x" + a["tx_hash"][2:].upper())),
        "anchor.tx_hash must be 0x + 64 lowercase hex digits",
    ),
    (
        "tx hash without 0x",
        (lambda a: a.update(tx_hash=a["tx_hash"][2:] + "00")),
        "anchor.tx_hash must be 0x + 64 lowercase hex digits",
    ),
    ("bad hex tx hash", (lambda a: a.update(tx_hash="0x" + "zz" * 32)), "anchor.tx_hash must be"),
    (
        "short block hash",
        (lambda a: a.update(block_hash=a["block_hash"][:-2])),
        "anchor.block_hash must be",
    ),
    (
        "uppercase root",
        (lambda a: a["tree"].update(root=a["tree"]["root"].upper())),
        "anchor.tree.root must be 64 lowercase hex digits",
    ),
    (
        "bad hex digest",
        (lambda a: a.update(digest="g" * 64)),
        "anchor.digest must be 64 lowercase hex digits",
    ),
    (
        "digest with 0x",
        (lambda a: a.update(digest="0x" + a["digest"][2:])),
        "anchor.digest must be 64 lowercase hex digits",
    ),
    (
        "bad path element",
        (lambda a: a["tree"]["path"].__setitem__(0, "xy")),
        "anchor.tree.path[0] must be 64 lowercase hex digits",
    ),
    (
        "number in path",
        (lambda a: a["tree"]["path"].__setitem__(0, 7)),
        "anchor.tree.path[0] must be 64 lowercase hex digits",
    ),
    (
        "huge path",
        (lambda a: a["tree"].update(path=["00" * 32] * 5000)),
        "anchor.tree.path must be a short list",
    ),
    (
        "path not a list",
        (lambda a: a["tree"].update(path="00" * 32)),
        "anchor.tree.path must be a short list",
    ),
    (
        "unknown field",
        (lambda a: a.update(note="trust me")),
        "anchor.note is not part of provmint-anchor/1",
    ),
    (
        "unknown tree field",
        (lambda a: a["tree"].update(extra=1)),
        "anchor.tree must have profile, size, leaf_index, path, root",
    ),
    ("missing tx_hash", (lambda a: a.pop("tx_hash")), "anchor.tx_hash is missing"),
    ("missing block_number", (lambda a: a.pop("block_number")), "anchor.block_number is missing"),
    ("missing sender", (lambda a: a.pop("sender")), "anchor.sender is missing"),
    ("missing digest", (lambda a: a.pop("digest")), "anchor.digest is missing"),
    ("missing tree", (lambda a: a.pop("tree")), "anchor.tree is missing"),
    (
        "missing tree.root",
        (lambda a: a["tree"].pop("root")),
        "anchor.tree must have profile, size, leaf_index, path, root",
    ),
    ("missing format", (lambda a: a.pop("format")), "anchor.format must be 'provmint-anchor/1'"),
    (
        "other format",
        (lambda a: a.update(format="provmint-anchor/2")),
        "anchor.format must be 'provmint-anchor/1'",
    ),
    (
        "negative block",
        (lambda a: a.update(block_number=-1)),
        "anchor.block_number must be a whole number",
    ),
    (
        "block number as text",
        (lambda a: a.update(block_number="1")),
        "anchor.block_number must be a whole number",
    ),
    (
        "block number as bool",
        (lambda a: a.update(block_number=True)),
        "anchor.block_number must be a whole number",
    ),
    (
        "negative block time",
        (lambda a: a.update(block_time=-5)),
        "anchor.block_time must be a whole number",
    ),
    ("chain id 0", (lambda a: a.update(chain_id=0)), "anchor.chain_id is out of range"),
    ("chain id 2**63", (lambda a: a.update(chain_id=2**63)), "anchor.chain_id is out of range"),
    ("tree size 0", (lambda a: a["tree"].update(size=0)), "anchor.tree.size is out of range"),
    ("tree size 4097", (lambda a: a["tree"].update(size=4097)), "anchor.tree.size is out of range"),
    (
        "leaf index = size",
        (lambda a: a["tree"].update(leaf_index=a["tree"]["size"])),
        "anchor.tree.leaf_index is out of range",
    ),
    (
        "negative leaf index",
        (lambda a: a["tree"].update(leaf_index=-1)),
        "anchor.tree.leaf_index is out of range",
    ),
    (
        "other tree profile",
        (lambda a: a["tree"].update(profile="sha1")),
        "anchor.tree.profile is not supported",
    ),
    (
        "unknown method",
        (lambda a: a.update(method="blob")),
        "anchor.method must be one of calldata, registry",
    ),
    (
        "registry without contract",
        (lambda a: a.update(method="registry")),
        "anchor.contract must be the registry address",
    ),
    (
        "calldata with contract",
        (lambda a: a.update(contract="0x" + "11" * 20)),
        "anchor.contract must be null for calldata anchors",
    ),
    ("short sender", (lambda a: a.update(sender="0x1234")), "anchor.sender must be an address"),
    ("sender as number", (lambda a: a.update(sender=1)), "anchor.sender has the wrong type"),
    ("anchor is a list", (lambda a: None), "anchor must be an object or null"),
]


@pytest.mark.parametrize(("mutate", "message"), [pytest.param(m, s, id=i) for i, m, s in MALFORMED])
def test_malformed_anchor_section_is_a_clean_error(
    cli, world, tmp_path: Path, mutate, message: str
) -> None:
    doc = copy.deepcopy(world.docs["calldata"])
    mutate(doc["anchor"])
    if message.startswith("anchor must be an object"):
        doc["anchor"] = [doc["anchor"]]
    r = cli("verify", write_doc(tmp_path, doc), "--rpc-url", world.url)
    no_crash(r)
    assert r.exit_code == EXIT_INVALID, (r.stdout, r.stderr)
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"error: proof field {message}"), lines[0]


def test_hostile_integers_in_anchor_are_clean_errors(cli, world, tmp_path: Path) -> None:
    text = json.dumps(world.docs["calldata"])
    number = world.docs["calldata"]["anchor"]["block_number"]
    for replacement, words in (
        (f'"block_number": {"9" * 40}', "integer of 40 digits"),
        ('"block_number": 1.0', "non-integer number"),
    ):
        hostile = text.replace(f'"block_number": {number}', replacement)
        assert hostile != text
        path = tmp_path / "h.json"
        path.write_text(hostile)
        r = cli("verify", path, "--rpc-url", world.url)
        no_crash(r)
        assert r.exit_code == EXIT_INVALID and words in r.stderr


# -- one hex digit flipped anywhere in the anchor never verifies


def _hex_fields(anchor: dict[str, Any]) -> list[tuple[str, ...]]:
    fields: list[tuple[str, ...]] = [
        ("digest",),
        ("tx_hash",),
        ("block_hash",),
        ("sender",),
        ("tree", "root"),
    ]
    fields += [("tree", "path", str(i)) for i in range(len(anchor["tree"]["path"]))]
    if anchor["contract"]:
        fields.append(("contract",))
    return fields


def _get_parent(anchor: dict[str, Any], field: tuple[str, ...]) -> tuple[Any, Any]:
    parent: Any = anchor
    for part in field[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    last: Any = int(field[-1]) if isinstance(parent, list) else field[-1]
    return parent, last


@pytest.mark.parametrize("which", ["calldata", "registry"])
@settings(
    max_examples=30,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_one_flipped_hex_digit_never_verifies(cli, world, tmp_path: Path, which: str, data) -> None:
    """For registry anchors this finds the fallback bug below (a changed tx_hash)."""
    doc = copy.deepcopy(world.docs[which])
    anchor = doc["anchor"]
    field = data.draw(st.sampled_from(_hex_fields(anchor)), label="field")
    parent, key = _get_parent(anchor, field)
    value: str = parent[key]
    start = 2 if value.startswith("0x") else 0
    at = data.draw(st.integers(start, len(value) - 1), label="position")
    new = data.draw(
        st.sampled_from([c for c in "0123456789abcdef" if c != value[at].lower()]), label="digit"
    )
    parent[key] = value[:at] + new + value[at + 1 :]
    r, report = verify_report(cli, write_doc(tmp_path, doc), "--rpc-url", world.url)
    assert r.exit_code == EXIT_INVALID, (field, report["reason"])


# --------------------------------------------------------------------------- 3. registry


def test_registry_proof_receipt(cli, world, tmp_path: Path) -> None:
    anchor = world.docs["registry"]["anchor"]
    assert anchor["method"] == "registry" and anchor["contract"] == world.registry
    r = cli(
        "verify",
        write_doc(tmp_path, world.docs["registry"]),
        "--rpc-url",
        world.url,
        "--issuer",
        DEV0,
    )
    no_crash(r)
    assert r.exit_code == EXIT_OK, r.stdout
    assert re.search(
        rf"^anchor\s+chain 31337 tx {anchor['tx_hash']} block "
        rf"{anchor['block_number']} \(registry\)$",
        r.stdout,
        re.M,
    )
    assert (
        r.stdout.rstrip()
        .splitlines()[-1]
        .startswith(
            f"VALID: anchored in block {anchor['block_number']} of chain 31337 at "
            f"{utc(anchor['block_time'])}, "
        )
    )


def test_registry_flow_through_the_cli(cli, keyed, chain_env: Anvil, tmp_path: Path) -> None:
    """deploy-registry, anchor --method registry --registry ADDR, verify; then the
    same proof naming another contract is invalid."""
    from provmint.anchor import registry_artifact

    r = cli("anchor", "deploy-registry", "--json")
    no_crash(r)
    assert r.exit_code == 0, r.output
    deployment = json.loads(r.stdout)
    address = deployment["address"]
    assert deployment["chain_id"] == 31337
    code = chain_env.rpc("eth_getCode", address, "latest")
    assert code == registry_artifact()["deployedBytecode"]
    assert cli("batch", "create", EXAMPLE_CSV).exit_code == 0
    r = cli("anchor", "--method", "registry", "--registry", address, "--json")
    assert r.exit_code == 0, r.output
    run = json.loads(r.stdout)["anchor"]
    assert (run["state"], run["method"], run["contract"]) == ("confirmed", "registry", address)
    path = tmp_path / "p.json"
    assert cli("proof", "export", "--gtin", GTIN, "--serial", SERIAL, "-o", path).exit_code == 0
    r, report = verify_report(cli, path, "--issuer", DEV0)
    assert r.exit_code == EXIT_OK, report["reason"]
    assert report["anchor"]["contract"] == address
    assert report["chain"]["block_number"] == run["block_number"]
    doc = json.loads(path.read_text())
    doc["anchor"]["contract"] = "0x" + "ab" * 20
    r, report = verify_report(cli, write_doc(tmp_path, doc, "tampered.json"))
    assert r.exit_code == EXIT_INVALID
    assert report["reason"] == (
        "on chain: 0xabababababababababababababababababababab is not a provmint AnchorRegistry"
    )


REGISTRY_TAMPERS: list[tuple[str, Mutation, str]] = [
    (
        "contract: another account",
        lambda a, w: a.update(contract=DEV1),
        "is not a provmint AnchorRegistry",
    ),
    (
        "contract: another contract",
        lambda a, w: a.update(contract=w.txs["fake registry"]["contract"]),
        "is not a provmint AnchorRegistry",
    ),
    (
        "contract: lower case of another",
        lambda a, w: a.update(contract="0x" + "ab" * 20),
        "is not a provmint AnchorRegistry",
    ),
    (
        "method: registry -> calldata",
        lambda a, w: a.update(method="calldata", contract=None),
        "on chain: the transaction does not carry this anchor's digest",
    ),
    (
        "tx_hash: the calldata anchor",
        lambda a, w: a.update(tx_hash=w.docs["calldata"]["anchor"]["tx_hash"]),
        "on chain: the transaction is not this registry anchor",
    ),
    (
        "tx_hash: the registry deployment",
        _tx("registry deployment"),
        "on chain: the transaction is not this registry anchor",
    ),
    (
        "sender: another dev account",
        lambda a, w: a.update(sender=DEV1),
        "on chain: the transaction was sent by another address",
    ),
    (
        "block_time + 1",
        lambda a, w: a.update(block_time=a["block_time"] + 1),
        "on chain: the proof's block time differs from the chain",
    ),
    (
        "digest",
        lambda a, w: a.update(digest=flip_hex(a["digest"])),
        "anchor tree: the anchor digest does not bind this root and size",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "reason"), [pytest.param(m, r, id=i) for i, m, r in REGISTRY_TAMPERS]
)
def test_tampered_registry_anchor_is_rejected(
    cli, world, tmp_path: Path, mutate: Mutation, reason: str
) -> None:
    doc = copy.deepcopy(world.docs["registry"])
    mutate(doc["anchor"], world)
    r, report = verify_report(cli, write_doc(tmp_path, doc), "--rpc-url", world.url)
    assert r.exit_code == EXIT_INVALID, report["reason"]
    assert reason in report["reason"]


def test_registry_anchor_with_an_unknown_transaction_is_not_valid(cli, world, tmp_path) -> None:
    """A registry anchor whose transaction the node does not know is not valid: contract
    state alone would leave tx_hash, block, time and confirmations unchecked."""
    doc = copy.deepcopy(world.docs["registry"])
    doc["anchor"].update(
        tx_hash=random_hash(), block_hash=random_hash(), block_number=123456, block_time=42
    )
    r, report = verify_report(
        cli, write_doc(tmp_path, doc), "--rpc-url", world.url, "--confirmations", 10000
    )
    assert r.exit_code != EXIT_OK, report["reason"]
    assert r.exit_code == EXIT_INVALID, report["reason"]


def test_fake_registry_contract_cannot_forge_an_anchor(cli, world, tmp_path: Path) -> None:
    """The registry address comes from the proof: a contract whose ``anchoredAt``
    returns 1 for everything, claimed as the registry of a batch the issuer never
    anchored, must not verify (only provmint's registry code counts)."""
    doc = copy.deepcopy(world.docs["pending"])
    commitment = bytes.fromhex(doc["batch"]["commitment"])
    root = anchor_leaf(commitment)
    doc["anchor"] = {
        "format": "provmint-anchor/1",
        "tree": {
            "profile": "rfc9162-sha256",
            "size": 1,
            "leaf_index": 0,
            "path": [],
            "root": root.hex(),
        },
        "digest": anchor_digest(1, root).hex(),
        "chain_id": 31337,
        "method": "registry",
        "contract": world.txs["fake registry"]["contract"],
        "sender": DEV0,  # the real issuer's address, claimed
        "tx_hash": random_hash(),
        "block_number": 1,
        "block_hash": random_hash(),
        "block_time": 1,
    }
    r, report = verify_report(
        cli, write_doc(tmp_path, doc), "--rpc-url", world.url, "--issuer", DEV0
    )
    assert r.exit_code == EXIT_INVALID, report["reason"]


# --------------------------------------------------------------------------- 6. secrecy


def _key_forms(hex_key: str) -> list[bytes]:
    bare = hex_key.removeprefix("0x")
    return [
        bare.encode(),
        bare.upper().encode(),
        ("0x" + bare).encode(),
        bytes.fromhex(bare),
        bare[:32].encode(),
        bare[32:].encode(),
    ]  # no half of it either


def test_chain_key_never_leaves_the_process(
    cli, keyed, chain_env: Anvil, tmp_path: Path, monkeypatch
) -> None:
    import duckdb
    from eth_account import Account
    from eth_utils import keccak

    outputs: list[tuple[str, Any]] = []

    def run(*args: object, code: int | None = None) -> Any:
        r = cli(*args)
        no_crash(r)
        if code is not None:
            assert r.exit_code == code, (args, r.stdout, r.stderr)
        outputs.append((" ".join(map(str, args)), r))
        return r

    run("batch", "create", EXAMPLE_CSV, code=0)
    # error paths first, while the batch is pending
    run("anchor", "--max-spend-eth", "0", code=10)
    run("anchor", "--max-fee-gwei", "0.000000001", code=10)
    run("anchor", "--rpc-url", f"http://127.0.0.1:{closed_port()}", code=10)
    run("anchor", "--method", "registry", code=2)
    run("anchor", "--method", "registry", "--registry", "0x" + "de" * 20, code=10)
    run("anchor", "--dry-run", "--json", code=0)
    run("anchor", "--dry-run", code=0)
    monkeypatch.setenv("PROVMINT_CHAIN_KEY", DEV0_KEY[:-1])
    run("anchor", code=10)
    monkeypatch.setenv("PROVMINT_CHAIN_KEY", DEV0_KEY[2:] + "zz")
    run("anchor", code=10)
    poor_key = "0x" + secrets.token_hex(32)  # valid, unfunded
    monkeypatch.setenv("PROVMINT_CHAIN_KEY", poor_key)
    r = run("anchor", code=10)
    assert "needs" in r.stderr
    monkeypatch.setenv("PROVMINT_CHAIN_KEY", DEV0_KEY)
    # the real thing
    run("anchor", code=0)
    run("anchor", "--json", code=0)  # nothing left to anchor
    run("anchor", "status", code=0)
    run("anchor", "status", "--json", code=0)
    run("anchor", "status", "--wait", code=0)
    run("proof", "export", "--gtin", GTIN, "--serial", SERIAL, "-o", tmp_path / "p.json", code=0)
    run("verify", tmp_path / "p.json", code=0)
    run("verify", tmp_path / "p.json", "--json", code=0)
    run("verify", tmp_path / "p.json", "--issuer", DEV1, code=3)
    run("verify", tmp_path / "p.json", "--rpc-url", f"http://127.0.0.1:{closed_port()}", code=5)

    forms = _key_forms(DEV0_KEY) + _key_forms(poor_key)
    for what, r in outputs:
        text = (r.stdout + r.stderr).encode()
        for form in forms:
            assert form not in text, f"the chain key shows in the output of {what}"

    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "catalog.duckdb" for p in files)
    for path in files:
        content = path.read_bytes()
        for form in forms:
            assert form not in content, f"the chain key is in {path}"

    con = duckdb.connect(str(tmp_path / "store" / "catalog.duckdb"), read_only=True)
    try:
        rows = con.execute("SELECT tx_hash, raw_tx, nonce FROM anchor_txs").fetchall()
    finally:
        con.close()
    assert rows
    for tx_hash, raw_hex, nonce in rows:
        raw = bytes.fromhex(raw_hex)
        assert raw[0] == 2  # an EIP-1559 signed transaction envelope
        assert Account.recover_transaction(raw) == DEV0
        assert "0x" + keccak(raw).hex() == tx_hash
        on_chain = chain_env.rpc("eth_getTransactionByHash", tx_hash)
        assert isinstance(on_chain, dict)
        assert on_chain["from"].lower() == DEV0.lower() and int(on_chain["nonce"], 16) == nonce


# --------------------------------------------------------------------------- 7. start-up


def _imported_modules(stderr: str) -> set[str]:
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    return names


def _importtime(*args: object) -> tuple[int, set[str], str]:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "provmint", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    return proc.returncode, _imported_modules(proc.stderr), proc.stdout


def test_verify_imports_no_web3(world, tmp_path: Path) -> None:
    assert "PROVMINT_RPC_URL" not in os.environ
    path = write_doc(tmp_path, world.docs["calldata"])
    code, modules, out = _importtime("verify", path)
    assert code == EXIT_UNCHECKED, out
    assert "provmint.verify" in modules  # the measurement works
    heavy = {m for m in modules if m.split(".")[0] in ("web3", "eth_account")}
    assert heavy == set()
    # nor with a node: the anchor is read over plain JSON-RPC
    code, modules, out = _importtime("verify", path, "--rpc-url", world.url)
    assert code == EXIT_OK, out
    assert "provmint.chainread" in modules
    assert {m for m in modules if m.split(".")[0] in ("web3", "eth_account", "requests")} == set()


def test_many_proofs_look_each_anchor_up_once(cli, world, tmp_path: Path) -> None:
    """Every proof of the world's batches, as JSON lines and as a file: the anchored
    ones valid, the rest pending (the run's exit), and each anchor's transaction asked
    for once, however many proofs name it."""
    from provmint.products import export_batch_proofs, list_batches

    lines = tmp_path / "all.jsonl"
    with lines.open("wb") as out:
        for batch in _batches(world):
            part = tmp_path / f"{batch}.jsonl"
            export_batch_proofs(world.settings, batch, part)
            out.write(part.read_bytes())
    count = len(lines.read_bytes().splitlines())
    assert count == sum(b.products for b in list_batches(world.settings)) > 17
    single = write_doc(tmp_path, world.docs["registry"], "registry.json")
    proxy = _PoaProxy(world.url, poa=False)
    try:
        r = cli("verify", lines, single, "--rpc-url", proxy.url, "--json")
    finally:
        proxy.stop()
    report = json.loads(r.stdout)
    anchored = sum(p["anchor"] is not None for p in report["proofs"])
    assert 17 < anchored < count + 1  # the world also holds a batch minted since
    assert report["summary"] == {
        "proofs": count + 1,
        "valid": anchored,
        "pending": count + 1 - anchored,
    }
    assert r.exit_code == EXIT_PENDING == report["exit"]  # the worst of the proofs'
    assert all((p["verdict"] == "valid") == (p["anchor"] is not None) for p in report["proofs"])
    assert [p["source"] for p in report["proofs"]][:2] == [f"{lines}:1", f"{lines}:2"]
    assert report["proofs"][-1]["source"] == str(single)
    anchors = {p["anchor"]["tx_hash"] for p in report["proofs"] if p["anchor"]}
    assert proxy.methods["eth_getTransactionByHash"] == len(anchors)
    assert proxy.methods["eth_chainId"] == 1


def _batches(world: World) -> list[str]:
    from provmint.products import list_batches

    return [b.batch_id for b in list_batches(world.settings)]
