"""``provmint verify --batch ID``: the audit of a whole stored batch (Parquet parts, tree
file, manifest, commitment, anchor, tokens) with the store treated as untrusted.

Each test mints into its own store; the anchored ones share one anvil node (module
scope) and anchor from dev account 0 through ``--rpc-url``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import EXAMPLE_CSV, Anvil, dev_key
from helpers import failed_checks, no_crash, verify_report

from provmint.errors import (
    EXIT_INVALID,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_PENDING,
    EXIT_UNCHECKED,
    EXIT_USAGE,
)

GTIN = "09520123450014"
INTACT_CHECKS = ["catalog row", "manifest", "manifest file", "parts", "products", "root",
                 "tree file", "urls", "indexes", "batch commitment", "tokens"]


@pytest.fixture(scope="module")
def node() -> Iterator[Anvil]:
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
    return SimpleNamespace(batch_id=batch_id, dir=batch_dir,
                           part=batch_dir / "products" / "part-00000.parquet",
                           tree=batch_dir / "tree.bin", anchor=None)


@pytest.fixture
def anchored(cli, minted: SimpleNamespace, node: Anvil, monkeypatch) -> SimpleNamespace:
    monkeypatch.setenv("PROVMINT_CHAIN_KEY", dev_key(0)[1])
    r = cli("anchor", "--rpc-url", node.url, "--json")
    assert r.exit_code == 0, r.output
    minted.anchor = json.loads(r.stdout)["anchor"]
    minted.url = node.url
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
        f"anchored in block {anchored.anchor['block_number']} of chain 31337 at ")
    r = cli("verify", "--batch", anchored.batch_id, "--rpc-url", anchored.url)
    no_crash(r)
    assert r.exit_code == EXIT_OK
    lines = r.stdout.rstrip().splitlines()
    assert lines[0] == f"Audit of batch {anchored.batch_id} (9 products)"
    assert all(line.startswith("  ok ") for line in lines[1:-1]), lines
    assert lines[-1].startswith("VALID: anchored in block ")


def test_intact_unanchored_batch_is_pending(cli, minted, node: Anvil) -> None:
    for args in ((), ("--rpc-url", node.url)):
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
    """A rewritten lot changes the record (so its leaf) and the url built from it; the
    stored tree is still the committed one, so the product itself is named."""
    rewrite_column(anchored.part, "lot", 0, "L9999Z")
    r, report = audit(cli, anchored.batch_id, "--rpc-url", anchored.url)
    assert r.exit_code == EXIT_INVALID
    damage = (f"damaged: record or token of product 0 differs from its committed leaf, "
              f"{anchored.part}")
    assert report["reason"] == damage
    assert failed_checks(report) == ["root", "urls"]
    assert check(report, "tree file")["ok"]
    assert "on chain" not in [c["name"] for c in report["checks"]]  # stopped before the chain
    assert report["chain"] is None
    r = cli("verify", "--batch", anchored.batch_id, "--rpc-url", anchored.url)
    assert r.exit_code == EXIT_INVALID
    assert f"  FAIL root: {damage}" in r.stdout
    assert r.stdout.rstrip().splitlines()[-1] == f"INVALID: {damage}"


def test_tampered_parquet_without_anchor_is_invalid(cli, minted) -> None:
    """A swapped serial breaks the leaf, the url, the key index entry and the token."""
    rewrite_column(minted.part, "serial", 4, "SWAPPEDSERIAL")
    r, report = audit(cli, minted.batch_id)
    assert r.exit_code == EXIT_INVALID
    assert failed_checks(report) == ["root", "urls", "indexes", "tokens"]
    assert check(report, "urls")["detail"] == (
        f"damaged: url of product 4 differs from its recomputed value, {minted.part}")
    assert check(report, "indexes")["detail"].startswith(
        "damaged: the row of product 4 holds a wrong value, ")
    assert check(report, "indexes")["detail"].endswith("catalog.duckdb table product_keys")


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
    export = cli("proof", "export", "--gtin", GTIN, "--serial", "MVY1MJDXQBXJ",  # leaf 3
                 "-o", tmp_path / "p.json")
    assert export.exit_code != 0  # the damage is real
    r, report = audit(cli, minted.batch_id)
    assert r.exit_code == EXIT_INVALID, report["reason"]
    assert failed_checks(report) == ["tree file"]
    assert report["reason"] == (
        f"damaged: node 0 of level 1 differs from its recomputed value, {minted.tree}")


def test_tampered_token_is_reported_by_the_tokens_check(cli, minted) -> None:
    from provmint.tokens import format_token

    rewrite_column(minted.part, "token", 2, format_token(bytes(range(16))))
    r, report = audit(cli, minted.batch_id)
    assert r.exit_code == EXIT_INVALID
    assert check(report, "tokens") == {
        "name": "tokens", "ok": False, "detail": "1 tokens do not match the issuer key"}
    assert failed_checks(report) == ["root", "urls", "indexes", "tokens"]
    assert report["reason"] == (
        f"damaged: record or token of product 2 differs from its committed leaf, {minted.part}")


def test_token_check_needs_the_key_file(cli, minted, keyed) -> None:
    from provmint.tokens import format_token

    rewrite_column(minted.part, "token", 2, format_token(bytes(range(16))))
    shutil.move(keyed.key_file, keyed.key_file.with_suffix(".away"))
    r, report = audit(cli, minted.batch_id)
    assert r.exit_code == EXIT_INVALID
    assert "tokens" not in [c["name"] for c in report["checks"]]
    assert failed_checks(report) == ["root", "urls", "indexes"]


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


# --------------------------------------------------------------------------- usage


def test_proof_and_batch_together_is_a_usage_error(cli, minted, tmp_path: Path) -> None:
    proof = tmp_path / "p.json"
    assert cli("proof", "export", "--gtin", GTIN, "--serial", "546CAWQDCR56",
               "-o", proof).exit_code == 0
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
        [sys.executable, "-X", "importtime", "-m", "provmint", "verify", "--batch",
         anchored.batch_id, "--json"],
        capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert proc.returncode == EXIT_UNCHECKED, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["verdict"] == "unchecked"
    modules = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines()
               if line.startswith("import time:") and "|" in line}
    assert "provmint.audit" in modules
    assert {m for m in modules if m.split(".")[0] in ("web3", "eth_account")} == set()
