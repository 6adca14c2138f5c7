"""``provmint anchor status``: the anchors and the pending batches, with live
confirmation counts when a node answers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from provmint.anchor.lifecycle import AnchorDriver, Notify, anchoring_lock, open_driver
from provmint.config import ChainSettings, Settings
from provmint.store import Store
from provmint.store.anchors import AnchorRecord, AnchorState, list_anchors, pending_batch_seqs

__all__ = ["StatusReport", "anchor_status"]

_SENT = (
    AnchorState.SIGNED,
    AnchorState.BROADCAST,
    AnchorState.INCLUDED,
    AnchorState.CONFIRMED,
)
"""Anchors whose transaction may be on the chain (what ``anchor status`` looks up)."""


@dataclass(frozen=True, slots=True)
class StatusReport:
    """Anchors and pending batches, with live confirmation counts when a node answered."""

    anchors: tuple[AnchorRecord, ...]
    pending: tuple[str, ...]
    confirmations: dict[int, int]
    chain_id: int | None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "chain_id": self.chain_id,
            "anchors": [
                {**a.to_json(), "confirmations": self.confirmations.get(a.anchor_id)}
                for a in self.anchors
            ],
            "pending_batches": list(self.pending),
        }


def anchor_status(
    settings: Settings,
    chain: ChainSettings | None = None,
    *,
    wait: bool = False,
    notify: Notify | None = None,
) -> StatusReport:
    """List anchors and pending batches. With a node (``chain`` with an RPC URL), also
    count confirmations and notice reorgs; ``wait`` drives open anchors to confirmed."""
    store = Store.open(settings.store)
    confirmations: dict[int, int] = {}
    chain_id = None
    if chain is not None and chain.rpc_url:
        driver = open_driver(settings, chain, None, notify)
        chain_id = driver.chain_id
        with anchoring_lock(settings):
            confirmations = _look_on_chain(driver, wait=wait)
    with store.reading(timeout=settings.lock_timeout) as con:
        anchors = tuple(list_anchors(con))
        pending = tuple(store.batch_by_seq(con, s).batch_id for s in pending_batch_seqs(con))
    return StatusReport(anchors, pending, confirmations, chain_id)


def _look_on_chain(driver: AnchorDriver, *, wait: bool) -> dict[int, int]:
    """Notice reorgs of sent anchors (and, with ``wait``, drive them to confirmed);
    each anchor in a block, by id, with its confirmations now."""
    with driver.catalog() as con:
        live = list_anchors(con, chain_id=driver.chain_id, states=_SENT)
    for record in live:
        if record.state.in_block and not driver.still_canonical(record):
            record = driver.reload(record.anchor_id)  # back to broadcast: a reorg
        if wait and record.state != AnchorState.CONFIRMED:
            driver.drive(record.anchor_id, wait=True)
    latest = driver.node.block_number()
    with driver.catalog() as con:
        return {
            record.anchor_id: latest - record.block_number + 1
            for record in list_anchors(con, chain_id=driver.chain_id)
            if record.block_number is not None
        }
