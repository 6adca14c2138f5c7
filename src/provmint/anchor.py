"""``provmint anchor``: commit every pending batch to an EVM chain in one transaction,
resumably, and check anchors on chain.

The anchor's life is persisted before every step that touches the chain (see
:mod:`provmint.store.anchors`): the signed transaction is saved before it is broadcast,
so a run killed at any point is finished by the next run, which looks for a receipt of
any transaction it signed, re-sends the same bytes, or (when another transaction used
the nonce) signs a fresh one for the same anchor. A stuck transaction is replaced with
the same nonce and higher fees. A reorg that drops the block is noticed (the block hash
at that height changes) and the anchor goes back to waiting for inclusion.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provmint import anchoring
from provmint.chain import (
    AnchorError,
    ChainKey,
    ChainMismatchError,
    InsufficientFundsError,
    Node,
    mask_url,
    registry_anchor_data,
)
from provmint.config import ChainSettings, Settings
from provmint.errors import ConfigError, MissingFileError, NotFoundError
from provmint.store import Store
from provmint.store import anchors as state
from provmint.store.lock import store_lock

if TYPE_CHECKING:
    import duckdb

__all__ = [
    "AnchorPlan",
    "AnchorRun",
    "RegistryDeployment",
    "StatusReport",
    "anchor_batches",
    "anchor_status",
    "connect",
    "deploy_registry",
    "load_chain_key",
]

POLL_SECONDS = 0.25
RESEND_SECONDS = 10.0
MAX_REPLACEMENTS = 3
FEE_BUMP = 1.25
"""A replacement pays 25% more (nodes want at least +10%)."""
CONTRACT_GAS_MARGIN = 1.2
GWEI = 10**9
ETHER = 10**18
_SENT = (
    state.AnchorState.SIGNED,
    state.AnchorState.BROADCAST,
    state.AnchorState.INCLUDED,
    state.AnchorState.CONFIRMED,
)
"""Anchors whose transaction may be on the chain (what ``anchor status`` looks up)."""

Notify = Callable[[str], None]


def _eth(wei: int) -> str:
    return f"{wei / ETHER:.8f} ETH"


def connect(chain: ChainSettings) -> tuple[Node, int]:
    """A node for these settings, its chain id checked against the expected one."""
    if not chain.rpc_url:
        raise ConfigError(
            "no node to talk to",
            hint="pass --rpc-url URL, set PROVMINT_RPC_URL, or choose a chain profile (--chain)",
        )
    node = Node(chain.rpc_url, poa=chain.poa)
    chain_id = node.chain_id()
    if chain.chain_id is not None and chain_id != chain.chain_id:
        raise ChainMismatchError(
            f"the node at {mask_url(chain.rpc_url)} serves chain {chain_id}, "
            f"but the profile expects chain {chain.chain_id}",
            hint="check --rpc-url or the chain profile's chain_id",
        )
    return node, chain_id


def capped_fees(node: Node, chain: ChainSettings) -> tuple[int, int]:
    """(max fee per gas, tip) for a transaction now: twice the base fee plus the tip,
    within ``--max-fee-gwei``; refused when even the base fee and tip are above it."""
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
    return max_fee, tip


def check_funds(
    node: Node, chain: ChainSettings, chain_id: int, sender: str, cost: int, doing: str
) -> int:
    """Refuse a transaction that could cost more than ``--max-spend-eth`` or than the
    sender holds; the sender's balance otherwise."""
    if chain.max_spend_eth is not None and cost > chain.max_spend_eth * ETHER:
        raise AnchorError(
            f"the {doing} could cost up to {_eth(cost)}, above the cap of "
            f"{chain.max_spend_eth} ETH",
            hint="raise --max-spend-eth or wait for lower fees",
        )
    balance = node.balance(sender)
    if balance < cost:
        raise InsufficientFundsError(
            f"{sender} needs {_eth(cost)} to {doing}, has {_eth(balance)}",
            hint=f"fund {sender} on chain {chain_id}",
        )
    return balance


def load_chain_key(chain: ChainSettings, ask_password: Callable[[], str] | None = None) -> ChainKey:
    """The issuer's chain key: ``PROVMINT_CHAIN_KEY``, or the keystore with its password
    from ``PROVMINT_KEYSTORE_PASSWORD`` or ``ask_password``."""
    if chain.chain_key is not None:
        return ChainKey.from_hex(chain.chain_key.reveal().decode(), "PROVMINT_CHAIN_KEY")
    if chain.keystore is not None:
        if not chain.keystore.exists():  # before asking for its password
            raise MissingFileError(
                chain.keystore,
                "keystore file",
                hint="it is named by --keystore, PROVMINT_KEYSTORE or the chain profile",
            )
        if chain.keystore_password is not None:
            password = chain.keystore_password.reveal().decode()
        elif ask_password is not None:
            password = ask_password()
        else:
            raise AnchorError(
                f"the keystore {chain.keystore} needs a password",
                hint="set PROVMINT_KEYSTORE_PASSWORD or run interactively",
            )
        return ChainKey.from_keystore(chain.keystore, password)
    raise AnchorError(
        "no chain key",
        hint="set PROVMINT_CHAIN_KEY (hex) or --keystore FILE (encrypted JSON keystore)",
    )


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
    anchor: state.AnchorRecord | None
    resumed: tuple[state.AnchorRecord, ...]
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


class _Session:
    """One anchoring run: the store, the node, the key, the chain settings."""

    def __init__(
        self,
        settings: Settings,
        chain: ChainSettings,
        node: Node,
        chain_id: int,
        key: ChainKey | None,
        notify: Notify,
    ) -> None:
        self.store = Store.open(settings.store)
        self.settings = settings
        self.chain = chain
        self.node = node
        self.chain_id = chain_id
        self.key = key
        self.notify = notify

    @contextmanager
    def catalog(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with (
            self.store.lock(exclusive=True, timeout=self.settings.lock_timeout, purpose="anchor"),
            self.store.connect(write=True) as con,
        ):
            yield con

    def reload(self, anchor_id: int) -> state.AnchorRecord:
        with self.catalog() as con:
            return state.get_anchor(con, anchor_id)

    def update(self, anchor_id: int, **fields: Any) -> None:
        with self.catalog() as con:
            state.update_anchor(con, anchor_id, journal=self.store.anchors_dir, **fields)

    # -- transactions ----------------------------------------------------------------

    def fees(self) -> tuple[int, int]:
        """(max fee per gas, tip) now, within the configured cap."""
        return capped_fees(self.node, self.chain)

    def target(
        self, method: str, registry: str | None, digest: bytes, sender: str
    ) -> tuple[str, str, str | None]:
        """(to, data, contract) of an anchor transaction by ``method``."""
        if method == "calldata":
            return sender, "0x" + anchoring.calldata_payload(digest).hex(), None
        if not registry:
            raise ConfigError(
                "the registry method needs the registry's address",
                hint="deploy it with: provmint anchor deploy-registry, then pass --registry",
            )
        from web3 import Web3

        registry = Web3.to_checksum_address(registry)
        if not self.node.code(registry):
            raise AnchorError(f"no contract at {registry} on chain {self.chain_id}")
        return registry, registry_anchor_data(digest), registry

    def estimate(self, method: str, sender: str, to: str, data: str) -> int:
        gas = self.node.estimate_gas({"from": sender, "to": to, "data": data, "value": 0})
        return int(gas * CONTRACT_GAS_MARGIN) if method == "registry" else gas

    def check_funds(self, sender: str, gas: int, max_fee: int) -> int:
        return check_funds(self.node, self.chain, self.chain_id, sender, gas * max_fee, "anchor")

    def sign(self, record: state.AnchorRecord, nonce: int, max_fee: int, tip: int) -> None:
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
        self.check_funds(record.sender, gas, max_fee)
        tx = {
            "type": 2,
            "chainId": self.chain_id,
            "nonce": nonce,
            "to": to,
            "value": 0,
            "data": data,
            "gas": gas,
            "maxFeePerGas": max_fee,
            "maxPriorityFeePerGas": tip,
        }
        raw, tx_hash = self.key.sign(tx)
        attempt = state.Attempt(len(record.attempts) + 1, tx_hash, nonce, max_fee, tip, gas, raw)
        with self.catalog() as con:
            state.add_attempt(con, record.anchor_id, attempt, journal=self.store.anchors_dir)
        self.notify(f"anchor #{record.anchor_id}: signed {tx_hash} (nonce {nonce})")

    def broadcast(self, record: state.AnchorRecord) -> None:
        attempt = record.attempts[-1]
        sent = self.node.send_raw(attempt.raw_tx, attempt.tx_hash)
        if sent.nonce_used:
            self.notify(
                f"anchor #{record.anchor_id}: nonce {attempt.nonce} already used; "
                "looking for receipts"
            )
        else:
            self.notify(f"anchor #{record.anchor_id}: broadcast {attempt.tx_hash}")
        self.update(record.anchor_id, state=state.AnchorState.BROADCAST)

    def find_receipt(
        self, record: state.AnchorRecord
    ) -> tuple[state.Attempt, dict[str, Any]] | None:
        for attempt in reversed(record.attempts):
            receipt = self.node.receipt(attempt.tx_hash)
            if receipt is not None and receipt.get("blockNumber") is not None:
                return attempt, receipt
        return None

    def record_inclusion(
        self, record: state.AnchorRecord, attempt: state.Attempt, receipt: dict[str, Any]
    ) -> None:
        if int(receipt.get("status", 0)) != 1:
            self.update(
                record.anchor_id,
                state=state.AnchorState.FAILED,
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
            state=state.AnchorState.INCLUDED,
            tx_hash=attempt.tx_hash,
            block_number=number,
            block_hash="0x" + bytes(receipt["blockHash"]).hex(),
            block_time=int(block.get("timestamp", 0)),
            gas_used=gas_used,
            fee_wei=str(gas_used * price),
            error=None,
        )
        self.notify(f"anchor #{record.anchor_id}: included in block {number} ({gas_used} gas)")

    # -- the state machine -----------------------------------------------------------

    def drive(self, anchor_id: int, *, wait: bool) -> state.AnchorRecord:
        """Move an anchor forward until it is confirmed (or, without ``wait``, until it
        would have to wait)."""
        waited_since = time.monotonic()
        last_send = 0.0
        replacements = 0
        while True:
            record = self.reload(anchor_id)
            if not record.state.is_open:
                return record
            if record.state == state.AnchorState.BUILT:
                max_fee, tip = self.fees()
                self.sign(record, self.node.nonce(record.sender, "pending"), max_fee, tip)
                continue
            if record.state == state.AnchorState.SIGNED:
                self.broadcast(record)
                last_send = waited_since = time.monotonic()
                continue
            if record.state == state.AnchorState.BROADCAST:
                found = self.find_receipt(record)
                if found is not None:
                    self.record_inclusion(record, *found)
                    continue
                attempt = record.attempts[-1]
                if self.node.nonce(record.sender, "latest") > attempt.nonce:
                    if self.find_receipt(self.reload(anchor_id)) is None:
                        # Another transaction took the nonce (ours was dropped or replaced
                        # elsewhere): sign the same anchor again with a fresh nonce.
                        self.notify(
                            f"anchor #{anchor_id}: nonce {attempt.nonce} was used by "
                            "another transaction; signing again"
                        )
                        max_fee, tip = self.fees()
                        self.sign(record, self.node.nonce(record.sender, "pending"), max_fee, tip)
                    continue
                now = time.monotonic()
                if last_send == 0.0:  # first look in this run: the node may have lost it
                    self.node.send_raw(attempt.raw_tx, attempt.tx_hash)
                    last_send = waited_since = now
                    continue
                if not wait:
                    return record
                if now - waited_since > self.chain.receipt_timeout:
                    if replacements >= MAX_REPLACEMENTS:
                        raise AnchorError(
                            f"anchor #{anchor_id}: no receipt for {attempt.tx_hash} after "
                            f"{replacements} fee bumps",
                            hint="the transaction is saved; run provmint anchor again later",
                        )
                    replacements += 1
                    max_fee, tip = self.fees()
                    max_fee = max(max_fee, int(attempt.max_fee_wei * FEE_BUMP))
                    tip = max(tip, int(attempt.tip_wei * FEE_BUMP))
                    cap = self.chain.max_fee_gwei
                    if cap is not None and max_fee > cap * GWEI:
                        raise AnchorError(
                            f"anchor #{anchor_id}: {attempt.tx_hash} is stuck and a replacement "
                            f"would pay {max_fee / GWEI:.3f} gwei, above the cap of {cap} gwei",
                            hint="the transaction is saved; raise --max-fee-gwei or run again "
                            "later",
                        )
                    self.notify(
                        f"anchor #{anchor_id}: no receipt after "
                        f"{self.chain.receipt_timeout:.0f} s; replacing with higher fees"
                    )
                    self.sign(record, attempt.nonce, max_fee, tip)
                    continue
                if now - last_send > RESEND_SECONDS:
                    self.node.send_raw(attempt.raw_tx, attempt.tx_hash)
                    last_send = now
                time.sleep(POLL_SECONDS)
                continue
            if record.state == state.AnchorState.INCLUDED:
                if not self.still_canonical(record):
                    continue
                depth = self.node.block_number() - int(record.block_number or 0) + 1
                if depth >= record.confirmations:
                    self.update(anchor_id, state=state.AnchorState.CONFIRMED)
                    self.notify(f"anchor #{anchor_id}: confirmed ({depth} confirmations)")
                    continue
                if not wait:
                    return record
                time.sleep(POLL_SECONDS)

    def still_canonical(self, record: state.AnchorRecord) -> bool:
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
            state=state.AnchorState.BROADCAST,
            block_number=None,
            block_hash=None,
            block_time=None,
        )
        return False


def _session(
    settings: Settings, chain: ChainSettings, key: ChainKey | None, notify: Notify | None
) -> _Session:
    node, chain_id = connect(chain)
    return _Session(settings, chain, node, chain_id, key, notify or (lambda message: None))


@contextmanager
def _anchoring(settings: Settings) -> Iterator[None]:
    # One anchoring run at a time per store: two runs would race on the sender's nonce.
    root = Path(settings.store)
    with store_lock(
        root, exclusive=True, timeout=settings.lock_timeout, purpose="anchor", name=".anchor.lock"
    ):
        yield


def anchor_batches(
    settings: Settings,
    chain: ChainSettings,
    key: ChainKey,
    *,
    batch_refs: list[str] | None = None,
    dry_run: bool = False,
    wait: bool = True,
    notify: Notify | None = None,
) -> AnchorRun:
    """Finish unfinished anchors, then anchor every pending batch (or ``batch_refs``) in
    one transaction. Returns what was done; raises AnchorError subclasses for chain
    problems (the store stays consistent and the next run resumes)."""
    started = time.perf_counter()
    session = _session(settings, chain, key, notify)
    with _anchoring(settings):
        resumed = []
        if not dry_run:
            with session.catalog() as con:
                open_ids = [
                    a.anchor_id
                    for a in state.list_anchors(
                        con, chain_id=session.chain_id, states=state.OPEN_STATES
                    )
                ]
                done_ids = [
                    a.anchor_id
                    for a in state.list_anchors(
                        con, chain_id=session.chain_id, states=(state.AnchorState.CONFIRMED,)
                    )
                ][-100:]
            for anchor_id in done_ids:  # a reorg may have dropped a confirmed anchor
                record = session.reload(anchor_id)
                if record.block_number is not None and not session.still_canonical(record):
                    open_ids.append(anchor_id)
            for anchor_id in sorted(set(open_ids)):
                resumed.append(session.drive(anchor_id, wait=wait))
        with session.catalog() as con:
            pending = state.pending_batch_seqs(con)
            batches = [session.store.batch_by_seq(con, seq) for seq in pending]
            if batch_refs:
                wanted = {session.store.batch(con, ref).batch_id for ref in batch_refs}
                chosen = [b for b in batches if b.batch_id in wanted]
                missing = wanted - {b.batch_id for b in chosen}
                if missing:
                    raise NotFoundError(
                        f"batch {sorted(missing)[0]} is not pending (already anchored)"
                    )
                batches = chosen
        remaining = max(0, len(batches) - anchoring.MAX_BATCHES_PER_ANCHOR)
        batches = batches[: anchoring.MAX_BATCHES_PER_ANCHOR]
        if not batches:
            return AnchorRun(
                session.chain_id,
                None,
                None,
                tuple(resumed),
                0,
                dry_run,
                time.perf_counter() - started,
            )
        tree = anchoring.build_anchor_tree([bytes.fromhex(b.commitment) for b in batches])
        sender = key.address
        to, data, contract = session.target(chain.method, chain.registry, tree.digest, sender)
        gas = session.estimate(chain.method, sender, to, data)
        max_fee, tip = session.fees()
        balance = session.check_funds(sender, gas, max_fee)
        plan = AnchorPlan(
            chain_id=session.chain_id,
            method=chain.method,
            contract=contract,
            sender=sender,
            batch_ids=tuple(b.batch_id for b in batches),
            tree_size=tree.size,
            root=tree.root.hex(),
            digest=tree.digest.hex(),
            to=to,
            data=data,
            gas=gas,
            max_fee_wei=max_fee,
            tip_wei=tip,
            balance_wei=balance,
        )
        if dry_run:
            return AnchorRun(
                session.chain_id,
                plan,
                None,
                tuple(resumed),
                remaining,
                True,
                time.perf_counter() - started,
            )
        with session.catalog() as con:
            anchor_id = state.create_anchor(
                con,
                journal=session.store.anchors_dir,
                chain_id=session.chain_id,
                method=chain.method,
                contract=contract,
                sender=sender,
                tree_size=tree.size,
                tree_root=tree.root.hex(),
                digest=tree.digest.hex(),
                confirmations=chain.confirmations,
                batches=[
                    (b.seq, tree.index_of(bytes.fromhex(b.commitment)), b.commitment)
                    for b in batches
                ],
            )
        session.notify(f"anchor #{anchor_id}: {tree.size} batch(es), digest {tree.digest.hex()}")
        record = session.drive(anchor_id, wait=wait)
        return AnchorRun(
            session.chain_id,
            plan,
            record,
            tuple(resumed),
            remaining,
            False,
            time.perf_counter() - started,
        )


@dataclass(frozen=True, slots=True)
class StatusReport:
    """Anchors and pending batches, with live confirmation counts when a node answered."""

    anchors: tuple[state.AnchorRecord, ...]
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
        session = _session(settings, chain, None, notify)
        chain_id = session.chain_id
        with _anchoring(settings):
            with session.catalog() as con:
                live = state.list_anchors(
                    con,
                    chain_id=chain_id,
                    states=_SENT,
                )
            for record in live:
                if record.state.in_block and not session.still_canonical(record):
                    record = session.reload(record.anchor_id)  # back to broadcast: a reorg
                if wait and record.state != state.AnchorState.CONFIRMED:
                    session.drive(record.anchor_id, wait=True)
            latest = session.node.block_number()
            with session.catalog() as con:
                for record in state.list_anchors(con, chain_id=chain_id):
                    if record.block_number is not None:
                        confirmations[record.anchor_id] = latest - record.block_number + 1
    with (
        store.lock(exclusive=False, timeout=settings.lock_timeout, purpose="read"),
        store.connect(write=False) as con,
    ):
        anchors = tuple(state.list_anchors(con))
        pending = tuple(store.batch_by_seq(con, s).batch_id for s in state.pending_batch_seqs(con))
    return StatusReport(anchors, pending, confirmations, chain_id)


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


def registry_artifact() -> dict[str, Any]:
    """The compiled AnchorRegistry (ABI and bytecode) shipped with provmint."""
    import json
    from importlib.resources import files

    data: dict[str, Any] = json.loads(
        files("provmint").joinpath("contracts/AnchorRegistry.json").read_text()
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
    node, chain_id = connect(chain)
    bytecode = registry_artifact()["bytecode"]
    max_fee, tip = capped_fees(node, chain)
    gas = int(
        node.estimate_gas({"from": key.address, "data": bytecode, "value": 0}) * CONTRACT_GAS_MARGIN
    )
    check_funds(node, chain, chain_id, key.address, gas * max_fee, "deploy")
    tx = {
        "type": 2,
        "chainId": chain_id,
        "nonce": node.nonce(key.address, "pending"),
        "value": 0,
        "data": bytecode,
        "gas": gas,
        "maxFeePerGas": max_fee,
        "maxPriorityFeePerGas": tip,
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
