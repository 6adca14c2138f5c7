"""Known answers for the signed and stored formats that had none of their own: the token
(``provmint-token/1``), a product's leaf, and the anchor format (``provmint-anchor/1``).

The answers live in ``tests/vectors/tokens.json`` and ``tests/vectors/anchoring.json``,
frozen when written: a test that disagrees means a format changed, which must be a new
version, never an edit. The core and the C kernel (through the minting engine) are both
held to them. The record bytes, token message, token commitment, leaf data, batch
commitment and key hash have theirs in ``canonical.json`` and ``keyhash.json``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pyarrow as pa
import pytest
from conftest import LOCAL_VECTORS

from provmint import anchoring, canonical, engine, merkle, tokens

PRODUCTS: list[dict[str, Any]] = json.loads((LOCAL_VECTORS / "tokens.json").read_text())["products"]
ANCHORS: list[dict[str, Any]] = json.loads((LOCAL_VECTORS / "anchoring.json").read_text())[
    "anchors"
]


def _product_id(vector: dict[str, Any]) -> str:
    return f"{vector['record']['gtin']}/{vector['record']['serial'][:12]}"


@pytest.mark.parametrize("vector", PRODUCTS, ids=_product_id)
def test_token_and_leaf_in_the_core(vector: dict[str, Any]) -> None:
    secret, record = bytes.fromhex(vector["secret"]), vector["record"]
    token = tokens.make_token(secret, record["gtin"], record["serial"])
    assert token.hex() == vector["token"]
    assert tokens.format_token(token) == vector["token_text"]
    assert tokens.parse_token(vector["token_text"]) == token
    commitment = canonical.token_commitment(token)
    assert commitment.hex() == vector["token_commitment"]
    assert merkle.leaf_hash(canonical.leaf_data(record, commitment)).hex() == vector["leaf"]


@pytest.mark.parametrize("vector", PRODUCTS, ids=_product_id)
def test_token_by_the_standard_library(vector: dict[str, Any]) -> None:
    """The vectors themselves, re-derived from the format's definition alone."""
    secret, record = bytes.fromhex(vector["secret"]), vector["record"]
    message = b"PMT1" + record["gtin"].encode() + record["serial"].encode()
    assert hmac.digest(secret, message, "sha256")[:16].hex() == vector["token"]


@pytest.mark.parametrize("vector", PRODUCTS, ids=_product_id)
def test_token_and_leaf_in_the_minting_engine(vector: dict[str, Any]) -> None:
    """The engine's path: the C kernel for secrets up to 64 bytes, Python beyond."""
    secret, record = bytes.fromhex(vector["secret"]), vector["record"]
    table = pa.table({name: pa.array([value], pa.string()) for name, value in record.items()})
    token, leaf = engine.hash_table(table, secret)
    assert (token.hex(), leaf.hex()) == (vector["token"], vector["leaf"])


@pytest.mark.parametrize("vector", ANCHORS, ids=lambda v: f"{v['size']} batches")
def test_anchor_format(vector: dict[str, Any]) -> None:
    commitments = [bytes.fromhex(c) for c in vector["commitments"]]
    assert [anchoring.anchor_leaf(c).hex() for c in commitments] == vector["leaves"]
    tree = anchoring.build_anchor_tree(commitments)
    assert (tree.size, tree.root.hex(), tree.digest.hex()) == (
        vector["size"],
        vector["root"],
        vector["digest"],
    )
    assert [tree.index_of(c) for c in commitments] == vector["indexes"]
    assert [[h.hex() for h in tree.path(i)] for i in vector["indexes"]] == vector["paths"]
    assert anchoring.calldata_payload(tree.digest).hex() == vector["calldata"]
    assert anchoring.digest_from_calldata(bytes.fromhex(vector["calldata"])) == tree.digest


@pytest.mark.parametrize("vector", ANCHORS, ids=lambda v: f"{v['size']} batches")
def test_anchor_format_by_its_definition(vector: dict[str, Any]) -> None:
    """The anchor vectors re-derived from the format's definition and RFC 9162 alone."""
    ordered = sorted(bytes.fromhex(c) for c in vector["commitments"])
    leaves = [hashlib.sha256(b"\x00PMAL" + c).digest() for c in ordered]

    def root(nodes: list[bytes]) -> bytes:
        if len(nodes) == 1:
            return nodes[0]
        split = 1 << ((len(nodes) - 1).bit_length() - 1)  # largest power of 2 below n
        return hashlib.sha256(b"\x01" + root(nodes[:split]) + root(nodes[split:])).digest()

    tree_root = root(leaves)
    assert tree_root.hex() == vector["root"]
    digest = hashlib.sha256(b"PMAD" + len(leaves).to_bytes(8, "big") + tree_root).digest()
    assert digest.hex() == vector["digest"]
    assert vector["calldata"] == (b"PMNT\x01" + digest).hex()
