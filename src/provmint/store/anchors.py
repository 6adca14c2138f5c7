"""Anchor state in the catalog: one row per anchor, its batches, every signed transaction.

States, in order: ``built`` (anchor tree chosen) -> ``signed`` (raw transaction saved,
before any broadcast) -> ``broadcast`` -> ``included`` (in a block) -> ``confirmed``
(enough blocks on top), or ``failed`` with the reason (the batches are pending again).
Every signed transaction is kept (``anchor_txs``), so a resumed run can look for the
receipt of any of them and re-send the very same bytes. A batch belongs to at most one
anchor that is not ``failed``.

Every change is also written to ``<store>/anchors/<id>.json`` (``provmint-anchor-record/1``:
the record, its batches by id and every signed transaction) before it is committed, so
that ``provmint store repair`` can restore anchors when the catalog is lost. The copy is
never behind the catalog: at worst it holds a change whose commit was interrupted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provmint.errors import StoreCorruptError, StoreError
from provmint.store.files import load_json, write_atomic

if TYPE_CHECKING:
    import duckdb

__all__ = [
    "ANCHOR_SCHEMA",
    "OPEN_STATES",
    "RECORD_FORMAT",
    "STATES",
    "TRANSITIONS",
    "AnchorRecord",
    "AnchorState",
    "Attempt",
    "add_attempt",
    "all_anchors",
    "anchor_for_batch",
    "create_anchor",
    "get_anchor",
    "list_anchors",
    "pending_batch_seqs",
    "read_anchor_file",
    "restore_anchor",
    "update_anchor",
    "write_anchor_file",
]

RECORD_FORMAT = "provmint-anchor-record/1"


class AnchorState(StrEnum):
    """Where an anchor is on its way into the chain (stored as its value)."""

    BUILT = "built"
    """Its anchor tree is chosen; nothing is signed yet."""
    SIGNED = "signed"
    """A transaction is signed and saved, not yet sent (or signed again to replace one)."""
    BROADCAST = "broadcast"
    """Sent; waiting for a receipt (also after a reorg dropped its block)."""
    INCLUDED = "included"
    """In a block; waiting for the confirmations asked for."""
    CONFIRMED = "confirmed"
    """Enough blocks on top of it."""
    FAILED = "failed"
    """The transaction reverted: its batches are pending again."""

    @property
    def is_open(self) -> bool:
        """Still on its way (a run of ``provmint anchor`` resumes it)."""
        return self not in (AnchorState.CONFIRMED, AnchorState.FAILED)

    @property
    def in_block(self) -> bool:
        """In a block (a proof can carry the anchor)."""
        return self in (AnchorState.INCLUDED, AnchorState.CONFIRMED)


TRANSITIONS: Mapping[AnchorState, frozenset[AnchorState]] = {
    AnchorState.BUILT: frozenset({AnchorState.SIGNED}),
    AnchorState.SIGNED: frozenset({AnchorState.BROADCAST}),
    # A receipt (ok or reverted), or a new signature: the nonce was taken, or a fee bump.
    AnchorState.BROADCAST: frozenset(
        {AnchorState.INCLUDED, AnchorState.FAILED, AnchorState.SIGNED}
    ),
    # Enough confirmations, or a reorg dropped the block.
    AnchorState.INCLUDED: frozenset({AnchorState.CONFIRMED, AnchorState.BROADCAST}),
    AnchorState.CONFIRMED: frozenset({AnchorState.BROADCAST}),  # a deep reorg
    AnchorState.FAILED: frozenset(),
}
"""The moves an anchor may make; :func:`update_anchor` and :func:`add_attempt` refuse any
other (a change to the same state is no move, and always allowed)."""

STATES = tuple(AnchorState)
OPEN_STATES = tuple(s for s in AnchorState if s.is_open)

ANCHOR_SCHEMA = """
CREATE TABLE IF NOT EXISTS anchors (
    anchor_id INTEGER PRIMARY KEY,
    created_at VARCHAR NOT NULL,
    updated_at VARCHAR NOT NULL,
    chain_id BIGINT NOT NULL,
    method VARCHAR NOT NULL,
    contract VARCHAR,
    sender VARCHAR NOT NULL,
    tree_size INTEGER NOT NULL,
    tree_root VARCHAR NOT NULL,
    digest VARCHAR NOT NULL,
    state VARCHAR NOT NULL,
    confirmations INTEGER NOT NULL,
    tx_hash VARCHAR,
    block_number BIGINT,
    block_hash VARCHAR,
    block_time BIGINT,
    gas_used BIGINT,
    fee_wei VARCHAR,
    error VARCHAR
);
CREATE TABLE IF NOT EXISTS anchor_batches (
    anchor_id INTEGER NOT NULL, batch_seq INTEGER NOT NULL, leaf_index INTEGER NOT NULL,
    commitment VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS anchor_txs (
    anchor_id INTEGER NOT NULL, attempt INTEGER NOT NULL, tx_hash VARCHAR NOT NULL,
    nonce BIGINT NOT NULL, max_fee_wei VARCHAR NOT NULL, tip_wei VARCHAR NOT NULL,
    gas BIGINT NOT NULL, raw_tx VARCHAR NOT NULL, created_at VARCHAR NOT NULL
);
"""

_COLUMNS = (
    "anchor_id, created_at, updated_at, chain_id, method, contract, sender, tree_size, "
    "tree_root, digest, state, confirmations, tx_hash, block_number, block_hash, block_time, "
    "gas_used, fee_wei, error"
)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Attempt:
    """One signed transaction of an anchor (a replacement is a new attempt)."""

    attempt: int
    tx_hash: str
    nonce: int
    max_fee_wei: int
    tip_wei: int
    gas: int
    raw_tx: bytes


@dataclass(frozen=True, slots=True)
class AnchorRecord:
    """An anchor as the catalog records it."""

    anchor_id: int
    created_at: str
    updated_at: str
    chain_id: int
    method: str
    contract: str | None
    sender: str
    tree_size: int
    tree_root: str
    digest: str
    state: AnchorState
    confirmations: int
    tx_hash: str | None
    block_number: int | None
    block_hash: str | None
    block_time: int | None
    gas_used: int | None
    fee_wei: str | None
    error: str | None
    batches: tuple[tuple[int, int, str], ...] = ()
    attempts: tuple[Attempt, ...] = field(default=())

    def to_json(self, *, attempts: bool = True) -> dict[str, Any]:
        """JSON-ready form (no raw transactions): the one shape of an anchor
        (``docs/schemas/anchor.schema.json``). ``attempts`` (the hashes of the
        transactions sent) only when the record was read with them: the catalog view
        that batch and product listings read leaves them out."""
        out = {
            "anchor_id": self.anchor_id,
            "state": self.state,
            "chain_id": self.chain_id,
            "method": self.method,
            "contract": self.contract,
            "sender": self.sender,
            "tree_size": self.tree_size,
            "tree_root": self.tree_root,
            "digest": self.digest,
            "confirmations_required": self.confirmations,
            "tx_hash": self.tx_hash,
            "block_number": self.block_number,
            "block_hash": self.block_hash,
            "block_time": self.block_time,
            "gas_used": self.gas_used,
            "fee_wei": self.fee_wei,
            "error": self.error,
            "attempts": [a.tx_hash for a in self.attempts],
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }
        if not attempts:
            del out["attempts"]
        return out


def _load(con: duckdb.DuckDBPyConnection, rows: list[tuple[Any, ...]]) -> list[AnchorRecord]:
    out = []
    for row in rows:
        anchor_id = int(row[0])
        batches = con.execute(
            "SELECT batch_seq, leaf_index, commitment FROM anchor_batches WHERE anchor_id = ? "
            "ORDER BY leaf_index",
            [anchor_id],
        ).fetchall()
        attempts = con.execute(
            "SELECT attempt, tx_hash, nonce, max_fee_wei, tip_wei, gas, raw_tx FROM anchor_txs "
            "WHERE anchor_id = ? ORDER BY attempt",
            [anchor_id],
        ).fetchall()
        record = AnchorRecord(*row)
        out.append(
            replace(
                record,
                state=AnchorState(record.state),
                batches=tuple((int(a), int(b), str(c)) for a, b, c in batches),
                attempts=tuple(
                    Attempt(int(a), h, int(n), int(f), int(t), int(g), bytes.fromhex(r))
                    for a, h, n, f, t, g, r in attempts
                ),
            )
        )
    return out


def list_anchors(
    con: duckdb.DuckDBPyConnection,
    *,
    chain_id: int | None = None,
    states: tuple[AnchorState, ...] = STATES,
) -> list[AnchorRecord]:
    """Anchors, oldest first, optionally of one chain and in some states."""
    marks = ", ".join("?" for _ in states)
    query = f"SELECT {_COLUMNS} FROM anchors WHERE state IN ({marks})"
    args: list[Any] = [state.value for state in states]
    if chain_id is not None:
        query += " AND chain_id = ?"
        args.append(chain_id)
    return _load(con, con.execute(query + " ORDER BY anchor_id", args).fetchall())


def all_anchors(con: duckdb.DuckDBPyConnection) -> list[AnchorRecord]:
    """Every anchor, oldest first, with the batches it covers but not its signed
    transactions: two queries however many anchors there are (``provmint stats`` and the
    dashboard read a year of hourly anchors this way; :func:`list_anchors` asks twice per
    anchor)."""
    rows = con.execute(f"SELECT {_COLUMNS} FROM anchors ORDER BY anchor_id").fetchall()
    covered: dict[int, list[tuple[int, int, str]]] = {}
    for anchor_id, seq, leaf, commitment in con.execute(
        "SELECT anchor_id, batch_seq, leaf_index, commitment FROM anchor_batches "
        "ORDER BY anchor_id, leaf_index"
    ).fetchall():
        covered.setdefault(int(anchor_id), []).append((int(seq), int(leaf), str(commitment)))
    out = []
    for row in rows:
        record = AnchorRecord(*row)
        out.append(
            replace(
                record,
                state=AnchorState(record.state),
                batches=tuple(covered.get(record.anchor_id, ())),
            )
        )
    return out


def get_anchor(con: duckdb.DuckDBPyConnection, anchor_id: int) -> AnchorRecord:
    """One anchor by id."""
    rows = con.execute(
        f"SELECT {_COLUMNS} FROM anchors WHERE anchor_id = ?", [anchor_id]
    ).fetchall()
    if not rows:
        raise StoreError(f"no anchor #{anchor_id} in the catalog")
    return _load(con, rows)[0]


def anchor_for_batch(con: duckdb.DuckDBPyConnection, batch_seq: int) -> AnchorRecord | None:
    """The live (not failed) anchor that covers a batch, if any."""
    rows = con.execute(
        f"SELECT {', '.join('a.' + c.strip() for c in _COLUMNS.split(','))} FROM anchors a "
        "JOIN anchor_batches b USING (anchor_id) WHERE b.batch_seq = ? AND a.state <> ? "
        "ORDER BY a.anchor_id DESC LIMIT 1",
        [batch_seq, AnchorState.FAILED.value],
    ).fetchall()
    return _load(con, rows)[0] if rows else None


def pending_batch_seqs(con: duckdb.DuckDBPyConnection) -> list[int]:
    """Sequence numbers of batches no live anchor covers, oldest first."""
    rows = con.execute(
        "SELECT seq FROM batches WHERE seq NOT IN (SELECT b.batch_seq FROM anchor_batches b "
        "JOIN anchors a USING (anchor_id) WHERE a.state <> ?) ORDER BY seq",
        [AnchorState.FAILED.value],
    ).fetchall()
    return [int(r[0]) for r in rows]


def create_anchor(
    con: duckdb.DuckDBPyConnection,
    *,
    journal: Path,
    chain_id: int,
    method: str,
    contract: str | None,
    sender: str,
    tree_size: int,
    tree_root: str,
    digest: str,
    confirmations: int,
    batches: list[tuple[int, int, str]],
) -> int:
    """Record a new anchor (state ``built``) and the batches it covers, atomically."""
    now = _now()
    con.execute("BEGIN TRANSACTION")
    try:
        taken = con.execute(
            "SELECT count(*) FROM anchor_batches b JOIN anchors a USING (anchor_id) "
            f"WHERE a.state <> ? AND b.batch_seq IN ({', '.join('?' for _ in batches)})",
            [AnchorState.FAILED.value, *(seq for seq, _, _ in batches)],
        ).fetchone()
        if taken and taken[0]:
            raise StoreError("a batch of this anchor is already covered by another anchor")
        row = con.execute("SELECT coalesce(max(anchor_id), 0) + 1 FROM anchors").fetchone()
        anchor_id = int(row[0]) if row else 1
        con.execute(
            "INSERT INTO anchors (anchor_id, created_at, updated_at, chain_id, method, contract, "
            "sender, tree_size, tree_root, digest, state, confirmations) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                anchor_id,
                now,
                now,
                chain_id,
                method,
                contract,
                sender,
                tree_size,
                tree_root,
                digest,
                AnchorState.BUILT.value,
                confirmations,
            ],
        )
        con.executemany(
            "INSERT INTO anchor_batches VALUES (?, ?, ?, ?)",
            [[anchor_id, seq, index, commitment] for seq, index, commitment in batches],
        )
        write_anchor_file(con, journal, anchor_id)
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")
    return anchor_id


def add_attempt(
    con: duckdb.DuckDBPyConnection, anchor_id: int, attempt: Attempt, *, journal: Path
) -> None:
    """Save a signed transaction before it is broadcast, and mark the anchor ``signed``."""
    con.execute("BEGIN TRANSACTION")
    try:
        _check_move(con, anchor_id, AnchorState.SIGNED)
        con.execute(
            "INSERT INTO anchor_txs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                anchor_id,
                attempt.attempt,
                attempt.tx_hash,
                attempt.nonce,
                str(attempt.max_fee_wei),
                str(attempt.tip_wei),
                attempt.gas,
                attempt.raw_tx.hex(),
                _now(),
            ],
        )
        con.execute(
            "UPDATE anchors SET state = ?, tx_hash = ?, updated_at = ? WHERE anchor_id = ?",
            [AnchorState.SIGNED.value, attempt.tx_hash, _now(), anchor_id],
        )
        write_anchor_file(con, journal, anchor_id)
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


_UPDATABLE = {
    "state",
    "tx_hash",
    "block_number",
    "block_hash",
    "block_time",
    "gas_used",
    "fee_wei",
    "error",
    "confirmations",
}


def _check_move(con: duckdb.DuckDBPyConnection, anchor_id: int, to: AnchorState) -> None:
    """Refuse a change of state that :data:`TRANSITIONS` does not allow (a bug, not a
    user's mistake: ValueError)."""
    row = con.execute("SELECT state FROM anchors WHERE anchor_id = ?", [anchor_id]).fetchone()
    if row is None:
        raise StoreError(f"no anchor #{anchor_id} in the catalog")
    now = AnchorState(row[0])
    if to != now and to not in TRANSITIONS[now]:
        raise ValueError(f"anchor #{anchor_id} cannot go from {now} to {to}")


def update_anchor(
    con: duckdb.DuckDBPyConnection, anchor_id: int, *, journal: Path, **fields: Any
) -> None:
    """Change an anchor's chain facts and its state (along :data:`TRANSITIONS` only)."""
    bad = set(fields) - _UPDATABLE
    if bad:
        raise ValueError(f"cannot update {sorted(bad)}")
    if "state" in fields:
        fields["state"] = AnchorState(fields["state"]).value  # ValueError when unknown
    assignments = ", ".join(f"{name} = ?" for name in fields)
    con.execute("BEGIN TRANSACTION")
    try:
        if "state" in fields:
            _check_move(con, anchor_id, AnchorState(fields["state"]))
        con.execute(
            f"UPDATE anchors SET {assignments}, updated_at = ? WHERE anchor_id = ?",
            [*fields.values(), _now(), anchor_id],
        )
        write_anchor_file(con, journal, anchor_id)
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


# -- the copy in files, for store repair ----------------------------------------------

_RECORD_FIELDS = tuple(c.strip() for c in _COLUMNS.split(","))
_ATTEMPT_FIELDS = (
    "attempt",
    "tx_hash",
    "nonce",
    "max_fee_wei",
    "tip_wei",
    "gas",
    "raw_tx",
    "created_at",
)


def anchor_document(con: duckdb.DuckDBPyConnection, anchor_id: int) -> dict[str, Any]:
    """An anchor as a ``provmint-anchor-record/1`` document: its catalog row, its batches
    by batch id (sequence numbers are the catalog's own) and every signed transaction."""
    row = con.execute(f"SELECT {_COLUMNS} FROM anchors WHERE anchor_id = ?", [anchor_id]).fetchone()
    if row is None:
        raise StoreError(f"no anchor #{anchor_id} in the catalog")
    batches = con.execute(
        "SELECT b.batch_id, a.leaf_index, a.commitment FROM anchor_batches a "
        "JOIN batches b ON b.seq = a.batch_seq WHERE a.anchor_id = ? ORDER BY a.leaf_index",
        [anchor_id],
    ).fetchall()
    attempts = con.execute(
        f"SELECT {', '.join(_ATTEMPT_FIELDS)} FROM anchor_txs WHERE anchor_id = ? ORDER BY attempt",
        [anchor_id],
    ).fetchall()
    return {
        "format": RECORD_FORMAT,
        **dict(zip(_RECORD_FIELDS, row, strict=True)),
        "batches": [{"batch_id": b, "leaf_index": int(i), "commitment": c} for b, i, c in batches],
        "attempts": [dict(zip(_ATTEMPT_FIELDS, a, strict=True)) for a in attempts],
    }


def record_path(directory: Path, anchor_id: int) -> Path:
    """Where the copy of anchor ``anchor_id`` lives."""
    return directory / f"{anchor_id:06d}.json"


def write_anchor_file(con: duckdb.DuckDBPyConnection, directory: Path, anchor_id: int) -> None:
    """Write the anchor's document (see :func:`anchor_document`) durably to ``directory``."""
    doc = anchor_document(con, anchor_id)
    directory.mkdir(exist_ok=True)
    write_atomic(
        record_path(directory, anchor_id),
        (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8"),
    )


def read_anchor_file(path: Path) -> dict[str, Any]:
    """A ``provmint-anchor-record/1`` document from a file; StoreCorruptError when it is
    not one."""
    try:
        doc = load_json(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise StoreCorruptError(f"{path}: unreadable anchor record: {exc}") from exc
    fields = {*_RECORD_FIELDS, "format", "batches", "attempts"}
    if not isinstance(doc, dict) or doc.get("format") != RECORD_FORMAT or set(doc) != fields:
        raise StoreCorruptError(f"{path}: not a {RECORD_FORMAT} document")
    if not isinstance(doc["anchor_id"], int) or doc["state"] not in STATES:
        raise StoreCorruptError(f"{path}: not a {RECORD_FORMAT} document")
    return doc


def restore_anchor(
    con: duckdb.DuckDBPyConnection, doc: dict[str, Any], seq_of: dict[str, int]
) -> list[str]:
    """Insert an anchor document into a catalog whose batches are ``seq_of`` (batch id ->
    sequence number). Returns the ids of its batches the catalog does not have (those
    are left out of the anchor's batch rows)."""
    con.execute(
        f"INSERT INTO anchors ({_COLUMNS}) VALUES ({', '.join('?' for _ in _RECORD_FIELDS)})",
        [doc[name] for name in _RECORD_FIELDS],
    )
    missing = [b["batch_id"] for b in doc["batches"] if b["batch_id"] not in seq_of]
    con.executemany(
        "INSERT INTO anchor_batches VALUES (?, ?, ?, ?)",
        [
            [doc["anchor_id"], seq_of[b["batch_id"]], b["leaf_index"], b["commitment"]]
            for b in doc["batches"]
            if b["batch_id"] in seq_of
        ],
    )
    if doc["attempts"]:
        con.executemany(
            f"INSERT INTO anchor_txs (anchor_id, {', '.join(_ATTEMPT_FIELDS)}) "
            f"VALUES (?, {', '.join('?' for _ in _ATTEMPT_FIELDS)})",
            [[doc["anchor_id"], *(a[name] for name in _ATTEMPT_FIELDS)] for a in doc["attempts"]],
        )
    return missing
