#!/usr/bin/env python3
"""Gas of one on-chain proof verification (``ProvmintVerifier.verify``) by tree size.

No products are minted: for each tree size a real record and token commitment make the
leaf, a leaf index is chosen and random sibling hashes stand for the rest of the tree;
the root follows from them per RFC 9162, the batch commitment from the root, and the
batch goes into an anchor of 1 batch and into one of 4,096 (the most an anchor holds),
both anchored through the AnchorRegistry on a local anvil. Each proof's call, as
``provmint proof calldata`` encodes it, is checked to return true with eth_call and
measured with eth_estimateGas (a whole transaction: 21,000 base gas and the calldata
included; a contract calling the verifier pays the execution part only).

    python benchmarks/bench_verifier_gas.py
    python benchmarks/bench_verifier_gas.py --sizes 1000 1000000 100000000 --json
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import time
import urllib.request
from typing import Any

from provmint import merkle
from provmint.anchoring import anchor_section, build_anchor_tree
from provmint.canonical import batch_commitment, encode_record, token_commitment
from provmint.chain import registry_anchor_data
from provmint.proofs import parse_proof
from provmint.verifiercall import verifier_call

RECORD = {
    "gtin": "09520123450014",
    "serial": "546CAWQDCR56",
    "lot": "L2026-01",
    "expiry": "2027-01-31",
    "product_name": "Paracetamol 500 mg",
}
ANCHOR_SIZES = (1, 4096)


def rpc(url: str, method: str, *params: Any) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
    request = urllib.request.Request(url, body.encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.loads(response.read())
    if "error" in answer:
        raise SystemExit(f"{method}: {answer['error']}")
    return answer["result"]


def synthetic_batch(size: int, index: int) -> dict[str, Any]:
    """The product and tree parts of a proof for leaf ``index`` of a tree of ``size``."""
    commitment = token_commitment(secrets.token_bytes(16))
    leaf = merkle.leaf_hash(encode_record(RECORD) + commitment)
    # random hashes for the siblings, in the path's shape for this leaf and size
    path = merkle.inclusion_path(lambda level, j: secrets.token_bytes(32), index, size)
    root = merkle.root_from_path(leaf, index, size, path)
    batch_id, manifest_digest = "20260101-0a1b2c3d", secrets.token_bytes(32)
    return {
        "format": "provmint-proof/1",
        "product": {
            "record_version": "provmint-record/1",
            "record": RECORD,
            "token_commitment": commitment.hex(),
        },
        "tree": {
            "profile": "rfc9162-sha256",
            "size": size,
            "leaf_index": index,
            "path": [p.hex() for p in path],
            "root": root.hex(),
        },
        "batch": {
            "id": batch_id,
            "manifest": {},
            "manifest_digest": manifest_digest.hex(),
            "commitment": batch_commitment(batch_id, size, root, manifest_digest).hex(),
        },
        "anchor": None,
    }


def anchored(url: str, doc: dict[str, Any], anchor_size: int, registry: str, sender: str) -> None:
    """Put the batch in an anchor of ``anchor_size`` batches and anchor it in the registry."""
    commitment = bytes.fromhex(doc["batch"]["commitment"])
    others = [secrets.token_bytes(32) for _ in range(anchor_size - 1)]
    tree = build_anchor_tree([commitment, *others])
    tx = {"from": sender, "to": registry, "data": registry_anchor_data(tree.digest)}
    tx_hash = rpc(url, "eth_sendTransaction", tx)  # anvil's dev account is unlocked
    while (receipt := rpc(url, "eth_getTransactionReceipt", tx_hash)) is None:
        time.sleep(0.05)
    assert int(receipt["status"], 16) == 1
    record = {
        "chain_id": 31337,
        "method": "registry",
        "contract": registry,
        "sender": sender,
        "tx_hash": tx_hash,
        "block_number": int(receipt["blockNumber"], 16),
        "block_hash": receipt["blockHash"],
        "block_time": 0,
    }
    doc["anchor"] = anchor_section(tree, commitment, record)


def intrinsic_gas(data: bytes) -> int:
    """A transaction's gas before any code runs: 21,000 and its calldata (EIP-2028)."""
    zeros = data.count(0)
    return 21_000 + 4 * zeros + 16 * (len(data) - zeros)


def measure(sizes: list[int]) -> list[dict[str, Any]]:
    from provmint.anchor import deploy_registry, deploy_verifier
    from provmint.chain import load_chain_key
    from provmint.config import resolve_chain
    from provmint.devchain import start_devchain

    rows = []
    with start_devchain() as node:
        env = {"PROVMINT_CHAIN_KEY": node.private_key}
        chain = resolve_chain(rpc_url=node.url, config_file=os.devnull, env=env)
        key = load_chain_key(chain)
        registry = deploy_registry(chain, key).address
        verifier = deploy_verifier(chain, key, registry).address
        for size in sizes:
            index = size // 2 + 1 if size > 1 else 0
            for anchor_size in ANCHOR_SIZES:
                doc = synthetic_batch(size, index)
                anchored(node.url, doc, anchor_size, registry, node.address)
                call = verifier_call(parse_proof(doc), to=verifier)
                tx = {"from": node.address, "to": verifier, "data": call.data_hex}
                assert int(rpc(node.url, "eth_call", tx, "latest"), 16) == 1, "not verified"
                rows.append(
                    {
                        "tree_size": size,
                        "path": len(doc["tree"]["path"]),
                        "anchor_size": anchor_size,
                        "anchor_path": len(doc["anchor"]["tree"]["path"]),
                        "calldata_bytes": len(call.data),
                        "gas": int(rpc(node.url, "eth_estimateGas", tx), 16),
                        "intrinsic": intrinsic_gas(call.data),
                    }
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 1_000_000, 100_000_000])
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args()
    rows = measure(args.sizes)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(
        "| tree size | path | anchor of | anchor path | calldata "
        "| gas (eth_estimateGas) | of which base + calldata |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['tree_size']:,} | {r['path']} | {r['anchor_size']:,} | {r['anchor_path']} "
            f"| {r['calldata_bytes']:,} B | {r['gas']:,} | {r['intrinsic']:,} |"
        )


if __name__ == "__main__":
    main()
