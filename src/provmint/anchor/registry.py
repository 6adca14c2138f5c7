"""The AnchorRegistry contract shipped with provmint: its compiled artifact, and
deploying it from the issuer's key (``provmint anchor deploy-registry``)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from provmint.anchor.fees import capped_fees, check_funds
from provmint.anchor.lifecycle import CONTRACT_GAS_MARGIN, POLL_SECONDS, Notify
from provmint.chain import ChainKey, connect, registry_artifact
from provmint.config import ChainSettings
from provmint.errors import AnchorError

__all__ = ["RegistryDeployment", "deploy_registry", "registry_artifact"]


@dataclass(frozen=True, slots=True)
class RegistryDeployment:
    """A deployed AnchorRegistry."""

    address: str
    tx_hash: str
    block_number: int
    gas_used: int
    chain_id: int

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "address": self.address,
            "tx_hash": self.tx_hash,
            "block_number": self.block_number,
            "gas_used": self.gas_used,
            "chain_id": self.chain_id,
        }


def deploy_registry(
    chain: ChainSettings,
    key: ChainKey,
    *,
    notify: Notify | None = None,
    timeout: float | None = None,
) -> RegistryDeployment:
    """Deploy the AnchorRegistry contract from the issuer's key; waits for the receipt."""
    node, chain_id = connect(chain)
    bytecode = registry_artifact()["bytecode"]
    fees = capped_fees(node, chain)
    gas = int(
        node.estimate_gas({"from": key.address, "data": bytecode, "value": 0}) * CONTRACT_GAS_MARGIN
    )
    check_funds(node, chain, chain_id, key.address, gas * fees.max_fee, "deploy")
    tx = {
        "type": 2,
        "chainId": chain_id,
        "nonce": node.nonce(key.address, "pending"),
        "value": 0,
        "data": bytecode,
        "gas": gas,
        "maxFeePerGas": fees.max_fee,
        "maxPriorityFeePerGas": fees.tip,
    }
    raw, tx_hash = key.sign(tx)
    node.send_raw(raw, tx_hash)
    if notify:
        notify(f"sent {tx_hash}; waiting for the receipt")
    deadline = time.monotonic() + (timeout or chain.receipt_timeout)
    while (receipt := node.receipt(tx_hash)) is None:
        if time.monotonic() > deadline:
            raise AnchorError(f"no receipt for the deployment {tx_hash} yet")
        time.sleep(POLL_SECONDS)
    if int(receipt.get("status", 0)) != 1 or not receipt.get("contractAddress"):
        raise AnchorError(f"the deployment {tx_hash} failed")
    return RegistryDeployment(
        str(receipt["contractAddress"]),
        tx_hash,
        int(receipt["blockNumber"]),
        int(receipt["gasUsed"]),
        chain_id,
    )
