"""``provmint store repair``: rebuild the catalog from the files of the store.

The catalog is an index over files that hold everything it says: each batch's
``manifest.json`` gives its row (the manifest digest, the tree's root and size give the
commitment that anchoring committed to), the Parquet parts give the lookup indexes, and
``anchors/*.json`` give the anchors. Repair reads them all, writes a new catalog beside
the old one and only then swaps the two; the old catalog is kept (renamed), never
deleted. What the previous catalog still says is used where the files are silent (batch
sequence numbers, anchors recorded before anchor files existed).

A batch directory that cannot be restored (no readable manifest, a tree or part that
contradicts it) is moved to ``quarantine/`` with the reason, so the store is consistent
again and nothing is thrown away.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provmint.batch import MANIFEST_FORMAT
from provmint.canonical import batch_commitment, manifest_digest
from provmint.config import Settings
from provmint.errors import ProvmintError, StoreCorruptError
from provmint.store import BatchInfo, Store, rebuild
from provmint.store import anchors as anchor_state
from provmint.store.files import fsync_dir, load_json
from provmint.store.keyindex import KeyRun, RunKind, SpillSorter
from provmint.store.lock import store_lock
from provmint.store.lookup import IndexUpdate, rebuild_index, stray_runs
from provmint.store.rebuild import CatalogSummary
from provmint.store.treefile import TreeFile

if TYPE_CHECKING:
    pass

__all__ = ["Quarantined", "RepairReport", "repair_store"]

_TOKEN = r"^[A-Za-z0-9_-]{21}[AQgw]$"  # 128 bits of base64url: the last character has 2 bits


@dataclass(frozen=True, slots=True)
class Quarantined:
    """A batch directory repair could not restore, and where it was moved."""

    directory: str
    reason: str
    moved_to: str | None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"directory": self.directory, "reason": self.reason, "moved_to": self.moved_to}


@dataclass(frozen=True, slots=True)
class RepairReport:
    """What ``repair_store`` found and did."""

    store: str
    batches: tuple[str, ...]
    products: int
    anchors: int
    quarantined: tuple[Quarantined, ...]
    notes: tuple[str, ...]
    previous_catalog: str | None
    dry_run: bool

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "store": self.store,
            "dry_run": self.dry_run,
            "batches": list(self.batches),
            "products": self.products,
            "anchors": self.anchors,
            "quarantined": [q.to_json() for q in self.quarantined],
            "notes": list(self.notes),
            "previous_catalog": self.previous_catalog,
        }


class _Unrestorable(Exception):
    """A batch directory whose files do not make a batch (the reason is the message)."""


@dataclass
class _Restored:
    info: BatchInfo
    runs: dict[RunKind, KeyRun]
    """The batch's index runs (rows = leaf indexes), in the repair's scratch directory."""


def repair_store(
    settings: Settings,
    *,
    dry_run: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> RepairReport:
    """Rebuild the store's catalog from its batch directories and anchor files (see the
    module docstring). With ``dry_run`` nothing is written or moved."""
    store = Store.open(settings.store)
    report = progress or (lambda done, total: None)
    notes: list[str] = []
    with (
        store_lock(
            store.root,
            exclusive=True,
            timeout=settings.lock_timeout,
            purpose="store repair",
            name=".anchor.lock",
        ),
        store.lock(exclusive=True, timeout=settings.lock_timeout, purpose="store repair"),
    ):
        previous = _read_previous(store, notes)
        if previous is not None and not dry_run:
            store.finish_staged(set(previous.seq_of))
        elif previous is None and store.staging_dir.is_dir() and any(store.staging_dir.iterdir()):
            notes.append(
                "staging/ holds batches whose writer stopped; without the previous catalog "
                "it cannot be told whether they were committed, so they are left as they are"
            )
        directories = store.batch_dirs()
        restored: list[_Restored] = []
        bad: list[tuple[Path, str]] = []
        scratch = store.index_dir / f".repair-{os.getpid()}"
        scratch.mkdir(parents=True, exist_ok=True)
        try:
            for done, directory in enumerate(directories, start=1):
                try:
                    restored.append(_restore(directory, scratch, notes))
                except _Unrestorable as exc:
                    bad.append((directory, str(exc)))
                report(done, len(directories))
            return _finish(store, restored, bad, previous, notes, dry_run=dry_run)
        finally:
            for r in restored:
                for run in r.runs.values():
                    run.close()
            shutil.rmtree(scratch, ignore_errors=True)


def _finish(
    store: Store,
    restored: list[_Restored],
    bad: list[tuple[Path, str]],
    previous: CatalogSummary | None,
    notes: list[str],
    *,
    dry_run: bool,
) -> RepairReport:
    """Number the restored batches, quarantine the rest, write and swap the catalog."""
    _number(restored, previous)
    _compare(restored, previous, notes)
    anchors = _anchor_documents(store, previous, notes)
    quarantined = tuple(
        Quarantined(
            str(d.relative_to(store.root)),
            reason,
            None if dry_run else str(_quarantine(store, d).relative_to(store.root)),
        )
        for d, reason in bad
    )
    moved_to = None
    if not dry_run:
        new, index = _build_catalog(store, restored, anchors, notes)
        moved_to = rebuild.swap_catalog(store, new)
        for stray in stray_runs(store.index_dir, {e.name for e in index.runs}):
            stray.unlink()  # runs of the previous catalog, derived and now unlisted
    return RepairReport(
        store=str(store.root),
        batches=tuple(r.info.batch_id for r in restored),
        products=sum(r.info.products for r in restored),
        anchors=len(anchors),
        quarantined=quarantined,
        notes=tuple(notes),
        previous_catalog=moved_to,
        dry_run=dry_run,
    )


def _read_previous(store: Store, notes: list[str]) -> CatalogSummary | None:
    """The previous catalog's batch numbers, commitments and anchors, if it is readable."""
    if not store.catalog_path.exists():
        notes.append("there was no catalog")
        return None
    try:
        return rebuild.read_summary(store)
    except ProvmintError as exc:
        notes.append(f"the previous catalog could not be read ({exc}); rebuilt from files only")
        return None


def _restore(directory: Path, scratch: Path, notes: list[str]) -> _Restored:
    """A batch row and its index keys, from a batch directory's files."""
    manifest = _manifest(directory)
    try:
        batch_id = manifest["batch_id"]
        tree = manifest["tree"]
        size = int(manifest["products"])
        root = bytes.fromhex(tree["root"])
        parts = int(manifest["parts"]["count"])
        part_rows = int(manifest["parts"]["rows"])
        if batch_id != directory.name or tree["size"] != size or len(root) != 32:
            raise _Unrestorable("manifest.json does not describe this batch directory")
        digest = manifest_digest(manifest)
        info = BatchInfo(
            seq=0,
            batch_id=batch_id,
            created_at=manifest["created_at"],
            label=manifest["label"],
            source_name=manifest["source"]["name"],
            source_sha256=manifest["source"]["sha256"],
            products=size,
            rejected=int(manifest["rejected"]),
            tree_profile=tree["profile"],
            tree_size=size,
            root=root.hex(),
            manifest_digest=digest.hex(),
            commitment=batch_commitment(batch_id, size, root, digest).hex(),
            key_id=manifest["key_id"],
            part_rows=part_rows,
            parts=parts,
            manifest=manifest,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise _Unrestorable(f"manifest.json lacks or garbles {exc}") from exc
    try:
        stored = TreeFile(directory / "tree.bin")
    except StoreCorruptError as exc:
        raise _Unrestorable(str(exc)) from exc
    if stored.size != size or stored.root != root:
        raise _Unrestorable("tree.bin does not hold the tree the manifest names")
    return _Restored(info, _index_runs(directory, scratch, info, notes))


def _manifest(directory: Path) -> dict[str, Any]:
    path = directory / "manifest.json"
    try:
        doc = load_json(path.read_bytes())
    except FileNotFoundError:
        raise _Unrestorable("no manifest.json") from None
    except (OSError, ValueError) as exc:
        raise _Unrestorable(f"manifest.json is unreadable: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
        raise _Unrestorable(f"manifest.json is not a {MANIFEST_FORMAT} document")
    return doc


def _index_runs(
    directory: Path, scratch: Path, info: BatchInfo, notes: list[str]
) -> dict[RunKind, KeyRun]:
    """Index runs (rows = leaf indexes) of the (gtin, serial) hashes and token prefixes of
    every product, written into ``scratch``."""
    with (
        SpillSorter(scratch, RunKind.KEY) as keys,
        SpillSorter(scratch, RunKind.TOKEN) as prefixes,
    ):
        _add_index_keys(directory, info, notes, keys, prefixes)
        return {
            RunKind.KEY: keys.finish(scratch / f"{info.batch_id}.key.run", durable=False),
            RunKind.TOKEN: prefixes.finish(scratch / f"{info.batch_id}.token.run", durable=False),
        }


def _add_index_keys(
    directory: Path, info: BatchInfo, notes: list[str], keys: SpillSorter, prefixes: SpillSorter
) -> None:
    """Add the (gtin, serial) hashes and token prefixes of every product, in leaf order."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from provmint.ingest import key_hashes

    start = 0
    odd = 0
    for i in range(info.parts):
        path = directory / "products" / f"part-{i:05d}.parquet"
        try:
            table = pq.read_table(path, columns=["leaf_index", "gtin", "serial", "token"])
            table = table.cast(
                pa.schema(
                    [("leaf_index", pa.int64())]
                    + [(c, pa.string()) for c in ("gtin", "serial", "token")]
                )
            )
        except (OSError, pa.ArrowException, UnicodeDecodeError) as exc:
            raise _Unrestorable(f"{path.name} is unreadable: {exc}") from exc
        n = table.num_rows
        expected = np.arange(start, start + n, dtype=np.int64)
        leaves = table.column("leaf_index").to_numpy()
        if n == 0 or not np.array_equal(leaves, expected):
            raise _Unrestorable(f"{path.name} does not hold products {start}.. in order")
        gtin, serial, token = (table.column(c).combine_chunks() for c in table.column_names[1:])
        usable = pc.and_(
            pc.equal(pc.utf8_length(gtin), 14),
            pc.and_(pc.less_equal(pc.binary_length(serial), 20), pc.ascii_is_printable(serial)),
        ).fill_null(False)
        ok = usable.to_numpy(zero_copy_only=False)
        part_keys = np.zeros(n, dtype=np.uint64)
        if ok.any():
            part_keys[ok] = key_hashes(gtin.filter(usable), serial.filter(usable))
        well_formed = pc.match_substring_regex(token, _TOKEN).fill_null(False)
        clean = pc.if_else(well_formed, token, pa.scalar("A" * 22))
        head = "".join(pc.utf8_slice_codeunits(clean, 0, 12).to_pylist())
        import base64

        raw = np.frombuffer(base64.urlsafe_b64decode(head), dtype=np.uint8).reshape(n, 9)
        part_prefixes = np.ascontiguousarray(raw[:, :8]).view("<u8").reshape(n).astype(np.uint64)
        odd += int(n - ok.sum()) + int(n - pc.sum(well_formed.cast(pa.int64())).as_py())
        rows = np.arange(start, start + n, dtype=np.uint32)
        keys.add(part_keys, rows)
        prefixes.add(part_prefixes, rows)
        start += n
    if start != info.products:
        raise _Unrestorable(f"the parts hold {start} products, the manifest says {info.products}")
    if odd:
        notes.append(
            f"batch {info.batch_id}: {odd} stored values are malformed and cannot be looked "
            f"up; audit it with: provmint verify --batch {info.batch_id}"
        )


def _number(restored: list[_Restored], previous: CatalogSummary | None) -> None:
    """Give every batch its sequence number: the previous catalog's where it had one,
    then the next numbers in order of creation."""
    from dataclasses import replace

    known = previous.seq_of if previous is not None else {}
    taken = {known[r.info.batch_id] for r in restored if r.info.batch_id in known}
    following = max(taken, default=0) + 1
    for r in sorted(restored, key=lambda r: (r.info.created_at, r.info.batch_id)):
        seq = known.get(r.info.batch_id)
        if seq is None:
            seq, following = following, following + 1
        r.info = replace(r.info, seq=seq)
    restored.sort(key=lambda r: r.info.seq)


def _compare(restored: list[_Restored], previous: CatalogSummary | None, notes: list[str]) -> None:
    if previous is None:
        return
    for r in restored:
        before = previous.commitment_of.get(r.info.batch_id)
        if before is not None and before != r.info.commitment:
            notes.append(
                f"batch {r.info.batch_id}: its files commit to {r.info.commitment[:16]}…, the "
                f"previous catalog said {before[:16]}…; audit it with: provmint verify "
                f"--batch {r.info.batch_id}"
            )


def _anchor_documents(
    store: Store, previous: CatalogSummary | None, notes: list[str]
) -> list[dict[str, Any]]:
    """Every anchor: from its file in anchors/ (never behind the catalog), else from the
    previous catalog."""
    docs = dict(previous.anchors) if previous is not None else {}
    if store.anchors_dir.is_dir():
        for path in sorted(store.anchors_dir.glob("*.json")):
            try:
                doc = anchor_state.read_anchor_file(path)
            except StoreCorruptError as exc:
                notes.append(f"{exc}; that anchor is restored only if the catalog had it")
                continue
            docs[doc["anchor_id"]] = doc
    return [docs[k] for k in sorted(docs)]


def _quarantine(store: Store, directory: Path) -> Path:
    """Move a batch directory out of batches/ (never delete it)."""
    store.quarantine_dir.mkdir(exist_ok=True)
    target = store.quarantine_dir / directory.name
    if target.exists():
        target = target.with_name(f"{directory.name}.{datetime.now(UTC):%Y%m%dT%H%M%S%f}")
    os.replace(directory, target)
    fsync_dir(store.quarantine_dir)
    fsync_dir(store.batches_dir)
    return target


def _build_catalog(
    store: Store, restored: list[_Restored], anchors: list[dict[str, Any]], notes: list[str]
) -> tuple[Path, IndexUpdate]:
    """Write the new catalog beside the old one, and the store's index; returns the
    catalog's path and the index it lists."""
    runs_of = {r.info.batch_id: r.runs for r in restored}
    index = rebuild_index(store, [r.info for r in restored], lambda b, _: runs_of[b.batch_id])
    built = rebuild.build_catalog(store, [r.info for r in restored], index, anchors)
    for anchor_id, missing in built.uncovered:
        notes.append(
            f"anchor #{anchor_id} covers batches that are not in the store: {', '.join(missing)}"
        )
    return built.path, index
