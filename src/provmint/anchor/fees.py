"""What a transaction may pay: the fee cap and the spending cap, and the sender's funds.

Shared by anchoring and by deploying the registry, so both refuse the same way: a fee
above ``--max-fee-gwei`` or a cost above ``--max-spend-eth`` is refused, never clamped
quietly into a transaction that would not be mined.
"""

from __future__ import annotations

from typing import NamedTuple

from provmint.chain import Node
from provmint.config import ChainSettings
from provmint.errors import AnchorError, InsufficientFundsError

__all__ = ["ETHER", "GWEI", "Fees", "capped_fees", "check_funds", "eth"]

GWEI = 10**9
ETHER = 10**18


class Fees(NamedTuple):
    """EIP-1559 fees per gas, in wei."""

    max_fee: int
    tip: int


def eth(wei: int) -> str:
    """An amount of wei for people: ``0.00012345 ETH``."""
    return f"{wei / ETHER:.8f} ETH"


def capped_fees(node: Node, chain: ChainSettings) -> Fees:
    """The fees for a transaction now: twice the base fee plus the tip, within
    ``--max-fee-gwei``; refused when even the base fee and tip are above it."""
    base, tip = node.fees()
    max_fee = 2 * base + tip
    cap = chain.max_fee_gwei
    if cap is not None:
        cap_wei = int(cap * GWEI)
        if base + tip > cap_wei:
            raise AnchorError(
                f"fees are {(base + tip) / GWEI:.3f} gwei now, above the cap of {cap} gwei",
                hint="wait for lower fees or raise --max-fee-gwei",
            )
        max_fee = min(max_fee, cap_wei)
    return Fees(max_fee, tip)


def check_funds(
    node: Node, chain: ChainSettings, chain_id: int, sender: str, cost: int, doing: str
) -> int:
    """Refuse a transaction that could cost more than ``--max-spend-eth`` or than the
    sender holds; the sender's balance otherwise."""
    if chain.max_spend_eth is not None and cost > chain.max_spend_eth * ETHER:
        raise AnchorError(
            f"the {doing} could cost up to {eth(cost)}, above the cap of {chain.max_spend_eth} ETH",
            hint="raise --max-spend-eth or wait for lower fees",
        )
    balance = node.balance(sender)
    if balance < cost:
        raise InsufficientFundsError(
            f"{sender} needs {eth(cost)} to {doing}, has {eth(balance)}",
            hint=f"fund {sender} on chain {chain_id}",
        )
    return balance
