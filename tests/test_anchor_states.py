"""The anchor state machine (provmint.store.anchors): the table of moves, and the store
refusing every move the table does not hold, tried for every pair of states on a real
DuckDB catalog."""

from __future__ import annotations

import itertools
from pathlib import Path

import duckdb
import pytest

from provmint.store import init_catalog
from provmint.store.anchors import (
    OPEN_STATES,
    TRANSITIONS,
    AnchorState,
    Attempt,
    add_attempt,
    create_anchor,
    get_anchor,
    update_anchor,
)

S = AnchorState


def test_every_state_has_its_moves_and_failed_ends() -> None:
    assert set(TRANSITIONS) == set(AnchorState)
    assert TRANSITIONS[S.FAILED] == frozenset()
    assert OPEN_STATES == (S.BUILT, S.SIGNED, S.BROADCAST, S.INCLUDED)
    reached, frontier = {S.BUILT}, [S.BUILT]
    while frontier:
        for nxt in TRANSITIONS[frontier.pop()] - reached:
            reached.add(nxt)
            frontier.append(nxt)
    assert reached == set(AnchorState)  # every state can happen
    assert [s for s in AnchorState if s.in_block] == [S.INCLUDED, S.CONFIRMED]


@pytest.fixture
def catalog(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(tmp_path / "catalog.duckdb"))
    init_catalog(con)
    return con


def _anchor(con: duckdb.DuckDBPyConnection, journal: Path, seq: int) -> int:
    return create_anchor(
        con,
        journal=journal,
        chain_id=31337,
        method="calldata",
        contract=None,
        sender="0x" + "11" * 20,
        tree_size=1,
        tree_root="ab" * 32,
        digest="cd" * 32,
        confirmations=1,
        batches=[(seq, 0, "ef" * 32)],
    )


@pytest.mark.parametrize(("now", "to"), list(itertools.product(AnchorState, AnchorState)))
def test_the_store_allows_exactly_the_tables_moves(
    catalog, tmp_path: Path, now: AnchorState, to: AnchorState
) -> None:
    journal = tmp_path / "anchors"
    anchor_id = _anchor(catalog, journal, 1)
    catalog.execute("UPDATE anchors SET state = ? WHERE anchor_id = ?", [now.value, anchor_id])
    allowed = to == now or to in TRANSITIONS[now]
    if allowed:
        update_anchor(catalog, anchor_id, journal=journal, state=to)
        assert get_anchor(catalog, anchor_id).state is to
    else:
        with pytest.raises(ValueError, match=f"cannot go from {now} to {to}"):
            update_anchor(catalog, anchor_id, journal=journal, state=to)
        assert get_anchor(catalog, anchor_id).state is now  # unchanged, rolled back


@pytest.mark.parametrize("now", list(AnchorState))
def test_a_signature_is_saved_only_where_signing_is_a_move(
    catalog, tmp_path: Path, now: AnchorState
) -> None:
    journal = tmp_path / "anchors"
    anchor_id = _anchor(catalog, journal, 1)
    catalog.execute("UPDATE anchors SET state = ? WHERE anchor_id = ?", [now.value, anchor_id])
    attempt = Attempt(1, "0x" + "22" * 32, 0, 10**9, 10**8, 21_000, b"\x02raw")
    if now == S.SIGNED or S.SIGNED in TRANSITIONS[now]:
        add_attempt(catalog, anchor_id, attempt, journal=journal)
        record = get_anchor(catalog, anchor_id)
        assert record.state is S.SIGNED and record.attempts == (attempt,)
    else:
        with pytest.raises(ValueError, match="cannot go from"):
            add_attempt(catalog, anchor_id, attempt, journal=journal)
        assert get_anchor(catalog, anchor_id).attempts == ()  # nothing saved


def test_an_unknown_state_is_refused(catalog, tmp_path: Path) -> None:
    anchor_id = _anchor(catalog, tmp_path / "anchors", 1)
    with pytest.raises(ValueError, match="'mined'"):
        update_anchor(catalog, anchor_id, journal=tmp_path / "anchors", state="mined")
