"""Read-side commands: ``product show``, ``proof export`` (one and ``--all``), ``batch
export`` (label files), ``batch show`` / ``batch list`` and batch id prefixes."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import EXAMPLE_CSV
from helpers import one_error

from provmint import gs1
from provmint.batch import mint_batch
from provmint.errors import EXIT_NOT_FOUND, EXIT_OK, EXIT_PENDING, EXIT_USAGE
from provmint.products import LABEL_COLUMNS, LABEL_CSV_COLUMNS, export_proof
from provmint.proofs import PROOF_FORMAT
from provmint.tokens import format_token, parse_token
from provmint.verify import Verdict, verify_proof

GTIN = "09520123450014"
SERIAL = "546CAWQDCR56"
TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{22}")


def example_rows() -> list[dict[str, str]]:
    with open(EXAMPLE_CSV, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture
def minted(keyed):
    """The example minted into this test's isolated store."""
    return mint_batch(EXAMPLE_CSV, settings=keyed)


def ok_json(r: Any, code: int = EXIT_OK) -> Any:
    assert r.exit_code == code, (r.exit_code, r.stdout, r.stderr, r.exception)
    return json.loads(r.stdout)


def show(cli, *args: str) -> dict[str, Any]:
    return ok_json(cli("product", "show", *args, "--json"))


# --------------------------------------------------------------------------- product show


def test_product_show_json_has_record_token_and_url(cli, keyed, minted) -> None:
    product = show(cli, "--gtin", GTIN, "--serial", SERIAL)
    assert set(product) == {"batch_id", "leaf_index", "record", "token", "url", "anchor"}
    assert product["anchor"] is None  # not anchored yet
    assert product["batch_id"] == minted.batch_id
    assert product["leaf_index"] == 0
    assert product["record"] == example_rows()[0]
    token = product["token"]
    assert TOKEN_RE.fullmatch(token) and len(token) == 22
    assert format_token(parse_token(token)) == token
    assert product["url"] == gs1.digital_link(keyed.url_base, GTIN, SERIAL, "L2406A", token)
    assert product["url"] == (f"https://id.example.com/01/{GTIN}/10/L2406A/21/{SERIAL}?t={token}")


def test_product_show_text(cli, minted) -> None:
    token = show(cli, "--gtin", GTIN, "--serial", SERIAL)["token"]
    r = cli("product", "show", "--gtin", GTIN, "--serial", SERIAL)
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert f"Product #0 of batch {minted.batch_id}" in out
    for name, value in example_rows()[0].items():
        assert re.search(rf"{name}\s+\│?\s*{re.escape(value)}", out), (name, out)
    assert token in out
    assert "pending (not anchored yet)" in out


def test_every_product_is_found_with_its_own_token(cli, minted) -> None:
    tokens = set()
    for i, row in enumerate(example_rows()):
        product = show(cli, "--gtin", row["gtin"], "--serial", row["serial"])
        assert product["leaf_index"] == i
        assert product["record"] == row
        assert TOKEN_RE.fullmatch(product["token"])
        tokens.add(product["token"])
        assert show(cli, "--token", product["token"]) == product
    assert len(tokens) == 9


@pytest.mark.parametrize("gtin", [GTIN[1:], GTIN, f"  {GTIN[1:]} "])
def test_product_show_accepts_every_gtin_spelling(cli, minted, gtin: str) -> None:
    reference = show(cli, "--gtin", GTIN, "--serial", SERIAL)
    product = show(cli, "--gtin", gtin, "--serial", SERIAL)
    assert product == reference
    assert product["record"]["gtin"] == GTIN  # always the 14-digit form


def test_product_show_by_token(cli, minted) -> None:
    reference = show(cli, "--gtin", GTIN, "--serial", SERIAL)
    assert show(cli, "--token", reference["token"]) == reference


@pytest.mark.parametrize(
    "args",
    [
        ("--gtin", GTIN, "--serial", "NOSUCHSERIAL"),
        ("--gtin", "09520123450021", "--serial", SERIAL),  # serial exists under another GTIN
        ("--gtin", "96385074", "--serial", SERIAL),  # valid GTIN-8, never minted
        ("--gtin", GTIN, "--serial", SERIAL.lower()),  # serials are case-sensitive
    ],
)
def test_unknown_product_is_not_found(cli, minted, args) -> None:
    one_error(cli("product", "show", *args), EXIT_NOT_FOUND, "no product")


def test_unknown_token_is_not_found(cli, minted) -> None:
    token = show(cli, "--gtin", GTIN, "--serial", SERIAL)["token"]
    other = ("B" if token[0] != "B" else "C") + token[1:]
    one_error(cli("product", "show", "--token", other), EXIT_NOT_FOUND, "no product with token")


def test_lookup_without_a_store_says_so(cli, keyed, isolated: Path) -> None:
    for args in (
        ("product", "show", "--gtin", GTIN, "--serial", SERIAL),
        ("batch", "list", "--json"),
        ("batch", "show", "x"),
    ):
        r = cli(*args)
        one_error(r, 1, "no provmint store at")
        assert "hint: mint a batch first" in r.stderr
    assert not (isolated / "store").exists()  # readers never create a store


@pytest.mark.parametrize(
    ("gtin", "reason"),
    [
        ("09520123450015", "GTIN check digit is 5, expected 4"),
        ("0952012345001X", "GTIN must contain digits only"),
        ("0952012345001", "GTIN has 13 digits"),  # 13 digits, wrong check digit
        ("95201234500", "GTIN has 11 digits; expected 8, 12, 13 or 14"),
        ("9.52012E+12", "scientific notation"),
        ("", "GTIN is empty"),
        ("０９５２０１２３４５００１４", "digits only"),  # fullwidth digits
    ],
)
def test_bad_gtin_is_a_usage_error(cli, minted, gtin: str, reason: str) -> None:
    if gtin == "0952012345001":
        reason = "GTIN check digit"
    line = one_error(
        cli("product", "show", "--gtin", gtin, "--serial", SERIAL), EXIT_USAGE, "gtin", reason
    )
    assert line.startswith(f"error: gtin {gtin!r}: ")


@pytest.mark.parametrize(
    ("serial", "reason"),
    [
        ("A B", "a space"),
        ("X" * 21, "at most 20"),
        ("", "serial is empty"),
        ("ABC#1", "'#'"),
    ],
)
def test_bad_serial_is_a_usage_error(cli, minted, serial: str, reason: str) -> None:
    one_error(
        cli("product", "show", "--gtin", GTIN, "--serial", serial), EXIT_USAGE, "serial", reason
    )


@pytest.mark.parametrize("token", ["abc", "A" * 23, "A" * 21 + "!", "A" * 21 + "B"])
def test_malformed_token_lookup_is_a_usage_error(cli, minted, token: str) -> None:
    one_error(cli("product", "show", "--token", token), EXIT_USAGE, "token", "base64url")


@pytest.mark.parametrize("args", [(), ("--gtin", GTIN), ("--serial", SERIAL)])
def test_incomplete_lookup_is_a_usage_error(cli, minted, args) -> None:
    one_error(cli("product", "show", *args), EXIT_USAGE, "give --gtin and --serial, or --token")


# --------------------------------------------------------------------------- proof export


def test_proof_export_by_token_equals_export_by_gtin_and_serial(
    cli, minted, tmp_path: Path
) -> None:
    token = show(cli, "--gtin", GTIN, "--serial", SERIAL)["token"]
    by_key = cli("proof", "export", "--gtin", GTIN, "--serial", SERIAL)
    by_token = cli("proof", "export", "--token", token)
    by_gtin13 = cli("proof", "export", "--gtin", GTIN[1:], "--serial", SERIAL)
    assert by_key.exit_code == by_token.exit_code == by_gtin13.exit_code == 0
    assert by_key.stdout == by_token.stdout == by_gtin13.stdout
    doc = json.loads(by_key.stdout)
    assert doc["format"] == PROOF_FORMAT
    assert doc["product"]["record"]["serial"] == SERIAL
    assert doc["tree"]["root"] == minted.root

    r = cli("proof", "export", "--token", token, "-o", tmp_path / "p.json")
    assert r.exit_code == 0, r.output
    assert "Wrote proof to" in r.stderr and r.stdout == ""
    assert json.loads((tmp_path / "p.json").read_text()) == doc
    verdict = cli("verify", tmp_path / "p.json")
    assert verdict.exit_code == EXIT_PENDING, verdict.output


def test_proof_export_matches_the_library(cli, keyed, minted) -> None:
    r = cli("proof", "export", "--gtin", GTIN, "--serial", SERIAL)
    assert json.loads(r.stdout) == export_proof(keyed, gtin=GTIN, serial=SERIAL)


def test_proof_export_of_an_unknown_product_is_not_found(cli, minted, tmp_path: Path) -> None:
    r = cli("proof", "export", "--gtin", GTIN, "--serial", "NOPE", "-o", tmp_path / "p.json")
    one_error(r, EXIT_NOT_FOUND, "no product")
    assert not (tmp_path / "p.json").exists()


def test_proof_export_with_bad_gtin_is_a_usage_error(cli, minted) -> None:
    one_error(cli("proof", "export", "--gtin", "123", "--serial", SERIAL), EXIT_USAGE, "gtin")


def test_proof_export_batch_without_all_is_a_usage_error(cli, minted) -> None:
    one_error(
        cli("proof", "export", "--batch", minted.batch_id), EXIT_USAGE, "--batch is for --all"
    )


def test_proof_export_all_jsonl(cli, keyed, minted, tmp_path: Path) -> None:
    out = tmp_path / "proofs.jsonl"
    r = cli("proof", "export", "--batch", minted.batch_id, "--all", "-o", out)
    assert r.exit_code == 0, r.output
    assert f"Wrote 9 proofs of batch {minted.batch_id}" in r.stderr
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 9
    for i, (line, row) in enumerate(zip(lines, example_rows(), strict=True)):
        doc = json.loads(line)
        assert doc["tree"]["leaf_index"] == i
        assert doc["product"]["record"] == row
        report = verify_proof(line)
        assert report.verdict is Verdict.PENDING, report.reason
        assert all(c.ok for c in report.checks)
        assert doc == export_proof(keyed, gtin=row["gtin"], serial=row["serial"])
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_proof_export_all_by_batch_prefix(cli, minted, tmp_path: Path) -> None:
    out = tmp_path / "proofs.jsonl"
    r = cli("proof", "export", "--batch", minted.batch_id[:12], "--all", "-o", out)
    assert r.exit_code == 0, r.output
    assert len(out.read_text().splitlines()) == 9


def test_proof_export_all_parquet(cli, keyed, minted, tmp_path: Path) -> None:
    out = tmp_path / "proofs.parquet"
    r = cli(
        "proof", "export", "--batch", minted.batch_id, "--all", "--format", "parquet", "-o", out
    )
    assert r.exit_code == 0, r.output
    table = pq.read_table(out)
    assert table.num_rows == 9
    rows = example_rows()
    record_columns = list(rows[0])
    assert table.column_names == ["leaf_index", *record_columns, "token_commitment", "path"]
    assert table.schema.field("token_commitment").type == pa.binary(32)
    assert table.schema.field("path").type == pa.list_(pa.binary(32))
    assert table.column("leaf_index").to_pylist() == list(range(9))

    meta = pq.read_schema(out).metadata
    assert b"provmint" in meta
    info = json.loads(meta[b"provmint"])
    single = export_proof(keyed, gtin=GTIN, serial=SERIAL)
    assert info["format"] == PROOF_FORMAT
    assert info["batch"] == single["batch"]
    assert info["tree"] == {"profile": "rfc9162-sha256", "size": 9, "root": minted.root}
    assert info["record_version"] == "provmint-record/1"

    # every row plus the file metadata is a complete proof
    for row, expected in zip(table.to_pylist(), rows, strict=True):
        record = {k: row[k] for k in record_columns}
        assert record == expected
        doc = {
            "format": info["format"],
            "product": {
                "record_version": info["record_version"],
                "record": record,
                "token_commitment": row["token_commitment"].hex(),
            },
            "tree": {
                **{k: info["tree"][k] for k in ("profile", "size")},
                "leaf_index": row["leaf_index"],
                "path": [p.hex() for p in row["path"]],
                "root": info["tree"]["root"],
            },
            "batch": info["batch"],
            "anchor": None,
        }
        assert doc == export_proof(keyed, gtin=record["gtin"], serial=record["serial"])
        assert verify_proof(doc).verdict is Verdict.PENDING


@pytest.mark.parametrize(
    "args",
    [
        ("--all",),
        ("--all", "--batch", "{batch}"),
        ("--all", "-o", "proofs.jsonl"),
    ],
)
def test_proof_export_all_needs_batch_and_out(cli, minted, tmp_path: Path, args) -> None:
    args = tuple(a.format(batch=minted.batch_id) for a in args)
    one_error(cli("proof", "export", *args), EXIT_USAGE, "--all needs --batch ID and --out FILE")
    assert not (tmp_path / "proofs.jsonl").exists()


def test_proof_export_all_unknown_format(cli, minted, tmp_path: Path) -> None:
    r = cli(
        "proof",
        "export",
        "--batch",
        minted.batch_id,
        "--all",
        "--format",
        "csv",
        "-o",
        tmp_path / "p.csv",
    )
    one_error(r, EXIT_USAGE, "unknown proof export format 'csv'")
    assert not (tmp_path / "p.csv").exists()


def test_proof_export_all_unknown_batch(cli, minted, tmp_path: Path) -> None:
    r = cli("proof", "export", "--batch", "nosuchbatch", "--all", "-o", tmp_path / "p.jsonl")
    one_error(r, EXIT_NOT_FOUND, "no batch 'nosuchbatch'")
    assert not (tmp_path / "p.jsonl").exists()


# --------------------------------------------------------------------------- label files


def _labels(text: str) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(text))
    rows = list(reader)
    return list(reader.fieldnames or []), rows


def test_batch_export_labels_csv(cli, keyed, minted, tmp_path: Path) -> None:
    out = tmp_path / "labels.csv"
    r = cli("batch", "export", minted.batch_id, "-o", out, "--raw", "--allow-placeholder")
    assert r.exit_code == 0, r.output
    assert "Wrote 9 labels" in r.stderr
    header, rows = _labels(out.read_text(encoding="utf-8"))
    assert header == [*LABEL_COLUMNS, "code_file"] == list(LABEL_CSV_COLUMNS)
    assert len(rows) == 9
    for label, source in zip(rows, example_rows(), strict=True):
        for key in ("gtin", "serial", "lot", "expiry"):
            assert label[key] == source[key]
        assert TOKEN_RE.fullmatch(label["token"])
        assert label["url"] == gs1.digital_link(
            keyed.url_base, label["gtin"], label["serial"], label["lot"], label["token"]
        )
        fields = (label["gtin"], label["serial"], label["lot"], label["expiry"])
        assert label["element_string"] == gs1.element_string(*fields)
        assert label["human_readable"] == gs1.human_readable(*fields)
        assert label["code_file"] == ""
        product = show(cli, "--gtin", label["gtin"], "--serial", label["serial"])
        assert (product["token"], product["url"]) == (label["token"], label["url"])
    assert len({r["token"] for r in rows}) == 9


def test_batch_export_labels_to_stdout(cli, minted, tmp_path: Path) -> None:
    r = cli("batch", "export", minted.batch_id, "--allow-placeholder")
    assert r.exit_code == 0, r.output
    cli("batch", "export", minted.batch_id, "-o", tmp_path / "labels.csv", "--allow-placeholder")
    assert _labels(r.stdout) == _labels((tmp_path / "labels.csv").read_text())
    assert len(_labels(r.stdout)[1]) == 9


def test_batch_export_labels_parquet(cli, minted, tmp_path: Path) -> None:
    out = tmp_path / "labels.parquet"
    r = cli(
        "batch", "export", minted.batch_id, "--format", "parquet", "-o", out, "--allow-placeholder"
    )
    assert r.exit_code == 0, r.output
    table = pq.read_table(out)
    assert table.column_names == list(LABEL_COLUMNS)
    assert table.num_rows == 9
    cli(
        "batch",
        "export",
        minted.batch_id,
        "-o",
        tmp_path / "labels.csv",
        "--raw",
        "--allow-placeholder",
    )
    _, rows = _labels((tmp_path / "labels.csv").read_text())
    assert [{**row, "code_file": ""} for row in table.to_pylist()] == rows


def test_labels_of_a_batch_without_lot_or_expiry(cli, keyed, write_csv, tmp_path: Path) -> None:
    """Missing label columns are empty; the URL has no lot segment; odd serials are
    percent-encoded (a '/' must not split the path)."""
    source = write_csv(
        "plain.csv", "GTIN,Serial Number\n9520123450014,AB/CD%1\n9520123450014,A+B?C\n"
    )
    summary = mint_batch(source, settings=keyed)
    out = tmp_path / "labels.csv"
    assert (
        cli(
            "batch", "export", summary.batch_id, "-o", out, "--raw", "--allow-placeholder"
        ).exit_code
        == 0
    )
    header, rows = _labels(out.read_text())
    assert header == list(LABEL_CSV_COLUMNS)
    assert [r["serial"] for r in rows] == ["AB/CD%1", "A+B?C"]
    for row in rows:
        assert row["gtin"] == GTIN
        assert row["lot"] == row["expiry"] == ""
        assert row["url"] == gs1.digital_link(keyed.url_base, GTIN, row["serial"], "", row["token"])
        assert "/10/" not in row["url"]
    assert rows[0]["url"].startswith(f"https://id.example.com/01/{GTIN}/21/AB%2FCD%251?t=")


def test_batch_export_parquet_needs_out(cli, minted) -> None:
    one_error(
        cli("batch", "export", minted.batch_id, "--format", "parquet", "--allow-placeholder"),
        EXIT_USAGE,
        "Parquet labels need an output: pass -o FILE (or -o - for standard output)",
    )


def test_batch_export_unknown_format(cli, minted, tmp_path: Path) -> None:
    one_error(
        cli(
            "batch",
            "export",
            minted.batch_id,
            "--format",
            "xlsx",
            "-o",
            tmp_path / "l.xlsx",
            "--allow-placeholder",
        ),
        EXIT_USAGE,
        "unknown label format 'xlsx'",
    )
    assert not (tmp_path / "l.xlsx").exists()


def test_batch_export_unknown_batch(cli, minted, tmp_path: Path) -> None:
    one_error(
        cli("batch", "export", "nosuch", "-o", tmp_path / "l.csv", "--allow-placeholder"),
        EXIT_NOT_FOUND,
        "no batch 'nosuch'",
    )
    assert not (tmp_path / "l.csv").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# --------------------------------------------------------------------------- batch show / list


BATCH_FIELDS = {
    "anchor",
    "printed",
    "batch_id",
    "created_at",
    "label",
    "source",
    "products",
    "rejected",
    "tree",
    "manifest_digest",
    "commitment",
    "key_id",
    "columns",
    "record_version",
    "token_version",
    "url_base",
    "provmint_version",
}


def test_batch_show_json(cli, keyed, minted) -> None:
    info = ok_json(cli("batch", "show", minted.batch_id, "--json"))
    assert set(info) == BATCH_FIELDS
    assert info["batch_id"] == minted.batch_id
    assert re.fullmatch(r"\d{8}-[0-9a-f]{8}", info["batch_id"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", info["created_at"])
    assert info["created_at"][:10].replace("-", "") == info["batch_id"][:8]
    assert info["label"] is None
    assert info["source"]["name"] == "products.csv"
    assert info["source"]["rows"] == 9
    assert info["source"]["bytes"] == EXAMPLE_CSV.stat().st_size
    assert re.fullmatch(r"[0-9a-f]{64}", info["source"]["sha256"])
    assert (info["products"], info["rejected"]) == (9, 0)
    assert info["tree"] == {"profile": "rfc9162-sha256", "size": 9, "root": minted.root}
    assert info["commitment"] == minted.commitment
    assert info["key_id"] == minted.key_id
    assert info["columns"] == sorted(example_rows()[0])
    assert info["record_version"] == "provmint-record/1"
    assert info["token_version"] == "provmint-token/1"
    assert info["url_base"] == keyed.url_base == "https://id.example.com"
    proof = export_proof(keyed, gtin=GTIN, serial=SERIAL)
    assert info["manifest_digest"] == proof["batch"]["manifest_digest"]
    assert info["commitment"] == proof["batch"]["commitment"]


def test_batch_show_text(cli, minted) -> None:
    r = cli("batch", "show", minted.batch_id)
    assert r.exit_code == 0, r.output
    for expected in (
        minted.batch_id,
        minted.root,
        minted.commitment,
        minted.key_id,
        "rfc9162-sha256, 9 leaves",
        "pending (not anchored yet)",
        "provmint-record/1",
        "https://id.example.com",
    ):
        assert expected in r.stdout, expected


def test_batch_show_by_unique_prefix(cli, minted) -> None:
    full = ok_json(cli("batch", "show", minted.batch_id, "--json"))
    for prefix in (minted.batch_id[:12], minted.batch_id[:9], minted.batch_id[:1]):
        assert ok_json(cli("batch", "show", prefix, "--json")) == full


def _second_batch(keyed, write_csv):
    source = write_csv(
        "second.csv", "gtin,serial\n09520123450014,SECOND1\n09520123450014,SECOND2\n"
    )
    return mint_batch(source, settings=keyed, label="second")


def test_ambiguous_and_unknown_prefixes_are_not_found(cli, keyed, minted, write_csv) -> None:
    second = _second_batch(keyed, write_csv)
    common = ""
    for a, b in zip(minted.batch_id, second.batch_id, strict=True):
        if a != b:
            break
        common += a
    assert common != minted.batch_id
    line = one_error(cli("batch", "show", common), EXIT_NOT_FOUND)
    if common:
        assert "ambiguous" in line
        assert minted.batch_id in line and second.batch_id in line
    for ref in ("zzz", minted.batch_id + "0", minted.batch_id[::-1], ""):
        r = cli("batch", "show", ref)
        one_error(r, EXIT_NOT_FOUND, "no batch")
        assert "hint: list batches with: provmint batch list" in r.stderr
    # exact ids still resolve, and a longer unique prefix too
    assert ok_json(cli("batch", "show", second.batch_id, "--json"))["label"] == "second"
    unique = second.batch_id[: len(common) + 1]
    assert ok_json(cli("batch", "show", unique, "--json"))["batch_id"] == second.batch_id


def test_batch_list_json(cli, keyed, minted, write_csv) -> None:
    assert ok_json(cli("batch", "list", "--json")) == {
        "batches": [ok_json(cli("batch", "show", minted.batch_id, "--json"))]
    }
    second = _second_batch(keyed, write_csv)
    listed = ok_json(cli("batch", "list", "--json"))["batches"]
    assert [b["batch_id"] for b in listed] == [minted.batch_id, second.batch_id]
    for b in listed:
        assert set(b) == BATCH_FIELDS
        assert b == ok_json(cli("batch", "show", b["batch_id"], "--json"))
    assert [b["products"] for b in listed] == [9, 2]
    assert listed[1]["columns"] == ["gtin", "serial"]
    r = cli("batch", "list")
    assert r.exit_code == 0
    assert minted.batch_id in r.stdout and second.batch_id in r.stdout


# --------------------------------------------------------------------------- known bug


@pytest.mark.parametrize("column", ["url", "token", "leaf_index"])
def test_csv_column_named_like_a_store_column(cli, keyed, write_csv, column: str) -> None:
    """``url``, ``token`` and ``leaf_index`` are stored by provmint next to each product;
    an input column of that name would be shadowed and its committed value lost. Minting
    must either refuse such a column (exit 6) or keep it so that the proof verifies."""
    source = write_csv("reserved.csv", f"gtin,serial,{column}\n{GTIN},RES1,7\n")
    r = cli("batch", "create", source, "--json")
    if r.exit_code != EXIT_OK:
        assert r.exit_code == 6 and column in r.stderr, r.output
        return
    product = show(cli, "--gtin", GTIN, "--serial", "RES1")
    assert product["record"].get(column) == "7"
    proof = cli("proof", "export", "--gtin", GTIN, "--serial", "RES1")
    assert proof.exit_code == 0, proof.output
    assert cli("verify", "-", input=proof.stdout).exit_code == EXIT_PENDING
