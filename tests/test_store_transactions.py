"""The store owns its transactions: catalog connections come with the store lock
(:meth:`Store.writing`, :meth:`Store.reading`), and no code outside ``store/`` speaks SQL
or knows the catalog's file names."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pytest

from provmint.errors import ProvmintError, StoreBusyError, StoreError
from provmint.store import Store, transaction, view

SRC = Path(__file__).resolve().parents[1] / "src" / "provmint"

# ------------------------------------------------------------------ no SQL outside store/

SQL_ALLOWED: set[str] = set()
"""Modules outside ``store/`` that may hold SQL, as paths relative to ``src/provmint``
(a directory name covers its package). Empty: nothing is exempt; keep it that way."""

_SQL_CALLS = {"execute", "executemany", "sql"}
"""DuckDB's (and DB-API's) ways of running a statement."""
_SQL_TEXT = re.compile(
    r"^\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|BEGIN|COMMIT|ROLLBACK|CHECKPOINT"
    r"|PRAGMA|ATTACH|WITH)\b"
    r"|\bSELECT\b.*\bFROM\b|\bINSERT\s+INTO\b|\bDELETE\s+FROM\b|\bUPDATE\s+\w+\s+SET\b"
    r"|\bFROM\s+\w+\s+(WHERE|ORDER\s+BY|GROUP\s+BY|LIMIT)\b",
    re.DOTALL,
)
"""A string that reads as SQL (upper-case keywords, as provmint writes its SQL)."""
_CATALOG_FILES = (".wal", ".duckdb")
"""What only the store may know of DuckDB's files."""


def _docstrings(tree: ast.AST) -> set[int]:
    """The ids of the docstring nodes in ``tree`` (prose, not SQL: help texts may name
    the catalog file a user sees)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
    return out


def _outside_store(src: Path, allowed: set[str]) -> Iterator[tuple[str, ast.AST]]:
    """Every module under ``src`` but ``store/`` (and ``allowed``), parsed."""
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src)
        if rel.parts[0] == "store" or rel.parts[0] in allowed or str(rel) in allowed:
            continue
        yield str(rel), ast.parse(path.read_text(), str(path))


def sql_outside_store(src: Path, allowed: set[str] = SQL_ALLOWED) -> list[str]:
    """Where modules of ``src`` outside ``store/`` run statements, hold SQL text, or name
    DuckDB's files: ``"path:line: what"``."""
    found: list[tuple[str, int, str]] = []
    for rel, tree in _outside_store(src, allowed):
        skip = _docstrings(tree)
        for node in ast.walk(tree):
            line = getattr(node, "lineno", 0)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                if node.func.attr in _SQL_CALLS:
                    found.append((rel, line, f".{node.func.attr}() runs SQL"))
                elif node.func.attr == "connect" and ast.unparse(node.func.value) == "duckdb":
                    found.append((rel, line, "duckdb.connect() opens a database"))
            elif isinstance(node, ast.Attribute) and node.attr == "catalog_wal_path":
                found.append((rel, line, "knows the catalog's write-ahead log"))
            elif text := _text(node, skip):
                if _SQL_TEXT.search(text):
                    found.append((rel, line, f"SQL text {text[:60]!r}"))
                elif any(name in text for name in _CATALOG_FILES):
                    found.append((rel, line, f"names a DuckDB file {text[:60]!r}"))
    return [f"{rel}:{line}: {what}" for rel, line, what in sorted(found)]


def _text(node: ast.AST, skip: set[int]) -> str:
    """The text of a string constant, or of an f-string with ``{}`` for its fields (whose
    pieces are then skipped: an f-string is checked whole); "" for anything else."""
    if isinstance(node, ast.JoinedStr):
        skip.update(id(part) for part in node.values)
        return "".join(p.value if isinstance(p, ast.Constant) else "{}" for p in node.values)
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
        return node.value
    return ""


def test_no_sql_outside_the_store() -> None:
    """Tables, statements, transactions and DuckDB's file names live in ``store/``; the
    verbs call its named functions."""
    assert sql_outside_store(SRC) == []


CONNECT_ALLOWED: set[str] = set()
"""Modules outside ``store/`` that may open catalog connections themselves (paths
relative to ``src/provmint``). Empty: every verb goes through the store; keep it so."""


def catalog_connections(src: Path, allowed: set[str] = CONNECT_ALLOWED) -> list[str]:
    """Where modules of ``src`` outside ``store/`` open a catalog connection themselves
    (``<store>.connect(write=...)``) instead of through ``writing()``/``reading()``, which
    take the store lock with it."""
    found = []
    for rel, tree in _outside_store(src, allowed):
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "connect"
                and any(k.arg == "write" for k in node.keywords)
            ):
                found.append(f"{rel}:{node.lineno}: {ast.unparse(node.func)}()")
    return sorted(found)


def test_catalog_connections_come_with_the_lock() -> None:
    """Outside ``store/`` a catalog connection is opened only with its lock:
    :meth:`Store.writing` or :meth:`Store.reading`."""
    assert catalog_connections(SRC) == []


def test_the_sql_check_finds_sql(tmp_path: Path) -> None:
    """The check itself: each kind of SQL outside ``store/`` is found, the store's own and
    prose are not."""
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "ok.py").write_text('con.execute("SELECT 1 FROM batches")\n')
    (tmp_path / "verb.py").write_text(
        '"""Docstrings may say COMMIT, SELECT x FROM y and catalog.duckdb."""\n'
        'con.execute("SELECT 1")\n'
        'q = f"{columns} FROM batches WHERE seq = ?"\n'
        'BEGIN = "BEGIN TRANSACTION"\n'
        'wal = root / "catalog.duckdb.wal"\n'
        "con = duckdb.connect(path)\n"
        "store.catalog_wal_path.exists()\n"
        'message = "select a batch from the list"\n'
    )
    found = sql_outside_store(tmp_path, set())
    assert [f.split(":")[1] for f in found] == ["2", "2", "3", "4", "5", "6", "7"], found
    assert sql_outside_store(tmp_path, {"verb.py"}) == []


# ------------------------------------------------------------------ writing() and reading()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """A new, empty store (its catalog created by a first write)."""
    store = Store.open(tmp_path / "s", create=True)
    with store.writing(timeout=0, purpose="test"):
        pass
    return store


def _lock_is_free(store: Store, *, exclusive: bool) -> bool:
    try:
        with store.lock(exclusive=exclusive, timeout=0, purpose="probe"):
            return True
    except StoreBusyError:
        return False


def test_writing_holds_the_exclusive_lock_while_connected(store: Store) -> None:
    with store.writing(timeout=0, purpose="test write") as con:
        assert not _lock_is_free(store, exclusive=True)
        assert not _lock_is_free(store, exclusive=False)
        con.execute("INSERT OR REPLACE INTO meta VALUES ('probe', 'x')")
        # The holder says why it holds the lock.
        with (
            pytest.raises(StoreBusyError, match="test write"),
            store.writing(timeout=0, purpose="second"),
        ):
            pass
    assert _lock_is_free(store, exclusive=True)
    with store.reading(timeout=0) as con:
        assert con.execute("SELECT value FROM meta WHERE key = 'probe'").fetchone() == ("x",)


def test_reading_holds_the_shared_lock_and_cannot_write(store: Store) -> None:
    with store.reading(timeout=0) as con:
        assert not _lock_is_free(store, exclusive=True)
        assert _lock_is_free(store, exclusive=False)  # readers share
        with store.reading(timeout=0) as other:
            assert other.execute("SELECT count(*) FROM batches").fetchone() == (0,)
        assert con.execute("SELECT count(*) FROM batches").fetchone() == (0,)
    assert _lock_is_free(store, exclusive=True)
    # DuckDB refuses the write; the error leaves the block as the store's.
    with pytest.raises(ProvmintError, match="read-only"), store.reading(timeout=0) as con:
        con.execute("INSERT OR REPLACE INTO meta VALUES ('probe', 'x')")
    assert _lock_is_free(store, exclusive=True)


def test_writing_waits_and_says_for_whom(store: Store) -> None:
    told: list[str] = []
    with (
        store.lock(exclusive=False, timeout=0, purpose="reader"),
        pytest.raises(StoreBusyError),
        store.writing(timeout=0.2, purpose="test", on_wait=told.append),
    ):
        pass
    assert len(told) == 1 and "provmint" in told[0]


@pytest.mark.parametrize("write", [True, False])
def test_an_error_inside_propagates_and_releases_everything(store: Store, write: bool) -> None:
    opened = store.writing(timeout=0, purpose="test") if write else store.reading(timeout=0)
    with pytest.raises(RuntimeError, match="boom"), opened as con:
        raise RuntimeError("boom")
    assert _lock_is_free(store, exclusive=True)
    with pytest.raises(duckdb.ConnectionException):  # closed, not left open
        con.execute("SELECT 1")


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What the store's lock, its catalog connections and the readers' snapshot do, in
    order: lock, open, closed, unlock, and the snapshot written."""
    events: list[str] = []
    lock, connect = Store.lock, Store.connect

    @contextmanager
    def spy_lock(self: Store, **kwargs: Any) -> Iterator[None]:
        with lock(self, **kwargs):
            events.append("lock")
            yield
            events.append("unlock")

    @contextmanager
    def spy_connect(self: Store, **kwargs: Any) -> Iterator[duckdb.DuckDBPyConnection]:
        with connect(self, **kwargs) as con:
            events.append("open")
            yield con
        events.append("closed")

    refresh = view.refresh_snapshot

    def spy_refresh(store: Store, read: Any = None) -> Any:
        events.append("snapshot" if read is not None else "snapshot read anew")
        return refresh(store, read)

    monkeypatch.setattr(Store, "lock", spy_lock)
    monkeypatch.setattr(Store, "connect", spy_connect)
    monkeypatch.setattr(view, "refresh_snapshot", spy_refresh)
    return events


@pytest.mark.parametrize("write", [True, False])
def test_lock_first_connection_inside(store: Store, write: bool, events: list[str]) -> None:
    """The lock is taken before the connection opens and released after it closes (the
    snapshot a write leaves for readers is written under the lock too)."""
    opened = store.writing(timeout=0, purpose="test") if write else store.reading(timeout=0)
    with opened:
        events.append("work")
    # A write connection, once closed, leaves the readers' snapshot of the view it read
    # before closing (no second connection): that too is inside the lock.
    snapshot = ["snapshot"] if write else []
    assert events == ["lock", "open", "work", *snapshot, "closed", "unlock"]
    if write:
        assert view.load_snapshot(store) is not None


def test_writing_later_connects_inside_the_lock_when_first_asked(
    store: Store, events: list[str]
) -> None:
    """A writer that opens the catalog later holds the lock from the start, connects once
    when first asked, and closes before the lock is released, as :meth:`writing` does."""
    with store.writing_later(timeout=0, purpose="test") as connection:
        events.append("work")
        assert not _lock_is_free(store, exclusive=False)
        con = connection()
        assert connection() is con
        con.execute("INSERT OR REPLACE INTO meta VALUES ('probe', 'later')")
        events.append("more work")
    assert events == ["lock", "work", "open", "more work", "snapshot", "closed", "unlock"]
    with store.reading(timeout=0) as con:
        assert con.execute("SELECT value FROM meta WHERE key = 'probe'").fetchone() == ("later",)


def test_writing_later_never_asked_never_connects(store: Store, events: list[str]) -> None:
    with store.writing_later(timeout=0, purpose="t"):
        events.append("work")
    assert events == ["lock", "work", "unlock"]
    with pytest.raises(RuntimeError, match="boom"), store.writing_later(timeout=0, purpose="t"):
        raise RuntimeError("boom")
    assert _lock_is_free(store, exclusive=True)


def test_a_transaction_left_open_never_reaches_the_readers_snapshot(store: Store) -> None:
    """A writer's block that returns with a transaction still open (closing the
    connection rolls it back): the readers' snapshot holds what the catalog holds, not
    the uncommitted change."""
    with store.writing(timeout=0, purpose="test") as con:
        con.execute("BEGIN TRANSACTION")
        con.execute("INSERT INTO index_runs VALUES (1, 0, 'key-00000000000000aa.run', 5)")
        assert any(view.read_catalog_view(store, con).runs.values())  # seen uncommitted
    snapshot = view.load_snapshot(store)
    with store.reading(timeout=0) as con:
        assert snapshot == view.read_catalog_view(store, con)
    assert snapshot is not None and not any(snapshot.runs.values())


def test_reading_an_empty_store_names_the_way_out(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "new", create=True)
    with (
        pytest.raises(StoreError, match="no batches in store") as info,
        store.reading(timeout=0),
    ):
        pass
    assert info.value.hint == "mint a batch first"
    assert _lock_is_free(store, exclusive=True)


# ------------------------------------------------------------------ transaction()


def test_transaction_commits_or_rolls_back() -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE t (x INTEGER)")
    with transaction(con):
        con.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(RuntimeError), transaction(con):
        con.execute("INSERT INTO t VALUES (2)")
        raise RuntimeError("undo")
    assert con.execute("SELECT x FROM t").fetchall() == [(1,)]
    with transaction(con):  # a new one can start: the failed one was ended
        con.execute("INSERT INTO t VALUES (3)")
    assert con.execute("SELECT x FROM t ORDER BY x").fetchall() == [(1,), (3,)]
