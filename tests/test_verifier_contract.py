"""The Solidity verifier (``contracts/ProvmintVerifier.sol``) on a real anvil, through the
call ``provmint proof calldata`` prints: every valid proof is accepted, every tampered
field refused, and nothing the caller could forge is trusted.

One module-wide chain (``verifier_world``): a registry and a verifier deployed, batches of
1, 2, 3, 5 and 7 products, the first four anchored through the registry in one anchor
(size 4) and the last alone (size 1). The encoding itself is checked against eth_abi's,
and pending and calldata-anchored proofs are refused, without a chain.
"""

from __future__ import annotations

import copy
import hashlib
import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import ROOT, Anvil, dev_key
from helpers import no_crash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provmint.config import Settings
from provmint.errors import EXIT_UNCHECKED, AnchorError, NotOnChainError
from provmint.proofs import parse_proof
from provmint.verifiercall import VERIFY_SELECTOR, VERIFY_SIGNATURE, encode_verify, verifier_call

GTIN = "09520123450014"
DEV0, DEV0_KEY = dev_key(0)
DEV1, _ = dev_key(1)
SIZES = {"A": 1, "B": 2, "C": 3, "D": 5, "E": 7}  # batch prefix -> tree size
ANCHORED_TOGETHER = "ABCD"  # one registry anchor of 4 batches; E alone (anchor size 1)


def _csv(base: Path, prefix: str, n: int) -> Path:
    path = base / f"{prefix}.csv"
    rows = "".join(f"{GTIN},{prefix}{i:04d},L{prefix},Crème {i}\n" for i in range(n))
    path.write_text("gtin,serial,lot,product_name\n" + rows, encoding="utf-8")
    return path


def _build(base: Path, node: Anvil) -> SimpleNamespace:
    from provmint.anchor import anchor_batches, deploy_registry, deploy_verifier
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
    plain = resolve_chain(rpc_url=node.url, config_file=config, env=env)
    key = load_chain_key(plain)
    registry = deploy_registry(plain, key)
    by_registry = resolve_chain(
        rpc_url=node.url, method="registry", registry=registry.address, config_file=config, env=env
    )
    verifier = deploy_verifier(by_registry, key, registry.address)

    def mint(prefix: str, n: int) -> str:
        return mint_batch(_csv(base, prefix, n), settings=cfg).batch_id

    ids = {prefix: mint(prefix, n) for prefix, n in SIZES.items() if prefix in ANCHORED_TOGETHER}
    run = anchor_batches(cfg, by_registry, key)
    assert run.anchor is not None and run.anchor.tree_size == len(ANCHORED_TOGETHER)
    ids["E"] = mint("E", SIZES["E"])
    assert anchor_batches(cfg, by_registry, key).anchor is not None

    proofs = {
        (prefix, i): export_proof(cfg, gtin=GTIN, serial=f"{prefix}{i:04d}")
        for prefix, n in SIZES.items()
        for i in range(n)
    }
    return SimpleNamespace(
        node=node,
        registry=registry.address,
        verifier=verifier.address,
        proofs=proofs,
    )


@pytest.fixture(scope="module")
def verifier_world(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("verifier")
    node = Anvil()
    try:
        yield _build(base, node)
    finally:
        node.stop()


def _eth_call(world: SimpleNamespace, data: str) -> bool:
    """The verifier's answer over eth_call: exactly true or false, never a revert."""
    result = world.node.rpc("eth_call", {"to": world.verifier, "data": data}, "latest")
    assert result in ("0x" + "0" * 63 + "1", "0x" + "0" * 64), result
    return result.endswith("1")


def _calldata(cli: Callable[..., Any], tmp_path: Path, doc: dict[str, Any], *args: str) -> str:
    """What ``provmint proof calldata`` prints for ``doc``."""
    path = tmp_path / "proof.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    r = cli("proof", "calldata", path, *args)
    no_crash(r)
    assert r.exit_code == 0, r.output
    data = str(r.stdout).strip()
    assert data.startswith("0x" + VERIFY_SELECTOR.hex())
    return data


def _verdict(world: SimpleNamespace, doc: dict[str, Any], issuer: str | None = None) -> bool:
    """The verifier's answer for ``doc`` through the library's encoding."""
    call = verifier_call(parse_proof(doc), issuer=issuer)
    return _eth_call(world, call.data_hex)


# --------------------------------------------------------------------------- valid proofs


def test_every_valid_proof_is_true(cli, verifier_world, tmp_path: Path) -> None:
    """Every product of trees of 1, 2, 3, 5 and 7 leaves, in anchors of 4 and 1 batches."""
    seen_anchor_sizes = set()
    for (prefix, i), doc in verifier_world.proofs.items():
        assert doc["tree"]["size"] == SIZES[prefix] and doc["tree"]["leaf_index"] == i
        seen_anchor_sizes.add(doc["anchor"]["tree"]["size"])
        assert _eth_call(verifier_world, _calldata(cli, tmp_path, doc)), (prefix, i)
    assert seen_anchor_sizes == {1, len(ANCHORED_TOGETHER)}


def test_json_gives_to_data_and_signature(cli, verifier_world, tmp_path: Path) -> None:
    doc = verifier_world.proofs[("C", 2)]
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc))
    r = cli("proof", "calldata", path, "--verifier", verifier_world.verifier, "--json")
    assert r.exit_code == 0, r.output
    call = json.loads(r.stdout)
    assert call == {
        "to": verifier_world.verifier,
        "data": _calldata(cli, tmp_path, doc),
        "signature": VERIFY_SIGNATURE,
        "issuer": DEV0,
    }
    assert _eth_call(verifier_world, call["data"])


def test_the_verifier_reads_the_registry_it_was_deployed_with(verifier_world) -> None:
    selector = _keccak(b"registry()")[:4]
    answer = verifier_world.node.rpc(
        "eth_call", {"to": verifier_world.verifier, "data": "0x" + selector.hex()}, "latest"
    )
    assert int(answer, 16) == int(verifier_world.registry, 16)


# --------------------------------------------------------------------------- tampering


def _flip(text: str, at: int = -1) -> str:
    i = at % len(text)
    return text[:i] + ("0" if text[i] != "0" else "1") + text[i + 1 :]


Mutation = Callable[[dict[str, Any]], None]


def _mutations(doc: dict[str, Any]) -> dict[str, Mutation]:
    """Every field of the proof the call carries, each changed so that the proof stays
    well formed."""
    tree, anchor = doc["tree"], doc["anchor"]["tree"]
    out: dict[str, Mutation] = {
        "record.gtin": lambda d: d["product"]["record"].update(gtin="09520123450021"),
        "record.serial": lambda d: d["product"]["record"].update(serial="X0000"),
        "record.lot": lambda d: d["product"]["record"].update(lot="other"),
        "record.lot emptied": lambda d: d["product"]["record"].update(lot=""),
        "record.product_name": lambda d: d["product"]["record"].update(product_name="Creme 0"),
        "record: a field added": lambda d: d["product"]["record"].update(extra=""),
        "record: a field removed": lambda d: d["product"]["record"].pop("lot"),
        "record: a field renamed": lambda d: d["product"]["record"].update(
            lots=d["product"]["record"].pop("lot")
        ),
        "token_commitment": lambda d: d["product"].update(
            token_commitment=_flip(d["product"]["token_commitment"])
        ),
        "tree.size + 1": lambda d: d["tree"].update(size=d["tree"]["size"] + 1),
        "tree.path: one more hash": lambda d: d["tree"]["path"].append("00" * 32),
        "batch.id": lambda d: d["batch"].update(id=d["batch"]["id"] + "x"),
        "batch.manifest_digest": lambda d: d["batch"].update(
            manifest_digest=_flip(d["batch"]["manifest_digest"])
        ),
        "anchor.tree.size + 1": lambda d: d["anchor"]["tree"].update(
            size=d["anchor"]["tree"]["size"] + 1
        ),
        "anchor.tree.path: one more hash": lambda d: d["anchor"]["tree"]["path"].append("00" * 32),
        "anchor.sender (the issuer)": lambda d: d["anchor"].update(sender=DEV1),
    }
    if tree["size"] > 1:
        out["tree.leaf_index"] = lambda d: d["tree"].update(
            leaf_index=(d["tree"]["leaf_index"] + 1) % d["tree"]["size"]
        )
        out["tree.path: last hash dropped"] = lambda d: d["tree"]["path"].pop()
    if tree["leaf_index"] + 1 < tree["size"]:
        out["tree.size - 1"] = lambda d: d["tree"].update(size=d["tree"]["size"] - 1)
    for n in range(len(tree["path"])):
        out[f"tree.path[{n}]"] = lambda d, n=n: d["tree"]["path"].__setitem__(
            n, _flip(d["tree"]["path"][n], n)
        )
    if anchor["size"] > 1:
        out["anchor.tree.leaf_index"] = lambda d: d["anchor"]["tree"].update(
            leaf_index=(d["anchor"]["tree"]["leaf_index"] + 1) % d["anchor"]["tree"]["size"]
        )
        out["anchor.tree.path: last hash dropped"] = lambda d: d["anchor"]["tree"]["path"].pop()
    for n in range(len(anchor["path"])):
        out[f"anchor.tree.path[{n}]"] = lambda d, n=n: d["anchor"]["tree"]["path"].__setitem__(
            n, _flip(d["anchor"]["tree"]["path"][n], n)
        )
    return out


@pytest.mark.parametrize("which", [("A", 0), ("B", 1), ("D", 2), ("D", 4), ("E", 6)], ids=str)
def test_every_tampered_field_is_false(cli, verifier_world, tmp_path: Path, which) -> None:
    doc = verifier_world.proofs[which]
    assert _eth_call(verifier_world, _calldata(cli, tmp_path, doc))
    mutations = _mutations(doc)
    assert len(mutations) >= 16
    for n, (name, mutate) in enumerate(mutations.items()):
        tampered = copy.deepcopy(doc)
        mutate(tampered)
        assert tampered != doc, name
        # the command prints the library's encoding (checked once: a run costs 0.2 s)
        data = verifier_call(parse_proof(tampered)).data_hex
        if n == 0:
            assert _calldata(cli, tmp_path, tampered) == data
        assert not _eth_call(verifier_world, data), name


def test_another_issuer_is_false(cli, verifier_world, tmp_path: Path) -> None:
    doc = verifier_world.proofs[("B", 0)]
    assert _eth_call(verifier_world, _calldata(cli, tmp_path, doc, "--issuer", DEV0.lower()))
    for other in (DEV1, "0x" + "00" * 20, verifier_world.registry):
        assert not _eth_call(verifier_world, _calldata(cli, tmp_path, doc, "--issuer", other))


def test_claims_the_contract_recomputes_are_not_inputs(verifier_world) -> None:
    """The proof's roots, commitment, digest, manifest and chain facts are claims: the call
    does not carry them, so forging them changes nothing (and proves nothing)."""
    doc = verifier_world.proofs[("C", 1)]
    data = verifier_call(parse_proof(doc)).data
    forged = copy.deepcopy(doc)
    forged["tree"]["root"] = _flip(forged["tree"]["root"])
    forged["batch"]["commitment"] = _flip(forged["batch"]["commitment"])
    forged["batch"]["manifest"]["label"] = "forged"
    forged["anchor"]["tree"]["root"] = _flip(forged["anchor"]["tree"]["root"])
    forged["anchor"]["digest"] = _flip(forged["anchor"]["digest"])
    forged["anchor"]["block_number"] += 1
    assert verifier_call(parse_proof(forged)).data == data


def test_a_record_past_the_format_limits_is_false_not_a_revert(verifier_world) -> None:
    """A name over 64 bytes, a value over 4,096 or more than 64 fields: false, never a
    revert (the contract checks the limits before hashing, as past them a length prefix
    would wrap; the proof parser refuses such records, so they are encoded by hand)."""
    doc = verifier_world.proofs[("A", 0)]
    proof = parse_proof(doc)
    assert _eth_call(verifier_world, "0x" + encode_verify(proof, DEV0).hex())
    for record in (
        {**proof.record, "n" * 65: ""},
        {**proof.record, "note": "x" * 4097},
        {**proof.record, **{f"f{i:02d}": "" for i in range(63)}},
    ):
        long = copy.copy(proof)
        object.__setattr__(long, "record", record)
        assert not _eth_call(verifier_world, "0x" + encode_verify(long, DEV0).hex())


def _synthetic_anchored(world: SimpleNamespace, size: int, index: int) -> dict[str, Any]:
    """A valid proof of leaf ``index`` of a tree of ``size`` without minting it: a real
    leaf, random sibling hashes in the path's shape, the root they make (RFC 9162), and the
    batch anchored alone through the registry."""
    from provmint import merkle
    from provmint.anchoring import anchor_section, build_anchor_tree
    from provmint.canonical import batch_commitment, encode_record, token_commitment
    from provmint.chain import registry_anchor_data

    doc = _synthetic_doc()
    record, tc = doc["product"]["record"], token_commitment(secrets.token_bytes(16))
    leaf = merkle.leaf_hash(encode_record(record) + tc)
    path = merkle.inclusion_path(lambda level, j: secrets.token_bytes(32), index, size)
    root = merkle.root_from_path(leaf, index, size, path)
    digest = bytes.fromhex(doc["batch"]["manifest_digest"])
    commitment = batch_commitment(doc["batch"]["id"], size, root, digest)
    tree = build_anchor_tree([commitment])
    tx = {"from": DEV0, "to": world.registry, "data": registry_anchor_data(tree.digest)}
    tx_hash = world.node.rpc("eth_sendTransaction", tx)  # anvil's dev account is unlocked
    for _ in range(200):
        if world.node.rpc("eth_getTransactionReceipt", tx_hash) is not None:
            break
        time.sleep(0.05)
    doc["product"]["token_commitment"] = tc.hex()
    doc["tree"].update(size=size, leaf_index=index, path=[p.hex() for p in path], root=root.hex())
    doc["batch"]["commitment"] = commitment.hex()
    claims = {k: doc["anchor"][k] for k in ("tx_hash", "block_number", "block_hash", "block_time")}
    chain = {"chain_id": 31337, "method": "registry", "contract": world.registry, "sender": DEV0}
    doc["anchor"] = anchor_section(tree, commitment, {**chain, **claims})
    return doc


@pytest.mark.parametrize(
    ("size", "index"),
    [
        (1000, 999),  # the last leaf: promoted at three levels
        (2**20, 0),
        (2**20 + 1, 2**20),  # the last leaf of 2^20 + 1: a path of one hash
        (100_000_000, 50_000_001),
        (2**63 - 1, 2**62 + 12345),  # the largest tree a proof may claim
    ],
)
def test_large_synthetic_trees(verifier_world, size: int, index: int) -> None:
    doc = _synthetic_anchored(verifier_world, size, index)
    assert _verdict(verifier_world, doc)
    for other in ({"size": size + 1}, {"size": size - 1}, {"leaf_index": index ^ 1}):
        tampered = copy.deepcopy(doc)
        tampered["tree"].update(other)
        if tampered["tree"]["leaf_index"] < tampered["tree"]["size"] <= 2**63 - 1:
            assert not _verdict(verifier_world, tampered), other


# A hash field of the call, as (section, key, index or None).
_HASH_FIELDS = [
    ("product", "token_commitment", None),
    ("batch", "manifest_digest", None),
    ("tree", "path", 0),
    ("anchor.tree", "path", 0),
]


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_generated_mutations_are_false(verifier_world, data: st.DataObject) -> None:
    """Any change to any part of the call's proof is refused: a record value or name, a
    hash's byte, an index or a size."""
    key = data.draw(st.sampled_from(sorted(verifier_world.proofs)), label="proof")
    doc = copy.deepcopy(verifier_world.proofs[key])
    original = copy.deepcopy(doc)
    kind = data.draw(st.sampled_from(["value", "name", "hash", "number"]), label="kind")
    record = doc["product"]["record"]
    if kind == "value":
        name = data.draw(st.sampled_from(sorted(record)), label="field")
        record[name] = data.draw(st.text(max_size=12), label="value")
        if name == "gtin":
            record[name] = data.draw(st.from_regex(r"[0-9]{14}", fullmatch=True))
    elif kind == "name":
        name = data.draw(st.sampled_from(sorted(set(record) - {"gtin", "serial"})))
        new = data.draw(st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True), label="name")
        if new not in record or new == name:
            record[new] = record.pop(name)
    elif kind == "hash":
        section, field, index = data.draw(st.sampled_from(_HASH_FIELDS), label="hash field")
        holder = doc["anchor"]["tree"] if section == "anchor.tree" else doc[section]
        if index is not None and not holder[field]:
            return
        value = holder[field] if index is None else holder[field][index]
        byte = data.draw(st.integers(0, 31), label="byte")
        new_byte = data.draw(st.integers(0, 255), label="new byte")
        changed = value[: 2 * byte] + f"{new_byte:02x}" + value[2 * byte + 2 :]
        if index is None:
            holder[field] = changed
        else:
            holder[field][index] = changed
    else:
        holder = data.draw(st.sampled_from([doc["tree"], doc["anchor"]["tree"]]), label="tree")
        holder["size"] = data.draw(st.integers(1, 4096), label="size")
        holder["leaf_index"] = data.draw(st.integers(0, holder["size"] - 1), label="index")
    expected = doc == original
    assert _verdict(verifier_world, doc) is expected


# --------------------------------------------------------------------------- refusals


def test_pending_and_calldata_proofs_cannot_be_checked_on_chain(cli, tmp_path: Path) -> None:
    pending = _synthetic_doc()
    pending["anchor"] = None
    by_calldata = _synthetic_doc()
    by_calldata["anchor"].update(method="calldata", contract=None)
    for doc, words in ((pending, "not anchored yet"), (by_calldata, "anchored by calldata")):
        path = tmp_path / "p.json"
        path.write_text(json.dumps(doc))
        r = cli("proof", "calldata", path)
        no_crash(r)
        assert r.exit_code == EXIT_UNCHECKED == NotOnChainError.exit_code
        assert words in r.stderr and r.stdout == ""
        with pytest.raises(NotOnChainError, match=words):
            verifier_call(parse_proof(doc))


def test_deploying_over_something_else_than_the_registry_is_refused(verifier_world) -> None:
    from provmint.anchor import deploy_verifier
    from provmint.chain import load_chain_key
    from provmint.config import resolve_chain

    chain = resolve_chain(rpc_url=verifier_world.node.url, env={"PROVMINT_CHAIN_KEY": DEV0_KEY})
    key = load_chain_key(chain)
    for address in (verifier_world.verifier, DEV1):
        with pytest.raises(AnchorError, match="is not provmint's AnchorRegistry"):
            deploy_verifier(chain, key, address)


def test_deploy_verifier_through_the_cli(cli, verifier_world, monkeypatch) -> None:
    monkeypatch.setenv("PROVMINT_CHAIN_KEY", DEV0_KEY)
    monkeypatch.setenv("PROVMINT_RPC_URL", verifier_world.node.url)
    monkeypatch.delenv("PROVMINT_REGISTRY", raising=False)
    r = cli("anchor", "deploy-verifier")
    no_crash(r)
    assert r.exit_code == 2 and "--registry" in r.stderr
    r = cli("anchor", "deploy-verifier", "--registry", verifier_world.registry, "--json")
    assert r.exit_code == 0, r.output
    deployed = json.loads(r.stdout)
    assert deployed["registry"] == verifier_world.registry
    assert deployed["address"] != verifier_world.verifier
    mine = SimpleNamespace(node=verifier_world.node, verifier=deployed["address"])
    doc = verifier_world.proofs[("D", 3)]
    assert _eth_call(mine, verifier_call(parse_proof(doc)).data_hex)


# --------------------------------------------------------------------------- no chain


def test_bad_files_and_addresses_exit_cleanly(cli, tmp_path: Path) -> None:
    assert cli("proof", "calldata", tmp_path / "none.json").exit_code == 7
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "provmint-proof/1"')
    r = cli("proof", "calldata", bad)
    no_crash(r)
    assert r.exit_code == 3
    doc = _synthetic_doc()
    good = tmp_path / "good.json"
    good.write_text(json.dumps(doc))
    for option in ("--issuer", "--verifier"):
        r = cli("proof", "calldata", good, option, "0x1234")
        no_crash(r)
        assert r.exit_code == 2 and option in r.stderr


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(junk=st.binary(max_size=200), cut=st.integers(0, 3000), truncate=st.booleans())
def test_hostile_files_exit_cleanly(
    cli, tmp_path: Path, junk: bytes, cut: int, truncate: bool
) -> None:
    """Random bytes, or a proof cut short anywhere: a one-line error, exit 3, no output."""
    path = tmp_path / "junk.json"
    text = json.dumps(_synthetic_doc()).encode()
    path.write_bytes(text[: min(cut, len(text) - 1)] if truncate else junk)
    r = cli("proof", "calldata", path)
    no_crash(r)
    assert r.exit_code == 3 and r.stdout == "" and r.stderr.startswith("error: ")


def _keccak(data: bytes) -> bytes:
    from eth_hash.auto import keccak

    return bytes(keccak(data))


def _abi_type(item: dict[str, Any]) -> str:
    """The canonical type of an ABI parameter (tuples spelled out)."""
    kind = str(item["type"])
    if kind.startswith("tuple"):
        inner = ",".join(_abi_type(c) for c in item["components"])
        return f"({inner}){kind[len('tuple') :]}"
    return kind


def test_the_signature_and_selector_are_the_compiled_contracts() -> None:
    from provmint.anchor import verifier_artifact

    artifact = verifier_artifact()
    (verify,) = [i for i in artifact["abi"] if i.get("name") == "verify"]
    signature = f"verify({','.join(_abi_type(i) for i in verify['inputs'])})"
    assert signature == VERIFY_SIGNATURE
    assert _keccak(signature.encode())[:4] == VERIFY_SELECTOR
    assert verify["outputs"] == [{"internalType": "bool", "name": "", "type": "bool"}]
    assert verify["stateMutability"] == "view"


def test_the_committed_artifacts_are_of_the_sources() -> None:
    """A quick local echo of CI's recompile-and-diff (scripts/compile_contracts.js)."""
    from provmint.anchor import registry_artifact, verifier_artifact

    for artifact in (registry_artifact(), verifier_artifact()):
        name = artifact["contractName"]
        source = (ROOT / "contracts" / f"{name}.sol").read_bytes()
        assert artifact["sourceSha256"] == hashlib.sha256(source).hexdigest(), name


def _synthetic_doc(
    record: dict[str, str] | None = None, path: int = 3, anchor_path: int = 2
) -> dict[str, Any]:
    """A well-formed registry-anchored proof (not a valid one: no chain needed)."""
    return {
        "format": "provmint-proof/1",
        "product": {
            "record_version": "provmint-record/1",
            "record": record or {"gtin": GTIN, "serial": "S1", "lot": ""},
            "token_commitment": "11" * 32,
        },
        "tree": {
            "profile": "rfc9162-sha256",
            "size": 9,
            "leaf_index": 8,
            "path": [f"{i:02x}" * 32 for i in range(path)],
            "root": "22" * 32,
        },
        "batch": {
            "id": "20260101-0a1b2c3d",
            "manifest": {},
            "manifest_digest": "33" * 32,
            "commitment": "44" * 32,
        },
        "anchor": {
            "format": "provmint-anchor/1",
            "tree": {
                "profile": "rfc9162-sha256",
                "size": 3,
                "leaf_index": 2,
                "path": [f"{i + 100:02x}" * 32 for i in range(anchor_path)],
                "root": "55" * 32,
            },
            "digest": "66" * 32,
            "chain_id": 31337,
            "method": "registry",
            "contract": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
            "sender": DEV0,
            "tx_hash": "0x" + "77" * 32,
            "block_number": 5,
            "block_hash": "0x" + "88" * 32,
            "block_time": 1767268800,
        },
    }


_RECORD_VALUES = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)


@settings(max_examples=60, deadline=None)
@given(
    extra=st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True).filter(
            lambda n: n not in ("gtin", "serial")
        ),
        _RECORD_VALUES,
        max_size=6,
    ),
    serial=_RECORD_VALUES.filter(bool),
    path=st.integers(0, 63),
    anchor_path=st.integers(0, 12),
)
def test_the_encoding_is_eth_abis(
    extra: dict[str, str], serial: str, path: int, anchor_path: int
) -> None:
    from eth_abi import encode

    doc = _synthetic_doc({"gtin": GTIN, "serial": serial, **extra}, path, anchor_path)
    proof = parse_proof(doc)
    section = proof.anchor_section
    assert section is not None
    fields = [(name, proof.record[name]) for name in sorted(proof.record)]
    struct = (
        fields,
        proof.token_commitment,
        proof.leaf_index,
        proof.size,
        list(proof.path),
        proof.batch_id,
        proof.manifest_digest,
        section.leaf_index,
        section.size,
        list(section.path),
    )
    types = VERIFY_SIGNATURE[len("verify(") : -1]
    split = types.rindex(",")
    expected = VERIFY_SELECTOR + encode([types[:split], types[split + 1 :]], [struct, DEV0])
    assert verifier_call(proof).data == expected
