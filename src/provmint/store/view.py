"""The catalog as readers see it, and its snapshot, so that readers need not load DuckDB.

Readers need three things from the catalog: the committed batches, the live runs of the
lookup index, and the anchors that are not failed (with the batches each covers).
:class:`CatalogView` holds them; :func:`read_catalog_view` reads them from the catalog.

Loading DuckDB and opening the catalog costs a one-shot command (``product show``,
``scan``, ``proof export``) more than its lookup, so the view is also kept as a snapshot,
``<store>/catalog.view.json`` (``provmint-catalog-view/1``). The snapshot is derived,
like the index: :func:`refresh_snapshot` rewrites it after every change to the catalog
(:meth:`Store.connect` calls it when a write connection closes) and when a reader finds
it stale. It names the SHA-256 of the catalog file it was read from, and
:func:`load_snapshot` uses it only while the catalog file has that digest and no
write-ahead log lies beside it. A snapshot behind the catalog (an interrupted write, a
repaired or restored catalog, a replica that has copied one file and not yet the other)
or a damaged one is never used: the reader reads the catalog instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from provmint.store.anchors import AnchorRecord, AnchorState
from provmint.store.keyindex import RunKind

if TYPE_CHECKING:
    import duckdb

    from provmint.store import BatchInfo, Store
    from provmint.store.lookup import RunEntry

__all__ = [
    "SNAPSHOT_FORMAT",
    "SNAPSHOT_NAME",
    "CatalogView",
    "catalog_digest",
    "load_snapshot",
    "read_catalog_view",
    "refresh_snapshot",
]

SNAPSHOT_FORMAT = "provmint-catalog-view/1"
SNAPSHOT_NAME = "catalog.view.json"
_LIVE_STATES = tuple(state for state in AnchorState if state != AnchorState.FAILED)
_ANCHOR_FIELDS = tuple(
    name for name in AnchorRecord.__dataclass_fields__ if name not in ("batches", "attempts")
)


@dataclass(frozen=True, slots=True)
class CatalogView:
    """The committed batches (oldest first), the live index runs of each kind (oldest
    first) and the live anchors (oldest first, without their signed transactions)."""

    batches: tuple[BatchInfo, ...]
    runs: Mapping[RunKind, tuple[RunEntry, ...]]
    anchors: tuple[AnchorRecord, ...]

    def batch_by_seq(self, seq: int) -> BatchInfo:
        """A batch by its catalog sequence number."""
        from provmint.errors import StoreCorruptError

        for batch in self.batches:
            if batch.seq == seq:
                return batch
        raise StoreCorruptError(f"catalog index points at missing batch #{seq}")

    def anchor_for_batch(self, seq: int) -> AnchorRecord | None:
        """The live anchor covering a batch, if any (the newest, as the catalog query)."""
        for record in reversed(self.anchors):
            if any(batch_seq == seq for batch_seq, _, _ in record.batches):
                return record
        return None

    def to_json(self) -> dict[str, Any]:
        """The snapshot's body (JSON-ready)."""
        return {
            "batches": [
                [getattr(b, f) for f in b.__dataclass_fields__ if f != "manifest"]
                + [json.dumps(b.manifest)]
                for b in self.batches
            ],
            "runs": [[int(e.kind), e.name, e.entries] for k in RunKind for e in self.runs[k]],
            "anchors": [
                [getattr(a, f) for f in _ANCHOR_FIELDS] + [[list(b) for b in a.batches]]
                for a in self.anchors
            ],
        }

    @classmethod
    def from_json(cls, doc: Any) -> CatalogView:
        """The view in a snapshot's body (ValueError, TypeError or KeyError when it is
        not one)."""
        from provmint.store import _batch_from_row
        from provmint.store.lookup import RunEntry

        batches = tuple(_batch_from_row(tuple(row)) for row in doc["batches"])
        runs: dict[RunKind, list[RunEntry]] = {kind: [] for kind in RunKind}
        for kind, name, entries in doc["runs"]:
            runs[RunKind(kind)].append(RunEntry(RunKind(kind), str(name), int(entries)))
        anchors = []
        for row in doc["anchors"]:
            *fields, covered = row
            if len(fields) != len(_ANCHOR_FIELDS):
                raise ValueError("an anchor row of the wrong length")
            values: dict[str, Any] = dict(zip(_ANCHOR_FIELDS, fields, strict=True))
            values["state"] = AnchorState(values["state"])  # ValueError when unknown
            covered_batches = tuple((int(s), int(i), str(c)) for s, i, c in covered)
            anchors.append(AnchorRecord(**values, batches=covered_batches))
        return cls(batches, {k: tuple(v) for k, v in runs.items()}, tuple(anchors))


def read_catalog_view(store: Store, con: duckdb.DuckDBPyConnection) -> CatalogView:
    """The view, read from the catalog."""
    from provmint.store.anchors import list_anchors
    from provmint.store.lookup import index_runs

    anchors = list_anchors(con, states=_LIVE_STATES)
    return CatalogView(
        tuple(store.batches(con)),
        {kind: tuple(entries) for kind, entries in index_runs(con).items()},
        tuple(replace(record, attempts=()) for record in anchors),
    )


def catalog_digest(store: Store) -> str | None:
    """SHA-256 (hex) of the catalog file, or None when there is no catalog file or a
    write-ahead log lies beside it (committed changes the file does not hold yet)."""
    if store.catalog_wal_path.exists():
        return None
    try:
        with open(store.catalog_path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return None


def load_snapshot(store: Store) -> CatalogView | None:
    """The view from the snapshot, if there is one, it is intact and it matches the
    catalog file.

    The snapshot is two lines: a header, ``{"format": ..., "catalog_sha256": ...,
    "body_sha256": ...}``, and the body (:meth:`CatalogView.to_json`), whose digest
    catches damage to the snapshot itself."""
    from provmint.errors import ProvmintError
    from provmint.store import load_json

    try:
        text = (store.root / SNAPSHOT_NAME).read_bytes()
    except OSError:
        return None
    head, _, body = text.partition(b"\n")
    try:
        header = load_json(head, max_depth=1)
        if (
            not isinstance(header, dict)
            or header.get("format") != SNAPSHOT_FORMAT
            or header.get("body_sha256") != hashlib.sha256(body).hexdigest()
            or header.get("catalog_sha256") != catalog_digest(store)
        ):
            return None
        return CatalogView.from_json(load_json(body))
    except (ValueError, TypeError, KeyError, ProvmintError):
        return None  # damaged: read the catalog instead


def refresh_snapshot(store: Store, view: CatalogView | None = None) -> CatalogView:
    """Rewrite the snapshot with ``view``, or else with the view read from the catalog
    now (hold the store lock; shared is enough to read, and ``view`` is the one a writer
    read just before it closed its connection, under the exclusive lock). The snapshot is
    written only when the catalog file had the same digest before and after the read,
    and not at all where the store cannot be written."""
    from provmint.store.files import write_atomic

    before = catalog_digest(store)
    if view is None:
        with store.connect(write=False) as con:
            view = read_catalog_view(store, con)
    if before is not None and catalog_digest(store) == before:
        body = json.dumps(view.to_json(), separators=(",", ":")).encode()
        header = {
            "format": SNAPSHOT_FORMAT,
            "catalog_sha256": before,
            "body_sha256": hashlib.sha256(body).hexdigest(),
        }
        with contextlib.suppress(OSError):
            write_atomic(store.root / SNAPSHOT_NAME, json.dumps(header).encode() + b"\n" + body)
    return view
