"""``provmint anchor``: finish unfinished anchors, then commit every pending batch (or
the chosen ones) to the chain in one transaction."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from provmint import anchoring
from provmint.anchor.fees import ETHER
from provmint.anchor.lifecycle import AnchorDriver, Notify, anchoring_lock, open_driver
from provmint.chain import ChainKey, checksum_address
from provmint.config import ChainSettings, Settings
from provmint.errors import AnchorError, ConfigError, NotFoundError
from provmint.store import BatchInfo
from provmint.store.anchors import (
    OPEN_STATES,
    AnchorRecord,
    AnchorState,
    create_anchor,
    list_anchors,
    pending_batch_seqs,
)

__all__ = ["AnchorPlan", "AnchorRun", "anchor_batches"]

RECHECKED_CONFIRMED = 100
"""How many of the latest confirmed anchors a run checks for a reorg."""


@dataclass(frozen=True, slots=True)
class AnchorPlan:
    """What an anchor transaction will be (and cost), before anything is sent."""

    chain_id: int
    method: str
    contract: str | None
    sender: str
    batch_ids: tuple[str, ...]
    tree_size: int
    root: str
    digest: str
    to: str
    data: str
    gas: int
    max_fee_wei: int
    tip_wei: int
    balance_wei: int

    @property
    def max_cost_wei(self) -> int:
        """The most the transaction can cost (gas x max fee)."""
        return self.gas * self.max_fee_wei

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "chain_id": self.chain_id,
            "method": self.method,
            "contract": self.contract,
            "sender": self.sender,
            "batches": list(self.batch_ids),
            "tree_size": self.tree_size,
            "root": self.root,
            "digest": self.digest,
            "transaction": {
                "to": self.to,
                "data": self.data,
                "value": 0,
                "gas": self.gas,
                "max_fee_per_gas": self.max_fee_wei,
                "max_priority_fee_per_gas": self.tip_wei,
            },
            "max_cost_wei": self.max_cost_wei,
            "max_cost_eth": self.max_cost_wei / ETHER,
            "balance_wei": self.balance_wei,
        }


@dataclass(frozen=True, slots=True)
class AnchorRun:
    """What one ``provmint anchor`` run did."""

    chain_id: int
    plan: AnchorPlan | None
    anchor: AnchorRecord | None
    resumed: tuple[AnchorRecord, ...]
    remaining: int
    dry_run: bool
    elapsed: float

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "chain_id": self.chain_id,
            "dry_run": self.dry_run,
            "plan": self.plan.to_json() if self.plan else None,
            "anchor": self.anchor.to_json() if self.anchor else None,
            "resumed": [a.to_json() for a in self.resumed],
            "pending_left": self.remaining,
            "elapsed_s": round(self.elapsed, 3),
        }


def anchor_batches(
    settings: Settings,
    chain: ChainSettings,
    key: ChainKey | None,
    *,
    batch_refs: list[str] | None = None,
    dry_run: bool = False,
    wait: bool = True,
    notify: Notify | None = None,
    sender: str | None = None,
    stop: threading.Event | None = None,
) -> AnchorRun:
    """Finish unfinished anchors, then anchor every pending batch (or ``batch_refs``) in
    one transaction. Returns what was done; raises AnchorError subclasses for chain
    problems (the store stays consistent and the next run resumes).

    A dry run needs no key, only the ``sender`` whose funds pay (checksummed, see
    :func:`provmint.chain.chain_sender`); with a key, ``sender`` must be its address.
    Once ``stop`` is set, the run waits for the chain no more and starts no new anchor:
    what it has sent stays saved, in its state, for the next run to finish."""
    started = time.perf_counter()
    payer = _sender(key, sender, dry_run)
    driver = open_driver(settings, chain, key, notify, stop)
    with anchoring_lock(settings):
        resumed = () if dry_run else _finish_open(driver, wait=wait)
        batches, remaining = _choose_batches(driver, batch_refs)
        if not batches or (stop is not None and stop.is_set()):
            elapsed = time.perf_counter() - started
            left = remaining + len(batches)
            return AnchorRun(driver.chain_id, None, None, resumed, left, dry_run, elapsed)
        tree = anchoring.build_anchor_tree([bytes.fromhex(b.commitment) for b in batches])
        plan = _plan(driver, payer, batches, tree)
        record = None
        if not dry_run:
            record = driver.drive(_create(driver, plan, batches, tree), wait=wait)
        elapsed = time.perf_counter() - started
        return AnchorRun(driver.chain_id, plan, record, resumed, remaining, dry_run, elapsed)


def _sender(key: ChainKey | None, sender: str | None, dry_run: bool) -> str:
    """Who pays: the key's address, or (a dry run without a key) ``sender``."""
    if key is None:
        if not dry_run:
            raise AnchorError(
                "a chain key is needed to sign",
                hint="set PROVMINT_CHAIN_KEY (hex) or --keystore FILE",
            )
        if sender is None:
            raise ConfigError(
                "a dry run needs the sender's address",
                hint="pass --from ADDRESS (no key needed), or a chain key",
            )
        return checksum_address(sender, "the sender")
    if sender is not None and sender.lower() != key.address.lower():
        raise ConfigError(f"the sender {sender} is not the chain key's address ({key.address})")
    return key.address


def _finish_open(driver: AnchorDriver, *, wait: bool) -> tuple[AnchorRecord, ...]:
    """Drive every open anchor of this chain on, and those of the latest confirmed ones
    whose block a reorg dropped."""
    with driver.catalog() as con:
        open_ids = [
            a.anchor_id for a in list_anchors(con, chain_id=driver.chain_id, states=OPEN_STATES)
        ]
        confirmed = list_anchors(con, chain_id=driver.chain_id, states=(AnchorState.CONFIRMED,))
    for anchor in confirmed[-RECHECKED_CONFIRMED:]:
        record = driver.reload(anchor.anchor_id)
        if record.block_number is not None and not driver.still_canonical(record):
            open_ids.append(anchor.anchor_id)
    return tuple(driver.drive(anchor_id, wait=wait) for anchor_id in sorted(set(open_ids)))


def _choose_batches(
    driver: AnchorDriver, batch_refs: list[str] | None
) -> tuple[list[BatchInfo], int]:
    """The pending batches to anchor now (all, or those named), at most one anchor's
    worth, and how many are left for the next run."""
    with driver.catalog() as con:
        batches = [driver.store.batch_by_seq(con, seq) for seq in pending_batch_seqs(con)]
        if batch_refs:
            wanted = {driver.store.batch(con, ref).batch_id for ref in batch_refs}
            chosen = [b for b in batches if b.batch_id in wanted]
            missing = wanted - {b.batch_id for b in chosen}
            if missing:
                raise NotFoundError(f"batch {sorted(missing)[0]} is not pending (already anchored)")
            batches = chosen
    cap = anchoring.MAX_BATCHES_PER_ANCHOR
    return batches[:cap], max(0, len(batches) - cap)


def _plan(
    driver: AnchorDriver, sender: str, batches: list[BatchInfo], tree: anchoring.AnchorTree
) -> AnchorPlan:
    """The transaction that commits the anchor tree over the batches, with its cost
    checked against the caps and the sender's funds."""
    chain = driver.chain
    target = driver.target(chain.method, chain.registry, tree.digest, sender)
    gas = driver.estimate(chain.method, sender, target.to, target.data)
    fees = driver.fees()
    balance = driver.check_funds(sender, gas, fees.max_fee)
    return AnchorPlan(
        chain_id=driver.chain_id,
        method=chain.method,
        contract=target.contract,
        sender=sender,
        batch_ids=tuple(b.batch_id for b in batches),
        tree_size=tree.size,
        root=tree.root.hex(),
        digest=tree.digest.hex(),
        to=target.to,
        data=target.data,
        gas=gas,
        max_fee_wei=fees.max_fee,
        tip_wei=fees.tip,
        balance_wei=balance,
    )


def _create(
    driver: AnchorDriver, plan: AnchorPlan, batches: list[BatchInfo], tree: anchoring.AnchorTree
) -> int:
    """Record the planned anchor (state ``built``) for the batches; its id."""
    with driver.catalog() as con:
        anchor_id = create_anchor(
            con,
            journal=driver.store.anchors_dir,
            chain_id=driver.chain_id,
            method=plan.method,
            contract=plan.contract,
            sender=plan.sender,
            tree_size=tree.size,
            tree_root=tree.root.hex(),
            digest=tree.digest.hex(),
            confirmations=driver.chain.confirmations,
            batches=[
                (b.seq, tree.index_of(bytes.fromhex(b.commitment)), b.commitment) for b in batches
            ],
        )
    driver.notify(f"anchor #{anchor_id}: {tree.size} batch(es), digest {tree.digest.hex()}")
    return anchor_id
