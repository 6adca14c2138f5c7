"""One anchor's life on chain: sign, broadcast, find the receipt, count confirmations.

The states and the moves allowed between them are defined and enforced where they are
persisted (:class:`provmint.store.anchors.AnchorState`, ``TRANSITIONS``). This module
decides the moves: :meth:`AnchorDriver.drive` takes an anchor from wherever it stands
(``built``, ``signed``, ``broadcast``, ``included``) one step at a time, one method per
state, until it is ``confirmed``, ``failed``, or (without ``wait``) would have to wait.

Every step is saved before the next touches the chain: the signed transaction is saved
before it is broadcast, so a run killed at any point is finished by the next run, which
looks for a receipt of any transaction it signed, re-sends the same bytes, or (when
another transaction used the nonce) signs a fresh one for the same anchor. A stuck
transaction is replaced with the same nonce and higher fees. A reorg that drops the block
is noticed (the block hash at that height changes) and the anchor goes back to waiting
for inclusion.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from provmint import anchoring
from provmint.anchor.fees import GWEI, Fees, capped_fees, check_funds
from provmint.chain import ChainKey, Node, connect, registry_anchor_data
from provmint.config import ChainSettings, Settings
from provmint.errors import AnchorError, ConfigError
from provmint.store import Store
from provmint.store.anchors import AnchorRecord, AnchorState, Attempt, get_anchor, update_anchor
from provmint.store.anchors import add_attempt as save_attempt
from provmint.store.lock import store_lock

if TYPE_CHECKING:
    import duckdb

__all__ = ["AnchorDriver", "Notify", "Target", "anchoring_lock", "open_driver"]

POLL_SECONDS = 0.25
RESEND_SECONDS = 10.0
MAX_REPLACEMENTS = 3
FEE_BUMP = 1.25
"""A replacement pays 25% more (nodes want at least +10%)."""
CONTRACT_GAS_MARGIN = 1.2

Notify = Callable[[str], None]


class Target(NamedTuple):
    """Where an anchor transaction goes and what it carries."""

    to: str
    data: str
    contract: str | None


class _Next(Enum):
    """What :meth:`AnchorDriver.drive` does after a step."""

    AGAIN = "again"  # the anchor moved (or may have): look at it afresh
    SLEEP = "sleep"  # waiting on the chain: poll again shortly
    STOP = "stop"  # it would have to wait, and the caller does not


@dataclass(slots=True)
class _Watch:
    """One drive's clock for the transaction it waits on."""

    waited_since: float
    last_send: float = 0.0  # 0: not yet (re-)sent in this run
    replacements: int = 0


@contextmanager
def anchoring_lock(settings: Settings) -> Iterator[None]:
    """One anchoring run at a time per store: two runs would race on the sender's nonce."""
    with store_lock(
        Path(settings.store),
        exclusive=True,
        timeout=settings.lock_timeout,
        purpose="anchor",
        name=".anchor.lock",
    ):
        yield


class AnchorDriver:
    """Moves anchors through their states: the store, the node, the key, the settings."""

    def __init__(
        self,
        settings: Settings,
        chain: ChainSettings,
        node: Node,
        chain_id: int,
        key: ChainKey | None,
        notify: Notify,
        stop: threading.Event | None = None,
    ) -> None:
        self.store = Store.open(settings.store)
        self.settings = settings
        self.chain = chain
        self.node = node
        self.chain_id = chain_id
        self.key = key
        self.notify = notify
        self.stop = stop
        """Once set, :meth:`drive` waits no more: an anchor that would have to wait for
        the chain is left in its (saved) state for the next run to finish."""

    # -- the catalog -----------------------------------------------------------------

    @contextmanager
    def catalog(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The catalog, to write (the store's exclusive lock is held)."""
        with self.store.writing(timeout=self.settings.lock_timeout, purpose="anchor") as con:
            yield con

    def reload(self, anchor_id: int) -> AnchorRecord:
        """The anchor as the catalog has it now."""
        with self.catalog() as con:
            return get_anchor(con, anchor_id)

    def update(self, anchor_id: int, **fields: Any) -> None:
        """Save a move (checked against the allowed transitions) and its journal file."""
        with self.catalog() as con:
            update_anchor(con, anchor_id, journal=self.store.anchors_dir, **fields)

    # -- transactions ----------------------------------------------------------------

    def fees(self) -> Fees:
        """The fees now, within the configured cap."""
        return capped_fees(self.node, self.chain)

    def target(self, method: str, registry: str | None, digest: bytes, sender: str) -> Target:
        """The anchor transaction for ``method``: to the sender itself with the digest
        as data, or a call of the registry contract."""
        if method == "calldata":
            return Target(sender, "0x" + anchoring.calldata_payload(digest).hex(), None)
        if not registry:
            raise ConfigError(
                "the registry method needs the registry's address",
                hint="deploy it with: provmint anchor deploy-registry, then pass --registry",
            )
        from web3 import Web3

        registry = Web3.to_checksum_address(registry)
        if not self.node.code(registry):
            raise AnchorError(f"no contract at {registry} on chain {self.chain_id}")
        return Target(registry, registry_anchor_data(digest), registry)

    def estimate(self, method: str, sender: str, to: str, data: str) -> int:
        """Gas for the transaction, with a margin for a contract call."""
        gas = self.node.estimate_gas({"from": sender, "to": to, "data": data, "value": 0})
        return int(gas * CONTRACT_GAS_MARGIN) if method == "registry" else gas

    def check_funds(self, sender: str, gas: int, max_fee: int) -> int:
        """The sender's balance, once the cost is known to be within caps and funds."""
        return check_funds(self.node, self.chain, self.chain_id, sender, gas * max_fee, "anchor")

    def sign(self, record: AnchorRecord, nonce: int, fees: Fees) -> None:
        """Sign an attempt and save it (state ``signed``) before anything is sent."""
        if self.key is None:
            raise AnchorError("a chain key is needed to sign")
        if self.key.address.lower() != record.sender.lower():
            raise AnchorError(
                f"anchor #{record.anchor_id} was started by {record.sender}, but this run's "
                f"chain key is {self.key.address}",
                hint="finish it with the key that started it (its transactions are saved)",
            )
        digest = bytes.fromhex(record.digest)
        # A resumed anchor keeps the method and contract it was built with.
        to, data, _ = self.target(record.method, record.contract, digest, record.sender)
        gas = self.estimate(record.method, record.sender, to, data)
        self.check_funds(record.sender, gas, fees.max_fee)
        tx = {
            "type": 2,
            "chainId": self.chain_id,
            "nonce": nonce,
            "to": to,
            "value": 0,
            "data": data,
            "gas": gas,
            "maxFeePerGas": fees.max_fee,
            "maxPriorityFeePerGas": fees.tip,
        }
        raw, tx_hash = self.key.sign(tx)
        attempt = Attempt(
            len(record.attempts) + 1, tx_hash, nonce, fees.max_fee, fees.tip, gas, raw
        )
        with self.catalog() as con:
            save_attempt(con, record.anchor_id, attempt, journal=self.store.anchors_dir)
        self.notify(f"anchor #{record.anchor_id}: signed {tx_hash} (nonce {nonce})")

    def broadcast(self, record: AnchorRecord) -> None:
        """Send the latest signed attempt and record that it was sent."""
        attempt = record.attempts[-1]
        sent = self.node.send_raw(attempt.raw_tx, attempt.tx_hash)
        if sent.nonce_used:
            self.notify(
                f"anchor #{record.anchor_id}: nonce {attempt.nonce} already used; "
                "looking for receipts"
            )
        else:
            self.notify(f"anchor #{record.anchor_id}: broadcast {attempt.tx_hash}")
        self.update(record.anchor_id, state=AnchorState.BROADCAST)

    def find_receipt(self, record: AnchorRecord) -> tuple[Attempt, dict[str, Any]] | None:
        """The mined attempt and its receipt, looking at every attempt, newest first."""
        for attempt in reversed(record.attempts):
            receipt = self.node.receipt(attempt.tx_hash)
            if receipt is not None and receipt.get("blockNumber") is not None:
                return attempt, receipt
        return None

    def record_inclusion(
        self, record: AnchorRecord, attempt: Attempt, receipt: dict[str, Any]
    ) -> None:
        """Save the block that holds the anchor (or the failure, when it reverted)."""
        if int(receipt.get("status", 0)) != 1:
            self.update(
                record.anchor_id,
                state=AnchorState.FAILED,
                tx_hash=attempt.tx_hash,
                error="the anchor transaction reverted",
            )
            raise AnchorError(
                f"anchor transaction {attempt.tx_hash} reverted",
                hint="its batches are pending again; run provmint anchor to retry",
            )
        number = int(receipt["blockNumber"])
        block = self.node.block(number) or {}
        gas_used = int(receipt.get("gasUsed", 0))
        price = int(receipt.get("effectiveGasPrice", 0))
        self.update(
            record.anchor_id,
            state=AnchorState.INCLUDED,
            tx_hash=attempt.tx_hash,
            block_number=number,
            block_hash="0x" + bytes(receipt["blockHash"]).hex(),
            block_time=int(block.get("timestamp", 0)),
            gas_used=gas_used,
            fee_wei=str(gas_used * price),
            error=None,
        )
        self.notify(f"anchor #{record.anchor_id}: included in block {number} ({gas_used} gas)")

    def still_canonical(self, record: AnchorRecord) -> bool:
        """Is the anchor's block still on the chain? If not (a reorg), the anchor goes
        back to waiting for inclusion."""
        block = self.node.block(int(record.block_number or 0))
        current = "0x" + bytes(block["hash"]).hex() if block else None
        if current == record.block_hash:
            return True
        self.notify(
            f"anchor #{record.anchor_id}: block {record.block_number} left the chain "
            "(reorg); waiting for the transaction again"
        )
        self.update(
            record.anchor_id,
            state=AnchorState.BROADCAST,
            block_number=None,
            block_hash=None,
            block_time=None,
        )
        return False

    # -- the state machine -----------------------------------------------------------

    def drive(self, anchor_id: int, *, wait: bool) -> AnchorRecord:
        """Move an anchor forward until it is confirmed (or, without ``wait`` or once
        :attr:`stop` is set, until it would have to wait)."""
        step: dict[AnchorState, Callable[[AnchorRecord, _Watch, bool], _Next]] = {
            AnchorState.BUILT: self._sign_first,
            AnchorState.SIGNED: self._send,
            AnchorState.BROADCAST: self._await_block,
            AnchorState.INCLUDED: self._await_confirmations,
        }
        watch = _Watch(waited_since=time.monotonic())
        while True:
            record = self.reload(anchor_id)
            if not record.state.is_open:
                return record
            after = step[record.state](record, watch, wait)
            if after is _Next.STOP:
                return record
            if after is _Next.SLEEP:
                if self.stop is None:
                    time.sleep(POLL_SECONDS)
                elif self.stop.is_set() or self.stop.wait(POLL_SECONDS):
                    return self.reload(anchor_id)

    def _sign_first(self, record: AnchorRecord, watch: _Watch, wait: bool) -> _Next:
        """``built``: sign with the sender's next nonce."""
        fees = self.fees()
        self.sign(record, self.node.nonce(record.sender, "pending"), fees)
        return _Next.AGAIN

    def _send(self, record: AnchorRecord, watch: _Watch, wait: bool) -> _Next:
        """``signed``: broadcast the saved bytes."""
        self.broadcast(record)
        watch.last_send = watch.waited_since = time.monotonic()
        return _Next.AGAIN

    def _await_block(self, record: AnchorRecord, watch: _Watch, wait: bool) -> _Next:
        """``broadcast``: look for a receipt; re-sign when another transaction took the
        nonce; re-send now and then; replace with higher fees when it is stuck."""
        found = self.find_receipt(record)
        if found is not None:
            self.record_inclusion(record, *found)
            return _Next.AGAIN
        attempt = record.attempts[-1]
        if self.node.nonce(record.sender, "latest") > attempt.nonce:
            if self.find_receipt(self.reload(record.anchor_id)) is None:
                # Another transaction took the nonce (ours was dropped or replaced
                # elsewhere): sign the same anchor again with a fresh nonce.
                self.notify(
                    f"anchor #{record.anchor_id}: nonce {attempt.nonce} was used by "
                    "another transaction; signing again"
                )
                fees = self.fees()
                self.sign(record, self.node.nonce(record.sender, "pending"), fees)
            return _Next.AGAIN
        now = time.monotonic()
        if watch.last_send == 0.0:  # first look in this run: the node may have lost it
            self.node.send_raw(attempt.raw_tx, attempt.tx_hash)
            watch.last_send = watch.waited_since = now
            return _Next.AGAIN
        if not wait:
            return _Next.STOP
        if now - watch.waited_since > self.chain.receipt_timeout:
            self._replace(record, attempt, watch)
            return _Next.AGAIN
        if now - watch.last_send > RESEND_SECONDS:
            self.node.send_raw(attempt.raw_tx, attempt.tx_hash)
            watch.last_send = now
        return _Next.SLEEP

    def _replace(self, record: AnchorRecord, attempt: Attempt, watch: _Watch) -> None:
        """A stuck transaction: sign the same nonce again with higher fees, within the
        fee cap and at most :data:`MAX_REPLACEMENTS` times."""
        anchor_id = record.anchor_id
        if watch.replacements >= MAX_REPLACEMENTS:
            raise AnchorError(
                f"anchor #{anchor_id}: no receipt for {attempt.tx_hash} after "
                f"{watch.replacements} fee bumps",
                hint="the transaction is saved; run provmint anchor again later",
            )
        watch.replacements += 1
        now = self.fees()
        bumped = Fees(
            max(now.max_fee, int(attempt.max_fee_wei * FEE_BUMP)),
            max(now.tip, int(attempt.tip_wei * FEE_BUMP)),
        )
        cap = self.chain.max_fee_gwei
        if cap is not None and bumped.max_fee > cap * GWEI:
            raise AnchorError(
                f"anchor #{anchor_id}: {attempt.tx_hash} is stuck and a replacement "
                f"would pay {bumped.max_fee / GWEI:.3f} gwei, above the cap of {cap} gwei",
                hint="the transaction is saved; raise --max-fee-gwei or run again later",
            )
        self.notify(
            f"anchor #{anchor_id}: no receipt after "
            f"{self.chain.receipt_timeout:.0f} s; replacing with higher fees"
        )
        self.sign(record, attempt.nonce, bumped)

    def _await_confirmations(self, record: AnchorRecord, watch: _Watch, wait: bool) -> _Next:
        """``included``: confirmed once enough blocks are on top, unless a reorg took
        the block away."""
        if not self.still_canonical(record):
            return _Next.AGAIN
        depth = self.node.block_number() - int(record.block_number or 0) + 1
        if depth >= record.confirmations:
            self.update(record.anchor_id, state=AnchorState.CONFIRMED)
            self.notify(f"anchor #{record.anchor_id}: confirmed ({depth} confirmations)")
            return _Next.AGAIN
        return _Next.SLEEP if wait else _Next.STOP


def open_driver(
    settings: Settings,
    chain: ChainSettings,
    key: ChainKey | None,
    notify: Notify | None,
    stop: threading.Event | None = None,
) -> AnchorDriver:
    """A driver connected to the node of ``chain`` (its chain id checked)."""
    node, chain_id = connect(chain)
    return AnchorDriver(
        settings, chain, node, chain_id, key, notify or (lambda message: None), stop
    )
