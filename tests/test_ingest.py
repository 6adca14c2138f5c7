"""Library-level tests of ``provmint.ingest.read_products``: reading, header handling and the
row validation rules (GTIN, serial, lot, dates, duplicates), with physical line numbers.

Expected GTIN check digits are computed here (GS1 mod-10) and cross-checked with ``biip``,
an independent GS1 implementation, never copied from provmint.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from biip.gtin import Gtin
from helpers import csv_text

from provmint.canonical import MAX_FIELDS
from provmint.errors import InputFileError, MissingColumnError, Reject
from provmint.ingest import ALIASES, normalize_header, parse_csv, read_products, record_lines

# --- independent GS1 helpers -----------------------------------------------------------------


def mod10(body: str) -> int:
    """GS1 check digit: weights 3,1,3,... starting from the digit next to the check digit."""
    total = 0
    for i, ch in enumerate(reversed(body)):
        total += int(ch) * (3 if i % 2 == 0 else 1)
    return (10 - total % 10) % 10


def with_check(body: str) -> str:
    return body + str(mod10(body))


def codes(rejects: tuple[Reject, ...]) -> list[str]:
    return [r.code for r in rejects]


def serials(ing) -> list[str]:
    return ing.table.column("serial").to_pylist()


def gtins(ing) -> list[str]:
    return ing.table.column("gtin").to_pylist()


GTIN13 = with_check("952012345001")  # 13 digits
GTIN14 = "0" + GTIN13


def test_helpers_agree_with_biip() -> None:
    # Sanity check of the test's own oracle against an independent GS1 library.
    for body in ("9638507", "03600029145", "952012345001", "1952012345001", "400638133393"):
        code = with_check(body)
        assert Gtin.parse(code).as_gtin_14() == code.rjust(14, "0")


# --- file level ------------------------------------------------------------------------------


def test_plain_file_is_read_with_canonical_columns(write_csv) -> None:
    path = write_csv("p.csv", f"gtin,serial,lot,expiry,product_name\n{GTIN14},S1,L1,2027-06-30,X\n")
    ing = read_products(path)
    assert ing.columns == ("gtin", "serial", "lot", "expiry", "product_name")
    assert ing.total_rows == 1 and ing.rejects == () and ing.rejected_rows == 0
    assert ing.table.to_pylist() == [
        {"gtin": GTIN14, "serial": "S1", "lot": "L1", "expiry": "2027-06-30", "product_name": "X"}
    ]


def test_utf8_bom_is_accepted_and_header_recognized(write_csv) -> None:
    path = write_csv("bom.csv", b"\xef\xbb\xbfGTIN,Serial\n" + GTIN14.encode() + b",S1\n")
    ing = read_products(path)
    assert ing.columns == ("gtin", "serial")
    assert ing.rejects == ()
    assert gtins(ing) == [GTIN14] and serials(ing) == ["S1"]


def test_invalid_utf8_in_value_is_rejected_with_line_and_column(write_csv) -> None:
    data = (
        b"gtin,serial,product_name\n"
        + GTIN14.encode()
        + b",OK1,fine\n"
        + GTIN14.encode()
        + b",OK2,caf\xe9\n"
    )  # latin-1 byte in line 3
    ing = read_products(write_csv("latin1.csv", data))
    bad = [r for r in ing.rejects if r.code == "invalid_utf8"]
    assert len(bad) == 1
    assert (bad[0].row, bad[0].line, bad[0].column) == (2, 3, "product_name")
    assert "0xe9" in bad[0].reason
    assert serials(ing) == ["OK1"]
    assert ing.rejected_rows == 1


@pytest.mark.parametrize("column", ["serial", "gtin"])
def test_invalid_utf8_row_gets_no_spurious_extra_reject(write_csv, column: str) -> None:
    # A row whose only problem is an undecodable byte should be reported once, as
    # invalid_utf8; it must not also be reported as an empty serial/GTIN (the value is not
    # empty in the file).
    gtin = GTIN14.encode() + (b"\xff" if column == "gtin" else b"")
    serial = b"A\xff1" if column == "serial" else b"A1"
    data = b"gtin,serial\n" + gtin + b"," + serial + b"\n"
    ing = read_products(write_csv("bad.csv", data))
    assert codes(ing.rejects) == ["invalid_utf8"], ing.rejects


@pytest.mark.parametrize("delimiter", [";", "\t", "|"])
def test_other_delimiters_are_sniffed(write_csv, delimiter: str) -> None:
    text = csv_text(
        ["gtin", "serial", "product_name"],
        [[GTIN14, "S1", "Serum, 30 ml"], [GTIN14, "S2", "Cream"]],
        delimiter,
    )
    ing = read_products(write_csv("d.csv", text))
    assert ing.delimiter == delimiter
    assert ing.rejects == ()
    assert ing.table.column("product_name").to_pylist() == ["Serum, 30 ml", "Cream"]


def test_blank_lines_are_skipped_and_lines_are_physical(write_csv) -> None:
    text = f"gtin,serial\n\n{GTIN14},S1\n\n\n{GTIN14},S 2\n\n{GTIN14},S3\n"
    ing = read_products(write_csv("blank.csv", text))
    # lines: 1 header, 2 blank, 3 S1, 4-5 blank, 6 "S 2", 7 blank, 8 S3
    assert ing.total_rows == 3
    assert [(r.row, r.line, r.code) for r in ing.rejects] == [(2, 6, "serial_charset")]
    assert serials(ing) == ["S1", "S3"]
    assert ing.rows.tolist() == [1, 3]


def test_crlf_line_endings_with_blank_lines(write_csv) -> None:
    text = f"gtin,serial\r\n\r\n{GTIN14},S1\r\n{GTIN14},\r\n"
    ing = read_products(write_csv("crlf.csv", text))
    assert [(r.line, r.code) for r in ing.rejects] == [(4, "serial_empty")]
    assert serials(ing) == ["S1"]


def test_multiline_quoted_value_keeps_later_line_numbers(write_csv) -> None:
    text = f'gtin,serial,product_name\n{GTIN14},S1,"two\nlines"\n{GTIN14},S2,x\n{GTIN14},S 3,y\n'
    ing = read_products(write_csv("ml.csv", text))
    # "S1" record spans lines 2-3, S2 is line 4, the bad serial line 5.
    assert [(r.row, r.line) for r in ing.rejects] == [(3, 5)]
    assert ing.table.column("product_name").to_pylist() == ["two\nlines", "x"]


@pytest.mark.parametrize(("row", "fields"), [(f"{GTIN14}", 1), (f"{GTIN14},S9,extra", 3)])
def test_ragged_rows_are_rejected(write_csv, row: str, fields: int) -> None:
    text = f"gtin,serial\n{GTIN14},S1\n{row}\n{GTIN14},S2\n"
    ing = read_products(write_csv("rag.csv", text))
    assert ing.total_rows == 3
    assert len(ing.rejects) == 1
    r = ing.rejects[0]
    assert (r.code, r.row, r.line, r.column) == ("ragged_row", 2, 3, "(row)")
    assert f"{fields} fields" in r.reason and "2" in r.reason
    assert serials(ing) == ["S1", "S2"]
    assert ing.rows.tolist() == [1, 3]


@pytest.mark.parametrize("content", [b"", b"   \n\n\t\r\n", b"\xef\xbb\xbf", b"\xef\xbb\xbf\n\n"])
def test_empty_file(write_csv, content: bytes) -> None:
    with pytest.raises(InputFileError) as exc:
        read_products(write_csv("empty.csv", content))
    assert "file is empty" in str(exc.value)


@pytest.mark.parametrize(
    "content", ["gtin,serial\n", "gtin,serial\r\n", "gtin,serial\n\n\n", "\ufeffgtin,serial\n"]
)
def test_header_only(write_csv, content: str) -> None:
    with pytest.raises(InputFileError) as exc:
        read_products(write_csv("head.csv", content))
    assert "no data rows" in str(exc.value)


@pytest.mark.parametrize("content", ["gtin,serial", "\ufeffgtin,serial"])
def test_header_only_without_final_newline(write_csv, content: str) -> None:
    # A header line with no line break after it is just as much "a header and no rows" as
    # one with a line break; the message must say so, not leak a pyarrow internal error.
    with pytest.raises(InputFileError) as exc:
        read_products(write_csv("head.csv", content))
    assert "no data rows" in str(exc.value)
    assert "skip initial" not in str(exc.value)


def test_last_row_without_final_newline_is_read(write_csv) -> None:
    ing = read_products(write_csv("nonl.csv", f"gtin,serial\n{GTIN14},S1\n{GTIN14},S2"))
    assert ing.rejects == ()
    assert serials(ing) == ["S1", "S2"]


@pytest.mark.parametrize(
    ("header", "missing"),
    [("gtin,lot", "serial"), ("serial,product_name", "gtin"), ("product_name", "gtin")],
)
def test_missing_required_column(write_csv, header: str, missing: str) -> None:
    path = write_csv("miss.csv", f"{header}\nA,B\n")
    with pytest.raises(MissingColumnError) as exc:
        read_products(path)
    assert exc.value.column == missing
    assert f"'{missing}'" in str(exc.value)
    assert exc.value.hint is not None
    for alias in ALIASES[missing]:
        assert alias in exc.value.hint


@pytest.mark.parametrize(
    "header",
    [
        "gtin,EAN,serial",
        "gtin,serial,SN",
        "gtin,serial,Product Name,product-name",
        "GTIN,gtin,serial",
    ],
)
def test_duplicate_column_after_normalization(write_csv, header: str) -> None:
    values = ",".join([GTIN14] + ["x"] * (header.count(",")))
    with pytest.raises(InputFileError) as exc:
        read_products(write_csv("dupcol.csv", f"{header}\n{values}\n"))
    assert "both mean" in str(exc.value)


def test_nonexistent_path(tmp_path: Path) -> None:
    from provmint.errors import EXIT_NOT_FOUND, MissingFileError

    with pytest.raises(MissingFileError) as exc:
        read_products(tmp_path / "nope.csv")
    assert "products CSV not found" in str(exc.value)
    assert exc.value.exit_code == EXIT_NOT_FOUND


# --- headers and aliases -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ("EAN", "gtin"),
        ("GTIN-14", "gtin"),
        ("upc", "gtin"),
        ("01", "gtin"),
        ("Serial Number", "serial"),
        ("SN", "serial"),
        ("21", "serial"),
        ("serial_no", "serial"),
        ("LOT", "lot"),
        ("Batch", "lot"),
        ("10", "lot"),
        ("Expiry Date", "expiry"),
        ("17", "expiry"),
        ("Use By", "expiry"),
        ("Production Date", "production_date"),
        ("11", "production_date"),
        ("Product Name", "product_name"),
    ],
)
def test_normalize_header(raw: str, name: str) -> None:
    assert normalize_header(raw) == name


def test_alias_header_with_semicolons(write_csv) -> None:
    path = write_csv("alias.csv", f"EAN;Serial Number;LOT;Expiry Date\n{GTIN13};SN-1;L1;270600\n")
    ing = read_products(path)
    assert ing.columns == ("gtin", "serial", "lot", "expiry")
    assert ing.rejects == ()
    assert ing.table.to_pylist() == [
        {"gtin": GTIN14, "serial": "SN-1", "lot": "L1", "expiry": "270600"}
    ]


# --- GTIN --------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", ["9638507", "03600029145", "952012345001", "1952012345001"])
def test_valid_gtin_lengths_normalized_to_14(write_csv, body: str) -> None:
    gtin = with_check(body)
    assert len(gtin) in (8, 12, 13, 14)
    ing = read_products(write_csv("g.csv", f"gtin,serial\n{gtin},S1\n"))
    assert ing.rejects == ()
    assert gtins(ing) == [gtin.rjust(14, "0")]
    assert gtins(ing) == [Gtin.parse(gtin).as_gtin_14()]


@pytest.mark.parametrize("body", ["9638507", "03600029145", "952012345001", "1952012345001"])
def test_wrong_check_digit_names_expected_digit(write_csv, body: str) -> None:
    good = mod10(body)
    wrong = (good + 3) % 10
    gtin = body + str(wrong)
    ing = read_products(write_csv("cd.csv", f"gtin,serial\n{GTIN14},S0\n{gtin},S1\n"))
    assert len(ing.rejects) == 1
    r = ing.rejects[0]
    assert (r.code, r.row, r.line, r.column, r.value) == ("gtin_check_digit", 2, 3, "gtin", gtin)
    assert f"expected {good}" in r.reason
    assert str(wrong) in r.reason
    assert serials(ing) == ["S0"]


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("9.52012E+12", "gtin_scientific"),
        ("9.52012e+13", "gtin_scientific"),
        ("9520123", "gtin_length"),
        ("95201234500", "gtin_length"),
        ("952012345001490", "gtin_length"),
        ("09520123450O14", "gtin_not_digits"),
        ("ABCDEFGHIJKLM", "gtin_not_digits"),
        ("0952012345001-4", "gtin_not_digits"),
        ("", "gtin_empty"),
    ],
)
def test_bad_gtins(write_csv, value: str, code: str) -> None:
    ing = read_products(write_csv("bg.csv", csv_text(["gtin", "serial"], [[value, "S1"]])))
    assert codes(ing.rejects) == [code]
    assert ing.rejects[0].column == "gtin" and ing.rejects[0].line == 2
    assert ing.table.num_rows == 0
    if code == "gtin_length":
        assert str(len(value)) in ing.rejects[0].reason


@pytest.mark.parametrize("value", [f" {GTIN14}", f"{GTIN14} ", f"  {GTIN13}  ", f"\t{GTIN14}"])
def test_gtin_surrounding_spaces_tolerated(write_csv, value: str) -> None:
    ing = read_products(write_csv("sp.csv", csv_text(["gtin", "serial"], [[value, "S1"]])))
    assert ing.rejects == ()
    assert gtins(ing) == [GTIN14]


# --- serial and lot ----------------------------------------------------------------------------

CSET82_PUNCT = "!\"%&'()*+,-./:;<=>?_"


def test_cset82_punctuation_serial_accepted(write_csv) -> None:
    assert len(CSET82_PUNCT) == 20
    rows = [[GTIN14, CSET82_PUNCT], [GTIN14, "AZaz09"], [GTIN14, "x" * 20], [GTIN14, "'"]]
    ing = read_products(write_csv("punct.csv", csv_text(["gtin", "serial"], rows)))
    assert ing.rejects == ()
    assert serials(ing) == [CSET82_PUNCT, "AZaz09", "x" * 20, "'"]


def test_cset82_punctuation_serial_hand_quoted(write_csv) -> None:
    # The same serial written the way a spreadsheet quotes it (embedded quote doubled).
    text = f'gtin,serial\n{GTIN14},"!""%&\'()*+,-./:;<=>?_"\n'
    ing = read_products(write_csv("q.csv", text))
    assert ing.rejects == ()
    assert serials(ing) == [CSET82_PUNCT]


@pytest.mark.parametrize(
    ("serial", "code"),
    [
        ("A B", "serial_charset"),
        (" AB", "serial_charset"),
        ("AB#", "serial_charset"),
        ("Säure", "serial_charset"),
        ("ＡＢ", "serial_charset"),
        ("A\u00a0B", "serial_charset"),
        ("x" * 21, "serial_too_long"),
        ("", "serial_empty"),
    ],
)
def test_bad_serials(write_csv, serial: str, code: str) -> None:
    rows = [[GTIN14, "GOOD"], [GTIN14, serial]]
    ing = read_products(write_csv("bs.csv", csv_text(["gtin", "serial"], rows)))
    assert [(r.code, r.row, r.line, r.column) for r in ing.rejects] == [(code, 2, 3, "serial")]
    assert serials(ing) == ["GOOD"]
    if code == "serial_too_long":
        assert "21" in ing.rejects[0].reason and "20" in ing.rejects[0].reason
    if serial == "A B":
        assert "space" in ing.rejects[0].reason


@pytest.mark.parametrize(
    ("lot", "code"),
    [
        ("", None),
        ("L1", None),
        (CSET82_PUNCT, None),
        ("x" * 20, None),
        ("x" * 21, "lot_too_long"),
        ("L 1", "lot_charset"),
        ("Lö", "lot_charset"),
    ],
)
def test_lot_rules(write_csv, lot: str, code: str | None) -> None:
    ing = read_products(
        write_csv("lot.csv", csv_text(["gtin", "serial", "lot"], [[GTIN14, "S1", lot]]))
    )
    if code is None:
        assert ing.rejects == ()
        assert ing.table.column("lot").to_pylist() == [lot]
    else:
        assert [(r.code, r.column, r.line) for r in ing.rejects] == [(code, "lot", 2)]
        assert ing.table.num_rows == 0


# --- dates -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("", None),
        ("2027-06-30", None),
        ("270630", None),
        ("2027-02-00", None),  # day 00: end of month
        ("270200", None),
        ("2028-02-29", None),  # leap year
        ("280229", None),
        ("2027-02-30", "expiry_date"),
        ("2027-02-29", "expiry_date"),
        ("270229", "expiry_date"),
        ("2027-13-01", "expiry_date"),
        ("2027-04-31", "expiry_date"),
        ("27-06-30", "expiry_format"),
        ("20270630", "expiry_format"),
        ("2027/06/30", "expiry_format"),
        ("30.06.2027", "expiry_format"),
        ("2027-6-30", "expiry_format"),
    ],
)
@pytest.mark.parametrize("column", ["expiry", "production_date"])
def test_date_rules(write_csv, column: str, value: str, code: str | None) -> None:
    ing = read_products(
        write_csv(
            "dt.csv",
            csv_text(
                ["gtin", "serial", column], [[GTIN14, "S0", "2027-01-01"], [GTIN14, "S1", value]]
            ),
        )
    )
    if code is None:
        assert ing.rejects == ()
        assert ing.table.column(column).to_pylist() == ["2027-01-01", value]
    else:
        assert [(r.code, r.column, r.row, r.line, r.value) for r in ing.rejects] == [
            (code, column, 2, 3, value)
        ]
        assert serials(ing) == ["S0"]


# --- duplicates --------------------------------------------------------------------------------


def test_duplicate_in_file_rejects_both_rows(write_csv) -> None:
    text = f"gtin,serial\n{GTIN14},A\n{GTIN14},B\n{GTIN14},A\n"
    ing = read_products(write_csv("dup.csv", text))
    dup = [(r.row, r.line, r.code) for r in ing.rejects]
    assert dup == [(1, 2, "duplicate_in_file"), (3, 4, "duplicate_in_file")]
    assert "line 4" in ing.rejects[0].reason and "line 2" in ing.rejects[1].reason
    assert serials(ing) == ["B"]
    assert ing.rejected_rows == 2


def test_duplicate_in_file_with_different_gtin_spelling(write_csv) -> None:
    text = f"gtin,serial\n{GTIN13},A\n{GTIN14},A\n {GTIN13} ,C\n"
    ing = read_products(write_csv("dup2.csv", text))
    assert [(r.row, r.code) for r in ing.rejects] == [
        (1, "duplicate_in_file"),
        (2, "duplicate_in_file"),
    ]
    assert serials(ing) == ["C"]


def test_same_serial_different_gtin_is_not_a_duplicate(write_csv) -> None:
    other = with_check("952012345002")
    text = f"gtin,serial\n{GTIN13},A\n{other},A\n"
    ing = read_products(write_csv("nodup.csv", text))
    assert ing.rejects == ()
    assert gtins(ing) == [GTIN14, "0" + other]


def test_serials_differing_in_case_are_distinct(write_csv) -> None:
    ing = read_products(write_csv("case.csv", f"gtin,serial\n{GTIN14},ab\n{GTIN14},AB\n"))
    assert ing.rejects == ()
    assert serials(ing) == ["ab", "AB"]


def test_several_problems_in_one_row_count_as_one_rejected_row(write_csv) -> None:
    text = csv_text(
        ["gtin", "serial", "lot", "expiry"],
        [[GTIN14, "S1", "L1", "2027-06-30"], ["123", "S 2", "L 2", "2027-02-30"]],
    )
    ing = read_products(write_csv("multi.csv", text))
    assert sorted(codes(ing.rejects)) == sorted(
        ["gtin_length", "serial_charset", "lot_charset", "expiry_date"]
    )
    assert {r.line for r in ing.rejects} == {3}
    assert ing.rejected_rows == 1 and ing.total_rows == 2


def test_value_too_long_is_rejected(write_csv) -> None:
    text = csv_text(["gtin", "serial", "note"], [[GTIN14, "S1", "n" * 5000], [GTIN14, "S2", "ok"]])
    ing = read_products(write_csv("long.csv", text))
    assert [(r.code, r.column, r.line) for r in ing.rejects] == [("value_too_long", "note", 2)]
    assert serials(ing) == ["S2"]


def test_duplicate_in_file_when_the_other_copy_has_another_problem(write_csv) -> None:
    # Both copies of a (gtin, serial) pair are rejected, even when one copy is also invalid
    # for another reason (a bad lot): otherwise --skip-invalid would mint the other copy
    # although the file does not say which of the two records is the real product.
    text = f"gtin,serial,lot\n{GTIN14},A,L 1\n{GTIN14},A,L1\n{GTIN14},B,L1\n"
    ing = read_products(write_csv("dupbad.csv", text))
    assert ("lot_charset", 2) in [(r.code, r.line) for r in ing.rejects]
    assert ("duplicate_in_file", 3) in [(r.code, r.line) for r in ing.rejects]
    assert serials(ing) == ["B"]


def test_whitespace_only_line_is_a_ragged_row(write_csv) -> None:
    ing = read_products(write_csv("ws.csv", f"gtin,serial\n{GTIN14},S1\n   \n{GTIN14},S2\n"))
    assert [(r.code, r.line) for r in ing.rejects] == [("ragged_row", 3)]
    assert serials(ing) == ["S1", "S2"]


# pyarrow reports the failing invalid-row handler as an "Exception ignored" warning;
# the assertions below are what matters.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_invalid_utf8_inside_a_ragged_row_is_a_row_reject(write_csv) -> None:
    # A cp1252 export with one row that has an extra field: that row is rejected, the
    # file as a whole is still readable and the other rows are kept.
    data = (
        b"gtin,serial,product_name\n"
        + GTIN14.encode()
        + b",S1,ok\n"
        + GTIN14.encode()
        + b",S2,Cr\xe8me,extra\n"
        + GTIN14.encode()
        + b",S3,ok\n"
    )
    ing = read_products(write_csv("cp1252.csv", data))
    assert ("ragged_row", 3) in [(r.code, r.line) for r in ing.rejects]
    assert serials(ing) == ["S1", "S3"]
    assert ing.total_rows == 3


@pytest.mark.parametrize("bad", [False, True])
def test_cr_only_line_endings_do_not_crash(write_csv, bad: bool) -> None:
    # Classic-Mac line endings ("CSV (Macintosh)" in Excel): either read like any other
    # line ending or refused as an input problem, never an unhandled csv.Error.
    text = f"gtin,serial\r{GTIN14},S1\r{GTIN14},{'S 2' if bad else 'S2'}\r"
    path = write_csv("mac.csv", text)
    try:
        ing = read_products(path)
    except InputFileError:
        return
    assert serials(ing)[0] == "S1"
    if bad:
        assert [(r.code, r.line) for r in ing.rejects] == [("serial_charset", 3)]
    else:
        assert ing.rejects == ()


# --- hostile files (issue 7): each reproducer gives a clean answer --------------------------------


@pytest.mark.parametrize(
    "text",
    [
        f"gtin,serial\n{GTIN14},A1,x\n",  # the only row has a field too many
        f"gtin,serial,lot\n{GTIN14},A1\n\n{GTIN14},A2,L,x\n",  # every row ragged, both ways
    ],
)
def test_a_file_with_no_row_of_the_header_width(write_csv, text: str) -> None:
    ing = read_products(write_csv("ragged.csv", text))
    assert ing.table.num_rows == 0 and ing.rows.tolist() == []
    assert {r.code for r in ing.rejects} == {"ragged_row"}
    assert [r.line for r in ing.rejects] == ([2] if text.count("\n") == 2 else [2, 4])
    assert ing.total_rows == ing.rejected_rows == len(ing.rejects)


@pytest.mark.parametrize("quoted", [False, True])
def test_a_value_over_the_csv_modules_field_limit_is_a_row_reject(write_csv, quoted: bool) -> None:
    big = "n" * 131_073
    text = csv_text(
        ["gtin", "serial", "note"],
        [[GTIN14, "S1", "ok"], [GTIN14, "S2", f"a,{big}" if quoted else big]],
    )
    ing = read_products(write_csv("big.csv", text))
    assert [(r.line, r.column, r.code) for r in ing.rejects] == [(3, "note", "value_too_long")]
    assert serials(ing) == ["S1"]


def test_an_unclosed_quote_refuses_the_file_where_it_opens(write_csv) -> None:
    text = f'gtin,serial,name\n{GTIN14},C1,"x\n{GTIN14},C2,y\n{GTIN14},C3,z\n'
    with pytest.raises(InputFileError) as exc:
        read_products(write_csv("open.csv", text))
    assert exc.value.reason == (
        "line 2: column 3 ('name'): a quoted value starts here and its quote is never closed"
    )
    assert exc.value.hint is not None and '""' in exc.value.hint


@pytest.mark.parametrize(
    ("row", "line", "column", "char"),
    [
        ('"12" pizza', 3, 3, "' '"),
        ('"a"b', 3, 3, "'b'"),
        ('"a""b"x', 3, 3, "'x'"),
        ('"x\ny"z', 4, 3, "'z'"),
    ],
)
def test_text_after_a_closing_quote_refuses_the_file(
    write_csv, row: str, line: int, column: int, char: str
) -> None:
    text = f"gtin,serial,name\n{GTIN14},S1,ok\n{GTIN14},S2,{row}\n"
    with pytest.raises(InputFileError) as exc:
        read_products(write_csv("after.csv", text))
    assert exc.value.reason.startswith(f"line {line}: column {column} ('name'): {char} follows")


def test_an_unclosed_quote_in_the_header(write_csv) -> None:
    with pytest.raises(InputFileError) as exc:
        read_products(write_csv("h.csv", f'gtin,"serial\n{GTIN14},S1\n'))
    assert exc.value.reason.startswith("line 1: column 2: a quoted value starts here")


def test_a_quote_inside_an_unquoted_value_is_kept(write_csv) -> None:
    # Legal for the csv module: read like it, and numbered like it.
    text = f'gtin,serial,name\n{GTIN14},S1,12" pizza\n{GTIN14},S 2,a "b" c\n'
    ing = read_products(write_csv("inch.csv", text))
    assert ing.table.column("name").to_pylist() == ['12" pizza']
    assert [(r.line, r.code) for r in ing.rejects] == [(3, "serial_charset")]


def test_a_quoted_header_may_span_lines(write_csv) -> None:
    text = f'"gtin","serial","product\nname"\n{GTIN14},S1,"a\nb"\n{GTIN14},S 2,c\n'
    ing = read_products(write_csv("qh.csv", text))
    assert ing.columns == ("gtin", "serial", "product_name")
    assert ing.table.column("product_name").to_pylist() == ["a\nb"]
    assert [(r.row, r.line) for r in ing.rejects] == [(2, 5)]
    assert dict(record_lines(ing)) == {1: 3, 2: 5}


def test_a_header_cell_over_64_kib_hides_no_column(write_csv) -> None:
    ing = read_products(write_csv("long.csv", f"gtin,{'x' * 70_000},serial\n{GTIN14},v,S1\n"))
    assert ing.columns == ("gtin", "x" * 64, "serial")
    assert serials(ing) == ["S1"]


@pytest.mark.parametrize("width", [MAX_FIELDS + 1, 100_000])
def test_too_many_columns_says_so(write_csv, width: int) -> None:
    header = ",".join(["gtin", "serial"] + [f"c{i}" for i in range(width - 2)])
    with pytest.raises(InputFileError) as exc:
        read_products(write_csv("wide.csv", f"{header}\n{GTIN14},S1{',x' * (width - 2)}\n"))
    assert exc.value.reason == (
        f"line 1: the header has {width:,} columns; provmint takes at most {MAX_FIELDS}"
    )


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ("gtin,serial\n".encode("utf-16"), "is UTF-16 or UTF-32 text, not UTF-8"),
        ("gtin,serial\n".encode("utf-16-le"), "line 1: header contains NUL characters"),
        (b"gtin,ser\xe9al\n1,2\n", "line 1: header is not valid UTF-8"),
        (b'"gtin","ser\nial\xff"\n1,2\n', "line 2: header is not valid UTF-8"),
    ],
)
def test_foreign_encodings_are_named(write_csv, data: bytes, reason: str) -> None:
    with pytest.raises(InputFileError) as exc:
        read_products(write_csv("enc.csv", data))
    assert exc.value.reason.startswith(reason)


def test_a_missing_column_message_stays_on_one_line(write_csv) -> None:
    with pytest.raises(MissingColumnError) as exc:
        read_products(write_csv("nl.csv", f'"S\nN","E\u2028AN",{"x" * 500}\n1,2,3\n'))
    assert "\n" not in str(exc.value) and "\u2028" not in str(exc.value)
    assert "S\\nN" in str(exc.value) and len(str(exc.value)) < 400


@pytest.mark.parametrize(
    "text",
    [
        f"gtin,serial,note\n{GTIN14},S1,a\x00b\n{GTIN14},S2,\x01\x1b\x7f\x85\u2028\ufeff\n",
        f"gtin,serial,note\r{GTIN14},S1,a\x00b\r\n{GTIN14},S2,\x01\x1b\x7f\x85\u2028\ufeff\n",
    ],
)
def test_nul_and_control_characters_in_free_text_are_kept_as_given(write_csv, text) -> None:
    ing = read_products(write_csv("ctl.csv", text))
    assert ing.rejects == ()
    assert ing.table.column("note").to_pylist() == ["a\x00b", "\x01\x1b\x7f\x85\u2028\ufeff"]


def test_cr_only_and_mixed_line_ends_number_lines_alike(write_csv) -> None:
    text = f"gtin,serial\r{GTIN14},S1\r\n\r{GTIN14},S 2\n\n{GTIN14},S3\r{GTIN14},S 4\r\n"
    ing = read_products(write_csv("mixed.csv", text))
    assert [(r.row, r.line) for r in ing.rejects] == [(2, 4), (4, 7)]
    assert serials(ing) == ["S1", "S3"]


@pytest.mark.parametrize("path", ["/dev/null", "/dev/zero"])
def test_devices_are_refused_before_reading(path: str) -> None:
    with pytest.raises(InputFileError) as exc:
        parse_csv(Path(path))
    assert exc.value.reason.startswith("is a character device, not a regular file")


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="is a directory"):
        parse_csv(tmp_path)


def test_the_size_limit_is_checked_before_reading(write_csv) -> None:
    path = write_csv("s.csv", f"gtin,serial\n{GTIN14},S1\n")
    size = path.stat().st_size
    assert read_products(path, max_bytes=size).table.num_rows == 1
    with pytest.raises(InputFileError) as exc:
        read_products(path, max_bytes=size - 1)
    assert exc.value.reason.startswith(
        f"is {size:,} bytes; one batch is read from at most {size - 1:,} bytes"
    )


def test_line_numbers_come_from_the_bytes_read_not_the_path(write_csv) -> None:
    path = write_csv("moved.csv", f"gtin,serial\n\n{GTIN14},S1\n")
    ing = read_products(path)
    path.write_text("something else entirely\n")
    assert dict(record_lines(ing)) == {1: 3}
