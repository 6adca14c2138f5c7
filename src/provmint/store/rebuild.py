"""A catalog rebuilt from the store's files (``provmint store repair``), written beside
the live one and only then swapped in.

The repair itself (reading manifests, parts and anchor files, deciding what to restore)
is :mod:`provmint.repair`; this module holds its catalog work, so that the catalog's
tables, transactions and file names stay inside the store package: what the previous
catalog says (:func:`read_summary`), the new catalog (:func:`build_catalog`) and the
swap (:func:`swap_catalog`). Every function needs the store's exclusive lock held.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provmint.store import BatchInfo, Store, init_catalog, insert_batch, transaction
from provmint.store.anchors import anchor_document, restore_anchor
from provmint.store.files import fsync_dir
from provmint.store.lock import pid_alive

if TYPE_CHECKING:
    from provmint.store.lookup import IndexUpdate

__all__ = ["CatalogSummary", "RebuiltCatalog", "build_catalog", "read_summary", "swap_catalog"]

_REPAIR_NAME = re.compile(r"^catalog\.duckdb\.repair-(?P<pid>[0-9]+)(\.wal)?$")
"""A catalog being rebuilt (and its write-ahead log), named after the rebuilding pid."""


@dataclass(frozen=True, slots=True)
class CatalogSummary:
    """What a catalog says that the files may not: each batch's sequence number and
    commitment (by batch id), and each anchor's document (by anchor id)."""

    seq_of: dict[str, int]
    commitment_of: dict[str, str]
    anchors: dict[int, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class RebuiltCatalog:
    """A new catalog written beside the store's, not yet in place."""

    path: Path
    uncovered: tuple[tuple[int, list[str]], ...]
    """Anchors (by id, in the order given) covering batches the new catalog does not
    hold, with those batch ids (left out of the anchor's batch rows)."""


def read_summary(store: Store) -> CatalogSummary:
    """What the store's current catalog says (:class:`CatalogSummary`). Raises
    ProvmintError when it cannot be read (missing, damaged)."""
    seq_of: dict[str, int] = {}
    commitment_of: dict[str, str] = {}
    anchors: dict[int, dict[str, Any]] = {}
    with store.connect(write=False) as con:
        for seq, batch_id, commitment in con.execute(
            "SELECT seq, batch_id, commitment FROM batches"
        ).fetchall():
            seq_of[batch_id] = int(seq)
            commitment_of[batch_id] = commitment
        for (anchor_id,) in con.execute("SELECT anchor_id FROM anchors").fetchall():
            anchors[int(anchor_id)] = anchor_document(con, anchor_id)
    return CatalogSummary(seq_of, commitment_of, anchors)


def build_catalog(
    store: Store,
    batches: Sequence[BatchInfo],
    index: IndexUpdate,
    anchors: Sequence[dict[str, Any]],
) -> RebuiltCatalog:
    """Write a new catalog beside the store's (left as it is) with ``batches`` (numbered),
    the store's index ``index`` (its runs already written) and the anchor documents
    ``anchors``, in one transaction, checkpointed so that it is one self-contained file.
    Put it in place with :func:`swap_catalog`.

    What an interrupted rebuild of a dead process left is removed first. On failure the
    new file is removed and ``index`` discarded (a DuckDB error becomes
    :meth:`Store.catalog_error`'s)."""
    import duckdb

    _remove_dead_builds(store)
    path = store.root / f"catalog.duckdb.repair-{os.getpid()}"
    path.unlink(missing_ok=True)
    seq_of = {info.batch_id: info.seq for info in batches}
    uncovered: list[tuple[int, list[str]]] = []
    try:
        con = duckdb.connect(str(path))
        try:
            init_catalog(con)
            with transaction(con):
                for info in batches:
                    insert_batch(con, info)
                index.record(con)
                for doc in anchors:
                    missing = restore_anchor(con, doc, seq_of)
                    if missing:
                        uncovered.append((doc["anchor_id"], missing))
            store.refresh_view(con)
            con.execute("CHECKPOINT")
        finally:
            con.close()
    except duckdb.Error as exc:
        path.unlink(missing_ok=True)
        index.discard()
        raise store.catalog_error(exc) from exc
    except BaseException:
        path.unlink(missing_ok=True)
        index.discard()
        raise
    return RebuiltCatalog(path, tuple(uncovered))


def _remove_dead_builds(store: Store) -> None:
    """Remove the catalogs (and logs) that rebuilds by processes no longer running left."""
    for stale in store.root.iterdir():
        match = _REPAIR_NAME.match(stale.name)
        if match and not pid_alive(int(match["pid"])):
            stale.unlink()


def swap_catalog(store: Store, new: Path) -> str | None:
    """Put the catalog ``new`` (from :func:`build_catalog`) in place, the old one (if any)
    beside it under a dated name, never deleted. Returns that name, relative to the
    store."""
    moved = None
    if store.catalog_path.exists():
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        old = store.catalog_path.with_name(f"{store.catalog_path.name}.before-repair-{stamp}")
        # The old catalog's unmerged log goes with it, or DuckDB would replay it into the
        # new one.
        wal = store.catalog_wal_path
        if wal.exists():
            os.replace(wal, old.with_name(old.name + ".wal"))
        os.replace(store.catalog_path, old)
        moved = str(old.relative_to(store.root))
    os.replace(new, store.catalog_path)
    fsync_dir(store.root)
    return moved
