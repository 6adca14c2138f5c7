"""``verify --batch``: the audit of one stored batch, with the store treated as untrusted.

Every stored byte the batch depends on is checked, and everything derived is recomputed
from the formats (the pure core: :mod:`provmint.canonical`, :mod:`provmint.merkle`,
:mod:`provmint.tokens`, :mod:`provmint.gs1`), never with the minting engine's code or its
C kernels, so that a fault in the engine shows up here instead of being repeated:

* the catalog row against its manifest, and both copies of the manifest (the catalog's
  and ``manifest.json``) against the committed digest;
* every Parquet part, every column: readable with the batch's schema
  (:meth:`provmint.store.Store.read_part`), each record and token recomputed into its
  leaf, each stored ``url`` (parts of :attr:`~provmint.store.PartLayout.V1`; later
  parts store none) rebuilt from the url base, gtin, lot, serial and token;
* every node of the tree file, and the recomputed root against the committed one;
* the record parts the lookups read (``records/``): every row's record and token equal to
  the ones recomputed from its Parquet row;
* the store's lookup index (:mod:`provmint.store.lookup`): every live run checked whole
  (size, order, rows), and exactly one entry per product of the batch in each kind,
  holding its key hash or its token prefix;
* the batch commitment, the anchor (on chain too, given a node), and with the issuer
  key every token.

Damage is a failed check whose detail reads ``damaged: <what>, <where>``, and the
verdict is then invalid (exit 3). A part holds an aligned ``2^k``-leaf subtree, so parts
are audited independently (in worker processes for large batches): a worker recomputes
its part's leaves and subtree and compares them with the same slice of the tree file.

Where the time goes: one hashlib call per SHA-256 (the token commitment and the leaf of
each product, each tree node, and the two halves of each token's HMAC), whose per-call
overhead, not hashing itself, is most of the cost (one-block messages and the HMAC's
copied states go to CPython's built-in SHA-256, cheaper per call than OpenSSL 3's:
:data:`provmint.tokens.short_sha256`); so every message is built over
whole columns first (constant pieces as columns too: Arrow joins arrays several times
faster than it broadcasts scalars), messages are hashed a few thousand at a time (their
Python objects stay in the CPU caches), and nothing else is done per row in Python.
The workers start while this process reads the catalog, and the index rows are read
and arranged by product before the parts are done, leaving only column comparisons for
the end.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provmint import anchoring, gs1, merkle
from provmint.canonical import (
    COMMIT_TAG,
    FIELD_NAME_PATTERN,
    RECORD_MAGIC,
    RECORD_VERSION,
    TOKEN_VERSION,
    batch_commitment,
    manifest_digest,
)
from provmint.config import Settings
from provmint.errors import ProofError, ProvmintError, StoreCorruptError
from provmint.store import PART_COLUMNS, BatchInfo, Store, damaged, load_json
from provmint.store.treefile import TreeFile
from provmint.tokens import TOKEN_BYTES, TOKEN_CHARS, hmac_states, short_sha256
from provmint.verify import AnchorChecker, Check, Verdict, on_chain_verdict

if TYPE_CHECKING:
    from concurrent.futures import Future, ProcessPoolExecutor

    import numpy as np
    import pyarrow as pa

__all__ = [
    "AuditReport",
    "audit_batch",
    "digital_links",
    "key_hashes",
    "leaf_hashes",
    "level_above",
    "record_bytes",
    "table_leaf_hashes",
    "token_bytes",
]

POOL_MIN_PARTS = 4
"""Batches with at least this many parts are audited in worker processes."""
MAX_MANIFEST_BYTES = 1 << 20
MAX_MISSING_PARTS = 16
"""Beyond this many missing part files the parts are not read one by one."""
_HASH = merkle.HASH_SIZE
_UNRESERVED = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~-"
"""The bytes that :func:`provmint.gs1.percent_encode` leaves as they are (RFC 3986)."""
_TREE_HEADER = struct.Struct(">8sQII40s")
_TREE_MAGIC = b"PMTREE01"
"""``provmint-tree/1``'s header (see :mod:`provmint.store.treefile`): magic, size,
level count, hash size, 40 reserved zero bytes."""


@dataclass(frozen=True, slots=True)
class AuditReport:
    """The result of auditing one batch."""

    batch_id: str
    products: int
    verdict: Verdict
    reason: str
    checks: tuple[Check, ...]
    chain: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "batch_id": self.batch_id,
            "products": self.products,
            "verdict": self.verdict.value,
            "reason": self.reason,
            "chain": self.chain,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
        }


# --------------------------------------------------------------------------- the audit


@dataclass(slots=True)
class _Catalog:
    """What the audit reads from the catalog, in one go under the lock."""

    store: Store
    batch: BatchInfo
    anchor: dict[str, Any] | None = None
    anchor_damage: str | None = None
    indexes: dict[str, _IndexRows] = field(default_factory=dict)
    """The index entries of the batch, by kind (``"key"``, ``"token"``)."""
    index_damage: str | None = None


def audit_batch(
    settings: Settings,
    ref: str,
    *,
    anchor_checker: AnchorChecker | None = None,
    check_tokens: bool = False,
    workers: int | None = None,
) -> AuditReport:
    """Audit a stored batch: catalog row, manifests, every part and column, tree file,
    indexes, commitment and anchor (see the module docstring). ``check_tokens`` also
    re-derives every token with the issuer key (needs the key file); ``workers`` caps
    the worker processes (default: the settings' count)."""
    pool = _Workers(workers or settings.workers)
    try:
        pool.start_if_large(settings, ref)
        return _audit(settings, ref, pool, anchor_checker, check_tokens)
    finally:
        pool.close()


def _audit(
    settings: Settings,
    ref: str,
    pool: _Workers,
    anchor_checker: AnchorChecker | None,
    check_tokens: bool,
) -> AuditReport:
    catalog = _read_catalog(settings, ref)
    if isinstance(catalog, AuditReport):
        return catalog
    store, batch = catalog.store, catalog.batch
    checks = [
        _catalog_row_check(store, batch),
        _manifest_check(store, batch),
        _manifest_file_check(store, batch),
    ]
    secret, token_note = _issuer_secret(settings, batch) if check_tokens else (None, None)
    parts: list[_PartResult] = []
    missing = _missing_parts(store, batch)
    if missing is not None:
        checks.append(Check("parts", False, missing))
    if checks[0].ok and missing is None:  # a layout the parts can be read with
        tree, tree_damage = _open_tree(store, batch)
        records = _has_records(store, batch)
        jobs = [
            _PartJob(str(store.root), batch, i, tree is not None, records, secret)
            for i in range(batch.parts)
        ]
        parts = pool.run(jobs, while_running=lambda: _read_indexes(settings, catalog))
        checks += _part_checks(store, batch, parts)
        checks += _tree_checks(store, batch, parts, tree, tree_damage)
        checks += [
            _url_check(store, batch, parts),
            _records_check(records, parts),
            _index_check(catalog, parts),
        ]
    else:
        skipped = "not checked: the catalog row or the part files are damaged"
        checks += [Check(name, False, skipped) for name in ("root", "tree file", "indexes")]
    commitment, commitment_check = _commitment_check(batch)
    checks.append(commitment_check)
    if token_note is not None:
        checks.append(token_note)
    elif secret is not None and parts:
        bad = sum(p.bad_tokens for p in parts)
        checks.append(Check("tokens", bad == 0, f"{bad} tokens do not match the issuer key"))
    failure = next((_reason(c) for c in checks if not c.ok), None)
    if failure is not None:
        verdict, reason, chain = Verdict.INVALID, failure, None
    else:
        verdict, reason, chain = _anchor_verdict(
            catalog, commitment, anchor_checker, lambda n, o, d: checks.append(Check(n, o, d))
        )
    count = sum(p.rows for p in parts)
    return AuditReport(batch.batch_id, count, verdict, reason, tuple(checks), chain)


def _reason(check: Check) -> str:
    return check.detail if check.detail.startswith("damaged: ") else f"{check.name}: {check.detail}"


def _anchor_verdict(
    catalog: _Catalog,
    commitment: bytes,
    anchor_checker: AnchorChecker | None,
    check: Callable[[str, bool, str], None],
) -> tuple[Verdict, str, dict[str, Any] | None]:
    """The verdict of a batch whose stored data is intact: pending, or its anchor's."""
    if catalog.anchor_damage is not None:
        check("anchor tree", False, catalog.anchor_damage)
        return Verdict.INVALID, catalog.anchor_damage, None
    if catalog.anchor is None:
        return Verdict.PENDING, "the stored batch is intact; it is not anchored yet", None
    try:
        section = anchoring.parse_anchor_section(catalog.anchor)
    except ProofError as exc:
        detail = damaged(f"the anchor record is malformed ({exc})", catalog.store.catalog_path)
        check("anchor tree", False, detail)
        return Verdict.INVALID, detail, None
    ok, detail = section.check_offline(commitment)
    check("anchor tree", ok, detail)
    if not ok:
        return Verdict.INVALID, detail, None
    if anchor_checker is None:
        return Verdict.UNCHECKED, "the stored batch is intact; anchor not checked", None
    return on_chain_verdict(section, anchor_checker, check)


# --------------------------------------------------------------------------- the catalog


def _read_catalog(settings: Settings, ref: str) -> _Catalog | AuditReport:
    """The batch row and its anchor. A row or block the catalog cannot read (DuckDB
    checks its blocks' checksums) is an invalid audit, not an exception."""
    import duckdb

    from provmint.products import batch_anchor_section, read_catalog

    with read_catalog(settings) as (store, con):
        try:
            batch = store.batch(con, ref)
        except StoreCorruptError as exc:
            return _unreadable(ref, exc.message)
        except duckdb.Error as exc:
            where = f"{store.catalog_path} table batches"
            return _unreadable(ref, damaged(f"unreadable ({_first_line(exc)})", where))
        catalog = _Catalog(store, batch)
        try:
            catalog.anchor = batch_anchor_section(con, batch)
        except (duckdb.Error, ValueError, TypeError, KeyError) as exc:
            where = f"{store.catalog_path} table anchors"
            catalog.anchor_damage = damaged(f"unreadable ({_first_line(exc)})", where)
    return catalog


def _read_indexes(settings: Settings, catalog: _Catalog) -> None:
    """The batch's index entries, arranged by product (read while the worker processes
    start: committed entries never change). Damage is recorded in ``catalog``."""
    import duckdb

    from provmint.products import read_catalog
    from provmint.store.lookup import batch_entries

    batch = catalog.batch
    with read_catalog(settings) as (store, con):
        try:
            found = batch_entries(store, con, batch)
        except StoreCorruptError as exc:
            catalog.index_damage = exc.message
            return
        except duckdb.Error as exc:
            where = f"{store.catalog_path} table index_runs"
            catalog.index_damage = damaged(f"unreadable ({_first_line(exc)})", where)
            return
    for kind, entries in found.items():
        catalog.indexes[kind.name.lower()] = _IndexRows.arrange(
            entries.keys, entries.rows.astype("int64"), batch.tree_size
        )


def _unreadable(ref: str, detail: str) -> AuditReport:
    check = Check("catalog row", False, detail)
    return AuditReport(ref, 0, Verdict.INVALID, detail, (check,), None)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    line = lines[0] if lines else type(exc).__name__
    return line if len(line) <= 160 else line[:157] + "..."


def _get(doc: Any, *keys: str) -> Any:
    for key in keys:
        doc = doc.get(key) if isinstance(doc, dict) else None
    return doc


def _catalog_row_check(store: Store, batch: BatchInfo) -> Check:
    """The batch row says what its manifest says, and describes a layout the parts can
    be read with (so nothing below trusts an absurd size or part count)."""
    m = batch.manifest
    facts: list[tuple[str, Any, Any]] = [
        ("batch_id", batch.batch_id, m.get("batch_id")),
        ("created_at", batch.created_at, m.get("created_at")),
        ("label", batch.label, m.get("label")),
        ("source_name", batch.source_name, _get(m, "source", "name")),
        ("source_sha256", batch.source_sha256, _get(m, "source", "sha256")),
        ("products", batch.products, m.get("products")),
        ("rejected", batch.rejected, m.get("rejected")),
        ("tree_profile", batch.tree_profile, _get(m, "tree", "profile")),
        ("tree_size", batch.tree_size, _get(m, "tree", "size")),
        ("root", batch.root, _get(m, "tree", "root")),
        ("key_id", batch.key_id, m.get("key_id")),
        ("part_rows", batch.part_rows, _get(m, "parts", "rows")),
        ("parts", batch.parts, _get(m, "parts", "count")),
        ("tree_size", batch.tree_size, batch.products),
        ("tree_profile", batch.tree_profile, merkle.PROFILE),
        ("record_version", m.get("record_version"), RECORD_VERSION),
        ("token_version", m.get("token_version"), TOKEN_VERSION),
    ]
    where = f"{store.catalog_path} table batches, batch {batch.batch_id}"
    for name, value, expected in facts:
        if value != expected or type(value) is not type(expected):
            what = f"{name} {value!r} disagrees with {expected!r}"
            return Check("catalog row", False, damaged(what, where))
    problem = _layout_problem(store, batch)
    if problem is not None:
        return Check("catalog row", False, damaged(problem, where))
    return Check("catalog row", True, "the batch row agrees with its manifest")


def _layout_problem(store: Store, batch: BatchInfo) -> str | None:
    size, rows, parts, columns = batch.tree_size, batch.part_rows, batch.parts, batch.columns
    if not (0 < size <= merkle.MAX_TREE_SIZE and rows > 0 and rows & (rows - 1) == 0):
        return f"tree size {size} or part size {rows} is impossible"
    if parts != -(-size // rows):
        return f"{parts} parts of {rows} cannot hold {size} products"
    if (
        columns != sorted(set(columns), key=lambda c: c.encode())
        or not {"gtin", "serial"} <= set(columns)
        or not all(re.fullmatch(FIELD_NAME_PATTERN, c) for c in columns)
        or set(PART_COLUMNS) & set(columns)
    ):
        return f"the manifest's columns {columns!r} are impossible"
    return None


def _missing_parts(store: Store, batch: BatchInfo) -> str | None:
    """Damage when far more part files are missing than the audit should try to read
    (a row claiming an absurd size); a few missing ones are reported part by part."""
    directory = store.batch_dir(batch) / "products"
    present = len(list(directory.glob("part-*.parquet"))) if directory.is_dir() else 0
    if batch.parts <= present + MAX_MISSING_PARTS:
        return None
    return damaged(
        f"{batch.parts - present} of the batch's {batch.parts} parts are missing", directory
    )


def _manifest_check(store: Store, batch: BatchInfo) -> Check:
    """The catalog's copy of the manifest hashes to the committed digest."""
    where = f"{store.catalog_path} table batches, batch {batch.batch_id}"
    try:
        digest = manifest_digest(batch.manifest).hex()
    except ValueError as exc:
        return Check("manifest", False, damaged(f"the manifest is not canonical ({exc})", where))
    if digest != batch.manifest_digest:
        what = "the manifest differs from the committed one"
        return Check("manifest", False, damaged(what, where))
    return Check("manifest", True, "the catalog's manifest matches the committed digest")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len({k for k, _ in pairs}) != len(pairs):
        raise ValueError("a key appears twice")
    return dict(pairs)


def _manifest_file_check(store: Store, batch: BatchInfo) -> Check:
    """``batches/<id>/manifest.json`` hashes to the committed digest."""
    path = store.batch_dir(batch) / "manifest.json"
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_MANIFEST_BYTES + 1)
        if len(data) > MAX_MANIFEST_BYTES:
            raise ValueError("the file is too large")
        doc = load_json(data, object_pairs_hook=_no_duplicate_keys)
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        digest = manifest_digest(doc).hex()
    except OSError as exc:
        return Check("manifest file", False, damaged(f"unreadable ({exc.strerror})", path))
    except ValueError as exc:
        what = f"not a manifest ({_first_line(exc)})"
        return Check("manifest file", False, damaged(what, path))
    if digest != batch.manifest_digest:
        return Check("manifest file", False, damaged("differs from the committed manifest", path))
    return Check("manifest file", True, "manifest.json matches the committed digest")


def _commitment_check(batch: BatchInfo) -> tuple[bytes, Check]:
    """The batch commitment over the id, size, root and (catalog) manifest."""
    try:
        commitment = batch_commitment(
            batch.batch_id,
            batch.tree_size,
            bytes.fromhex(batch.root),
            manifest_digest(batch.manifest),
        )
    except ValueError as exc:
        return b"", Check("batch commitment", False, f"cannot be recomputed: {exc}")
    return commitment, Check(
        "batch commitment",
        commitment.hex() == batch.commitment,
        "binds batch id, size, root and manifest",
    )


def _issuer_secret(settings: Settings, batch: BatchInfo) -> tuple[bytes | None, Check | None]:
    from provmint.keys import load_keyring

    keyring = load_keyring(settings.key_file)
    if any(k.id == batch.key_id for k in keyring.keys):
        return keyring.get(batch.key_id).secret.reveal(), None
    note = f"not checked: key {batch.key_id} is not in {settings.key_file}"
    return None, Check("tokens", True, note)


@dataclass(frozen=True, slots=True)
class _IndexRows:
    """One kind of the index's entries for a batch: their leaf indexes in stored order
    and, unless ``problem`` (an entry outside the batch, a product with no entry or with
    several), their values by product (``by_leaf[i]``: the value of product i's entry)."""

    leaves: np.ndarray
    problem: str | None
    by_leaf: np.ndarray | None

    @classmethod
    def arrange(cls, values: np.ndarray, leaves: np.ndarray, size: int) -> _IndexRows:
        """Check the rows' shape (one row per product of a batch of ``size``) and
        arrange them by product: done before the parts are audited, so that only a
        comparison of whole columns is left for after."""
        import numpy as np

        outside = np.flatnonzero((leaves < 0) | (leaves >= size))
        if outside.size:
            product = leaves[outside[0]]
            problem = f"an entry points at product {product}, which the batch does not have"
            return cls(leaves, problem, None)
        counts = np.bincount(leaves, minlength=size)
        missing = np.flatnonzero(counts == 0)
        if missing.size:
            return cls(leaves, f"product {missing[0]} has no entry", None)
        extra = np.flatnonzero(counts > 1)
        if extra.size:
            return cls(leaves, f"product {extra[0]} has {counts[extra[0]]} entries", None)
        by_leaf = np.empty(size, dtype=np.uint64)
        by_leaf[leaves] = values
        return cls(leaves, None, by_leaf)

    def wrong_value(self, expected: list[tuple[int, bytes]]) -> str | None:
        """The first row (in stored order) whose value is not the recomputed one;
        ``expected`` holds (first product, u64le values) runs of the readable parts."""
        import numpy as np

        assert self.by_leaf is not None
        wrong = np.zeros(len(self.by_leaf), dtype=bool)
        for start, data in expected:
            recomputed = np.frombuffer(data, "<u8")
            stored = self.by_leaf[start : start + len(recomputed)]
            wrong[start : start + len(recomputed)] = stored != recomputed
        if not wrong.any():
            return None
        row = int(np.flatnonzero(wrong[self.leaves])[0])
        return f"the entry of product {self.leaves[row]} holds a wrong value"


def _index_check(catalog: _Catalog, parts: list[_PartResult]) -> Check:
    """Each kind of the index holds exactly one entry per product of the batch, whose
    value is the one recomputed from the product (compared for the products of readable
    parts)."""
    if catalog.index_damage is not None:
        return Check("indexes", False, catalog.index_damage)
    part_rows = catalog.batch.part_rows
    readable = [p for p in parts if p.damage is None]
    recomputed = {
        "key": [(p.index * part_rows, p.keys) for p in readable],
        "token": [(p.index * part_rows, p.prefixes) for p in readable],
    }
    where = catalog.store.index_dir
    for kind in ("key", "token"):
        rows = catalog.indexes.get(kind)
        if rows is None:
            return Check("indexes", False, damaged(f"no {kind} entries were read", where))
        problem = rows.problem or rows.wrong_value(recomputed[kind])
        if problem is not None:
            return Check("indexes", False, damaged(f"{kind} index: {problem}", where))
    return Check("indexes", True, "one key and one token entry per product in the index")


def _has_records(store: Store, batch: BatchInfo) -> bool:
    """Whether the batch has record parts (batches minted before them have none: their
    lookups read the Parquet parts)."""
    return (store.batch_dir(batch) / "records").is_dir()


def _records_check(records: bool, parts: list[_PartResult]) -> Check:
    if not records:
        return Check("records", True, "none (an older batch: lookups read its Parquet parts)")
    wrong = next((p for p in parts if p.record_damage is not None), None)
    if wrong is not None:
        assert wrong.record_damage is not None
        return Check("records", False, wrong.record_damage)
    return Check("records", True, "every record part equals its Parquet part")


# --------------------------------------------------------------------------- the parts


@dataclass(frozen=True, slots=True)
class _PartJob:
    store_root: str
    batch: BatchInfo
    index: int
    tree_usable: bool
    records: bool
    """Whether the batch has record parts to compare with."""
    secret: bytes | None = field(default=None, repr=False)
    """The issuer key, to check the tokens with (sent with each job: the pool may start
    before the catalog says which key the batch has)."""


@dataclass(frozen=True, slots=True)
class _PartResult:
    """One part's audit. ``top`` is its recomputed subtree root, on level
    :func:`_top_level` of the batch tree; nodes are (level, index in the whole level)."""

    index: int
    rows: int = 0
    damage: str | None = None
    top: bytes = b""
    leaf_mismatch: int | None = None
    first_difference: tuple[int, int] | None = None
    tree_damage: tuple[int, int] | None = None
    url_mismatch: int | None = None
    urls_stored: bool = False
    record_damage: str | None = None
    bad_tokens: int = 0
    keys: bytes = b""
    prefixes: bytes = b""


def _top_level(batch: BatchInfo) -> int:
    """The tree level of a part's subtree root (the batch root's level for one part)."""
    height = batch.part_rows.bit_length() - 1
    return min(height, len(merkle.level_sizes(batch.tree_size)) - 1)


def _open_tree(store: Store, batch: BatchInfo) -> tuple[TreeFile | None, str | None]:
    """The tree file, if its header is exactly the one its size calls for (reserved
    bytes zero), or the damage."""
    path = store.batch_dir(batch) / "tree.bin"
    try:
        tree = store.tree(batch)
        with open(path, "rb") as fh:
            header = fh.read(_TREE_HEADER.size)
    except StoreCorruptError as exc:
        detail = exc.message
        return None, detail if detail.startswith("damaged: ") else damaged(detail, path)
    except OSError as exc:
        return None, damaged(f"unreadable ({exc.strerror})", path)
    expected = _TREE_HEADER.pack(_TREE_MAGIC, tree.size, tree.level_count, _HASH, bytes(40))
    if header != expected:
        return None, damaged("the header is not the one its size calls for", path)
    return tree, None


_WORKER_MODULES = [
    "pyarrow.parquet",
    "pyarrow.compute",
    "provmint.audit",
    "provmint.store.records",
    "provmint.store.treefile",
    "concurrent.futures.process",
]
"""Imported once by the forkserver, not by each worker on its first part."""


def _init_worker() -> None:
    import pyarrow as pa

    pa.set_cpu_count(1)  # the pool already uses every core: Arrow threads only contend


class _Workers:
    """The worker processes that audit the parts of a large batch.

    The pool is started from a thread, so that this process works meanwhile (reading
    the catalog, the indexes) while the workers start (importing Arrow: about half a
    second). It starts before the catalog is read when the batch directory shows a
    large batch (:meth:`start_if_large`, a hint only), or else when the parts are run.
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self._starting: Future[ProcessPoolExecutor] | None = None

    def start_if_large(self, settings: Settings, ref: str) -> None:
        """Start now if ``ref`` names exactly one batch directory, holding enough part
        files to gain from worker processes."""
        if self.count < 2 or not re.fullmatch(r"[0-9A-Za-z_-]+", ref):
            return  # (batch ids are plain names: nothing else need be looked for)
        batches = Store(settings.store).batches_dir
        try:
            named = [batches / ref] if (batches / ref).is_dir() else list(batches.glob(f"{ref}*"))
            parts = len(list((named[0] / "products").glob("part-*.parquet")))
        except (OSError, IndexError):
            return
        if len(named) == 1 and parts >= POOL_MIN_PARTS:
            self._start(min(self.count, parts))

    def _start(self, count: int) -> None:
        from concurrent.futures import ThreadPoolExecutor

        from provmint.pool import start_pool

        starter = ThreadPoolExecutor(1, thread_name_prefix="provmint-audit-start")
        self._starting = starter.submit(
            start_pool,
            count,
            preload=_WORKER_MODULES,
            initializer=_init_worker,
        )
        starter.shutdown(wait=False)

    def run(self, jobs: list[_PartJob], while_running: Callable[[], None]) -> list[_PartResult]:
        """Audit every part, in the worker processes when the batch is large enough to
        gain (or they were started); ``while_running`` is this process's work meanwhile."""
        from concurrent.futures import Future
        from concurrent.futures.process import BrokenProcessPool

        if self._starting is None:
            if self.count < 2 or len(jobs) < POOL_MIN_PARTS:
                while_running()
                return [_audit_part(job) for job in jobs]
            self._start(min(self.count, len(jobs)))
        assert self._starting is not None
        submitted: Future[list[Future[_PartResult]]] = Future()

        def submit(starting: Future[ProcessPoolExecutor]) -> None:
            # As soon as the workers are up (now, or later in the starting thread):
            # they need not wait for ``while_running``.
            try:
                pool = starting.result()
                submitted.set_result([pool.submit(_audit_part, job) for job in jobs])
            except BaseException as exc:  # handed to the thread that waits for the results
                submitted.set_exception(exc)

        self._starting.add_done_callback(submit)
        while_running()
        try:
            return [future.result() for future in submitted.result()]
        except BrokenProcessPool as exc:
            raise ProvmintError("audit failed: a worker process died (out of memory?)") from exc

    def close(self) -> None:
        """Stop the workers (once started: a start under way is waited for)."""
        if self._starting is not None:
            with contextlib.suppress(Exception):
                self._starting.result().shutdown(cancel_futures=True)


def _url_mismatch(table: pa.Table, batch: BatchInfo) -> int | None:
    """The first row of a part of :attr:`~provmint.store.PartLayout.V1` whose stored URL
    is not the one its row and the manifest's base make (later layouts store none)."""
    import pyarrow.compute as pc

    gtin, serial, token = (table.column(c) for c in ("gtin", "serial", "token"))
    lot = table.column("lot") if "lot" in table.column_names else None
    urls = digital_links(batch.manifest["url_base"], gtin, serial, lot, token)
    return _first_false(pc.equal(table.column("url"), urls))


def _audit_part(job: _PartJob) -> _PartResult:
    """Audit one part: read it (every column checked by ``read_part``), recompute its
    leaves, subtree and (in a part that stores them) URLs, compare the subtree with the
    tree file, and compute its index values (with the job's secret, also count the
    tokens the issuer key does not make)."""
    import numpy as np

    store, batch = Store(Path(job.store_root)), job.batch
    start = job.index * batch.part_rows
    top = _top_level(batch)
    rows = min(batch.part_rows, batch.tree_size - start)
    stored = _stored_subtree(store, batch, start, rows, top) if job.tree_usable else None
    try:
        table = store.read_part(batch, job.index)
    except StoreCorruptError as exc:
        broken = _subtree_damage(stored, start) if stored is not None else None
        return _PartResult(job.index, damage=exc.message, tree_damage=broken)
    gtin, serial, token = (table.column(c) for c in ("gtin", "serial", "token"))
    tokens = token_bytes(token)
    records = record_bytes(table, batch.columns)
    levels = _subtree(leaf_hashes(records, tokens), top)
    difference = leaf = broken = None
    if stored is not None:
        difference = _first_difference(levels, stored, start)
        if difference is not None:  # find what differs: the records, or the tree file
            leaf = _first_node_difference(levels[0], stored[0])
            broken = _subtree_damage(stored, start)
    url_row = _url_mismatch(table, batch) if "url" in table.column_names else None
    bad = 0
    if job.secret is not None:
        expected = _expected_tokens(job.secret, gtin, serial)
        bad = int(np.count_nonzero((expected != tokens).any(1)))
    return _PartResult(
        job.index,
        rows=table.num_rows,
        top=levels[-1],
        leaf_mismatch=None if leaf is None else start + leaf,
        first_difference=difference,
        tree_damage=broken,
        url_mismatch=None if url_row is None else start + url_row,
        urls_stored="url" in table.column_names,
        record_damage=(
            _record_part_damage(store, batch, job, records, tokens) if job.records else None
        ),
        bad_tokens=bad,
        keys=key_hashes(gtin, serial).astype("<u8").tobytes(),
        prefixes=np.ascontiguousarray(tokens[:, :8]).view("<u8").tobytes(),
    )


def _record_part_damage(
    store: Store, batch: BatchInfo, job: _PartJob, records: pa.Array, tokens: np.ndarray
) -> str | None:
    """Whether the part's record part (``provmint-records/1``) holds exactly the rows
    recomputed from the Parquet part: its blocks' payloads joined are ``u32be len(record)
    || record || token`` row after row, built here from the format."""
    import numpy as np

    from provmint.store.records import RecordPart

    path = store.record_part_path(batch, job.index)
    expected = _joined([_u32be_rows(b"", _lengths(records)), records, _fixed_rows(tokens)])
    offsets = np.frombuffer(expected.buffers()[1], np.int32, len(expected) + 1, expected.offset * 4)
    data = expected.buffers()[2]
    wanted = np.frombuffer(data if data is not None else b"", np.uint8)
    wanted = wanted[int(offsets[0]) : int(offsets[-1])]
    try:
        with RecordPart.open(path) as part:
            if part.rows != len(records):
                return damaged(f"{part.rows} rows, the Parquet part has {len(records)}", path)
            stored = part.payloads()
    except StoreCorruptError as exc:
        return exc.message
    got = np.frombuffer(stored, np.uint8)
    if np.array_equal(got, wanted):
        return None
    n = min(len(got), len(wanted))
    differ = np.flatnonzero(got[:n] != wanted[:n])
    first = int(differ[0]) if differ.size else n
    row = min(int(np.searchsorted(offsets[1:] - offsets[0], first, side="right")), len(records) - 1)
    return damaged(f"the record of product {job.index * batch.part_rows + row} differs", path)


def _part_checks(store: Store, batch: BatchInfo, parts: list[_PartResult]) -> list[Check]:
    """Every part readable and well-formed, holding the batch's products."""
    broken = [p for p in parts if p.damage is not None]
    count = sum(p.rows for p in parts)
    if broken:
        more = f" (and {len(broken) - 1} more damaged parts)" if len(broken) > 1 else ""
        readable = Check("parts", False, f"{broken[0].damage}{more}")
    else:
        plural = "s" if len(parts) != 1 else ""
        readable = Check("parts", True, f"{len(parts)} part{plural}, every column well-formed")
    counted = f"{count} stored products, the batch has {batch.tree_size}"
    return [readable, Check("products", count == batch.tree_size, counted)]


def _url_check(store: Store, batch: BatchInfo, parts: list[_PartResult]) -> Check:
    wrong = next((p for p in parts if p.url_mismatch is not None), None)
    if wrong is None and not any(p.urls_stored for p in parts):
        return Check("urls", True, "no url is stored: every reader rebuilds them")
    if wrong is None:
        return Check("urls", True, "every url matches its recomputed value")
    what = f"url of product {wrong.url_mismatch} differs from its recomputed value"
    return Check("urls", False, damaged(what, store.part_files(batch)[wrong.index]))


@dataclass(frozen=True, slots=True)
class _Levels:
    """The tree above the parts (levels ``top`` up to the root): recomputed from the
    parts' subtree roots (None when a part is unreadable) and as stored (None when the
    tree file is unusable); ``broken`` is the first stored node anywhere in the tree
    that does not hash from its children."""

    top: int
    committed: bytes
    recomputed: list[bytes] | None
    stored: list[bytes] | None
    broken: tuple[int, int] | None

    @property
    def consistent(self) -> bool:
        """The stored tree is a Merkle tree whose root is the committed one."""
        return self.stored is not None and self.broken is None and self.stored[-1] == self.committed


def _levels(batch: BatchInfo, parts: list[_PartResult], tree: TreeFile | None) -> _Levels:
    top = _top_level(batch)
    try:
        committed = bytes.fromhex(batch.root)
    except ValueError:
        committed = b""
    recomputed = None
    if all(p.damage is None for p in parts):
        height = len(merkle.level_sizes(batch.parts)) - 1
        recomputed = _subtree(b"".join(p.top for p in parts), height)
    stored = [tree.level(i) for i in range(top, tree.level_count)] if tree is not None else None
    broken = next((p.tree_damage for p in parts if p.tree_damage is not None), None)
    if broken is None and stored is not None:
        broken = _shifted(_subtree_damage(stored, 0), top)
    return _Levels(top, committed, recomputed, stored, broken)


def _shifted(node: tuple[int, int] | None, levels: int) -> tuple[int, int] | None:
    return None if node is None else (node[0] + levels, node[1])


def _tree_checks(
    store: Store,
    batch: BatchInfo,
    parts: list[_PartResult],
    tree: TreeFile | None,
    tree_damage: str | None,
) -> list[Check]:
    """ "root": the parts hash to the committed root; "tree file": every stored node is
    the committed tree's. A failure names the first damaged product or node."""
    levels = _levels(batch, parts, tree)
    root = _root_check(store, batch, parts, levels)
    path = store.batch_dir(batch) / "tree.bin"
    if tree_damage is not None or levels.stored is None:
        return [root, Check("tree file", False, tree_damage or "not checked")]
    node: tuple[int, int] | None = None
    if root.ok and levels.recomputed is not None:
        # The parts are intact, so the first stored node that differs is the damage.
        node = next((p.first_difference for p in parts if p.first_difference), None)
        if node is None:
            node = _shifted(_first_difference(levels.recomputed, levels.stored, 0), levels.top)
        if node is not None:
            what = f"{_node_name(node)} differs from its recomputed value"
            return [root, Check("tree file", False, damaged(what, path))]
        return [root, Check("tree file", True, "every node matches the recomputed tree")]
    if levels.broken is not None:
        what = f"{_node_name(levels.broken)} does not hash from the level below"
        return [root, Check("tree file", False, damaged(what, path))]
    if not levels.consistent:
        return [root, Check("tree file", False, damaged("the root is not the committed one", path))]
    return [root, Check("tree file", True, "every node hashes up to the committed root")]


def _root_check(store: Store, batch: BatchInfo, parts: list[_PartResult], levels: _Levels) -> Check:
    if levels.recomputed is None:
        return Check("root", False, "not recomputed: a part is damaged")
    root = levels.recomputed[-1]
    if root == levels.committed:
        return Check("root", True, f"recomputed root {root.hex()[:16]}… is the committed one")
    leaf = next((p for p in parts if p.leaf_mismatch is not None), None)
    if levels.consistent and leaf is not None:
        # The stored tree is the committed one, so the product that differs is the damage.
        what = f"record or token of product {leaf.leaf_mismatch} differs from its committed leaf"
        return Check("root", False, damaged(what, store.part_files(batch)[leaf.index]))
    what = f"recomputed root {root.hex()[:16]}… is not the committed {batch.root[:16]}…"
    return Check("root", False, damaged(what, store.batch_dir(batch)))


def _node_name(node: tuple[int, int]) -> str:
    level, index = node
    return f"leaf {index}" if level == 0 else f"node {index} of level {level}"


# --------------------------------------------------------------------------- trees


def level_above(level: bytes) -> bytes:
    """One level up: ``SHA-256(0x01 || left || right)`` over adjacent pairs, an odd last
    node promoted (RFC 9162; :func:`provmint.merkle.node_hash`, which a test pins this
    to). Plain hashlib on purpose: no kernel shared with minting."""
    import numpy as np

    count = len(level) // _HASH
    pairs = count // 2
    messages = np.empty((pairs, 1 + 2 * _HASH), dtype=np.uint8)
    messages[:, 0] = 1
    messages[:, 1:] = np.frombuffer(level, np.uint8, pairs * 2 * _HASH).reshape(pairs, 2 * _HASH)
    out = _sha256_rows(messages)
    return out + level[-_HASH:] if count % 2 else out


def _subtree(leaves: bytes, height: int) -> list[bytes]:
    """Levels 0..``height`` above contiguous leaf hashes (a single node is promoted)."""
    levels = [leaves]
    for _ in range(height):
        levels.append(level_above(levels[-1]))
    return levels


def _stored_subtree(
    store: Store, batch: BatchInfo, start: int, rows: int, top: int
) -> list[bytes] | None:
    """The tree file's nodes above leaves ``start .. start + rows``, levels 0..``top``."""
    try:
        tree = store.tree(batch)
        levels = []
        with open(tree.file, "rb") as fh:
            for level in range(top + 1):
                first, last = start >> level, (start + rows - 1) >> level
                fh.seek(tree.offsets[level] + _HASH * first)
                data = fh.read(_HASH * (last - first + 1))
                if len(data) != _HASH * (last - first + 1):
                    return None
                levels.append(data)
        return levels
    except (OSError, StoreCorruptError):
        return None


def _first_node_difference(a: bytes, b: bytes) -> int | None:
    """Index of the first 32-byte node where two levels differ."""
    import numpy as np

    if a == b:
        return None
    n = min(len(a), len(b)) // _HASH
    x = np.frombuffer(a, np.uint8, n * _HASH).reshape(n, _HASH)
    y = np.frombuffer(b, np.uint8, n * _HASH).reshape(n, _HASH)
    differs = np.flatnonzero((x != y).any(axis=1))
    return int(differs[0]) if differs.size else n


def _first_difference(
    recomputed: list[bytes], stored: list[bytes], start: int
) -> tuple[int, int] | None:
    """(level, node index in the whole tree) of the first stored node that differs."""
    for level, (mine, theirs) in enumerate(zip(recomputed, stored, strict=False)):
        index = _first_node_difference(mine, theirs)
        if index is not None:
            return level, (start >> level) + index
    return None


def _subtree_damage(stored: list[bytes], start: int) -> tuple[int, int] | None:
    """(level, node index) of the first stored node that does not hash from its children."""
    for level in range(1, len(stored)):
        index = _first_node_difference(level_above(stored[level - 1]), stored[level])
        if index is not None:
            return level, (start >> level) + index
    return None


# --------------------------------------------------------------------------- columns


def _first_false(mask: pa.Array | pa.ChunkedArray) -> int | None:
    """Index of the first False (or null) in a boolean Arrow array."""
    import numpy as np
    import pyarrow.compute as pc

    values = pc.fill_null(mask, False).to_numpy(zero_copy_only=False)
    bad = np.flatnonzero(~values)
    return int(bad[0]) if bad.size else None


def _plain(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    import pyarrow as pa

    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return array


def _u32be_rows(prefix: bytes, lengths: np.ndarray) -> pa.Array:
    """``prefix || u32be(length)`` for every length, as binary values."""
    import numpy as np

    width = len(prefix)
    rows = np.empty((len(lengths), width + 4), dtype=np.uint8)
    rows[:, :width] = np.frombuffer(prefix, np.uint8)
    rows[:, width:] = np.asarray(lengths, dtype=">u4").view(np.uint8).reshape(-1, 4)
    return _fixed_rows(rows)


def _lengths(values: pa.Array) -> np.ndarray:
    """The byte length of every value of a string or binary array."""
    import numpy as np

    offsets, _ = _binary_buffers(values)
    lengths: np.ndarray = np.diff(offsets)
    return lengths


def record_bytes(table: pa.Table, names: list[str]) -> pa.Array:
    """``provmint-record/1`` bytes of every row (fields ``names``), over whole columns.

    Written from the format (see :mod:`provmint.canonical`), independently of the
    minting engine's encoder; equals :func:`provmint.canonical.encode_record` row by row
    (a property test pins it).
    """
    return _joined(_record_pieces(table, names))


def _record_pieces(table: pa.Table, names: list[str]) -> list[pa.Array]:
    """The arrays that, joined row by row, make :func:`record_bytes`: per field (in
    byte order) a header (the record's magic and field count before the first; the
    field's name and the value's length) and the values. Constant bytes are columns
    too: Arrow joins arrays several times faster than it broadcasts scalars."""
    import pyarrow as pa

    ordered = sorted(names, key=lambda n: n.encode("ascii"))
    pieces: list[pa.Array] = []
    for i, name in enumerate(ordered):
        raw = name.encode("ascii")
        values = _plain(table.column(name)).cast(pa.binary())
        start = RECORD_MAGIC + struct.pack(">H", len(ordered)) if i == 0 else b""
        header = start + struct.pack(">B", len(raw)) + raw
        pieces += [_u32be_rows(header, _lengths(values)), values]
    return pieces


def _joined(pieces: list[pa.Array]) -> pa.Array:
    """Binary arrays concatenated row by row."""
    import pyarrow as pa
    import pyarrow.compute as pc

    return _plain(pc.binary_join_element_wise(*pieces, pa.scalar(b"", pa.binary())))


def _constant(value: bytes, rows: int) -> pa.Array:
    """``value`` in every one of ``rows`` rows, as a binary array."""
    import numpy as np

    matrix = np.empty((rows, len(value)), dtype=np.uint8)
    matrix[:] = np.frombuffer(value, np.uint8)
    return _fixed_rows(matrix)


def token_bytes(tokens: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Raw tokens as an (n, 16) uint8 array, decoded in bulk from canonical printed
    tokens (22 base64url characters; ``read_part`` has checked them). Equals
    :func:`provmint.tokens.parse_token` row by row (tested)."""
    import numpy as np
    import pyarrow as pa

    text = _plain(tokens).cast(pa.binary())
    n = len(text)
    offsets = np.frombuffer(text.buffers()[1], np.int32, n + 1, text.offset * 4)
    if n and not (np.diff(offsets) == TOKEN_CHARS).all():
        raise ValueError("tokens are not all 22 characters")
    data = np.frombuffer(text.buffers()[2] or b"", np.uint8)
    padded = np.full((n, 24), ord("A"), dtype=np.uint8)  # 22 chars + "AA": 18 whole bytes
    padded[:, :TOKEN_CHARS] = data[offsets[0] : offsets[0] + n * TOKEN_CHARS].reshape(
        n, TOKEN_CHARS
    )
    raw = base64.urlsafe_b64decode(padded.tobytes())
    return np.frombuffer(raw, np.uint8).reshape(n, 18)[:, :TOKEN_BYTES]


def leaf_hashes(records: pa.Array, tokens: np.ndarray) -> bytes:
    """``provmint-leaf/1`` hash of every row: ``SHA-256(0x00 || record ||
    SHA-256("PMC1" || token))`` (:func:`provmint.merkle.leaf_hash` over the record and
    :func:`provmint.canonical.token_commitment`, which a test pins this to)."""
    n = len(records)
    return _sha256_values(_joined([_constant(b"\x00", n), records, _commitments(tokens)]))


def table_leaf_hashes(table: pa.Table, names: list[str], tokens: np.ndarray) -> bytes:
    """:func:`leaf_hashes` of :func:`record_bytes` (a test pins it), with the records
    joined straight into the leaf data."""
    leaf = [_constant(b"\x00", table.num_rows), *_record_pieces(table, names)]
    return _sha256_values(_joined([*leaf, _commitments(tokens)]))


def _commitments(tokens: np.ndarray) -> pa.Array:
    """``SHA-256("PMC1" || token)`` of every raw token, as 32-byte binary values."""
    import numpy as np

    n = len(tokens)
    tagged = np.empty((n, len(COMMIT_TAG) + TOKEN_BYTES), dtype=np.uint8)
    tagged[:, : len(COMMIT_TAG)] = np.frombuffer(COMMIT_TAG, np.uint8)
    tagged[:, len(COMMIT_TAG) :] = tokens
    digests = np.frombuffer(_sha256_rows(tagged), np.uint8)
    return _fixed_rows(digests.reshape(n, _HASH))


_HASH_ROWS = 4096
"""Messages turned into Python objects and hashed at a time: few enough that they stay
in the CPU's caches (about a fifth faster per message than a whole part at once)."""

_ONE_BLOCK = 55
"""The longest message SHA-256 hashes in one block (with its 9 bytes of padding)."""


def _sha256_rows(matrix: np.ndarray) -> bytes:
    """The SHA-256 of every row of a 2-D uint8 array, concatenated (32 bytes each).

    One hashlib call per message, and no other Python work per message: the messages
    are built over whole columns beforehand, since per-call overhead, not hashing, is
    the cost here.
    """
    import numpy as np

    # One block (up to 55 bytes with SHA-256's padding): the cheaper call for short ones.
    sha256 = short_sha256 if matrix.shape[1] <= _ONE_BLOCK else hashlib.sha256
    rows = np.ascontiguousarray(matrix).view(f"V{matrix.shape[1]}").ravel()
    return b"".join(
        [
            b"".join([sha256(m).digest() for m in rows[i : i + _HASH_ROWS].tolist()])
            for i in range(0, len(rows), _HASH_ROWS)
        ]
    )


def _sha256_values(values: pa.Array) -> bytes:
    """The SHA-256 of every value of a binary array, concatenated (as
    :func:`_sha256_rows`)."""
    sha256 = hashlib.sha256
    return b"".join(
        [
            b"".join([sha256(m).digest() for m in values.slice(i, _HASH_ROWS).to_pylist()])
            for i in range(0, len(values), _HASH_ROWS)
        ]
    )


def _fixed_rows(matrix: np.ndarray) -> pa.Array:
    """The rows of a 2-D uint8 array as an Arrow binary array (no copy)."""
    import numpy as np
    import pyarrow as pa

    rows, width = matrix.shape
    offsets = np.arange(0, rows * width + 1, width, dtype=np.int32)
    data = np.ascontiguousarray(matrix)
    return pa.Array.from_buffers(
        pa.binary(), rows, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )


def _expected_tokens(secret: bytes, gtin: pa.ChunkedArray, serial: pa.ChunkedArray) -> np.ndarray:
    """The issuer key's token for every row (``provmint-token/1``), as (n, 16) uint8.
    HMAC from the key's precomputed inner and outer states (:func:`provmint.tokens.
    hmac_states`): one block hashed per state, cheaper than two-block messages (and than
    a copied HMAC object)."""
    import numpy as np
    import pyarrow as pa

    ids = _joined([_plain(gtin).cast(pa.binary()), _plain(serial).cast(pa.binary())])
    inner, outer = hmac_states(secret)
    inner_copy, outer_copy = inner.copy, outer.copy
    blocks: list[bytes] = []
    for start in range(0, len(ids), _HASH_ROWS):
        out: list[bytes] = []
        append = out.append
        for ident in ids.slice(start, _HASH_ROWS).to_pylist():
            h = inner_copy()
            h.update(ident)
            o = outer_copy()
            o.update(h.digest())
            append(o.digest())
        blocks.append(b"".join(out))
    digests = np.frombuffer(b"".join(blocks), np.uint8).reshape(-1, _HASH)
    return digests[:, :TOKEN_BYTES]


def digital_links(
    base: str,
    gtin: pa.Array | pa.ChunkedArray,
    serial: pa.Array | pa.ChunkedArray,
    lot: pa.Array | pa.ChunkedArray | None,
    token: pa.Array | pa.ChunkedArray,
) -> pa.Array:
    """:func:`provmint.gs1.digital_link` of every row. Where percent-encoding changes
    nothing (the usual case) the parts are joined over whole columns; every other row
    is built by ``gs1.digital_link`` itself."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    gtin, serial, token = _plain(gtin), _plain(serial), _plain(token)
    n = len(gtin)
    lot = _plain(lot) if lot is not None else pa.array([""] * n, pa.string())
    if (_lengths(lot) > 0).all():  # the usual case: every product has a lot
        lot_part = [_constant(b"/10/", n), lot.cast(pa.binary())]
    else:
        with_lot = pc.binary_join_element_wise("/10/", lot, "")
        lot_part = [pc.if_else(pc.equal(lot, ""), "", with_lot).cast(pa.binary())]
    prefix = (base.rstrip("/") + "/01/").encode()
    pieces = [_constant(prefix, n), gtin.cast(pa.binary()), *lot_part]
    pieces += [_constant(b"/21/", n), serial.cast(pa.binary())]
    pieces += [_constant(b"?t=", n), token.cast(pa.binary())]
    joined = _joined(pieces).view(pa.string())
    plain = _unreserved(lot) & _unreserved(serial) & _unreserved(token)
    special = np.flatnonzero(~plain)
    if not special.size:
        return joined
    rows = pa.array(special)
    slow = [
        gs1.digital_link(base, g, s, lt, t)
        for g, s, lt, t in zip(
            gtin.take(rows).to_pylist(),
            serial.take(rows).to_pylist(),
            lot.take(rows).to_pylist(),
            token.take(rows).to_pylist(),
            strict=True,
        )
    ]
    mask = np.zeros(n, dtype=bool)
    mask[special] = True
    return _plain(pc.replace_with_mask(joined, pa.array(mask), pa.array(slow, pa.string())))


def _unreserved(values: pa.Array) -> np.ndarray:
    """Which values consist of RFC 3986 unreserved characters only (those that
    :func:`provmint.gs1.percent_encode` leaves as they are), looked up byte by byte."""
    import numpy as np

    offsets, data = _binary_buffers(values)
    allowed = np.zeros(256, dtype=bool)
    allowed[np.frombuffer(_UNRESERVED, np.uint8)] = True
    bad = ~allowed.take(data[offsets[0] : offsets[-1]])
    if not bad.any():
        return np.ones(len(values), dtype=bool)
    before = np.concatenate(([0], np.cumsum(bad)))  # bad bytes before each position
    relative = offsets - offsets[0]
    clean: np.ndarray = before[relative[1:]] == before[relative[:-1]]
    return clean


def _binary_buffers(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A string or binary array's value offsets (n + 1, int64) and data bytes."""
    import numpy as np

    n = len(values)
    offsets = np.frombuffer(values.buffers()[1], np.int32, n + 1, values.offset * 4)
    data = np.frombuffer(values.buffers()[2] or b"\0", np.uint8)
    return offsets.astype(np.int64), data


def key_hashes(gtin: pa.Array | pa.ChunkedArray, serial: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """``provmint-keyhash/1`` of every (gtin14, serial), the catalog's lookup key: the
    gtin's 14 bytes and the serial NUL-padded to 20 (longer values cut, so damaged rows
    hash without error) as five little-endian u64 words, mixed splitmix64-style.
    Written from the format, not shared with the ingest code (tested against it)."""
    import numpy as np
    import pyarrow.compute as pc

    n = len(gtin)
    block = np.zeros((n, 40), dtype=np.uint8)
    block[:, :14] = _fixed_width(gtin, 14)
    padded = pc.utf8_rpad(_plain(serial), width=20, padding="\0")  # ASCII: 20 bytes each
    block[:, 14:34] = _fixed_width(padded, 20)
    words = block.view("<u8").astype(np.uint64)
    m1, m2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
    h = np.full(n, 0x9E3779B97F4A7C15, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for i in range(5):
            h = (h ^ words[:, i]) * m1
            h ^= h >> np.uint64(31)
        for shift, mult in ((30, m1), (27, m2)):
            h = (h ^ (h >> np.uint64(shift))) * mult
        h ^= h >> np.uint64(31)
    return h


def _fixed_width(column: pa.Array | pa.ChunkedArray, width: int) -> np.ndarray:
    """The first ``width`` bytes of each value, NUL-padded, as an (n, width) array."""
    import numpy as np
    import pyarrow as pa

    array = _plain(column).cast(pa.binary())
    n = len(array)
    offsets = np.frombuffer(array.buffers()[1], np.int32, n + 1, array.offset * 4).astype(np.int64)
    data = np.frombuffer(array.buffers()[2] or b"\0", np.uint8)
    if n and offsets[-1] - offsets[0] == n * width and (np.diff(offsets) == width).all():
        return data[offsets[0] : offsets[-1]].reshape(n, width)  # the usual case: no copy
    lengths = np.minimum(np.diff(offsets), width)
    columns = np.arange(width)
    take = columns[None, :] < lengths[:, None]
    positions = np.where(take, offsets[:-1, None] + columns[None, :], 0)
    return np.where(take, data[positions], 0).astype(np.uint8)
