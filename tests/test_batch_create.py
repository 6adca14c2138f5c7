"""``provmint batch create`` through the CLI (in-process) and ``provmint.batch.mint_batch``:
exit codes, error and reject reports, the rejects file, duplicates against the store,
atomicity (nothing half-written) and determinism across worker counts.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from biip.gtin import Gtin
from helpers import csv_text, one_error
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import provmint.batch
import provmint.engine
from provmint.batch import mint_batch
from provmint.config import resolve_settings
from provmint.errors import (
    EXIT_ERROR,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_PENDING,
    EXIT_REJECTED,
    ProvmintError,
)


def mod10(body: str) -> int:
    """GS1 check digit (weights 3,1,3,... from the digit left of the check digit)."""
    total = sum(int(c) * (3 if i % 2 == 0 else 1) for i, c in enumerate(reversed(body)))
    return (10 - total % 10) % 10


def with_check(body: str) -> str:
    return body + str(mod10(body))


GTIN13 = with_check("952012345001")
GTIN14 = "0" + GTIN13
OTHER14 = "0" + with_check("952012345002")
REJECTS_HEADER = ["row", "line", "column", "value", "code", "reason"]
REPORT_LINE = re.compile(
    r"^(?P<file>.+?): line (?P<line>\d+): column '(?P<column>[^']*)': "
    r"value (?P<value>'.*'|\".*\"): (?P<reason>.+)$"
)


def products_csv(serials: list[str], gtin: str = GTIN14) -> str:
    return csv_text(["gtin", "serial", "product_name"], [[gtin, s, "Serum"] for s in serials])


def read_rejects(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == REJECTS_HEADER
    return [dict(zip(REJECTS_HEADER, r, strict=True)) for r in rows[1:]]


def report_lines(stderr: str) -> list[re.Match[str]]:
    """The per-reject report lines printed before the ``error:`` line."""
    lines = [line for line in stderr.splitlines() if not line.startswith(("error:", "hint:"))]
    return [m for m in map(REPORT_LINE.match, lines) if m]


def create(cli, path: Path, *args: object):
    return cli("batch", "create", path, *args)


def create_ok(cli, path: Path, *args: object) -> dict:
    r = create(cli, path, "--json", *args)
    assert r.exit_code == EXIT_OK, r.output
    return json.loads(r.stdout)


def batch_list(cli, *args: object) -> list[dict]:
    r = cli("batch", "list", "--json", *args)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)["batches"]


def product(cli, gtin: str, serial: str, *args: object) -> dict:
    r = cli("product", "show", "--gtin", gtin, "--serial", serial, "--json", *args)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def staging_entries(tmp_path: Path) -> list[Path]:
    staging = tmp_path / "store" / "staging"
    return sorted(staging.iterdir()) if staging.exists() else []


def assert_no_batches(tmp_path: Path) -> None:
    """A store in which nothing was ever minted (it may not even exist)."""
    batches = tmp_path / "store" / "batches"
    assert not batches.exists() or not any(batches.iterdir())
    assert staging_entries(tmp_path) == []


def assert_refused_cleanly(cli, tmp_path: Path, before: list[dict]) -> None:
    """Nothing half-written: the same batches as before and an empty staging directory."""
    assert batch_list(cli) == before
    assert staging_entries(tmp_path) == []


def assert_proof_pending(cli, tmp_path: Path, gtin: str, serial: str, root: str) -> None:
    out = tmp_path / f"proof-{serial}.json"
    r = cli("proof", "export", "--gtin", gtin, "--serial", serial, "-o", out)
    assert r.exit_code == 0, r.output
    r = cli("verify", out, "--json")
    assert r.exit_code == EXIT_PENDING, r.output
    report = json.loads(r.stdout)
    assert report["verdict"] == "pending"
    assert report["computed_root"] == root


@pytest.fixture
def minted(cli, keyed, write_csv, tmp_path: Path) -> dict:
    """A store holding one batch of three products (A1, A2, A3 of GTIN14)."""
    summary = create_ok(cli, write_csv("first.csv", products_csv(["A1", "A2", "A3"])))
    return {"summary": summary, "batches": batch_list(cli)}


# --- the happy path ----------------------------------------------------------------------------


def test_json_summary_fields(cli, keyed, write_csv, tmp_path: Path) -> None:
    s = create_ok(cli, write_csv("ok.csv", products_csv(["S1", "S2", "S3", "S4"])))
    assert s["products"] == 4 and s["rows"] == 4 and s["rejected"] == 0
    assert s["tree"]["size"] == 4
    assert re.fullmatch(r"[0-9a-f]{64}", s["tree"]["root"])
    assert re.fullmatch(r"[0-9a-f]{64}", s["commitment"])
    assert s["tree"]["root"] != s["commitment"]
    assert isinstance(s["key_id"], str) and s["key_id"]
    assert isinstance(s["elapsed_s"], int | float) and s["elapsed_s"] >= 0
    assert isinstance(s["products_per_s"], int | float) and s["products_per_s"] >= 0
    [listed] = batch_list(cli)
    assert listed["batch_id"] == s["batch_id"]
    assert listed == {k: v for k, v in s.items() if k in listed}  # one shape of a batch
    assert listed["commitment"] == s["commitment"]
    assert listed["key_id"] == s["key_id"]
    assert s["rejects_file"] is None
    assert not (tmp_path / "ok.rejects.csv").exists()
    assert_proof_pending(cli, tmp_path, GTIN14, "S3", s["tree"]["root"])


def test_human_summary_mentions_batch_and_root(cli, keyed, write_csv) -> None:
    r = create(cli, write_csv("ok.csv", products_csv(["S1", "S2"])))
    assert r.exit_code == 0, r.output
    [b] = batch_list(cli)
    assert f"Minted batch {b['batch_id']}" in r.stdout
    assert b["tree"]["root"] in r.stdout


def test_no_issuer_key_file_is_not_found(cli, settings, write_csv, tmp_path: Path) -> None:
    assert not settings.key_file.exists()
    r = create(cli, write_csv("ok.csv", products_csv(["S1"])))
    assert r.exit_code == EXIT_NOT_FOUND
    assert "error:" in r.stderr
    assert "provmint keys init" in r.stderr
    assert_no_batches(tmp_path)


# --- whole-file problems -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "file is empty"),
        (b"  \n\t\n\r\n", "file is empty"),
        (b"gtin,serial\n", "no data rows"),
        (b"gtin,serial\n\n\n", "no data rows"),
    ],
)
def test_empty_and_header_only_files(
    cli, keyed, write_csv, tmp_path: Path, content: bytes, message: str
) -> None:
    r = create(cli, write_csv("e.csv", content))
    assert r.exit_code == EXIT_REJECTED, r.output
    assert "error:" in r.stderr and message in r.stderr
    assert not (tmp_path / "e.rejects.csv").exists()
    assert_no_batches(tmp_path)


def test_header_only_without_final_newline(cli, keyed, write_csv) -> None:
    r = create(cli, write_csv("h.csv", b"gtin,serial"))
    assert r.exit_code == EXIT_REJECTED, r.output
    assert "no data rows" in r.stderr


@pytest.mark.parametrize(
    ("header", "missing"), [("gtin,lot", "serial"), ("Serial Number,lot", "gtin")]
)
def test_missing_required_column(
    cli, keyed, write_csv, tmp_path: Path, header: str, missing: str
) -> None:
    r = create(cli, write_csv("m.csv", f"{header}\n{GTIN14},x\n"))
    assert r.exit_code == EXIT_REJECTED, r.output
    assert f"required column '{missing}' is missing" in r.stderr
    assert "hint:" in r.stderr
    assert {"gtin": "ean", "serial": "serial_number"}[missing] in r.stderr
    assert report_lines(r.stderr) == []
    assert not (tmp_path / "m.rejects.csv").exists()
    assert_no_batches(tmp_path)


def test_missing_column_leaves_existing_store_untouched(
    cli, minted, write_csv, tmp_path: Path
) -> None:
    r = create(cli, write_csv("m.csv", f"gtin,lot\n{GTIN14},x\n"))
    assert r.exit_code == EXIT_REJECTED
    assert_refused_cleanly(cli, tmp_path, minted["batches"])


def test_duplicate_column_name(cli, keyed, write_csv) -> None:
    r = create(cli, write_csv("d.csv", f"GTIN,EAN,serial\n{GTIN14},{GTIN14},S1\n"))
    assert r.exit_code == EXIT_REJECTED
    assert "'GTIN'" in r.stderr and "'EAN'" in r.stderr and "gtin" in r.stderr


def test_nonexistent_input(cli, keyed, tmp_path: Path) -> None:
    r = create(cli, tmp_path / "missing.csv")
    assert r.exit_code == EXIT_NOT_FOUND
    assert "missing.csv" in r.stderr and "products CSV not found" in r.stderr


# --- row problems: the report, the rejects file and atomicity -----------------------------------


def test_bad_row_refuses_whole_batch(cli, minted, write_csv, tmp_path: Path) -> None:
    wrong = GTIN13[:-1] + str((mod10(GTIN13[:-1]) + 1) % 10)
    text = products_csv(["B1", "B2"]) + f"{wrong},B3,Serum\n"
    path = write_csv("bad.csv", text)
    r = create(cli, path)
    assert r.exit_code == EXIT_REJECTED
    [m] = report_lines(r.stderr)
    assert m["file"] == str(path)
    assert (m["line"], m["column"], m["value"]) == ("4", "gtin", repr(wrong))
    assert f"expected {mod10(GTIN13[:-1])}" in m["reason"]
    assert "error:" in r.stderr and "1 of 3 rows" in r.stderr
    assert "--skip-invalid" in r.stderr
    assert read_rejects(tmp_path / "bad.rejects.csv") == [
        {
            "row": "3",
            "line": "4",
            "column": "gtin",
            "value": wrong,
            "code": "gtin_check_digit",
            "reason": m["reason"],
        }
    ]
    assert_refused_cleanly(cli, tmp_path, minted["batches"])
    s = minted["summary"]
    assert_proof_pending(cli, tmp_path, GTIN14, "A2", s["tree"]["root"])
    # None of the valid rows of the refused file were minted.
    r = cli("product", "show", "--gtin", GTIN14, "--serial", "B1", "--json")
    assert r.exit_code == 7, r.output


def test_invalid_utf8_reported_with_line_and_column(cli, keyed, write_csv, tmp_path: Path) -> None:
    data = (
        b"gtin,serial,product_name\n"
        + GTIN14.encode()
        + b",S1,ok\n"
        + GTIN14.encode()
        + b",S2,Cr\xe8me\n"
    )
    r = create(cli, write_csv("enc.csv", data))
    assert r.exit_code == EXIT_REJECTED
    found = [m for m in report_lines(r.stderr) if m["column"] == "product_name"]
    assert len(found) == 1 and found[0]["line"] == "3"
    rejects = read_rejects(tmp_path / "enc.rejects.csv")
    assert [(x["line"], x["column"], x["code"]) for x in rejects] == [
        ("3", "product_name", "invalid_utf8")
    ]


def test_invalid_utf8_in_serial_is_reported_once(cli, keyed, write_csv, tmp_path: Path) -> None:
    data = b"gtin,serial\n" + GTIN14.encode() + b",S\xff1\n"
    r = create(cli, write_csv("enc.csv", data))
    assert r.exit_code == EXIT_REJECTED
    rejects = read_rejects(tmp_path / "enc.rejects.csv")
    # only the real problem; not an extra bogus "serial is empty" for the same cell
    assert [(x["line"], x["column"], x["code"]) for x in rejects] == [
        ("2", "serial", "invalid_utf8")
    ]


def test_semicolon_file_with_bom_and_aliases(cli, keyed, write_csv) -> None:
    text = (
        "\ufeffEAN;Serial Number;LOT;Expiry Date;Product Name\r\n"
        f"{GTIN13};SN-1;L1;2027-06-30;Serum, 30 ml\r\n{GTIN13};SN-2;;270600;x\r\n"
    )
    s = create_ok(cli, write_csv("eu.csv", text))
    assert s["products"] == 2 and s["rejected"] == 0
    rec = product(cli, GTIN14, "SN-1")
    assert rec["record"] == {
        "gtin": GTIN14,
        "serial": "SN-1",
        "lot": "L1",
        "expiry": "2027-06-30",
        "product_name": "Serum, 30 ml",
    }
    assert rec["batch_id"] == s["batch_id"]
    assert product(cli, GTIN14, "SN-2")["record"]["expiry"] == "270600"


def test_blank_lines_line_numbers_in_reports(cli, keyed, write_csv, tmp_path: Path) -> None:
    text = f"gtin,serial\n\n{GTIN14},S1\n\n\n{GTIN14},S 2\n\n{GTIN14},\n"
    r = create(cli, write_csv("bl.csv", text))
    assert r.exit_code == EXIT_REJECTED
    assert [(m["line"], m["column"]) for m in report_lines(r.stderr)] == [
        ("6", "serial"),
        ("8", "serial"),
    ]
    rejects = read_rejects(tmp_path / "bl.rejects.csv")
    assert [(x["row"], x["line"], x["code"]) for x in rejects] == [
        ("2", "6", "serial_charset"),
        ("3", "8", "serial_empty"),
    ]


def test_ragged_rows(cli, keyed, write_csv, tmp_path: Path) -> None:
    text = f"gtin,serial\n{GTIN14},S1\n{GTIN14}\n{GTIN14},S3,extra\n{GTIN14},S4\n"
    r = create(cli, write_csv("rg.csv", text), "--skip-invalid", "--json")
    assert r.exit_code == EXIT_OK, r.output
    s = json.loads(r.stdout)
    assert (s["products"], s["rows"], s["rejected"]) == (2, 4, 2)
    rejects = read_rejects(tmp_path / "rg.rejects.csv")
    assert [(x["row"], x["line"], x["code"]) for x in rejects] == [
        ("2", "3", "ragged_row"),
        ("3", "4", "ragged_row"),
    ]
    assert product(cli, GTIN14, "S4")["leaf_index"] == 1


def assert_one_reject_per_line(rejects: list[dict[str, str]], expected: list[tuple]) -> None:
    """``expected``: (column, value, code) for the data rows 2.. of the file, in order."""
    got = [(x["line"], x["column"], x["value"], x["code"]) for x in rejects]
    assert got == [(str(i), *e) for i, e in enumerate(expected, start=3)]


GTIN_PROBLEMS = [
    ("9.52012E+12", "gtin_scientific"),
    ("9.52012345E+13", "gtin_scientific"),
    ("95201234500", "gtin_length"),
    ("952012345001400", "gtin_length"),
    ("95201234500l4", "gtin_not_digits"),
    ("ABCDEFGH", "gtin_not_digits"),
]


def test_gtin_problems(cli, keyed, write_csv, tmp_path: Path) -> None:
    rows = [[GTIN14, "OK"]] + [[v, f"S{i}"] for i, (v, _) in enumerate(GTIN_PROBLEMS)]
    r = create(cli, write_csv("g.csv", csv_text(["gtin", "serial"], rows)))
    assert r.exit_code == EXIT_REJECTED
    rejects = read_rejects(tmp_path / "g.rejects.csv")
    assert_one_reject_per_line(rejects, [("gtin", v, c) for v, c in GTIN_PROBLEMS])
    assert "scientific" in rejects[0]["reason"]
    assert "11 digits" in rejects[2]["reason"] and "15 digits" in rejects[3]["reason"]


def test_gtin_lengths_normalized_to_14(cli, keyed, write_csv) -> None:
    gtins = [with_check(b) for b in ("9638507", "03600029145", "952012345001", "1952012345001")]
    assert sorted(map(len, gtins)) == [8, 12, 13, 14]
    # surrounding spaces are tolerated too
    rows = [[f" {g} " if i % 2 else g, f"N{i}"] for i, g in enumerate(gtins)]
    s = create_ok(cli, write_csv("n.csv", csv_text(["gtin", "serial"], rows)))
    assert s["products"] == 4
    for i, g in enumerate(gtins):
        expected = g.rjust(14, "0")
        assert Gtin.parse(g).as_gtin_14() == expected  # independent oracle
        rec = product(cli, expected, f"N{i}")
        assert rec["record"]["gtin"] == expected
        assert f"/01/{expected}/" in rec["url"]


SERIAL_PROBLEMS = [
    ("S 1", "serial_charset"),
    ("Sé1", "serial_charset"),
    ("S#1", "serial_charset"),
    ("x" * 21, "serial_too_long"),
    ("", "serial_empty"),
]


def test_serial_problems(cli, keyed, write_csv, tmp_path: Path) -> None:
    rows = [[GTIN14, "OK"]] + [[GTIN14, v] for v, _ in SERIAL_PROBLEMS]
    r = create(cli, write_csv("s.csv", csv_text(["gtin", "serial"], rows)))
    assert r.exit_code == EXIT_REJECTED
    rejects = read_rejects(tmp_path / "s.rejects.csv")
    assert_one_reject_per_line(rejects, [("serial", v, c) for v, c in SERIAL_PROBLEMS])
    assert "a space" in rejects[0]["reason"]


def test_cset82_punctuation_serial_minted(cli, keyed, write_csv) -> None:
    punct = "!\"%&'()*+,-./:;<=>?_"
    assert len(punct) == 20
    create_ok(
        cli, write_csv("p.csv", csv_text(["gtin", "serial"], [[GTIN14, punct], [GTIN14, "x" * 20]]))
    )
    assert product(cli, GTIN14, punct)["record"]["serial"] == punct
    assert product(cli, GTIN14, "x" * 20)["record"]["serial"] == "x" * 20


LOT_DATE_PROBLEMS = [
    ("lot", "x" * 21, "lot_too_long"),
    ("lot", "L 1", "lot_charset"),
    ("expiry", "2027-02-30", "expiry_date"),
    ("expiry", "270229", "expiry_date"),
    ("expiry", "30/06/2027", "expiry_format"),
    ("production_date", "2027-02-30", "expiry_date"),
    ("production_date", "2027.01.01", "expiry_format"),
]


def test_lot_and_date_problems(cli, keyed, write_csv, tmp_path: Path) -> None:
    header = ["gtin", "serial", "lot", "expiry", "production_date"]
    rows = [[GTIN14, "OK", "", "", ""]]
    for i, (column, value, _) in enumerate(LOT_DATE_PROBLEMS):
        row = {
            "gtin": GTIN14,
            "serial": f"S{i}",
            "lot": "L1",
            "expiry": "2027-06-30",
            "production_date": "2025-01-01",
            column: value,
        }
        rows.append([row[h] for h in header])
    r = create(cli, write_csv("ld.csv", csv_text(header, rows)))
    assert r.exit_code == EXIT_REJECTED
    rejects = read_rejects(tmp_path / "ld.rejects.csv")
    assert_one_reject_per_line(rejects, LOT_DATE_PROBLEMS)


def test_lot_and_date_accepted(cli, keyed, write_csv) -> None:
    header = ["gtin", "serial", "lot", "expiry", "production_date"]
    rows = [
        [GTIN14, "D1", "", "", ""],
        [GTIN14, "D2", "x" * 20, "2027-02-00", "2028-02-29"],  # day 00 = end of month
        [GTIN14, "D3", "L/1", "270200", "280229"],
        [GTIN14, "D4", "L1", "2027-12-31", "240101"],
    ]
    s = create_ok(cli, write_csv("ok.csv", csv_text(header, rows)))
    assert (s["products"], s["rejected"]) == (4, 0)
    for row in rows:
        assert product(cli, GTIN14, row[1])["record"] == dict(zip(header, row, strict=True))


# --- duplicates ----------------------------------------------------------------------------------


def test_duplicate_in_file_differently_spelled(cli, keyed, write_csv, tmp_path: Path) -> None:
    text = csv_text(["gtin", "serial"], [[GTIN13, "D1"], [GTIN14, "D2"], [GTIN14, "D1"]])
    r = create(cli, write_csv("dup.csv", text))
    assert r.exit_code == EXIT_REJECTED
    rejects = read_rejects(tmp_path / "dup.rejects.csv")
    assert [(x["line"], x["code"]) for x in rejects] == [
        ("2", "duplicate_in_file"),
        ("4", "duplicate_in_file"),
    ]
    assert "line 4" in rejects[0]["reason"] and "line 2" in rejects[1]["reason"]
    assert batch_list(cli) == []


def test_rerun_same_file_names_batch_and_hint(cli, minted, tmp_path: Path) -> None:
    batch_id = minted["summary"]["batch_id"]
    r = create(cli, tmp_path / "first.csv")
    assert r.exit_code == EXIT_REJECTED
    error = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and batch_id in error[0]
    hint = [line for line in r.stderr.splitlines() if line.startswith("hint:")]
    assert len(hint) == 1
    assert "this exact file was already minted" in hint[0] and batch_id in hint[0]
    rejects = read_rejects(tmp_path / "first.rejects.csv")
    assert [(x["value"], x["code"]) for x in rejects] == [
        ("A1", "duplicate_in_store"),
        ("A2", "duplicate_in_store"),
        ("A3", "duplicate_in_store"),
    ]
    assert all(batch_id in x["reason"] for x in rejects)
    assert_refused_cleanly(cli, tmp_path, minted["batches"])
    assert_proof_pending(cli, tmp_path, GTIN14, "A1", minted["summary"]["tree"]["root"])


def test_rerun_with_skip_invalid_has_nothing_to_mint(cli, minted, tmp_path: Path) -> None:
    r = create(cli, tmp_path / "first.csv", "--skip-invalid")
    assert r.exit_code == EXIT_REJECTED
    assert "no valid rows" in r.stderr
    assert_refused_cleanly(cli, tmp_path, minted["batches"])
    assert len(read_rejects(tmp_path / "first.rejects.csv")) == 3


def test_second_file_sharing_a_product(cli, minted, write_csv, tmp_path: Path) -> None:
    old_id = minted["summary"]["batch_id"]
    # A2 with the 13-digit spelling of the same GTIN: still the same product.
    text = csv_text(
        ["gtin", "serial", "product_name"],
        [[GTIN14, "N1", "Serum"], [GTIN13, "A2", "Serum"], [OTHER14, "A2", "Cream"]],
    )
    path = write_csv("second.csv", text)
    r = create(cli, path)
    assert r.exit_code == EXIT_REJECTED
    assert "this exact file" not in r.stderr
    rejects = read_rejects(tmp_path / "second.rejects.csv")
    assert [(x["row"], x["line"], x["column"], x["value"], x["code"]) for x in rejects] == [
        ("2", "3", "serial", "A2", "duplicate_in_store")
    ]
    assert old_id in rejects[0]["reason"]
    assert_refused_cleanly(cli, tmp_path, minted["batches"])

    s = create_ok(cli, path, "--skip-invalid")
    assert (s["products"], s["rows"], s["rejected"]) == (2, 3, 1)
    assert s["rejects_file"] == str(tmp_path / "second.rejects.csv")
    assert len(batch_list(cli)) == 2
    assert product(cli, GTIN14, "N1")["batch_id"] == s["batch_id"]
    assert product(cli, OTHER14, "A2")["batch_id"] == s["batch_id"]
    assert product(cli, GTIN14, "A2")["batch_id"] == old_id
    assert product(cli, GTIN14, "A2")["leaf_index"] == 1
    assert_proof_pending(cli, tmp_path, GTIN14, "A2", minted["summary"]["tree"]["root"])
    assert_proof_pending(cli, tmp_path, OTHER14, "A2", s["tree"]["root"])


def test_store_duplicate_lines_with_blank_lines_and_ragged_rows(
    cli, minted, write_csv, tmp_path: Path
) -> None:
    text = (
        f"gtin,serial,product_name\n\n{GTIN14},N1,x\n\n{GTIN14},A2,x\n{GTIN14},N2\n"
        f'{GTIN14},N3,"two\nlines"\n\n{GTIN14},A1,x\n'
    )
    # lines: 3 N1, 5 A2 (stored), 6 ragged, 7-8 N3, 10 A1 (stored)
    s = create_ok(cli, write_csv("blank2.csv", text), "--skip-invalid")
    assert (s["products"], s["rows"], s["rejected"]) == (2, 5, 3)
    rejects = read_rejects(tmp_path / "blank2.rejects.csv")
    assert [(x["row"], x["line"], x["code"]) for x in rejects] == [
        ("2", "5", "duplicate_in_store"),
        ("3", "6", "ragged_row"),
        ("5", "10", "duplicate_in_store"),
    ]
    assert product(cli, GTIN14, "N3")["record"]["product_name"] == "two\nlines"


@pytest.mark.parametrize("workers", [1, 2, 3, 8])
def test_store_duplicates_of_a_large_batch(
    cli, keyed, write_csv, tmp_path: Path, workers: int
) -> None:
    # More than 64 hits in one stored batch takes the whole-batch comparison path. With
    # more workers, the join against the store's index runs in as many threads.
    serials = [f"L{i:04d}" for i in range(150)]
    first = create_ok(cli, write_csv("big.csv", products_csv(serials)))
    text = products_csv([*serials[::-1], "NEW1"])
    r = create(cli, write_csv("big2.csv", text), "--skip-invalid", "--json", "--workers", workers)
    assert r.exit_code == EXIT_OK, r.output
    s = json.loads(r.stdout)
    assert (s["products"], s["rejected"]) == (1, 150)
    rejects = read_rejects(tmp_path / "big2.rejects.csv")
    assert {x["value"] for x in rejects} == set(serials)
    assert {x["code"] for x in rejects} == {"duplicate_in_store"}
    assert all(first["batch_id"] in x["reason"] for x in rejects)
    # reversed order: L0149 is on line 2, L0000 on line 151
    by_value = {x["value"]: x["line"] for x in rejects}
    assert by_value["L0149"] == "2" and by_value["L0000"] == "151"


# --- --skip-invalid, the rejects file and the on-screen report ----------------------------------


def test_skip_invalid_summary_and_rejects_file(cli, keyed, write_csv, tmp_path: Path) -> None:
    rows = [
        [GTIN14, "K1", ""],
        [GTIN14, "K 2", ""],
        [GTIN14, "K3", "L 3"],
        ["9.52012E+12", "K4", ""],
        [GTIN14, "K5", "L5"],
        [GTIN14, "K1", ""],
    ]
    path = write_csv("mix.csv", csv_text(["gtin", "serial", "lot"], rows))
    s = create_ok(cli, path, "--skip-invalid")
    assert (s["products"], s["rows"], s["rejected"], s["tree"]["size"]) == (1, 6, 5, 1)
    rejects = read_rejects(tmp_path / "mix.rejects.csv")
    assert [(x["row"], x["line"], x["column"], x["code"]) for x in rejects] == [
        ("1", "2", "serial", "duplicate_in_file"),
        ("2", "3", "serial", "serial_charset"),
        ("3", "4", "lot", "lot_charset"),
        ("4", "5", "gtin", "gtin_scientific"),
        ("6", "7", "serial", "duplicate_in_file"),
    ]
    assert product(cli, GTIN14, "K5")["record"]["lot"] == "L5"
    [b] = batch_list(cli)
    assert b["products"] == 1 and b["rejected"] == 5


def test_rejects_default_location_is_cwd(cli, keyed, tmp_path: Path, monkeypatch) -> None:
    data_dir = tmp_path / "data"
    work = tmp_path / "work"
    data_dir.mkdir()
    work.mkdir()
    src = data_dir / "lot7.csv"
    src.write_text(products_csv(["OK", "B A D"]))
    monkeypatch.chdir(work)
    r = create(cli, src)
    assert r.exit_code == EXIT_REJECTED
    assert (work / "lot7.rejects.csv").is_file()
    assert not (data_dir / "lot7.rejects.csv").exists()
    assert str(work / "lot7.rejects.csv") in r.stderr
    assert [x["value"] for x in read_rejects(work / "lot7.rejects.csv")] == ["B A D"]


def test_rejects_explicit_path(cli, keyed, write_csv, tmp_path: Path) -> None:
    target = tmp_path / "reports" / "out.csv"
    target.parent.mkdir()
    s = create_ok(
        cli,
        write_csv("x.csv", products_csv(["OK", "B A D"])),
        "--skip-invalid",
        "--rejects",
        target,
    )
    assert s["rejects_file"] == str(target)
    assert [x["value"] for x in read_rejects(target)] == ["B A D"]
    assert not (tmp_path / "x.rejects.csv").exists()


@pytest.mark.parametrize(("bad", "shown", "more"), [(13, 10, 3), (10, 10, None), (3, 3, None)])
def test_report_shows_at_most_ten_lines(
    cli, keyed, write_csv, tmp_path: Path, bad: int, shown: int, more: int | None
) -> None:
    serials = ["GOOD"] + [f"B {i}" for i in range(bad)]
    r = create(cli, write_csv("many.csv", products_csv(serials)))
    assert r.exit_code == EXIT_REJECTED
    lines = report_lines(r.stderr)
    assert len(lines) == shown
    assert [m["line"] for m in lines] == [str(i) for i in range(3, 3 + shown)]
    if more is None:
        assert "more" not in r.stderr.replace("more problems", "")
    else:
        assert f"… and {more} more" in r.stderr
    assert len(read_rejects(tmp_path / "many.rejects.csv")) == bad
    assert f"All {bad} problems are listed in" in r.stderr


# --- nothing half-written ----------------------------------------------------------------------


def test_failure_while_minting_leaves_no_trace(
    cli, minted, write_csv, tmp_path: Path, monkeypatch
) -> None:
    def boom(task):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(provmint.engine, "run_chunk", boom)
        r = create(cli, write_csv("later.csv", products_csv(["Z1", "Z2"])), "--workers", "1")
    one_error(
        r,
        EXIT_ERROR,
        f"no space left on device writing {tmp_path / 'store'} (",
        " free); nothing was minted",
    )
    assert_refused_cleanly(cli, tmp_path, minted["batches"])
    assert_proof_pending(cli, tmp_path, GTIN14, "A3", minted["summary"]["tree"]["root"])
    # and the same file can then be minted
    s = create_ok(cli, tmp_path / "later.csv")
    assert s["products"] == 2


def test_refusals_keep_store_and_existing_batch(cli, minted, write_csv, tmp_path: Path) -> None:
    files = {
        "a.csv": products_csv(["X1", "X 2"]),
        "b.csv": products_csv(["X1", "X1"]),
        "c.csv": products_csv(["X1", "A1"]),
        "d.csv": "gtin,lot\n1,2\n",
        "e.csv": "",
        "f.csv": "gtin,serial\n",
        "g.csv": f"{GTIN14},X1\n",
    }
    for name, text in files.items():
        r = create(cli, write_csv(name, text))
        assert r.exit_code == EXIT_REJECTED, (name, r.output)
        assert_refused_cleanly(cli, tmp_path, minted["batches"])
    assert_proof_pending(cli, tmp_path, GTIN14, "A1", minted["summary"]["tree"]["root"])


# --- determinism across worker counts -----------------------------------------------------------


def thousand_rows() -> str:
    rows = [
        [GTIN14 if i % 2 else OTHER14, f"W{i:05d}", f"L{i % 7}", "2027-06-30", f"item {i}"]
        for i in range(1000)
    ]
    return csv_text(["gtin", "serial", "lot", "expiry", "product_name"], rows)


def test_workers_1_and_2_same_root_cli(cli, keyed, write_csv, tmp_path: Path) -> None:
    path = write_csv("k.csv", thousand_rows())
    s1 = create_ok(cli, path, "--workers", "1", "--store", tmp_path / "s1")
    s2 = create_ok(cli, path, "--workers", "2", "--store", tmp_path / "s2")
    assert s1["products"] == s2["products"] == 1000
    assert s1["tree"]["size"] == s2["tree"]["size"] == 1000
    assert s1["tree"]["root"] == s2["tree"]["root"]
    assert s1["batch_id"] != s2["batch_id"]
    r1 = product(cli, GTIN14, "W00999", "--store", tmp_path / "s1")
    r2 = product(cli, GTIN14, "W00999", "--store", tmp_path / "s2")
    assert r1["token"] == r2["token"] and r1["leaf_index"] == r2["leaf_index"] == 999


def test_process_pool_gives_same_root(keyed, write_csv, tmp_path: Path, monkeypatch) -> None:
    path = write_csv("k.csv", thousand_rows())
    serial_run = mint_batch(path, settings=resolve_settings(store=tmp_path / "a", workers=1))
    monkeypatch.setattr(provmint.batch, "POOL_MIN_BYTES", 0)
    pool_run = mint_batch(path, settings=resolve_settings(store=tmp_path / "b", workers=2))
    assert serial_run.workers == 1
    assert pool_run.workers == 2  # the pool was really used
    assert pool_run.products == serial_run.products == 1000
    assert pool_run.root == serial_run.root
    assert not any((tmp_path / "b" / "staging").iterdir())


def _batch_files(store: Path) -> dict[str, bytes]:
    """Every file of a store's one batch but its manifest (which names the batch)."""
    (batch,) = (store / "batches").iterdir()
    return {
        str(p.relative_to(batch)): p.read_bytes()
        for p in sorted(batch.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }


@pytest.mark.parametrize("other_thread", [False, True])
def test_forked_and_fork_server_workers_write_the_same_batch(
    keyed, write_csv, tmp_path: Path, monkeypatch, other_thread: bool
) -> None:
    """The workers fork from the minting process when it runs one thread, and from a fork
    server when it runs more: either way the batch's files are those one process writes."""
    import threading

    import provmint.pool

    if not other_thread and threading.active_count() != 1:
        pytest.skip("this test process runs other threads")
    path = write_csv("k.csv", thousand_rows())
    monkeypatch.setattr(provmint.engine, "CHUNK_ROWS", 128)
    alone = mint_batch(path, settings=resolve_settings(store=tmp_path / "a", workers=1))
    monkeypatch.setattr(provmint.batch, "POOL_MIN_BYTES", 0)
    started: list[str] = []
    for name in ("fork_pool", "start_pool"):
        real = getattr(provmint.pool, name)

        def spy(*args, _real=real, _name=name, **kwargs):  # type: ignore[no-untyped-def]
            started.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(provmint.pool, name, spy)
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    if other_thread:
        thread.start()
    try:
        pooled = mint_batch(path, settings=resolve_settings(store=tmp_path / "b", workers=2))
    finally:
        stop.set()
        if other_thread:
            thread.join()
    assert started == ["start_pool" if other_thread else "fork_pool"]
    assert pooled.workers == 2 and pooled.root == alone.root
    assert _batch_files(tmp_path / "b") == _batch_files(tmp_path / "a")


def test_the_workers_exit_during_the_commit_and_are_gone_after_it(
    keyed, write_csv, tmp_path: Path, monkeypatch
) -> None:
    """Once the index is written the workers have no more tasks: they are let go before
    the batch is committed (their exit overlaps the commit), and every one of them has
    exited when mint_batch returns."""
    import psutil

    import provmint.minting
    import provmint.store

    path = write_csv("k.csv", thousand_rows())
    monkeypatch.setattr(provmint.engine, "CHUNK_ROWS", 128)
    monkeypatch.setattr(provmint.batch, "POOL_MIN_BYTES", 0)
    events: list[str] = []
    workers: list[psutil.Process] = []
    release, commit = provmint.minting.Runner.release, provmint.store.Store.commit_batch

    def spy_release(self: provmint.minting.Runner) -> None:
        events.append("release")
        pool = self.pool
        assert pool is not None
        workers.extend(psutil.Process(pid) for pid in pool._processes)  # type: ignore[attr-defined]
        release(self)

    def spy_commit(self: provmint.store.Store, *args: object) -> None:
        events.append("commit")
        commit(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(provmint.minting.Runner, "release", spy_release)
    monkeypatch.setattr(provmint.store.Store, "commit_batch", spy_commit)
    summary = mint_batch(path, settings=resolve_settings(store=tmp_path / "s", workers=2))
    assert summary.products == 1000 and summary.workers == 2
    assert events == ["release", "commit"]
    assert len(workers) == 2
    assert not any(worker.is_running() for worker in workers)


@pytest.mark.parametrize(
    ("workers", "rows", "opened_after"), [(2, 1000, 4), (2, 300, 3), (1, 1000, 0)]
)
def test_the_catalog_opens_once_the_workers_have_their_chunks(
    keyed, write_csv, tmp_path: Path, monkeypatch, workers: int, rows: int, opened_after: int
) -> None:
    """A pooled mint opens the catalog (DuckDB, the store's recovery) once the workers have
    as many chunks as they can take, two each, and not before: it needs none of it until
    the pass is over. With fewer chunks, once all are out; in one process, first."""
    header_and_rows = thousand_rows().splitlines(keepends=True)[: rows + 1]
    path = write_csv("k.csv", "".join(header_and_rows))
    monkeypatch.setattr(provmint.engine, "CHUNK_ROWS", 128)
    monkeypatch.setattr(provmint.batch, "POOL_MIN_BYTES", 0)
    made: list[int] = []
    opened: list[int] = []
    write_rows, open_catalog = provmint.engine.write_rows, provmint.batch._Catalog.open

    def spy_rows(path: Path, table: object) -> None:
        made.append(1)
        write_rows(path, table)

    def spy_open(store: object, connection: object) -> object:
        opened.append(len(made))
        return open_catalog(store, connection)

    monkeypatch.setattr(provmint.engine, "write_rows", spy_rows)
    monkeypatch.setattr(provmint.batch._Catalog, "open", spy_open)
    done = mint_batch(path, settings=resolve_settings(store=tmp_path / "s", workers=workers))
    assert done.products == rows
    assert opened == [opened_after]


def test_root_independent_of_chunking(cli, keyed, write_csv, tmp_path: Path, monkeypatch) -> None:
    # Several chunks (including a short last one) in the pool and in-process must give the
    # same RFC 9162 root as a single chunk.
    path = write_csv("k.csv", thousand_rows())
    whole = mint_batch(path, settings=resolve_settings(store=tmp_path / "a", workers=1))
    monkeypatch.setattr(provmint.engine, "CHUNK_ROWS", 256)
    chunked = mint_batch(path, settings=resolve_settings(store=tmp_path / "b", workers=1))
    monkeypatch.setattr(provmint.batch, "POOL_MIN_BYTES", 0)
    pooled = mint_batch(path, settings=resolve_settings(store=tmp_path / "c", workers=2))
    assert pooled.workers == 2
    assert whole.root == chunked.root == pooled.root
    r = cli(
        "proof",
        "export",
        "--gtin",
        GTIN14,
        "--serial",
        "W00777",
        "-o",
        tmp_path / "p.json",
        "--store",
        tmp_path / "c",
    )
    assert r.exit_code == 0, r.output
    r = cli("verify", tmp_path / "p.json", "--json")
    assert r.exit_code == EXIT_PENDING, r.output
    assert json.loads(r.stdout)["computed_root"] == pooled.root


def test_library_refusal_raises_and_writes_rejects(keyed, write_csv, tmp_path: Path) -> None:
    from provmint.errors import RowsRejectedError

    path = write_csv("lib.csv", products_csv(["OK", "B A D"]))
    out = tmp_path / "lib.rej.csv"
    with pytest.raises(RowsRejectedError) as exc:
        mint_batch(path, settings=keyed, rejects_path=out)
    assert exc.value.exit_code == EXIT_REJECTED
    assert (exc.value.rows, exc.value.total) == (1, 2)
    assert [r.code for r in exc.value.rejects] == ["serial_charset"]
    assert read_rejects(out)[0]["line"] == "3"
    summary = mint_batch(path, settings=keyed, skip_invalid=True)
    assert summary.products == 1 and summary.rejected_rows == 1
    assert summary.rejects_path is None  # none requested
    assert isinstance(summary.rejects[0].line, int)
    assert issubclass(RowsRejectedError, ProvmintError)


def test_store_busy_exit_8(cli, minted, write_csv, tmp_path: Path) -> None:
    from provmint.errors import EXIT_BUSY
    from provmint.store.lock import store_lock

    path = write_csv("busy.csv", products_csv(["Q1"]))
    with store_lock(tmp_path / "store", exclusive=True, timeout=1, purpose="test"):
        r = create(cli, path, "--lock-timeout", "0.2")
    assert r.exit_code == EXIT_BUSY, r.output
    assert "busy" in r.stderr and "hint:" in r.stderr
    assert_refused_cleanly(cli, tmp_path, minted["batches"])
    assert create_ok(cli, path)["products"] == 1


def test_paths_with_brackets_are_printed_verbatim(cli, keyed, write_csv, tmp_path: Path) -> None:
    # File names are data, not console markup: "lot[final].csv" must not be shown as
    # "lot.csv", or the user is told to look for a rejects file that does not exist.
    path = write_csv("lot[final].csv", products_csv(["OK", "B A D"]))
    expected = tmp_path / "lot[final].rejects.csv"
    r = create(cli, path)
    assert r.exit_code == EXIT_REJECTED
    assert expected.is_file()
    [m] = report_lines(r.stderr)
    assert m["file"] == str(path)
    assert f"All 1 problems are listed in {expected}" in r.stderr


def test_summary_prints_rejects_path_with_brackets_verbatim(
    cli, keyed, write_csv, tmp_path: Path
) -> None:
    path = write_csv("lot[final].csv", products_csv(["OK", "B A D"]))
    r = create(cli, path, "--skip-invalid")
    assert r.exit_code == EXIT_OK, r.output
    assert (tmp_path / "lot[final].rejects.csv").is_file()
    assert f"(see {tmp_path / 'lot[final].rejects.csv'})" in r.stdout


def test_cr_only_line_endings_are_handled(cli, keyed, write_csv) -> None:
    # Excel's "CSV (Macintosh)" ends lines with a bare CR: a clean result (minted or
    # refused with exit 6), not a traceback.
    r = create(cli, write_csv("mac.csv", f"gtin,serial\r{GTIN14},S1\r{GTIN14},S2\r"))
    assert r.exit_code in (EXIT_OK, EXIT_REJECTED), r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)


# pyarrow reports the failing invalid-row handler as an "Exception ignored" warning;
# the assertions below are what matters.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_cp1252_file_with_a_ragged_row_and_skip_invalid(
    cli, keyed, write_csv, tmp_path: Path
) -> None:
    data = (
        b"gtin,serial,product_name\n"
        + GTIN14.encode()
        + b",S1,ok\n"
        + GTIN14.encode()
        + b",S2,Cr\xe8me,extra\n"
        + GTIN14.encode()
        + b",S3,ok\n"
    )
    s = create_ok(cli, write_csv("cp.csv", data), "--skip-invalid")
    assert (s["products"], s["rows"], s["rejected"]) == (2, 3, 1)
    rejects = read_rejects(tmp_path / "cp.rejects.csv")
    assert [(x["line"], x["code"]) for x in rejects] == [("3", "ragged_row")]


def test_real_process_exit_codes(keyed, write_csv, tmp_path: Path) -> None:
    from conftest import run_provmint

    path = write_csv("sub.csv", products_csv(["OK", "B A D"]))
    p = run_provmint("batch", "create", path)
    assert p.returncode == EXIT_REJECTED, p.stderr
    assert f"{path}: line 3: column 'serial': value 'B A D':" in p.stderr
    assert (tmp_path / "sub.rejects.csv").is_file()
    p = run_provmint("batch", "create", path, "--key-file", tmp_path / "nokey.json")
    assert p.returncode == EXIT_NOT_FOUND
    assert "provmint keys init" in p.stderr


def _stored_rows(store: Path) -> list[dict[str, object]]:
    """Every stored product row of a one-batch store, in leaf order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = sorted(store.glob("batches/*/products/part-*.parquet"))
    return pa.concat_tables([pq.read_table(p) for p in parts]).to_pylist()


def _stored_records(store: Path) -> list[tuple[bytes, bytes]]:
    """Every (record, token) of a one-batch store's record parts, in leaf order."""
    from provmint.store.records import RecordPart

    out: list[tuple[bytes, bytes]] = []
    for path in sorted(store.glob("batches/*/records/part-*.rec")):
        with RecordPart.open(path) as part:
            out += part.get_many(range(len(part)))
    return out


_SHAPE_VALUES = ["", "L1", "a,b", 'say "hi"', "two\nlines", "Crème 日本", " pad "]


@pytest.mark.slow
@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.integers(1, 300),
    chunk_bits=st.integers(0, 8),
    extra=st.lists(st.sampled_from(["lot", "expiry", "name", "site"]), max_size=4, unique=True),
    values=st.lists(st.sampled_from(_SHAPE_VALUES), min_size=1, max_size=7),
    ending=st.sampled_from(["\n", "\r\n"]),
)
def test_streaming_gives_the_same_batch_for_any_chunk_size(
    keyed,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    rows: int,
    chunk_bits: int,
    extra: list[str],
    values: list[str],
    ending: str,
) -> None:
    """Any file shape, any chunk size (a power of two from 1 to 256 rows, against the
    default 65,536): the same root, the same stored rows and the same record parts'
    contents."""
    columns = ["gtin", "serial", *extra]
    lines = [",".join(columns)]
    for i in range(rows):
        cells = [GTIN14, f"S{i:05d}"]
        for j, name in enumerate(extra):
            value = "2027-06-30" if name == "expiry" else values[(i + j) % len(values)]
            if name == "lot":
                value = f"L{i % 7}"
            cells.append('"' + value.replace('"', '""') + '"' if value else value)
        lines.append(",".join(cells))
    base = tmp_path_factory.mktemp("shape")
    path = base / "in.csv"
    path.write_text(ending.join(lines) + ending, encoding="utf-8", newline="")
    whole = mint_batch(path, settings=resolve_settings(store=base / "whole", workers=1))
    with monkeypatch.context() as patch:
        patch.setattr(provmint.engine, "CHUNK_ROWS", 1 << chunk_bits)
        chunked = mint_batch(path, settings=resolve_settings(store=base / "chunked", workers=1))
    assert chunked.products == whole.products == rows
    parts = len(list((base / "chunked").glob("batches/*/products/part-*.parquet")))
    assert parts == -(-rows // (1 << chunk_bits))  # really minted in chunks of that size
    assert chunked.root == whole.root
    assert _stored_rows(base / "chunked") == _stored_rows(base / "whole")
    assert _stored_records(base / "chunked") == _stored_records(base / "whole")


def test_the_progress_display_starts_its_thread_on_its_first_update() -> None:
    """On a terminal the mint's display redraws from a thread of its own, which must not
    run before the first update: the minting process forks its workers only while it
    runs one thread (the first update comes after they have started)."""
    import io
    import threading

    from rich.console import Console

    from provmint.cli.batch import _mint_progress

    screen = io.StringIO()
    before = threading.active_count()
    started_with = set(threading.enumerate())
    with _mint_progress(Console(file=screen, force_terminal=True), enabled=True) as update:
        assert update is not None
        assert threading.active_count() == before
        update("mint", 1, 4)
        assert threading.active_count() == before + 1
        (redraws,) = set(threading.enumerate()) - started_with
    redraws.join(timeout=10)  # told to stop as the display ends
    assert threading.active_count() == before
    assert "minting" in screen.getvalue()


@pytest.mark.parametrize("other_thread", [False, True])
@pytest.mark.parametrize(
    "fault", [OSError(11, "Resource temporarily unavailable"), KeyboardInterrupt()]
)
def test_workers_that_cannot_start(
    keyed, write_csv, tmp_path: Path, monkeypatch, other_thread: bool, fault: BaseException
) -> None:
    """A pool that cannot start (fork refused: a fault the machine gives only under a
    process limit root ignores) refuses the mint in one line and leaves nothing; an
    interrupt while it starts stays an interrupt (exit 130 at the command line)."""
    import threading

    import provmint.pool
    from provmint.errors import ProvmintError

    if not other_thread and threading.active_count() != 1:
        pytest.skip("this test process runs other threads")

    def refuse(*args: object, **kwargs: object) -> None:
        raise fault

    monkeypatch.setattr(provmint.pool, "fork_pool", refuse)
    monkeypatch.setattr(provmint.pool, "start_pool", refuse)
    monkeypatch.setattr(provmint.batch, "POOL_MIN_BYTES", 0)
    path = write_csv("k.csv", thousand_rows())
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    if other_thread:
        thread.start()
    try:
        expected = ProvmintError if isinstance(fault, OSError) else KeyboardInterrupt
        with pytest.raises(expected) as raised:
            mint_batch(path, settings=resolve_settings(store=tmp_path / "s", workers=2))
    finally:
        stop.set()
        if other_thread:
            thread.join()
    if isinstance(fault, OSError):
        assert str(raised.value) == (
            "cannot start worker processes: [Errno 11] Resource temporarily unavailable"
        )
        assert raised.value.exit_code == 1
    staging = tmp_path / "s" / "staging"
    assert not staging.exists() or not any(staging.iterdir())
    batches = tmp_path / "s" / "batches"
    assert not batches.exists() or not any(batches.iterdir())


def test_a_failure_during_the_pass_waits_for_the_running_chunks(
    keyed, write_csv, tmp_path: Path, monkeypatch
) -> None:
    """When the mint fails while workers still run chunks (here the catalog, opened once
    they have their first ones, is damaged), every chunk has ended before the error
    leaves mint_batch: the staging directory is removed after them, and nothing is
    left behind."""
    import threading
    import time

    import provmint.minting
    from provmint.errors import StoreCorruptError

    if threading.active_count() != 1:
        pytest.skip("the workers must fork from this process (they inherit the slow chunks)")
    ended = tmp_path / "ended.log"
    real = provmint.engine.run_chunk

    def slow_chunk(task):  # type: ignore[no-untyped-def]
        time.sleep(0.3)
        try:
            return real(task)
        finally:
            with open(ended, "a") as log:
                log.write(f"{time.monotonic()}\n")

    slow_chunk.__module__, slow_chunk.__qualname__ = "provmint.engine", "run_chunk"
    monkeypatch.setattr(provmint.engine, "run_chunk", slow_chunk)
    monkeypatch.setattr(provmint.engine, "CHUNK_ROWS", 128)
    monkeypatch.setattr(provmint.batch, "POOL_MIN_BYTES", 0)

    def damaged(store: object, connection: object) -> object:
        raise StoreCorruptError("the catalog is damaged")

    monkeypatch.setattr(provmint.batch._Catalog, "open", damaged)
    discarded: list[float] = []
    discard = provmint.minting.StagedBatch.discard

    def spy_discard(self: object) -> None:
        discarded.append(time.monotonic())
        discard(self)  # type: ignore[arg-type]

    monkeypatch.setattr(provmint.minting.StagedBatch, "discard", spy_discard)
    path = write_csv("k.csv", thousand_rows())
    with pytest.raises(StoreCorruptError, match="damaged"):
        mint_batch(path, settings=resolve_settings(store=tmp_path / "s", workers=2))
    ends = [float(line) for line in ended.read_text().split()]
    assert ends and discarded and max(ends) <= min(discarded)
    staging = tmp_path / "s" / "staging"
    assert not staging.exists() or not any(staging.iterdir())
