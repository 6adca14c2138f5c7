"""On-chain verification of a proof's anchor: everything is re-read from the node the
verifier chose; the chain facts in the proof are only claims to compare against."""

from __future__ import annotations

from dataclasses import dataclass

from provmint import anchoring
from provmint.chain import (
    ChainMismatchError,
    Node,
    registry_anchor_data,
    registry_anchored_at,
)

__all__ = ["ChainCheck", "check_anchor_on_chain"]


def _is_registry(node: Node, address: str) -> bool:
    """Does ``address`` run the AnchorRegistry code shipped with provmint?"""
    from web3 import Web3

    from provmint.anchor import registry_artifact

    expected = bytes.fromhex(registry_artifact()["deployedBytecode"][2:])
    try:
        checksummed = Web3.to_checksum_address(address)
    except ValueError:
        return False
    return node.code(checksummed) == expected


@dataclass(frozen=True, slots=True)
class ChainCheck:
    """The on-chain part of a verification."""

    ok: bool
    final: bool
    detail: str
    chain_id: int | None = None
    block_number: int | None = None
    block_time: int | None = None
    confirmations: int | None = None


def check_anchor_on_chain(
    section: anchoring.AnchorSection,
    node: Node,
    *,
    required_confirmations: int = 1,
    issuer: str | None = None,
) -> ChainCheck:
    """Check a proof's anchor against a node: chain id, transaction, payload, success,
    block still canonical, confirmations, sender. Never trusts the proof's chain facts."""
    chain_id = node.chain_id()
    if chain_id != section.chain_id:
        raise ChainMismatchError(
            f"the proof was anchored on chain {section.chain_id}, the node serves chain {chain_id}"
        )
    sender = section.sender.lower()
    if issuer is not None and issuer.lower() != sender:
        return ChainCheck(
            False,
            False,
            f"anchored by {section.sender}, not by the expected issuer {issuer}",
            chain_id,
        )
    tx = node.transaction(section.tx_hash)
    if section.method == "registry" and not _is_registry(node, section.contract or ""):
        # The contract address comes from the proof: only provmint's registry code counts.
        return ChainCheck(
            False, False, f"{section.contract} is not a provmint AnchorRegistry", chain_id
        )
    if tx is None or tx.get("blockNumber") is None:
        # No fallback to contract state: without the transaction, block, time and
        # confirmations could not be checked (a node that pruned history cannot verify).
        return ChainCheck(
            False, False, f"transaction {section.tx_hash} is not on chain {chain_id}", chain_id
        )
    if str(tx.get("from", "")).lower() != sender:
        return ChainCheck(False, False, "the transaction was sent by another address", chain_id)
    data = bytes(tx.get("input") or b"")
    to = str(tx.get("to") or "").lower()
    if section.method == "calldata":
        if to != sender or anchoring.digest_from_calldata(data) != section.digest:
            return ChainCheck(
                False, False, "the transaction does not carry this anchor's digest", chain_id
            )
    else:
        contract = (section.contract or "").lower()
        if to != contract or data != bytes.fromhex(registry_anchor_data(section.digest)[2:]):
            return ChainCheck(False, False, "the transaction is not this registry anchor", chain_id)
    receipt = node.receipt(section.tx_hash)
    if receipt is None or int(receipt.get("status", 0)) != 1:
        return ChainCheck(False, False, "the anchor transaction did not succeed", chain_id)
    number = int(receipt["blockNumber"])
    block_hash = "0x" + bytes(receipt["blockHash"]).hex()
    block = node.block(number)
    canonical = block is not None and "0x" + bytes(block["hash"]).hex() == block_hash
    if not canonical or block_hash != section.block_hash or number != section.block_number:
        return ChainCheck(
            False,
            False,
            f"block {section.block_number} of the proof is not the "
            "canonical block of the transaction (reorg?)",
            chain_id,
        )
    block_time = int(block["timestamp"]) if block else 0
    if block_time != section.block_time:
        return ChainCheck(False, False, "the proof's block time differs from the chain", chain_id)
    if (
        section.method == "registry"
        and section.contract
        and registry_anchored_at(node, section.contract, section.sender, section.digest)
        != block_time
    ):
        return ChainCheck(False, False, "the registry does not hold this digest", chain_id)
    depth = node.block_number() - number + 1
    final = depth >= required_confirmations
    return ChainCheck(
        True,
        final,
        f"anchored in block {number} of chain {chain_id}",
        chain_id,
        number,
        block_time,
        depth,
    )
