"""The contracts shipped with provmint, their compiled artifacts, and deploying them from
the issuer's key: the AnchorRegistry (``provmint anchor deploy-registry``) and the
ProvmintVerifier that checks proofs against one registry (``provmint anchor
deploy-verifier``)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from provmint.anchor.fees import capped_fees, check_funds
from provmint.anchor.lifecycle import CONTRACT_GAS_MARGIN, POLL_SECONDS, Notify
from provmint.chain import ChainKey, Connection, checksum_address, connect, registry_artifact
from provmint.config import ChainSettings
from provmint.errors import AnchorError

__all__ = [
    "RegistryDeployment",
    "deploy_registry",
    "deploy_verifier",
    "registry_artifact",
    "verifier_artifact",
]


@dataclass(frozen=True, slots=True)
class RegistryDeployment:
    """A deployed contract (the AnchorRegistry or the ProvmintVerifier)."""

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


def verifier_artifact() -> dict[str, Any]:
    """The compiled ProvmintVerifier (ABI and bytecode) shipped with provmint."""
    import json
    from importlib.resources import files

    data: dict[str, Any] = json.loads(
        files("provmint").joinpath("contracts/ProvmintVerifier.json").read_text()
    )
    return data


def deploy_registry(
    chain: ChainSettings,
    key: ChainKey,
    *,
    notify: Notify | None = None,
    timeout: float | None = None,
) -> RegistryDeployment:
    """Deploy the AnchorRegistry contract from the issuer's key; waits for the receipt."""
    return _deploy(connect(chain), chain, key, registry_artifact()["bytecode"], notify, timeout)


def deploy_verifier(
    chain: ChainSettings,
    key: ChainKey,
    registry: str,
    *,
    notify: Notify | None = None,
    timeout: float | None = None,
) -> RegistryDeployment:
    """Deploy a ProvmintVerifier bound to the AnchorRegistry at ``registry`` (which must
    run the shipped registry's code: the verifier trusts its answers for good)."""
    address = checksum_address(registry, "--registry")
    connection = connect(chain)
    runtime = bytes.fromhex(registry_artifact()["deployedBytecode"][2:])
    if connection.node.code(address) != runtime:
        raise AnchorError(
            f"{address} is not provmint's AnchorRegistry on this chain",
            hint="deploy one with provmint anchor deploy-registry, or give its address",
        )
    args = bytes(12) + bytes.fromhex(address[2:])  # the constructor's one address argument
    data = verifier_artifact()["bytecode"] + args.hex()
    return _deploy(connection, chain, key, data, notify, timeout)


def _deploy(
    connection: Connection,
    chain: ChainSettings,
    key: ChainKey,
    bytecode: str,
    notify: Notify | None,
    timeout: float | None,
) -> RegistryDeployment:
    """Send a contract creation with ``bytecode`` (0x hex) and wait for its receipt."""
    node, chain_id = connection
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
