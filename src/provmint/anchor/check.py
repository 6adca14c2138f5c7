"""On-chain verification of a proof's anchor: everything is re-read from the node the
verifier chose; the chain facts in the proof are only claims to compare against."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from provmint import anchoring
from provmint.chain import registry_anchor_data, registry_anchored_at, registry_artifact
from provmint.errors import ChainMismatchError, ProvmintError

__all__ = ["ChainCheck", "ChainReader", "check_anchor_on_chain", "node_checker"]


class ChainReader(Protocol):
    """The reads an anchor check makes: :class:`provmint.chain.Node` (web3), or the
    lighter :class:`provmint.chainread.RpcReader` that ``provmint verify`` uses."""

    def chain_id(self) -> int:
        """The node's chain id."""
        ...

    def block_number(self) -> int:
        """Number of the latest block."""
        ...

    def block(self, number: int) -> dict[str, Any] | None:
        """A block with its ``hash`` (bytes) and ``timestamp``; None if unknown."""
        ...

    def receipt(self, tx_hash: str) -> dict[str, Any] | None:
        """A mined transaction's ``status``, ``blockNumber`` and ``blockHash``."""
        ...

    def transaction(self, tx_hash: str) -> dict[str, Any] | None:
        """A transaction's ``from``, ``to``, ``input`` and ``blockNumber``."""
        ...

    def call(self, to: str, data: str) -> bytes:
        """``eth_call`` at the latest block."""
        ...

    def code(self, address: str) -> bytes:
        """Deployed code at ``address``."""
        ...


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
    node: ChainReader,
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
    if issuer is not None and issuer.lower() != section.sender.lower():
        detail = f"anchored by {section.sender}, not by the expected issuer {issuer}"
        return ChainCheck(False, False, detail, chain_id)
    problem = _transaction_problem(section, node, chain_id)
    if problem is not None:
        return ChainCheck(False, False, problem, chain_id)
    receipt = node.receipt(section.tx_hash)
    if receipt is None or int(receipt.get("status", 0)) != 1:
        return ChainCheck(False, False, "the anchor transaction did not succeed", chain_id)
    number = int(receipt["blockNumber"])
    block = node.block(number)
    problem = _block_problem(section, node, receipt, block)
    if problem is not None:
        return ChainCheck(False, False, problem, chain_id)
    depth = node.block_number() - number + 1
    return ChainCheck(
        True,
        depth >= required_confirmations,
        f"anchored in block {number} of chain {chain_id}",
        chain_id,
        number,
        section.block_time,
        depth,
    )


def _transaction_problem(
    section: anchoring.AnchorSection, node: ChainReader, chain_id: int
) -> str | None:
    """Why the proof's transaction is not this anchor (None when it is): it must be on
    chain, sent by the proof's sender, and carry the digest (calldata) or the registry
    call (only to provmint's own registry code)."""
    sender = section.sender.lower()
    tx = node.transaction(section.tx_hash)
    if section.method == "registry" and not _is_registry(node, section.contract or ""):
        # The contract address comes from the proof: only provmint's registry code counts.
        return f"{section.contract} is not a provmint AnchorRegistry"
    if tx is None or tx.get("blockNumber") is None:
        # No fallback to contract state: without the transaction, block, time and
        # confirmations could not be checked (a node that pruned history cannot verify).
        return f"transaction {section.tx_hash} is not on chain {chain_id}"
    if str(tx.get("from", "")).lower() != sender:
        return "the transaction was sent by another address"
    data = bytes(tx.get("input") or b"")
    to = str(tx.get("to") or "").lower()
    if section.method == "calldata":
        if to != sender or anchoring.digest_from_calldata(data) != section.digest:
            return "the transaction does not carry this anchor's digest"
        return None
    contract = (section.contract or "").lower()
    if to != contract or data != bytes.fromhex(registry_anchor_data(section.digest)[2:]):
        return "the transaction is not this registry anchor"
    return None


def _block_problem(
    section: anchoring.AnchorSection,
    node: ChainReader,
    receipt: dict[str, Any],
    block: dict[str, Any] | None,
) -> str | None:
    """Why the transaction's block does not match the proof (None when it does): it must
    be the canonical block at that height, with the proof's hash and time, and a
    registry anchor must be recorded in the contract at that time."""
    number = int(receipt["blockNumber"])
    block_hash = "0x" + bytes(receipt["blockHash"]).hex()
    canonical = block is not None and "0x" + bytes(block["hash"]).hex() == block_hash
    if not canonical or block_hash != section.block_hash or number != section.block_number:
        return (
            f"block {section.block_number} of the proof is not the "
            "canonical block of the transaction (reorg?)"
        )
    block_time = int(block["timestamp"]) if block else 0
    if block_time != section.block_time:
        return "the proof's block time differs from the chain"
    if (
        section.method == "registry"
        and section.contract
        and registry_anchored_at(node, section.contract, section.sender, section.digest)
        != block_time
    ):
        return "the registry does not hold this digest"
    return None


def _is_registry(node: ChainReader, address: str) -> bool:
    """Does ``address`` run the AnchorRegistry code shipped with provmint?"""
    if not re.fullmatch(r"0x[0-9a-fA-F]{40}", address):
        return False
    expected = bytes.fromhex(registry_artifact()["deployedBytecode"][2:])
    return node.code(address) == expected


def node_checker(
    rpc_url: str,
    *,
    expected_chain_id: int | None = None,
    required_confirmations: int = 1,
    issuer: str | None = None,
) -> Callable[[anchoring.AnchorSection], ChainCheck]:
    """An anchor checker for ``verify``: reads through the stdlib
    :class:`~provmint.chainread.RpcReader` (opened at the first anchor asked about), and
    looks each anchor up once however many proofs share it (the proofs of one batch, or
    of every batch of one anchor, name the same transaction and digest). Raises
    ChainMismatchError when the node serves another chain than ``expected_chain_id``."""
    from provmint.chainread import RpcReader

    reader: RpcReader | None = None
    refused: ProvmintError | None = None
    seen: dict[tuple[Any, ...], ChainCheck | ProvmintError] = {}

    def check(section: anchoring.AnchorSection) -> ChainCheck:
        nonlocal reader, refused
        if reader is None and refused is None:
            reader = RpcReader(rpc_url)
            try:
                served = reader.chain_id()
                if expected_chain_id is not None and served != expected_chain_id:
                    raise ChainMismatchError(
                        f"the node at {reader.url} serves chain {served}, "
                        f"but the profile expects chain {expected_chain_id}",
                        hint="check --rpc-url or the chain profile's chain_id",
                    )
            except ProvmintError as exc:
                refused = exc
        if refused is not None:
            raise refused  # a node that is down, or on another chain, is asked once
        assert reader is not None
        # Everything the on-chain check reads from the section (the anchor path is
        # checked offline, per proof).
        key = (
            section.chain_id,
            section.method,
            section.contract,
            section.sender,
            section.tx_hash,
            section.digest,
            section.block_number,
            section.block_hash,
            section.block_time,
        )
        found = seen.get(key)
        if found is None:
            try:
                found = check_anchor_on_chain(
                    section, reader, required_confirmations=required_confirmations, issuer=issuer
                )
            except ProvmintError as exc:
                found = exc
            seen[key] = found
        if isinstance(found, ProvmintError):
            raise found
        return found

    return check
