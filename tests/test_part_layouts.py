"""Product part layouts: parts minted now store no URL (``provmint-part/2``), parts from
before (``provmint-part/1``, in ``provmint-store/1`` stores) are read as they were.

A store of format 1 is made here by rewriting a freshly minted store's parts exactly as
the earlier writer wrote them (:func:`helpers.as_store_format_v1`): the same columns and
settings plus ``url``, no layout metadata.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import EXAMPLE_CSV
from helpers import as_store_format_v1, no_crash, verify_report
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provmint import gs1
from provmint.errors import EXIT_ERROR, EXIT_OK, EXIT_PENDING, StoreCorruptError
from provmint.store import PART_FORMAT_KEY, PartLayout, Store, products_select

BASE = "https://id.brand.example/p"


def _mint(cli: Any, source: Path) -> str:
    r = cli("batch", "create", source, "--url-base", BASE, "--json")
    assert r.exit_code == EXIT_OK, r.output
    return str(json.loads(r.stdout)["batch_id"])


def _layout(part: Path) -> PartLayout:
    metadata = pq.read_schema(part).metadata
    if metadata is None:
        return PartLayout.V1
    return PartLayout(metadata[PART_FORMAT_KEY.encode()].decode())


def _expected_urls(part: Path) -> list[str]:
    return [
        gs1.digital_link(BASE, r["gtin"], r["serial"], r.get("lot") or "", r["token"])
        for r in pq.read_table(part).to_pylist()
    ]


def _view_urls(store: Path, batch_id: str) -> list[str]:
    con = duckdb.connect(str(store / "catalog.duckdb"), read_only=True)
    try:
        rows = con.execute(
            "SELECT url FROM products WHERE filename LIKE ? ORDER BY leaf_index",
            [f"%/{batch_id}/products/%"],
        ).fetchall()
    finally:
        con.close()
    return [url for (url,) in rows]


def _export_urls(cli: Any, batch_id: str) -> list[str]:
    r = cli("batch", "export", batch_id, "--raw", "--url-base", BASE, "-o", "-")
    assert r.exit_code == EXIT_OK, r.output
    return [row["url"] for row in csv.DictReader(io.StringIO(r.stdout))]


def test_parts_minted_now_store_no_url(cli, keyed, tmp_path: Path) -> None:
    batch_id = _mint(cli, EXAMPLE_CSV)
    store = tmp_path / "store"
    part = store / "batches" / batch_id / "products" / "part-00000.parquet"
    assert _layout(part) is PartLayout.V2
    assert "url" not in pq.read_schema(part).names
    assert json.loads((store / "STORE").read_text())["format"] == "provmint-store/2"
    urls = _expected_urls(part)
    assert _view_urls(store, batch_id) == urls  # the products view rebuilds them
    assert _export_urls(cli, batch_id) == urls


def test_a_store_from_before_format_2_is_read_and_upgraded_by_the_next_mint(
    cli, keyed, tmp_path: Path, write_csv: Any
) -> None:
    """Every reader reads a format 1 store's URL-holding parts; the audit checks their
    URLs; the next mint marks the store format 2 and leaves the old batch's bytes as
    they were; the products view gives every batch's rows a URL."""
    first = _mint(cli, EXAMPLE_CSV)
    store = tmp_path / "store"
    as_store_format_v1(store)
    old_part = store / "batches" / first / "products" / "part-00000.parquet"
    assert _layout(old_part) is PartLayout.V1
    old_bytes = old_part.read_bytes()
    stored = pq.read_table(old_part).column("url").to_pylist()
    assert stored == _expected_urls(old_part)

    assert _export_urls(cli, first) == stored
    shown = cli("product", "show", "--gtin", "09520123450014", "--serial", "546CAWQDCR56")
    assert shown.exit_code == EXIT_OK and "546CAWQDCR56" in shown.stdout, shown.output
    proof = tmp_path / "p.json"
    exported = cli(
        "proof", "export", "--gtin", "09520123450014", "--serial", "546CAWQDCR56", "-o", proof
    )
    assert exported.exit_code == EXIT_OK, exported.output
    r, report = verify_report(cli, proof)
    assert r.exit_code == EXIT_PENDING, report
    r, report = verify_report(cli, "--batch", first)
    assert r.exit_code == EXIT_PENDING, report["reason"]
    urls = next(c for c in report["checks"] if c["name"] == "urls")
    assert urls["detail"] == "every url matches its recomputed value"

    lines = EXAMPLE_CSV.read_text().splitlines()
    other = [
        f"{gtin},{serial}Z,{rest}" for gtin, serial, rest in (r.split(",", 2) for r in lines[1:])
    ]
    second = _mint(cli, write_csv("second.csv", "\n".join([lines[0], *other]) + "\n"))
    assert json.loads((store / "STORE").read_text())["format"] == "provmint-store/2"
    new_part = store / "batches" / second / "products" / "part-00000.parquet"
    assert _layout(new_part) is PartLayout.V2
    assert old_part.read_bytes() == old_bytes
    for batch_id, part in ((first, old_part), (second, new_part)):
        assert _view_urls(store, batch_id) == _expected_urls(part)
        r, report = verify_report(cli, "--batch", batch_id)
        assert r.exit_code == EXIT_PENDING, report["reason"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"format": "provmint-store/3"}', "unsupported store format 'provmint-store/3'"),
        ("[]", "unreadable store marker"),
        ('"provmint-store/2"', "unreadable store marker"),
        ("{", "unreadable store marker"),
    ],
)
def test_a_store_of_a_later_format_or_a_broken_marker_is_refused(
    cli, keyed, tmp_path: Path, text: str, message: str
) -> None:
    batch_id = _mint(cli, EXAMPLE_CSV)
    (tmp_path / "store" / "STORE").write_text(text)
    r = cli("batch", "show", batch_id)
    no_crash(r)
    assert r.exit_code == EXIT_ERROR
    lines = r.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and message in lines[0], r.stderr


def _markers() -> st.SearchStrategy[bytes]:
    """Store markers of every shape: arbitrary bytes, arbitrary JSON, JSON objects with a
    ``format`` of any value, deep nesting, and long files."""
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=12,
    )
    formats = st.sampled_from(["provmint-store/1", "provmint-store/2", "provmint-store/9"])
    objects = st.fixed_dictionaries({"format": formats | json_values}, optional={"x": json_values})
    return st.one_of(
        st.binary(max_size=200),
        json_values.map(lambda v: json.dumps(v).encode()),
        objects.map(lambda v: json.dumps(v).encode()),
        st.integers(1, 300_000).map(lambda n: b"[" * n + b"]" * (n % 3)),
        st.integers(1, 300_000).map(
            lambda n: b'{"format": "provmint-store/2", "p": "' + b"x" * n + b'"}'
        ),
    )


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(marker=_markers())
def test_any_store_marker_is_read_or_refused_in_one_line(
    cli, keyed, tmp_path: Path, marker: bytes
) -> None:
    """Whatever the STORE file holds, a command either reads the store (a marker of a
    readable format) or refuses it in one line with exit 1: never a traceback. (A marker
    of 200,000 nested brackets crashed every command with a RecursionError.)"""
    store = tmp_path / "store"
    if not store.exists():
        _mint(cli, EXAMPLE_CSV)
    (store / "STORE").write_bytes(marker)
    r = cli("batch", "list", "--json")
    no_crash(r)
    try:
        doc = json.loads(marker)
    except (ValueError, RecursionError):  # (the deep ones: not readable markers either)
        doc = None
    readable = (
        len(marker) <= 1 << 16
        and isinstance(doc, dict)
        and doc.get("format") in ("provmint-store/1", "provmint-store/2")
    )
    if readable:
        assert r.exit_code == EXIT_OK, r.stderr
    else:
        assert r.exit_code == EXIT_ERROR
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
        assert "store marker" in lines[0] or "unsupported store format" in lines[0]


@pytest.mark.parametrize(
    "metadata",
    [
        {PART_FORMAT_KEY: "provmint-part/3"},  # a layout this version does not know
        {PART_FORMAT_KEY: "provmint-part/1"},  # V1 is never marked
        {PART_FORMAT_KEY: "provmint-part/2", "other": "x"},
        None,  # unmarked, so V1, but without its url column
    ],
)
def test_a_part_naming_another_layout_is_damage(
    cli, keyed, tmp_path: Path, metadata: dict[str, str] | None
) -> None:
    batch_id = _mint(cli, EXAMPLE_CSV)
    store = Store.open(tmp_path / "store")
    part = tmp_path / "store" / "batches" / batch_id / "products" / "part-00000.parquet"
    from provmint.engine import _write_part

    _write_part(pq.read_table(part).replace_schema_metadata(metadata), part)
    with store.reading(timeout=5) as con:
        batch = store.batch(con, batch_id)
    with pytest.raises(StoreCorruptError) as caught:
        store.read_part(batch, 0)
    assert caught.value.message.startswith("damaged: ")
    assert caught.value.message.endswith(f", {part}")
    _, report = verify_report(cli, "--batch", batch_id)
    assert report["verdict"] == "invalid" and report["reason"] == caught.value.message


_TEXT = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=12)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(st.tuples(_TEXT, st.one_of(st.just(""), _TEXT)), min_size=1, max_size=8),
    base=st.sampled_from(["https://id.example.com", "https://b.example/x/", "http://h:8/a'b"]),
)
def test_the_view_builds_the_urls_of_gs1_digital_link(
    tmp_path: Path, rows: list[tuple[str, str]], base: str
) -> None:
    """Any serial and lot (every Unicode character, not only GS1's): the products view's
    URL is gs1.digital_link's, so DuckDB's url_encode is gs1.percent_encode."""
    path = tmp_path / "part.parquet"
    table = pa.table(
        {
            "gtin": ["09520123450014"] * len(rows),
            "serial": [serial for serial, _ in rows],
            "lot": [lot for _, lot in rows],
            "token": ["1lqEPkuRXPesuZNTDCWY_Q"] * len(rows),
        }
    )
    pq.write_table(table, path)
    got = duckdb.sql(products_select(base, [str(path)], lots=True)).fetchall()
    assert [row[4] for row in got] == [
        gs1.digital_link(base, "09520123450014", serial, lot, "1lqEPkuRXPesuZNTDCWY_Q")
        for serial, lot in rows
    ]


def test_the_view_reads_batches_of_other_columns_and_url_bases(
    cli, keyed, tmp_path: Path, write_csv: Any
) -> None:
    """The view reads each set of batches with one URL base and one set of columns in
    one go (binding on its first file alone): batches with other columns (no lot) and
    another URL base, minted in between, each give all their rows, their own columns
    and their own URLs."""
    other_base = "https://other.example/q"
    plain = write_csv("plain.csv", "gtin,serial\n09520123450014,P1\n09520123450014,P2\n")
    ids = [
        _mint(cli, EXAMPLE_CSV),
        _mint(cli, plain),
    ]
    r = cli("batch", "create", write_csv("b3.csv", "gtin,serial\n09520123450014,Q1\n"),
            "--url-base", other_base, "--json")  # fmt: skip
    assert r.exit_code == EXIT_OK, r.output
    ids.append(json.loads(r.stdout)["batch_id"])
    lines = EXAMPLE_CSV.read_text().splitlines()
    again = [f"{g},{s}Z,{rest}" for g, s, rest in (x.split(",", 2) for x in lines[1:])]
    ids.append(_mint(cli, write_csv("again.csv", "\n".join([lines[0], *again]) + "\n")))
    store = tmp_path / "store"
    for batch_id, base in zip(ids, [BASE, BASE, other_base, BASE], strict=True):
        part = store / "batches" / batch_id / "products" / "part-00000.parquet"
        table = pq.read_table(part)
        expected = [
            gs1.digital_link(base, r["gtin"], r["serial"], r.get("lot") or "", r["token"])
            for r in table.to_pylist()
        ]
        assert _view_urls(store, batch_id) == expected
    con = duckdb.connect(str(store / "catalog.duckdb"), read_only=True)
    try:
        lots = con.execute(
            "SELECT count(*), count(lot) FROM products WHERE filename LIKE ?", [f"%/{ids[1]}/%"]
        ).fetchone()
        total = con.execute("SELECT count(*) FROM products").fetchone()
    finally:
        con.close()
    assert lots == (2, 0)  # no lot column in that batch: null in the view
    assert total == (9 + 2 + 1 + 9,)
