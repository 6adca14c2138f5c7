"""Read-side verbs over a store: list and show batches, find a product, export label files
and proofs, upgrade a pending proof (:func:`upgrade_proof_file`), check a token.

Readers hold the store lock (shared) only while they read the catalog; committed batch
files never change, so Parquet and tree reads need no lock.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple

from provmint import gs1, merkle
from provmint.canonical import encode_record, token_commitment
from provmint.config import Settings
from provmint.errors import (
    ConfigError,
    NotFoundError,
    ProofError,
    ProvmintError,
    StoreCorruptError,
)
from provmint.keys import load_keyring
from provmint.outfile import STDOUT, open_output
from provmint.proofs import MAX_PROOF_BYTES, PROOF_FORMAT, Proof, parse_proof, proof_to_json
from provmint.store import PART_COLUMNS, BatchInfo, Store, find_batch
from provmint.store.lookup import ProductFinder, StoredProduct
from provmint.tokens import format_token, make_token, parse_token, tokens_equal

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from provmint.store.anchors import AnchorRecord
    from provmint.store.prints import PrintRecord
    from provmint.store.view import CatalogView

__all__ = [
    "LABEL_COLUMNS",
    "LABEL_CSV_COLUMNS",
    "LabelCsv",
    "ProductRecord",
    "ProofExport",
    "ProofUpgrade",
    "TokenCheck",
    "anchor_section",
    "anchor_states",
    "batch_anchor_section",
    "batch_json",
    "batch_prints",
    "catalog_view",
    "describe_anchor",
    "export_batch_proofs",
    "export_labels",
    "export_proof",
    "find_product",
    "label_table",
    "list_batches",
    "locate_product",
    "proof_of",
    "read_catalog",
    "read_view",
    "show_batch",
    "upgrade_available",
    "upgrade_proof",
    "upgrade_proof_file",
    "verify_token",
]

LABEL_COLUMNS = (
    "gtin",
    "serial",
    "lot",
    "expiry",
    "token",
    "url",
    "element_string",
    "human_readable",
)
"""A label file's columns (``batch export``, CSV and Parquet; ``labels.csv``): the
product's identity, its token, its verification URL on the base chosen for printing, the
GS1 element string (``gs1.element_string``: what a GS1 DataMatrix carries, variable-length
fields ended by the group separator U+001D) and the human-readable text printed beside
the symbol (``gs1.human_readable``)."""
LABEL_CSV_COLUMNS = (*LABEL_COLUMNS, "code_file")
"""The label CSV's columns, the same in ``labels.csv`` and ``batch export``: the label
columns and the file ``labels`` drew the product's code into (relative to the CSV;
empty in ``batch export`` and when ``labels`` draws no files)."""


@dataclass(frozen=True, slots=True)
class ProductRecord:
    """One stored product: its committed record, token, URL and place in its batch."""

    batch: BatchInfo
    leaf_index: int
    record: dict[str, str]
    token: str

    @property
    def url(self) -> str:
        """The verification URL printed on the product (built on use: the service looks
        products up by the thousand and does not show it)."""
        return gs1.digital_link(
            self.batch.manifest["url_base"],
            self.record["gtin"],
            self.record["serial"],
            self.record.get("lot", ""),
            self.token,
        )

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "batch_id": self.batch.batch_id,
            "leaf_index": self.leaf_index,
            "record": self.record,
            "token": self.token,
            "url": self.url,
        }


@contextmanager
def read_catalog(settings: Settings) -> Iterator[tuple[Store, duckdb.DuckDBPyConnection]]:
    """The store and a read-only catalog connection, under the shared store lock."""
    store = Store.open(settings.store)
    with store.reading(timeout=settings.lock_timeout) as con:
        yield store, con


@contextmanager
def catalog_view(settings: Settings) -> Iterator[tuple[Store, CatalogView]]:
    """The store and its catalog as readers see it (:meth:`Store.view`: no DuckDB when
    the snapshot is current), under the shared store lock: open index runs inside the
    block (a commit may replace them once the lock is released)."""
    store = Store.open(settings.store)
    with store.lock(exclusive=False, timeout=settings.lock_timeout, purpose="read"):
        yield store, store.view()


def read_view(settings: Settings) -> CatalogView:
    """The catalog as readers see it (:func:`catalog_view`, when nothing is to be opened
    under the lock)."""
    with catalog_view(settings) as (_, view):
        return view


def anchor_states(settings: Settings) -> dict[str, dict[str, Any]]:
    """Batch id -> the live anchor covering it, in the one JSON shape of an anchor
    (:meth:`provmint.store.anchors.AnchorRecord.to_json`, as ``anchor status`` gives it,
    less the transactions sent: the catalog view does not hold them)."""
    view = read_view(settings)
    out: dict[str, dict[str, Any]] = {}
    for record in view.anchors:
        summary = record.to_json(attempts=False)
        for seq, _, _ in record.batches:
            out[view.batch_by_seq(seq).batch_id] = summary
    return out


def describe_anchor(summary: dict[str, Any] | None) -> str:
    """One line about a batch's anchor, for tables."""
    if summary is None:
        return "pending (not anchored yet)"
    if summary["block_number"] is None:
        return f"{summary['state']} (anchor #{summary['anchor_id']}, chain {summary['chain_id']})"
    return (
        f"{summary['state']}: block {summary['block_number']} of chain "
        f"{summary['chain_id']} ({summary['method']}, tx {summary['tx_hash']})"
    )


def list_batches(settings: Settings) -> list[BatchInfo]:
    """Every batch in the store, oldest first."""
    return list(read_view(settings).batches)


def show_batch(settings: Settings, ref: str) -> BatchInfo:
    """One batch by id or unique id prefix."""
    return find_batch(read_view(settings).batches, ref, settings.store)


def batch_json(
    batch: BatchInfo, anchor: dict[str, Any] | None, prints: list[PrintRecord]
) -> dict[str, Any]:
    """The one JSON shape of a batch (``docs/schemas/batch.schema.json``), the same in
    ``batch create``, ``batch list`` and ``batch show``: the catalog's facts, the live
    anchor covering it (:func:`anchor_states`; None while pending) and every production
    of its labels (:func:`batch_prints`)."""
    return {**batch.to_json(), "anchor": anchor, "printed": [p.to_json() for p in prints]}


def batch_prints(settings: Settings, batch: BatchInfo) -> list[PrintRecord]:
    """The URL bases ``batch``'s labels and label exports were produced with, oldest
    first (:mod:`provmint.store.prints`)."""
    from provmint.store.prints import read_prints

    return read_prints(Store.open(settings.store), batch.batch_id)


def product_record(stored: StoredProduct) -> ProductRecord:
    """A stored product as the commands show it (with its printed token)."""
    return ProductRecord(stored.batch, stored.leaf, stored.record, format_token(stored.token))


def find_product(
    settings: Settings,
    *,
    gtin: str | None = None,
    serial: str | None = None,
    token: str | None = None,
) -> ProductRecord:
    """Look a product up by (gtin, serial) or by its printed token."""
    return locate_product(settings, gtin=gtin, serial=serial, token=token).product


def locate_product(
    settings: Settings,
    *,
    gtin: str | None = None,
    serial: str | None = None,
    token: str | None = None,
) -> LocatedProduct:
    """:func:`find_product`, and the proof ``anchor`` section of its batch (None until
    the batch's anchor is in a block). One catalog read, no DuckDB when the catalog's
    snapshot is current, and the index opened for one lookup (:class:`PointIndex`)."""
    if token is not None:
        try:
            raw = parse_token(token)
        except ValueError as exc:
            raise ConfigError(f"token {token[:40]!r}: {exc}") from exc
        with catalog_view(settings) as (store, view):
            finder = ProductFinder.open(store, view, point=True)
        with finder:
            found = finder.by_token(raw)
        if found is None:
            raise NotFoundError(f"no product with token {token} in store {settings.store}")
        return LocatedProduct(
            product_record(found),
            anchor_section(view.anchor_for_batch(found.batch.seq), found.batch),
        )
    if gtin is None or serial is None:
        raise ConfigError("give --gtin and --serial, or --token")
    gtin14 = gs1.normalize_gtin(gtin)
    if isinstance(gtin14, gs1.FieldProblem):
        raise ConfigError(f"gtin {gtin!r}: {gtin14.reason}")
    problem = gs1.check_serial(serial)
    if problem is not None:
        raise ConfigError(f"serial {serial!r}: {problem.reason}")
    with catalog_view(settings) as (store, view):
        finder = ProductFinder.open(store, view, point=True)
    with finder:
        found = finder.by_key(gtin14, serial)
    if found is None:
        raise NotFoundError(
            f"no product (gtin {gtin14}, serial {serial}) in store {settings.store}"
        )
    return LocatedProduct(
        product_record(found),
        anchor_section(view.anchor_for_batch(found.batch.seq), found.batch),
    )


def _batch_section(batch: BatchInfo) -> dict[str, Any]:
    return {
        "id": batch.batch_id,
        "manifest": batch.manifest,
        "manifest_digest": batch.manifest_digest,
        "commitment": batch.commitment,
    }


def _proof(
    batch: BatchInfo,
    leaf: int,
    record: dict[str, str],
    commitment: bytes,
    path: list[bytes],
    section: dict[str, Any],
    anchor: dict[str, Any] | None,
) -> dict[str, Any]:
    return {
        "format": PROOF_FORMAT,
        "product": {
            "record_version": batch.manifest["record_version"],
            "record": record,
            "token_commitment": commitment.hex(),
        },
        "tree": {
            "profile": batch.tree_profile,
            "size": batch.tree_size,
            "leaf_index": leaf,
            "path": [p.hex() for p in path],
            "root": batch.root,
        },
        "batch": section,
        "anchor": anchor,
    }


def batch_anchor_section(con: duckdb.DuckDBPyConnection, batch: BatchInfo) -> dict[str, Any] | None:
    """The proof ``anchor`` section of a batch whose anchor is in a block, else None."""
    from provmint.store.anchors import anchor_for_batch

    return anchor_section(anchor_for_batch(con, batch.seq), batch)


def anchor_section(record: AnchorRecord | None, batch: BatchInfo) -> dict[str, Any] | None:
    """The proof ``anchor`` section of ``batch`` from its live anchor ``record``: None
    unless the anchor is in a block."""
    from provmint import anchoring

    if record is None or not record.state.in_block:
        return None
    tree = anchoring.build_anchor_tree([bytes.fromhex(c) for _, _, c in record.batches])
    return anchoring.anchor_section(
        tree,
        bytes.fromhex(batch.commitment),
        {
            "chain_id": record.chain_id,
            "method": record.method,
            "contract": record.contract,
            "sender": record.sender,
            "tx_hash": record.tx_hash,
            "block_number": record.block_number,
            "block_hash": record.block_hash,
            "block_time": record.block_time,
        },
    )


def export_proof(
    settings: Settings,
    *,
    gtin: str | None = None,
    serial: str | None = None,
    token: str | None = None,
) -> dict[str, Any]:
    """The proof document of one product (O(log n) tree reads). The proof is checked
    against the stored tree before it is returned."""
    product, anchor = locate_product(settings, gtin=gtin, serial=serial, token=token)
    return proof_of(Store.open(settings.store), product, anchor)


def proof_of(store: Store, product: ProductRecord, anchor: dict[str, Any] | None) -> dict[str, Any]:
    """Build a product's proof from its stored tree (O(log n) reads) and check it against
    the batch root before returning it."""
    tree = store.tree(product.batch)
    commitment = token_commitment(parse_token(product.token))
    leaf = merkle.leaf_hash(encode_record(product.record) + commitment)
    if not tokens_equal(leaf, tree.leaf(product.leaf_index)):
        raise StoreCorruptError(
            f"batch {product.batch.batch_id}: stored record {product.leaf_index} does not match "
            "its leaf in the tree file"
        )
    path = tree.inclusion_path(product.leaf_index)
    if not merkle.verify_inclusion(
        leaf, product.leaf_index, tree.size, path, bytes.fromhex(product.batch.root)
    ):
        raise StoreCorruptError(f"batch {product.batch.batch_id}: tree file does not match root")
    return _proof(
        product.batch,
        product.leaf_index,
        product.record,
        commitment,
        path,
        _batch_section(product.batch),
        anchor,
    )


class LocatedProduct(NamedTuple):
    """A product found in the store, with its batch's proof ``anchor`` section (None
    until the batch's anchor is in a block)."""

    product: ProductRecord
    anchor: dict[str, Any] | None


class ProofExport(NamedTuple):
    """What :func:`export_batch_proofs` wrote: the batch, and how many proofs."""

    batch: BatchInfo
    proofs: int


def export_batch_proofs(
    settings: Settings,
    ref: str,
    out: Path | str,
    *,
    fmt: str = "jsonl",
    progress: Callable[[int, int], None] | None = None,
) -> ProofExport:
    """Write the proof of every product of a batch: JSON lines (one proof document per
    line) or Parquet (one row per product; the batch section in the file metadata), to
    ``out`` as :func:`provmint.outfile.open_output` does (``-``: standard output)."""
    if fmt not in ("jsonl", "parquet"):
        raise ConfigError(f"unknown proof export format {fmt!r}; use jsonl or parquet")
    with catalog_view(settings) as (store, view):
        batch = find_batch(view.batches, ref, store.root)
    anchor = anchor_section(view.anchor_for_batch(batch.seq), batch)
    proofs = _BatchProofs.load(store, batch, anchor)
    with open_output(out) as fh:
        done = _write_proofs(store, proofs, fh, fmt, progress)
    return ProofExport(batch, done)


@dataclass(frozen=True, slots=True)
class _BatchProofs:
    """What every proof of one batch shares, with the batch's whole tree in memory.

    A batch export needs every product's inclusion path: the tree is read once and each
    node is then a slice of its level, instead of a file read per node.
    """

    batch: BatchInfo
    section: dict[str, Any]
    anchor: dict[str, Any] | None
    levels: list[bytes]

    @classmethod
    def load(cls, store: Store, batch: BatchInfo, anchor: dict[str, Any] | None) -> _BatchProofs:
        """Read the batch's tree, every level of it."""
        tree = store.tree(batch)
        levels = [tree.level(i) for i in range(tree.level_count)]
        return cls(batch, _batch_section(batch), anchor, levels)

    def path(self, leaf: int) -> list[bytes]:
        """The inclusion path of ``leaf``."""
        levels = self.levels
        return merkle.inclusion_path(
            lambda level, j: levels[level][32 * j : 32 * j + 32], leaf, self.batch.tree_size
        )

    def json_lines(self, table: pa.Table) -> bytes:
        """A stored part's proof documents, one compact JSON line each."""
        fields = _record_fields(table)
        lines = []
        for row in table.to_pylist():
            leaf = row["leaf_index"]
            record = {k: row[k] for k in fields}
            commitment = token_commitment(parse_token(row["token"]))
            proof = _proof(
                self.batch, leaf, record, commitment, self.path(leaf), self.section, self.anchor
            )
            lines.append(json.dumps(proof, separators=(",", ":"), ensure_ascii=False))
        return ("\n".join(lines) + "\n").encode("utf-8")

    def parquet_part(self, table: pa.Table) -> pa.Table:
        """A stored part's proofs as Parquet rows: the leaf index, the record's columns,
        the token commitment and the path (what is shared is in the file metadata)."""
        import pyarrow as pa

        fields = _record_fields(table)
        commitments = [token_commitment(parse_token(t)) for t in table.column("token").to_pylist()]
        paths = [self.path(leaf) for leaf in table.column("leaf_index").to_pylist()]
        return (
            table.select(["leaf_index", *fields])
            .append_column("token_commitment", pa.array(commitments, pa.binary(32)))
            .append_column("path", pa.array(paths, pa.list_(pa.binary(32))))
        )

    def parquet_metadata(self) -> dict[bytes, bytes]:
        """The Parquet file's ``provmint`` metadata: what every row's proof shares."""
        shared = {
            "format": PROOF_FORMAT,
            "batch": self.section,
            "anchor": self.anchor,
            "tree": {
                "profile": self.batch.tree_profile,
                "size": self.batch.tree_size,
                "root": self.batch.root,
            },
            "record_version": self.batch.manifest["record_version"],
        }
        return {b"provmint": json.dumps(shared).encode()}


def _record_fields(table: pa.Table) -> list[str]:
    """A stored part's record columns (the committed record), in the part's order."""
    return [c for c in table.column_names if c not in PART_COLUMNS]


def _write_proofs(
    store: Store,
    proofs: _BatchProofs,
    fh: BinaryIO,
    fmt: str,
    progress: Callable[[int, int], None] | None,
) -> int:
    """Write the batch's proofs part by part to ``fh``, reporting after each part;
    returns how many were written."""
    import pyarrow.parquet as pq

    done = 0
    writer: Any = None
    for index in range(proofs.batch.parts):
        table = store.read_part(proofs.batch, index)
        if fmt == "jsonl":
            fh.write(proofs.json_lines(table))
        else:
            part = proofs.parquet_part(table)
            if writer is None:  # the first part gives the schema (every part has the batch's)
                schema = part.schema.with_metadata(proofs.parquet_metadata())
                writer = pq.ParquetWriter(fh, schema, compression="zstd")
            writer.write_table(part.replace_schema_metadata(writer.schema.metadata))
        done += table.num_rows
        if progress is not None:
            progress(done, proofs.batch.tree_size)
    if writer is not None:
        writer.close()
    return done


def label_table(table: pa.Table, url_base: str) -> pa.Table:
    """The :data:`LABEL_COLUMNS` of a stored part, for labels printed on ``url_base``:
    each URL rebuilt on it (:func:`provmint.engine.digital_links`: for the base the batch
    was minted with, the URL stored), the element string and human-readable text of
    :mod:`provmint.gs1` (:func:`_gs1_texts`); a missing or null value as an empty string
    (so every label file writes it the same way)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from provmint.engine import digital_links

    def text(name: str) -> Any:
        if name in table.column_names:
            column = pc.fill_null(table.column(name), "")
            return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        return pa.array([""] * table.num_rows, pa.string())

    gtin, serial, lot, expiry = (text(n) for n in ("gtin", "serial", "lot", "expiry"))
    element, human = _gs1_texts(gtin, serial, lot, expiry)
    return pa.table(
        {
            "gtin": gtin,
            "serial": serial,
            "lot": lot,
            "expiry": expiry,
            "token": text("token"),
            "url": digital_links(table, url_base),
            "element_string": element,
            "human_readable": human,
        }
    )


_LAST = "\x00"
"""A stand-in serial: what :func:`_gs1_texts` finds at the end of gs1's strings."""


def _gs1_texts(gtin: pa.Array, serial: pa.Array, lot: pa.Array, expiry: pa.Array) -> Any:
    """``gs1.element_string`` and ``gs1.human_readable`` of every row, as two arrays.

    Both put the serial last, and a part holds few distinct (gtin, lot, expiry): gs1's
    functions are called once per distinct one, with a stand-in serial, and the serials
    appended over whole columns. Should gs1 ever not end with the serial, every row is
    built by gs1 itself."""
    import pyarrow as pa
    import pyarrow.compute as pc

    keys = pc.binary_join_element_wise(gtin, lot, expiry, "\x00")  # no field holds NUL
    groups = pc.dictionary_encode(keys)
    elements, humans = [], []
    for key in groups.dictionary.to_pylist():
        g, lt, e = key.split("\x00")
        elements.append(gs1.element_string(g, _LAST, lt, e))
        humans.append(gs1.human_readable(g, _LAST, lt, e))
    if not all(x.endswith("21" + _LAST) for x in elements) or not all(
        x.endswith("(21) " + _LAST) for x in humans
    ):
        fields = list(zip(*(c.to_pylist() for c in (gtin, serial, lot, expiry)), strict=True))
        return (
            pa.array([gs1.element_string(*f) for f in fields], pa.string()),
            pa.array([gs1.human_readable(*f) for f in fields], pa.string()),
        )
    texts = []
    for prefixes in (elements, humans):
        head = pa.array([x[: -len(_LAST)] for x in prefixes], pa.string()).take(groups.indices)
        texts.append(pc.binary_join_element_wise(head, serial, ""))
    return texts[0], texts[1]


class LabelCsv:
    """The one label CSV, written by ``labels`` (``labels.csv``) and ``batch export``
    onto a text stream: the header :data:`LABEL_CSV_COLUMNS`, then a row per label, in
    the dialect of :mod:`provmint.csvsafe` (every field quoted, ``"`` doubled, LF line
    ends; Arrow's writer, whole parts at a time); values a spreadsheet would run as
    formulas are neutralised unless ``raw``."""

    def __init__(self, text: Any, *, raw: bool) -> None:
        from provmint import csvsafe

        self._text = text
        self._raw = raw
        self._options = csvsafe.arrow_write_options()
        self._options.include_header = False
        csvsafe.csv_writer(text).writerow(LABEL_CSV_COLUMNS)

    def write(self, labels: pa.Table, files: list[str] | None = None) -> None:
        """One row per row of ``labels`` (a :func:`label_table`), each with its code
        file from ``files`` (none: empty)."""
        import pyarrow as pa
        import pyarrow.csv as pacsv

        from provmint import csvsafe

        shown = labels.select(list(LABEL_COLUMNS))
        if not self._raw:
            shown = csvsafe.neutralise_table(shown)
        names = files if files is not None else [""] * labels.num_rows
        shown = shown.append_column("code_file", pa.array(names, pa.string()))
        sink = pa.BufferOutputStream()
        pacsv.write_csv(shown, sink, write_options=self._options)
        self._text.write(sink.getvalue().to_pybytes().decode("utf-8"))


def export_labels(
    settings: Settings,
    ref: str,
    out: Path | str | None,
    *,
    url_base: str,
    fmt: str = "csv",
    raw: bool = False,
) -> int:
    """Write the label file of a batch (:data:`LABEL_COLUMNS`) with its URLs on
    ``url_base`` (see :func:`provmint.config.output_url_base`), and record that base
    (:mod:`provmint.store.prints`).

    CSV (:class:`LabelCsv`, the ``labels.csv`` format) or Parquet to ``out`` (a file,
    written atomically; a device or FIFO, written through; ``-`` or None: standard
    output, where Parquet must be asked for with ``-``). CSV values that a spreadsheet
    would run as formulas are neutralised unless ``raw`` (see :mod:`provmint.csvsafe`);
    Parquet is always raw. Returns the row count.
    """
    from provmint.config import is_placeholder
    from provmint.store.prints import PrintRecord, print_log

    if fmt not in ("csv", "parquet"):
        raise ConfigError(f"unknown label format {fmt!r}; use csv or parquet")
    if fmt == "parquet" and out is None:
        raise ConfigError(
            "Parquet labels need an output: pass -o FILE (or -o - for standard output)"
        )
    with catalog_view(settings) as (store, view):
        batch = find_batch(view.batches, ref, store.root)
    # The print record is opened first: a store it cannot be written in refuses the
    # export before anything is written.
    with print_log(store, batch.batch_id) as log:
        with open_output(STDOUT if out is None else out) as sink:
            written = _write_labels(sink, store, batch, url_base, fmt, raw)
        placeholder = is_placeholder(url_base)
        log.append(PrintRecord.now(url_base, "export", fmt, written, placeholder=placeholder))
    return written


def _write_labels(
    sink: BinaryIO, store: Store, batch: BatchInfo, url_base: str, fmt: str, raw: bool
) -> int:
    """Write the batch's label rows to ``sink`` as CSV or Parquet, part by part; the rows
    written."""
    import io

    import pyarrow.parquet as pq

    written = 0
    text = io.TextIOWrapper(sink, encoding="utf-8", newline="") if fmt == "csv" else None
    rows = LabelCsv(text, raw=raw) if text is not None else None
    parquet: Any = None
    for index in range(batch.parts):
        labels = label_table(store.read_part(batch, index), url_base)
        if rows is not None:
            rows.write(labels)
        else:
            if parquet is None:  # the first part gives the schema (all parts share it)
                parquet = pq.ParquetWriter(sink, labels.schema, compression="zstd")
            parquet.write_table(labels)
        written += labels.num_rows
    if text is not None:
        text.flush()
        text.detach()  # the sink is open_output's to finish
    if parquet is not None:
        parquet.close()
    return written


@dataclass(frozen=True, slots=True)
class TokenCheck:
    """Result of checking a printed token against the issuer keys."""

    valid: bool
    gtin: str
    serial: str
    key_id: str | None

    @property
    def reason(self) -> str:
        """Why, in one line."""
        if self.valid:
            return f"a token of this product under issuer key {self.key_id}"
        return "not a token of this product under any issuer key"

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form: a verdict (``valid`` or ``invalid``) and its reason, as every
        check reports it."""
        return {
            "verdict": "valid" if self.valid else "invalid",
            "reason": self.reason,
            "gtin": self.gtin,
            "serial": self.serial,
            "key_id": self.key_id,
        }


def verify_token(settings: Settings, token: str, gtin: str, serial: str) -> TokenCheck:
    """Check a printed token against every key in the key file (constant-time compares).

    Needs only the key file, not the store.
    """
    gtin14 = gs1.normalize_gtin(gtin)
    if isinstance(gtin14, gs1.FieldProblem):
        raise ConfigError(f"gtin {gtin!r}: {gtin14.reason}")
    problem = gs1.check_serial(serial)
    if problem is not None:
        raise ConfigError(f"serial {serial!r}: {problem.reason}")
    try:
        raw = parse_token(token)
    except ValueError:
        return TokenCheck(False, gtin14, serial, None)
    matched = None
    for key in load_keyring(settings.key_file).keys:
        # Every key is tried, so the time taken does not reveal which one matched.
        if tokens_equal(make_token(key.secret.reveal(), gtin14, serial), raw) and matched is None:
            matched = key.id
    return TokenCheck(matched is not None, gtin14, serial, matched)


# --------------------------------------------------------------------------- proof upgrade

UPGRADED = "upgraded"
ALREADY_ANCHORED = "already anchored"
STILL_PENDING = "pending"
FETCH_SECONDS = 10.0
"""``proof upgrade --from``: the whole answer must arrive within this many seconds."""
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True, slots=True)
class ProofUpgrade:
    """What :func:`upgrade_proof` found: ``state`` is ``"upgraded"`` (``document`` is the
    proof with its anchor section filled in), ``"already anchored"`` or ``"pending"``
    (the batch is not anchored yet; ``document`` is the proof as it was)."""

    state: str
    batch_id: str
    source: str
    document: dict[str, Any]
    written: str | None = None
    backup: str | None = None

    @property
    def anchor(self) -> dict[str, Any] | None:
        """The proof's anchor section (None while pending)."""
        anchor: dict[str, Any] | None = self.document.get("anchor")
        return anchor

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "state": self.state,
            "batch_id": self.batch_id,
            "source": self.source,
            "anchor": self.anchor,
            "written": self.written,
            "backup": self.backup,
        }


def upgrade_proof(
    settings: Settings,
    proof: bytes | str | dict[str, Any],
    *,
    source: str | None = None,
    token: str | None = None,
) -> ProofUpgrade:
    """Fill in the anchor section of a pending proof, from the store of ``settings`` or
    from a running ``provmint serve`` at ``source`` (which needs the printed ``token``:
    the proof holds only its commitment). Nothing else of the proof changes.

    The proof must verify offline first; the source's proof of the same product must
    then have exactly the same ``format``, ``product``, ``tree`` and ``batch`` sections
    (otherwise ProofError, exit 3: the source's batch is another), and its anchor
    section must lead from this batch commitment to the anchor root and digest. Nothing
    is written here (see :func:`upgrade_proof_file`).
    """
    from provmint.verify import Verdict, verify_proof

    p = parse_proof(proof)
    if p.anchor is not None:
        return ProofUpgrade(ALREADY_ANCHORED, p.batch_id, "the proof", p.document)
    report = verify_proof(p)
    if report.verdict is Verdict.INVALID:
        raise ProofError(f"the proof does not verify ({report.reason}); not upgraded")
    if source is None:
        where = f"store {settings.store}"
        product, anchor = locate_product(settings, gtin=p.record["gtin"], serial=p.record["serial"])
        fresh = parse_proof(proof_of(Store.open(settings.store), product, anchor))
    else:
        where = source.rstrip("/")
        fresh = _served_proof(where, p, token)
    _same_batch(p, fresh, where)
    if fresh.anchor is None or fresh.anchor_section is None:
        return ProofUpgrade(STILL_PENDING, p.batch_id, where, p.document)
    ok, detail = fresh.anchor_section.check_offline(p.commitment)
    if not ok:
        raise ProofError(f"the anchor section from {where} does not check: {detail}")
    document = {**p.document, "anchor": fresh.anchor}
    checked = verify_proof(document)
    if checked.verdict is not Verdict.UNCHECKED:  # every offline check, the anchor's too
        raise ProofError(f"the upgraded proof does not verify ({checked.reason}); not upgraded")
    return ProofUpgrade(UPGRADED, p.batch_id, where, document)


def upgrade_proof_file(
    settings: Settings,
    path: Path,
    *,
    source: str | None = None,
    token: str | None = None,
    backup: bool = True,
) -> ProofUpgrade:
    """:func:`upgrade_proof` on a proof file, written back in place (atomically, as
    :mod:`provmint.outfile` writes) when upgraded; the original is first kept as
    ``<path>.bak`` unless ``backup`` is false. Nothing is written otherwise."""
    from dataclasses import replace

    from provmint.outfile import is_stdout, write_output
    from provmint.verify import load_proof_file

    if is_stdout(path):
        raise ConfigError("proof upgrade rewrites a proof file: give its path, not -")
    original = load_proof_file(path)
    result = upgrade_proof(settings, original, source=source, token=token)
    if result.state != UPGRADED:
        return result
    kept = None
    if backup:
        kept = f"{path}.bak"
        write_output(kept, original)
    write_output(path, (proof_to_json(result.document) + "\n").encode("utf-8"))
    return replace(result, written=str(path), backup=kept)


def upgrade_available(settings: Settings, batch_id: str, commitment: str) -> bool:
    """Whether the store holds this batch (same id and commitment) anchored in a block:
    a pending proof of it can then be upgraded. False when there is no store to ask."""
    try:
        view = read_view(settings)
    except ProvmintError:
        return False
    for batch in view.batches:
        if batch.batch_id == batch_id and batch.commitment == commitment:
            return anchor_section(view.anchor_for_batch(batch.seq), batch) is not None
    return False


def _same_batch(proof: Proof, fresh: Proof, where: str) -> None:
    """Refuse a source whose proof of this product is not this very proof (another
    batch, another commitment, another leaf...): the anchor would not be this one's."""
    if fresh.batch_id != proof.batch_id or fresh.commitment != proof.commitment:
        raise ProofError(
            f"{where} holds this product in batch {fresh.batch_id} (commitment "
            f"{fresh.commitment.hex()[:16]}…), the proof says batch {proof.batch_id} "
            f"(commitment {proof.commitment.hex()[:16]}…); not upgraded"
        )
    for key in ("format", "product", "tree", "batch"):
        if json.dumps(proof.document[key], sort_keys=True) != json.dumps(
            fresh.document[key], sort_keys=True
        ):
            raise ProofError(f"{where} holds a different {key} section for this product")


def _served_proof(base: str, proof: Proof, token: str | None) -> Proof:
    """The proof a running ``provmint serve`` at ``base`` gives for this product
    (``GET {base}/proof/01/{gtin}/21/{serial}?t={token}``): https only (plain http to
    the loopback for tests and tunnels), no redirects followed, at most 1 MiB read
    within :data:`FETCH_SECONDS`."""
    import time
    import urllib.error
    import urllib.request
    from urllib.parse import urlsplit

    from provmint import __version__

    if token is None:
        raise ConfigError(
            "--from needs the printed token (--token): the proof holds only its commitment"
        )
    try:
        raw = parse_token(token)
    except ValueError as exc:
        raise ConfigError(f"token {token[:40]!r}: {exc}") from exc
    if not tokens_equal(token_commitment(raw), proof.token_commitment):
        raise ConfigError("--token is not this product's token (the proof commits to another)")
    parts = urlsplit(base)
    if parts.query or parts.fragment or parts.username or parts.password or not parts.hostname:
        raise ConfigError(f"--from {base[:80]!r}: give the service's address, https://host")
    if parts.scheme != "https" and not (parts.scheme == "http" and parts.hostname in _LOOPBACK):
        raise ConfigError(
            f"--from {base[:80]!r}: use https (plain http only to 127.0.0.1 or localhost)"
        )
    url = (
        f"{base}/proof/01/{proof.record['gtin']}/21/"
        f"{gs1.percent_encode(proof.record['serial'])}?t={format_token(raw)}"
    )

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None  # a redirect is answered as the error it then is

    opener = urllib.request.build_opener(_NoRedirect)
    request = urllib.request.Request(
        url, headers={"Accept": "application/json", "User-Agent": f"provmint/{__version__}"}
    )
    deadline = time.monotonic() + FETCH_SECONDS
    try:
        with opener.open(request, timeout=FETCH_SECONDS) as response:
            body = b""
            while len(body) <= MAX_PROOF_BYTES:
                if time.monotonic() > deadline:
                    raise ProvmintError(
                        f"{base}: the proof did not arrive within {FETCH_SECONDS:g} s"
                    )
                chunk = response.read(min(65536, MAX_PROOF_BYTES + 1 - len(body)))
                if not chunk:
                    break
                body += chunk
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise NotFoundError(f"{base} has no proof for this product (HTTP 404)") from None
        raise ProvmintError(f"{base}: HTTP {exc.code} for the proof") from None
    except (urllib.error.URLError, OSError) as exc:
        why = getattr(exc, "reason", None) or exc
        raise ProvmintError(f"{base}: cannot fetch the proof: {why}") from None
    if len(body) > MAX_PROOF_BYTES:
        raise ProofError(f"{base}: the served proof is larger than {MAX_PROOF_BYTES} bytes")
    try:
        return parse_proof(body)
    except ProofError as exc:
        raise ProofError(f"{base}: the served proof is malformed: {exc}") from None
