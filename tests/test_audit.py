"""``provmint verify --batch ID``: the audit of a whole stored batch (Parquet parts, tree
file, manifest, commitment, anchor, tokens) with the store treated as untrusted.

Each test mints into its own store; the anchored ones share one anvil node (module
scope) and anchor from dev account 0 through ``--rpc-url``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import EXAMPLE_CSV, Anvil, dev_key
from helpers import as_part_layout_v1, failed_checks, no_crash, verify_report
from hypothesis import given, settings
from hypothesis import strategies as st

from provmint.errors import (
    EXIT_INVALID,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_PENDING,
    EXIT_UNCHECKED,
    EXIT_USAGE,
)

GTIN = "09520123450014"
INTACT_CHECKS = [
    "catalog row",
    "manifest",
    "manifest file",
    "parts",
    "products",
    "root",
    "tree file",
    "urls",
    "records",
    "indexes",
    "batch commitment",
    "tokens",
]


@pytest.fixture(scope="module")
def chain_node() -> Iterator[Anvil]:
    chain = Anvil()
    yield chain
    chain.stop()


def audit(cli, batch_id: str, *args: object) -> tuple[Any, dict[str, Any]]:
    return verify_report(cli, "--batch", batch_id, *args)


def check(report: dict[str, Any], name: str) -> dict[str, Any]:
    found = [c for c in report["checks"] if c["name"] == name]
    assert len(found) == 1, (name, report["checks"])
    return found[0]


@pytest.fixture
def minted(cli, keyed, tmp_path: Path) -> SimpleNamespace:
    r = cli("batch", "create", EXAMPLE_CSV, "--json")
    assert r.exit_code == 0, r.output
    batch_id = json.loads(r.stdout)["batch_id"]
    batch_dir = tmp_path / "store" / "batches" / batch_id
    return SimpleNamespace(
        batch_id=batch_id,
        dir=batch_dir,
        part=batch_dir / "products" / "part-00000.parquet",
        tree=batch_dir / "tree.bin",
        anchor=None,
        record_part=batch_dir / "records" / "part-00000.rec",
        index=tmp_path / "store" / "index",
    )


@pytest.fixture
def anchored(cli, minted: SimpleNamespace, chain_node: Anvil, monkeypatch) -> SimpleNamespace:
    monkeypatch.setenv("PROVMINT_CHAIN_KEY", dev_key(0)[1])
    r = cli("anchor", "--rpc-url", chain_node.url, "--json")
    assert r.exit_code == 0, r.output
    minted.anchor = json.loads(r.stdout)["anchor"]
    minted.url = chain_node.url
    return minted


def rewrite_column(part: Path, column: str, row: int, value: str) -> None:
    """Rewrite one cell of a Parquet part file in place (what a tamperer would do)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(part)
    values = table.column(column).to_pylist()
    assert values[row] != value
    values[row] = value
    index = table.schema.get_field_index(column)
    table = table.set_column(index, table.schema.field(index), pa.array(values, pa.string()))
    pq.write_table(table, part)


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def tree_offsets(size: int) -> tuple[int, ...]:
    from provmint.store.treefile import level_offsets

    return level_offsets(size)


# --------------------------------------------------------------------------- intact batches


def test_intact_anchored_batch_is_valid(cli, anchored) -> None:
    r, report = audit(cli, anchored.batch_id, "--rpc-url", anchored.url)
    assert r.exit_code == EXIT_OK
    assert [c["name"] for c in report["checks"]] == [*INTACT_CHECKS, "anchor tree", "on chain"]
    assert failed_checks(report) == []
    assert report["products"] == 9 and report["batch_id"] == anchored.batch_id
    assert check(report, "tokens")["detail"] == "0 tokens do not match the issuer key"
    assert report["chain"]["chain_id"] == 31337
    assert report["chain"]["block_number"] == anchored.anchor["block_number"]
    assert report["chain"]["block_time"] == anchored.anchor["block_time"]
    assert report["reason"].startswith(
        f"anchored in block {anchored.anchor['block_number']} of chain 31337 at "
    )
    r = cli("verify", "--batch", anchored.batch_id, "--rpc-url", anchored.url)
    no_crash(r)
    assert r.exit_code == EXIT_OK
    lines = r.stdout.rstrip().splitlines()
    assert lines[0] == f"Audit of batch {anchored.batch_id} (9 products)"
    assert all(line.startswith("  ok ") for line in lines[1:-1]), lines
    assert lines[-1].startswith("VALID: anchored in block ")


def test_intact_unanchored_batch_is_pending(cli, minted, chain_node: Anvil) -> None:
    for args in ((), ("--rpc-url", chain_node.url)):
        r, report = audit(cli, minted.batch_id, *args)
        assert r.exit_code == EXIT_PENDING
        assert report["reason"] == "the stored batch is intact; it is not anchored yet"
        assert [c["name"] for c in report["checks"]] == INTACT_CHECKS
        assert failed_checks(report) == [] and report["chain"] is None


def test_anchored_batch_without_a_node_is_unchecked(cli, anchored) -> None:
    assert "PROVMINT_RPC_URL" not in os.environ
    r, report = audit(cli, anchored.batch_id)
    assert r.exit_code == EXIT_UNCHECKED
    assert report["reason"] == "the stored batch is intact; anchor not checked"
    assert check(report, "anchor tree")["ok"]
    assert failed_checks(report) == [] and report["chain"] is None


def test_batch_id_prefix_and_unknown_batch(cli, minted) -> None:
    r, report = audit(cli, minted.batch_id[:12])
    assert r.exit_code == EXIT_PENDING and report["batch_id"] == minted.batch_id
    r = cli("verify", "--batch", "19990101-deadbeef")
    no_crash(r)
    assert r.exit_code == EXIT_NOT_FOUND
    assert r.stderr.startswith("error: ")


# --------------------------------------------------------------------------- tampered store


def test_tampered_parquet_lot_is_invalid(cli, anchored) -> None:
    """A rewritten lot changes the record (so its leaf); the stored tree is still the
    committed one, so the product itself is named."""
    rewrite_column(anchored.part, "lot", 0, "L9999Z")
    r, report = audit(cli, anchored.batch_id, "--rpc-url", anchored.url)
    assert r.exit_code == EXIT_INVALID
    damage = (
        f"damaged: record or token of product 0 differs from its committed leaf, {anchored.part}"
    )
    assert report["reason"] == damage
    assert failed_checks(report) == ["root", "records"]
    assert check(report, "tree file")["ok"]
    assert "on chain" not in [c["name"] for c in report["checks"]]  # stopped before the chain
    assert report["chain"] is None
    r = cli("verify", "--batch", anchored.batch_id, "--rpc-url", anchored.url)
    assert r.exit_code == EXIT_INVALID
    assert f"  FAIL root: {damage}" in r.stdout
    assert r.stdout.rstrip().splitlines()[-1] == f"INVALID: {damage}"


def test_tampered_parquet_without_anchor_is_invalid(cli, minted) -> None:
    """A swapped serial breaks the leaf, the record part's copy, the key index entry and
    the token (and, in a part that stores URLs, the URL)."""
    rewrite_column(minted.part, "serial", 4, "SWAPPEDSERIAL")
    r, report = audit(cli, minted.batch_id)
    assert r.exit_code == EXIT_INVALID
    assert failed_checks(report) == ["root", "records", "indexes", "tokens"]
    assert check(report, "records")["detail"] == (
        f"damaged: the record of product 4 differs, {minted.record_part}"
    )
    assert check(report, "indexes")["detail"] == (
        f"damaged: key index: the entry of product 4 holds a wrong value, {minted.index}"
    )


@pytest.mark.parametrize(("where", "node"), [("leaf", "leaf 1"), ("root", "node 0 of level 4")])
def test_flipped_byte_in_tree_file_is_invalid(cli, minted, where: str, node: str) -> None:
    offsets = tree_offsets(9)
    flip_byte(minted.tree, offsets[0] + 40 if where == "leaf" else offsets[-1] + 3)
    r, report = audit(cli, minted.batch_id)
    assert r.exit_code == EXIT_INVALID
    assert failed_checks(report) == ["tree file"]
    assert report["reason"] == f"damaged: {node} differs from its recomputed value, {minted.tree}"


def test_flipped_byte_in_an_inner_tree_node_is_invalid(cli, minted, tmp_path: Path) -> None:
    """Every level of the stored tree is compared, so a corrupted inner node (which
    breaks ``proof export`` of the products under it) fails the audit."""
    offsets = tree_offsets(9)
    flip_byte(minted.tree, offsets[1] + 3)  # level 1, node 0: parent of leaves 0 and 1
    export = cli(
        "proof",
        "export",
        "--gtin",
        GTIN,
        "--serial",
        "MVY1MJDXQBXJ",  # leaf 3
        "-o",
        tmp_path / "p.json",
    )
    assert export.exit_code != 0  # the damage is real
    r, report = audit(cli, minted.batch_id)
    assert r.exit_code == EXIT_INVALID, report["reason"]
    assert failed_checks(report) == ["tree file"]
    assert report["reason"] == (
        f"damaged: node 0 of level 1 differs from its recomputed value, {minted.tree}"
    )


def test_tampered_token_is_reported_by_the_tokens_check(cli, minted) -> None:
    from provmint.tokens import format_token

    rewrite_column(minted.part, "token", 2, format_token(bytes(range(16))))
    r, report = audit(cli, minted.batch_id)
    assert r.exit_code == EXIT_INVALID
    assert check(report, "tokens") == {
        "name": "tokens",
        "ok": False,
        "detail": "1 tokens do not match the issuer key",
    }
    assert failed_checks(report) == ["root", "records", "indexes", "tokens"]
    assert report["reason"] == (
        f"damaged: record or token of product 2 differs from its committed leaf, {minted.part}"
    )


def test_token_check_needs_the_key_file(cli, minted, keyed) -> None:
    from provmint.tokens import format_token

    rewrite_column(minted.part, "token", 2, format_token(bytes(range(16))))
    shutil.move(keyed.key_file, keyed.key_file.with_suffix(".away"))
    r, report = audit(cli, minted.batch_id)
    assert r.exit_code == EXIT_INVALID
    assert "tokens" not in [c["name"] for c in report["checks"]]
    assert failed_checks(report) == ["root", "records", "indexes"]


def test_malformed_token_in_parquet_is_invalid_not_a_crash(cli, minted) -> None:
    """A stored token that is not 22 characters of base64url makes the batch invalid
    (exit 3), not a crash."""
    rewrite_column(minted.part, "token", 0, "not-a-token")
    r, report = audit(cli, minted.batch_id)
    assert r.exit_code == EXIT_INVALID
    assert report["reason"] == f"damaged: token of product 0 is malformed, {minted.part}"
    assert failed_checks(report) == ["parts", "products", "root"]
    assert check(report, "root")["detail"] == "not recomputed: a part is damaged"


def test_tampered_anchor_record_in_the_catalog_is_invalid(cli, anchored, tmp_path) -> None:
    """The catalog is untrusted too: its anchor facts are re-checked on chain."""
    import duckdb

    con = duckdb.connect(str(tmp_path / "store" / "catalog.duckdb"))
    try:
        con.execute("UPDATE anchors SET block_time = block_time + 1")
    finally:
        con.close()
    r, report = audit(cli, anchored.batch_id, "--rpc-url", anchored.url)
    assert r.exit_code == EXIT_INVALID
    assert failed_checks(report) == ["on chain"]
    assert report["reason"] == "on chain: the proof's block time differs from the chain"


def test_urls_are_rebuilt_not_stored(cli, minted) -> None:
    """Parts minted now store no URL; the audit says so rather than claiming a check."""
    import pyarrow.parquet as pq

    assert "url" not in pq.read_table(minted.part).column_names
    r, report = audit(cli, minted.batch_id)
    assert r.exit_code == EXIT_PENDING, report["reason"]
    assert check(report, "urls") == {
        "name": "urls",
        "ok": True,
        "detail": "no url is stored: every reader rebuilds them",
    }


def test_flipped_url_is_damage_named_by_product_and_part(cli, minted) -> None:
    """In a part written before parts stopped storing URLs, the url column is recomputed
    from the url base, gtin, lot, serial and token: a flipped bit there (a label that
    ``scan`` would judge forged) is damage."""
    import pyarrow.parquet as pq

    as_part_layout_v1(minted.part)
    r, report = audit(cli, minted.batch_id)
    assert r.exit_code == EXIT_PENDING, report["reason"]
    assert check(report, "urls")["detail"] == "every url matches its recomputed value"
    url = pq.read_table(minted.part).column("url")[3].as_py()
    damaged_url = url[:-1] + chr(ord(url[-1]) ^ 1)
    rewrite_column(minted.part, "url", 3, damaged_url)
    r, report = audit(cli, minted.batch_id)
    assert r.exit_code == EXIT_INVALID
    assert failed_checks(report) == ["urls"]
    assert report["reason"] == (
        f"damaged: url of product 3 differs from its recomputed value, {minted.part}"
    )


def test_edited_manifest_file_is_damage(cli, minted) -> None:
    path = minted.dir / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["label"] = "edited"
    path.write_text(json.dumps(manifest, indent=2))
    r, report = audit(cli, minted.batch_id)
    assert r.exit_code == EXIT_INVALID
    assert failed_checks(report) == ["manifest file"]
    assert report["reason"] == f"damaged: differs from the committed manifest, {path}"


@pytest.mark.parametrize(
    ("content", "what"),
    [
        (b"{not json", "not a manifest (Expecting property name enclosed in double quotes"),
        (b"[1, 2]", "not a manifest (not a JSON object)"),
        (b'{"a": 1, "a": 1}', "not a manifest (a key appears twice)"),
        (b'{"a": 1.5}', "not a manifest (float values are not allowed in canonical JSON)"),
        (b'"\xff"', "not a manifest ('utf-8' codec can't decode byte 0xff"),
        (b"[" * 100_000, "not a manifest (nested deeper than 16 levels)"),
        (None, "unreadable (No such file or directory)"),
    ],
)
def test_unreadable_manifest_file_is_damage(cli, minted, content, what: str) -> None:
    path = minted.dir / "manifest.json"
    if content is None:
        path.unlink()
    else:
        path.write_bytes(content)
    r, report = audit(cli, minted.batch_id)
    assert r.exit_code == EXIT_INVALID
    assert failed_checks(report) == ["manifest file"]
    assert report["reason"].startswith(f"damaged: {what}")
    assert report["reason"].endswith(f", {path}")


def catalog_sql(tmp_path: Path, sql: str, *params: object) -> None:
    """Edit the catalog directly, as a careless operator or a tamperer would."""
    import duckdb

    con = duckdb.connect(str(tmp_path / "store" / "catalog.duckdb"))
    try:
        con.execute(sql, list(params))
    finally:
        con.close()


@pytest.mark.parametrize(
    ("sql", "failed", "what"),
    [
        (
            "UPDATE batches SET products = products - 1",
            ["catalog row"],
            "products 8 disagrees with 9",
        ),
        ("UPDATE batches SET key_id = 'k-00000000'", ["catalog row"], "key_id 'k-00000000'"),
        ("UPDATE batches SET parts = 2", ["catalog row"], "parts 2 disagrees with 1"),
        ("UPDATE batches SET root = repeat('0', 64)", ["catalog row"], "root '000000"),
        (
            "UPDATE batches SET manifest = replace(manifest, '\"0.1', '\"9.9')",
            ["manifest", "batch commitment"],
            "the manifest differs from the committed one",
        ),
        (
            "UPDATE batches SET manifest_digest = repeat('0', 64)",
            ["manifest", "manifest file"],
            "the manifest differs from the committed one",
        ),
        ("UPDATE batches SET commitment = repeat('0', 64)", ["batch commitment"], None),
    ],
)
def test_edited_catalog_row_is_damage(cli, minted, tmp_path, sql, failed, what) -> None:
    catalog_sql(tmp_path, sql)
    r, report = audit(cli, minted.batch_id)
    assert r.exit_code == EXIT_INVALID
    assert failed_checks(report)[: len(failed)] == failed
    if what is not None:
        assert report["reason"].startswith(f"damaged: {what}"), report["reason"]
        assert report["reason"].endswith(f"catalog.duckdb table batches, batch {minted.batch_id}")


@pytest.mark.parametrize("manifest", ['{"columns": ', "[]", '{"a": 1}', "[" * 100_000])
def test_unreadable_catalog_manifest_is_damage_not_a_crash(
    cli, minted, tmp_path, manifest: str
) -> None:
    """Whatever the catalog's manifest holds (a deep nesting would exhaust the C stack of
    a naive JSON decoder), the audit reports it."""
    catalog_sql(tmp_path, "UPDATE batches SET manifest = ?", manifest)
    r, report = audit(cli, minted.batch_id)
    assert r.exit_code == EXIT_INVALID
    assert report["reason"] == (
        f"damaged: the manifest of batch {minted.batch_id} is not a "
        "provmint manifest, catalog.duckdb table batches"
    )


def index_run(minted: SimpleNamespace, kind: str) -> tuple[Path, list[int], list[int]]:
    """The store's one run of ``kind`` (one batch: one run each) and its keys and rows."""
    import numpy as np

    (path,) = sorted(minted.index.glob(f"{kind}-*.run"))
    data = path.read_bytes()
    count = int.from_bytes(data[8:16], "little")
    keys = np.frombuffer(data, "<u8", count, 64).tolist()
    rows = np.frombuffer(data, "<u4", count, 64 + 8 * count).tolist()
    return path, keys, rows


def write_run(path: Path, keys: list[int], rows: list[int]) -> None:
    """Rewrite a run's entries in place, header unchanged (what damage would do)."""
    import numpy as np

    header = path.read_bytes()[:64]
    path.write_bytes(header + np.array(keys, "<u8").tobytes() + np.array(rows, "<u4").tobytes())


def _flip_value(keys: list[int], rows: list[int], leaf: int, bit: int) -> None:
    keys[rows.index(leaf)] ^= bit


def _move_entry(keys: list[int], rows: list[int], leaf: int, to: int) -> None:
    rows[rows.index(leaf)] = to


def _swap_first_two(keys: list[int], rows: list[int], leaf: int, to: int) -> None:
    keys[0], keys[1] = keys[1], keys[0]
    rows[0], rows[1] = rows[1], rows[0]


@pytest.mark.parametrize(
    ("kind", "edit", "what"),
    [
        (
            "key",
            lambda k, r: _flip_value(k, r, 5, 1),
            "key index: the entry of product 5 holds a wrong value, {index}",
        ),
        (
            "token",
            lambda k, r: _flip_value(k, r, 7, 256),
            "token index: the entry of product 7 holds a wrong value, {index}",
        ),
        ("key", lambda k, r: _move_entry(k, r, 5, 6), "key index: product 5 has no entry, {index}"),
        (
            "token",
            lambda k, r: _move_entry(k, r, 0, 99),
            "entry {at0} of the index run points at row 99, past the last (8), {run}",
        ),
        (
            "key",
            lambda k, r: _swap_first_two(k, r, 0, 0),
            "entry 1 of the index run is out of order, {run}",
        ),
    ],
)
def test_damaged_index_entries_are_damage(cli, minted, kind, edit, what) -> None:
    """Damage in the store's index (sorted runs under index/): a wrong value, a missing
    or stray entry, an entry out of order (lookups would miss products)."""
    path, keys, rows = index_run(minted, kind)
    at0 = rows.index(0)
    edit(keys, rows)
    write_run(path, keys, rows)
    r, report = audit(cli, minted.batch_id)
    assert r.exit_code == EXIT_INVALID
    assert failed_checks(report) == ["indexes"]
    assert report["reason"] == "damaged: " + what.format(index=minted.index, run=path, at0=at0)


def test_index_run_listed_with_another_size_is_damage(cli, minted, tmp_path) -> None:
    catalog_sql(tmp_path, "UPDATE index_runs SET entries = 10 WHERE kind = 2")
    path, _, _ = index_run(minted, "token")
    r, report = audit(cli, minted.batch_id)
    assert r.exit_code == EXIT_INVALID
    assert report["reason"] == f"damaged: 9 entries, the catalog lists 10, {path}"


def test_missing_index_run_is_damage(cli, minted) -> None:
    path, _, _ = index_run(minted, "key")
    path.unlink()
    r, report = audit(cli, minted.batch_id)
    assert r.exit_code == EXIT_INVALID
    assert failed_checks(report) == ["indexes"]
    assert str(path) in report["reason"]


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_damaged_record_part_is_damage(cli, minted, damage: str) -> None:
    """The record parts lookups read: any difference from the Parquet rows is found."""
    data = minted.record_part.read_bytes()
    if damage == "flip":
        flip_byte(minted.record_part, len(data) - 5)
    elif damage == "truncate":
        minted.record_part.write_bytes(data[:-7])
    else:
        minted.record_part.unlink()
    r, report = audit(cli, minted.batch_id)
    assert r.exit_code == EXIT_INVALID
    assert failed_checks(report) == ["records"]
    assert report["reason"].startswith("damaged: ")
    assert report["reason"].endswith(str(minted.record_part))


def test_record_part_with_other_valid_content_is_damage(cli, minted) -> None:
    """A record part rewritten in the valid format with one product's record changed."""
    from provmint.canonical import decode_record, encode_record
    from provmint.store.records import RecordPart, write_records

    with RecordPart.open(minted.record_part) as part:
        rows = [part.get(i) for i in range(len(part))]
    fields = decode_record(rows[3][0])
    fields["lot"] = "OTHERLOT"
    rows[3] = (encode_record(fields), rows[3][1])
    import pyarrow as pa

    write_records(
        minted.record_part,
        pa.array([r for r, _ in rows], pa.binary()),
        b"".join(t for _, t in rows),
    )
    r, report = audit(cli, minted.batch_id)
    assert r.exit_code == EXIT_INVALID
    assert report["reason"] == f"damaged: the record of product 3 differs, {minted.record_part}"


def test_unreadable_part_is_damage_not_a_crash(cli, minted) -> None:
    minted.part.write_bytes(minted.part.read_bytes()[:-100])
    r, report = audit(cli, minted.batch_id)
    assert r.exit_code == EXIT_INVALID
    assert report["reason"].startswith("damaged: not readable Parquet (")
    assert report["reason"].endswith(f", {minted.part}")
    assert failed_checks(report) == ["parts", "products", "root"]
    r = cli("verify", "--batch", minted.batch_id)
    no_crash(r)
    assert r.exit_code == EXIT_INVALID
    assert r.stdout.rstrip().splitlines()[-1] == f"INVALID: {report['reason']}"


# --------------------------------------------------------------------------- usage


def test_proof_and_batch_together_is_a_usage_error(cli, minted, tmp_path: Path) -> None:
    proof = tmp_path / "p.json"
    assert (
        cli("proof", "export", "--gtin", GTIN, "--serial", "546CAWQDCR56", "-o", proof).exit_code
        == 0
    )
    r = cli("verify", proof, "--batch", minted.batch_id)
    no_crash(r)
    assert r.exit_code == EXIT_USAGE
    assert r.stderr.strip() == "error: give a proof file or --batch ID, not both"
    assert r.stdout == ""


def test_neither_proof_nor_batch_is_a_usage_error(cli) -> None:
    r = cli("verify")
    no_crash(r)
    assert r.exit_code == EXIT_USAGE
    assert r.stderr.strip() == "error: give a proof file (or - for standard input), or --batch ID"
    assert r.stdout == ""


def test_offline_audit_imports_no_web3(cli, anchored) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "provmint",
            "verify",
            "--batch",
            anchored.batch_id,
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    assert proc.returncode == EXIT_UNCHECKED, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["verdict"] == "unchecked"
    modules = {
        line.rsplit("|", 1)[1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "provmint.audit" in modules
    assert {m for m in modules if m.split(".")[0] in ("web3", "eth_account")} == set()
    # Independent of the minting engine: neither its code nor its C kernel.
    assert {"provmint.engine", "provmint._native", "provmint.minting"} & modules == set()


# --------------------------------------------------------------------------- recomputation

# The audit recomputes with its own column-wise code, never the minting engine's: these
# pin each piece to the pure core's definition, on hostile values.

TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)
GTINS = st.text("0123456789", min_size=14, max_size=14)
NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True).filter(
    lambda n: n not in ("gtin", "serial", "leaf_index", "token", "url")
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(GTINS, TEXT.filter(bool), TEXT, TEXT, st.binary(min_size=16, max_size=16)),
        min_size=1,
        max_size=8,
    ),
    st.lists(NAMES, max_size=3, unique=True),
)
def test_record_bytes_and_leaves_equal_the_canonical_encoding(rows, extra) -> None:
    import numpy as np
    import pyarrow as pa

    from provmint import merkle
    from provmint.audit import record_bytes, table_leaf_hashes
    from provmint.canonical import encode_record, token_commitment

    names = ["gtin", "serial", *extra]
    columns = {"gtin": [r[0] for r in rows], "serial": [r[1] for r in rows]}
    for i, name in enumerate(extra):
        columns[name] = [r[2 + i % 2] for r in rows]
    table = pa.table({k: pa.array(v, pa.string()) for k, v in columns.items()})
    expected = [encode_record({n: columns[n][i] for n in names}) for i in range(len(rows))]
    assert record_bytes(table, names).to_pylist() == expected
    tokens = np.frombuffer(b"".join(r[4] for r in rows), np.uint8).reshape(-1, 16)
    leaves = [
        merkle.leaf_hash(record + token_commitment(r[4]))
        for record, r in zip(expected, rows, strict=True)
    ]
    assert table_leaf_hashes(table, names, tokens) == b"".join(leaves)


URL_TEXT = st.one_of(st.from_regex(r"[A-Za-z0-9._~-]{0,12}", fullmatch=True), TEXT)
"""Values percent-encoding leaves alone (the fast path) mixed with any text."""


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(["https://id.example.com", "https://id.example.com/", "http://h/p//"]),
    st.lists(st.tuples(GTINS, URL_TEXT, URL_TEXT, URL_TEXT), min_size=1, max_size=8),
    st.booleans(),
)
def test_digital_links_equal_the_gs1_builder(base, rows, with_lot) -> None:
    import pyarrow as pa

    from provmint.audit import digital_links
    from provmint.gs1 import digital_link

    # Sliced arrays: the values start at an offset into their buffers, as a slice of a
    # column does.
    gtin, serial, lot, token = (
        pa.array(["%/"] + [r[i] for r in rows], pa.string())[1:] for i in range(4)
    )
    links = digital_links(base, gtin, serial, lot if with_lot else None, token).to_pylist()
    assert links == [digital_link(base, g, s, lt if with_lot else "", t) for g, s, lt, t in rows]


@settings(max_examples=60, deadline=None)
@given(
    st.binary(min_size=32, max_size=100),
    st.lists(
        st.tuples(GTINS, st.from_regex(r"[!-~]{1,20}", fullmatch=True)), min_size=1, max_size=12
    ),
)
def test_expected_tokens_equal_make_token(secret, rows) -> None:
    import pyarrow as pa

    from provmint.audit import _expected_tokens
    from provmint.tokens import make_token

    gtin = pa.chunked_array(
        [pa.array([r[0] for r in rows[:1]]), pa.array([r[0] for r in rows[1:]], pa.string())]
    )
    serial = pa.chunked_array([pa.array([r[1] for r in rows])])
    tokens = _expected_tokens(secret, gtin, serial)
    assert [bytes(t) for t in tokens] == [make_token(secret, g, s) for g, s in rows]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(min_size=16, max_size=16), min_size=1, max_size=20))
def test_token_bytes_decode_like_parse_token(raw_tokens) -> None:
    import pyarrow as pa

    from provmint.audit import token_bytes
    from provmint.tokens import format_token, parse_token

    printed = [format_token(t) for t in raw_tokens]
    decoded = token_bytes(
        pa.chunked_array([pa.array(printed[:1], pa.string()), pa.array(printed[1:], pa.string())])
    )
    assert [bytes(row) for row in decoded] == [parse_token(p) for p in printed] == raw_tokens


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(GTINS, st.from_regex(r"[!-~]{1,20}", fullmatch=True)), min_size=1, max_size=20
    )
)
def test_key_hashes_equal_the_store_index_hash(rows) -> None:
    import pyarrow as pa

    from provmint.audit import key_hashes
    from provmint.ingest import key_hashes as stored

    gtin, serial = pa.array([r[0] for r in rows]), pa.array([r[1] for r in rows])
    assert key_hashes(gtin, serial).tolist() == stored(gtin, serial).tolist()


def test_key_hashes_of_damaged_values_do_not_fail() -> None:
    import pyarrow as pa

    from provmint.audit import key_hashes

    hashes = key_hashes(
        pa.array(["0952012345001", "095201234500149", ""]), pa.array(["", "S" * 40, "é" * 11])
    )
    assert len(set(hashes.tolist())) == 3


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(st.binary(max_size=80), st.binary(min_size=16, max_size=16)),
        min_size=1,
        max_size=40,
    )
)
def test_leaf_hashes_and_levels_follow_the_pure_core(rows) -> None:
    import numpy as np
    import pyarrow as pa

    from provmint import merkle
    from provmint.audit import leaf_hashes, level_above
    from provmint.canonical import token_commitment

    tokens = np.frombuffer(b"".join(t for _, t in rows), np.uint8).reshape(-1, 16)
    leaves = leaf_hashes(pa.array([r for r, _ in rows], pa.binary()), tokens)
    expected = [merkle.leaf_hash(r + token_commitment(t)) for r, t in rows]
    assert leaves == b"".join(expected)
    level = leaves
    while len(level) > 32:
        level = level_above(level)
    assert level == merkle.mth(expected)
    assert level_above(leaves[:32]) == leaves[:32]  # a lone node is promoted
    if len(expected) >= 3:
        three = level_above(leaves[:96])
        assert three == merkle.node_hash(expected[0], expected[1]) + expected[2]


# --------------------------------------------------------------------------- many parts


@pytest.fixture(scope="module")
def four_parts(tmp_path_factory) -> SimpleNamespace:
    """200,001 products: four parts (the last one short), audited in worker processes."""
    from provmint.batch import mint_batch
    from provmint.config import Settings
    from provmint.keys import init_keyring

    base = tmp_path_factory.mktemp("four-parts")
    csv = base / "products.csv"
    subprocess.run(
        [
            sys.executable,
            str(Path(__file__).parents[1] / "scripts" / "make_products.py"),
            "200001",
            "-o",
            str(csv),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    cfg = Settings(store=base / "store", key_file=base / "keys.json", workers=2)
    init_keyring(cfg.key_file)
    summary = mint_batch(csv, settings=cfg)
    batch_dir = cfg.store / "batches" / summary.batch_id
    return SimpleNamespace(cfg=cfg, batch_id=summary.batch_id, dir=batch_dir)


def test_a_batch_of_many_parts_is_audited_in_workers_and_damage_located(four_parts) -> None:
    import pyarrow.parquet as pq

    from provmint.audit import audit_batch

    cfg, batch_id = four_parts.cfg, four_parts.batch_id
    report = audit_batch(cfg, batch_id, check_tokens=True, workers=2)
    assert report.verdict.value == "pending", report.reason
    assert report.products == 200_001
    assert [c.name for c in report.checks] == INTACT_CHECKS
    last = four_parts.dir / "products" / "part-00003.parquet"
    tree = four_parts.dir / "tree.bin"
    original = {p: p.read_bytes() for p in (last, tree)}
    offsets = tree_offsets(200_001)
    try:
        as_part_layout_v1(last)  # a part from before store format 2
        url = pq.read_table(last).column("url")[7].as_py()
        rewrite_column(last, "url", 7, url.replace("/01/", "/01/0", 1))
        flip_byte(tree, offsets[17] + 5)  # level 17: above the parts' subtrees
        report = audit_batch(cfg, batch_id, workers=2)
        assert [c.name for c in report.checks if not c.ok] == ["tree file", "urls"]
        details = {c.name: c.detail for c in report.checks}
        assert details["urls"] == (
            f"damaged: url of product {3 * 65536 + 7} differs from its recomputed value, {last}"
        )
        assert details["tree file"] == (
            f"damaged: node 0 of level 17 differs from its recomputed value, {tree}"
        )
        tree.write_bytes(original[tree])
        flip_byte(tree, offsets[0] + 32 * (2 * 65536 + 5))  # a leaf in the third part
        report = audit_batch(cfg, batch_id, workers=2)
        assert report.reason == (
            f"damaged: leaf {2 * 65536 + 5} differs from its recomputed value, {tree}"
        )
        # Damage late in a part (in its second half) is found and named too.
        tree.write_bytes(original[tree])
        flip_byte(tree, offsets[0] + 32 * (65536 + 40_000))
        report = audit_batch(cfg, batch_id, workers=2)
        assert report.reason == (
            f"damaged: leaf {65536 + 40_000} differs from its recomputed value, {tree}"
        )
    finally:
        for path, data in original.items():
            path.write_bytes(data)


def test_damage_in_the_second_half_of_a_record_part_is_named(four_parts) -> None:
    """A damaged block late in a record part (in its second half) is found, and named
    with its part's file."""
    from provmint.audit import audit_batch
    from provmint.store.records import RecordPart

    records = four_parts.dir / "records" / "part-00001.rec"
    original = records.read_bytes()
    with RecordPart.open(records) as part:
        block_start = int(part._offsets[625])  # rows 40,000-40,063 of the part
    try:
        flip_byte(records, block_start + 40)
        report = audit_batch(four_parts.cfg, four_parts.batch_id, workers=2)
        assert failed_checks(report.to_json()) == ["records"]
        detail = {c.name: c.detail for c in report.checks}["records"]
        assert detail.startswith("damaged: ") and detail.endswith(str(records)), detail
        named = [int(n) for n in re.findall(r"(?:product|block) (\d+)", detail)]
        assert named and (named[0] == 625 or 65536 + 40_000 <= named[0] < 65536 + 40_064)
    finally:
        records.write_bytes(original)


def forkserver_children() -> list[Any]:
    """The worker processes still alive under this process's forkserver."""
    import psutil

    return [
        child
        for server in psutil.Process().children()
        if "multiprocessing.forkserver" in " ".join(server.cmdline())
        for child in server.children(recursive=True)
    ]


def test_workers_and_one_process_report_the_same(four_parts) -> None:
    """The pool (started early for an id prefix naming one large batch directory)
    and a single process give the same report, intact and damaged, and no worker is
    left running."""
    import pyarrow.parquet as pq

    from provmint.audit import audit_batch
    from provmint.tokens import format_token, parse_token

    cfg, batch_id = four_parts.cfg, four_parts.batch_id
    part = four_parts.dir / "products" / "part-00003.parquet"  # one row group: rewritable
    original = part.read_bytes()

    def reports() -> list[dict[str, Any]]:
        return [
            audit_batch(cfg, ref, check_tokens=True, workers=workers).to_json()
            for ref, workers in ((batch_id, 1), (batch_id[:12], 2))
        ]

    one, pooled = reports()
    assert one == pooled and one["verdict"] == "pending"
    assert forkserver_children() == []
    token = pq.read_table(part).column("token")[9].as_py()
    flipped = format_token(bytes([parse_token(token)[0] ^ 1]) + parse_token(token)[1:])
    try:
        rewrite_column(part, "token", 9, flipped)
        one, pooled = reports()
        assert one == pooled
        assert failed_checks(one) == ["root", "records", "indexes", "tokens"]
        assert one["reason"] == (
            f"damaged: record or token of product {3 * 65536 + 9} differs from its committed "
            f"leaf, {part}"
        )
    finally:
        part.write_bytes(original)
    assert forkserver_children() == []


def test_a_batch_directory_the_catalog_does_not_know_is_not_found(four_parts) -> None:
    """A directory that looks like a large batch starts the workers before the catalog
    is read; when the catalog has no such batch, the audit says so and stops them."""
    from provmint.audit import audit_batch
    from provmint.errors import NotFoundError

    stray = four_parts.dir.parent / "20990101-00000000"
    shutil.copytree(four_parts.dir, stray)
    try:
        with pytest.raises(NotFoundError):
            audit_batch(four_parts.cfg, stray.name, workers=2)
    finally:
        shutil.rmtree(stray)
    assert forkserver_children() == []
