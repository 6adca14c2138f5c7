"""Every symbol/format pair of ``provmint labels`` read back to its exact content.

A real decoder (zxing-cpp) reads PNG files directly, SVG files once their path is drawn
onto a bitmap, and PDF sheets once ``pdftoppm`` (poppler) has rendered them. ZPL is read
as a printer would: the ``^FD`` payloads are taken out of each format, ``^FH`` hex
escapes and the DataMatrix escapes (``_1`` FNC1, ``__``) undone, the symbol commands'
parameters checked, and the symbol the printer is asked for (GS1 when the data starts
``>8`` in ``^BQ`` or ``_1`` in ``^BX``) drawn by zint and read back. GS1 symbols must
read back as GS1 (``]d2``, ``]Q3``) with the element string, group separators included.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zxingcpp
from conftest import EXAMPLE_CSV
from PIL import Image

from provmint import gs1
from provmint.errors import EXIT_USAGE
from provmint.labelformats.symbols import zint_gs1

BASE = "https://id.brand.test"
GTIN = "09520123450014"
SPECIAL = [("A/B%C", "L&1"), ('Q,"1', "L/2"), ("P+1", ""), ("a_b", "L(1)"), ("x<y>", "L5")]
FORMATS = {
    zxingcpp.BarcodeFormat.QRCode: "qr",
    zxingcpp.BarcodeFormat.DataMatrix: "datamatrix",
}


def _ok(r: Any, code: int = 0) -> Any:
    assert "Traceback" not in r.stdout + r.stderr
    assert r.exit_code == code, (r.exit_code, r.stdout, r.stderr, r.exception)
    return json.loads(r.stdout) if r.stdout.strip().startswith("{") else r.stdout


@pytest.fixture
def batch(cli, keyed, tmp_path: Path) -> str:
    """The example plus serials and lots that need escaping somewhere, in one batch."""
    source = tmp_path / "in.csv"
    with open(EXAMPLE_CSV, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    for serial, lot in SPECIAL:
        rows.append([GTIN, serial, lot, "2028-01-31", "Special", "2026-01-02"])
    with open(source, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)
    return str(_ok(cli("batch", "create", source, "--json"))["batch_id"])


def _labels(cli, batch: str, out: Path, *args: str) -> list[dict[str, str]]:
    summary = _ok(cli("labels", batch, "-o", out, "--url-base", BASE, "--raw", "--json", *args))
    assert summary["labels"] == summary["images"] == 9 + len(SPECIAL)
    with open(out / "labels.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        assert row["element_string"] == gs1.element_string(
            row["gtin"], row["serial"], row["lot"], row["expiry"]
        )
        assert row["url"].startswith(BASE + "/01/")
    return rows


def _content(row: dict[str, str], content: str) -> str:
    return row["element_string"] if content == "element-string" else row["url"]


def _check_read(found: Any, symbol: str, content: str, expected: str) -> None:
    """One decoded symbol: right symbology, GS1 or not, exact bytes."""
    assert FORMATS[found.format] == symbol
    gs1_mode = content == "element-string"
    assert (found.content_type == zxingcpp.ContentType.GS1) == gs1_mode
    prefix = {"qr": "]Q3" if gs1_mode else "]Q1", "datamatrix": "]d2" if gs1_mode else "]d1"}
    assert found.symbology_identifier == prefix[symbol]
    assert found.bytes.decode() == expected


def _read_one(image: np.ndarray, symbol: str, content: str, expected: str) -> int:
    """Read the one symbol on ``image``; the lowest row it covers."""
    found = zxingcpp.read_barcodes(image)
    # zxing-cpp now and then reports one DataMatrix twice (once in a full suite run): the
    # same symbology and bytes. Another symbol on the label would differ in its bytes.
    distinct = {(f.format, f.bytes) for f in found}
    assert len(distinct) == 1, f"{len(found)} symbols found: {distinct}"
    _check_read(found[0], symbol, content, expected)
    corners = found[0].position
    return max(corners.bottom_left.y, corners.bottom_right.y)


def _ink_below(image: np.ndarray, row: int) -> bool:
    """Whether anything dark is drawn below ``row`` plus a quiet zone (the text)."""
    return bool((image[row + 8 :] < 128).any())


def svg_bitmap(path: Path) -> tuple[np.ndarray, list[str]]:
    """The symbol an SVG label draws (its runs onto a bitmap, 4 px a unit), and its text."""
    root = ET.parse(path).getroot()
    ns = "{http://www.w3.org/2000/svg}"
    width, height = int(root.get("width", "0")), int(root.get("height", "0"))
    (path_el,) = root.findall(f"{ns}path")
    m = re.fullmatch(r"scale\((\d+)\)(?: translate\(([\d.]+) 0\))?", path_el.get("transform", ""))
    assert m, path_el.get("transform")
    scale, shift = int(m[1]), float(m[2] or 0)
    image = np.full((height, width), 255, dtype=np.uint8)
    for x, y, n in re.findall(r"M *(\d+) +(\d+)\.5h *(\d+) ?", path_el.get("d", "")):
        left = round((int(x) + shift) * scale)
        top = int(y) * scale
        image[top : top + scale, left : left + int(n) * scale] = 0
    texts = [t.text or "" for t in root.findall(f"{ns}text")]
    return image, texts


SYMBOL_CONTENT = [
    ("qr", "url"),
    ("qr", "element-string"),
    ("datamatrix", "url"),
    ("datamatrix", "element-string"),
]


@pytest.mark.parametrize(("symbol", "content"), SYMBOL_CONTENT)
def test_png_and_svg_read_back(cli, batch, tmp_path: Path, symbol: str, content: str) -> None:
    for fmt in ("png", "svg"):
        out = tmp_path / fmt
        rows = _labels(cli, batch, out, "-f", fmt, "--symbol", symbol, "--content", content)
        for row in rows:
            expected = _content(row, content)
            lines = row["human_readable"].split(" ")
            hri = [" ".join(lines[i : i + 2]) for i in range(0, len(lines), 2)]
            if fmt == "png":
                image = np.asarray(Image.open(out / row["code_file"]).convert("L"))
                assert _ink_below(image, _read_one(image, symbol, content, expected))
            else:
                image, texts = svg_bitmap(out / row["code_file"])
                _read_one(image, symbol, content, expected)
                assert texts == hri


def test_no_text_leaves_only_the_symbol(cli, batch, tmp_path: Path) -> None:
    out = tmp_path / "bare"
    rows = _labels(cli, batch, out, "-f", "svg", "--no-text")
    for row in rows[:3]:
        image, texts = svg_bitmap(out / row["code_file"])
        assert texts == [] and image.shape[0] == image.shape[1]
        _read_one(image, "qr", "url", row["url"])
    out = tmp_path / "bare-png"
    rows = _labels(cli, batch, out, "-f", "png", "--no-text", "--symbol", "datamatrix")
    for row in rows[:3]:
        image = np.asarray(Image.open(out / row["code_file"]).convert("L"))
        assert not _ink_below(image, _read_one(image, "datamatrix", "url", row["url"]))


@pytest.mark.parametrize(("symbol", "content"), [SYMBOL_CONTENT[0], SYMBOL_CONTENT[3]])
def test_pdf_sheets_read_back(cli, batch, tmp_path: Path, symbol: str, content: str) -> None:
    out = tmp_path / "pdf"
    rows = _labels(
        cli, batch, out, "-f", "pdf", "--symbol", symbol, "--content", content, "--grid", "3x5"
    )
    (sheet,) = {row["code_file"] for row in rows}  # 14 labels: one file, one sheet
    subprocess.run(
        ["pdftoppm", "-r", "200", "-gray", "-png", out / sheet, tmp_path / "page"], check=True
    )
    pages = sorted(tmp_path.glob("page-*.png"))
    assert len(pages) == 1
    found = zxingcpp.read_barcodes(np.asarray(Image.open(pages[0])))
    expected = sorted(_content(row, content) for row in rows)
    assert sorted(f.bytes.decode() for f in found) == expected
    for f in found:
        _check_read(f, symbol, content, f.bytes.decode())
    if shutil.which("pdftotext"):
        text = subprocess.run(
            ["pdftotext", "-layout", out / sheet, "-"], capture_output=True, text=True, check=True
        ).stdout
        for row in rows:
            assert f"(21) {row['serial']}" in text


def zpl_labels(stream: str) -> list[list[tuple[str, str]]]:
    """Each ``^XA...^XZ`` format as (command before ^FD, field data) pairs, with ``^FH\\``
    hex escapes undone."""
    formats = re.findall(r"\^XA(.*?)\^XZ", stream, flags=re.S)
    out = []
    for fmt in formats:
        fields = re.findall(r"([^F]*?\^B[QX][^^]*|\^A0N,\d+,\d+)\^FH\\\^FD(.*?)\^FS", fmt)
        unhex = [
            (cmd, re.sub(r"\\([0-9A-Fa-f]{2})", lambda m: chr(int(m[1], 16)), data))
            for cmd, data in fields
        ]
        out.append(unhex)
    return out


def _unescape_datamatrix(data: str) -> tuple[bool, str]:
    """(FNC1 in first position, the data a scanner sends) of ^BX field data."""
    fnc1_first = data.startswith("_1")
    body = data[2:] if fnc1_first else data
    text = re.sub(r"_(_|1)", lambda m: "_" if m[1] == "_" else gs1.GS, body)
    return fnc1_first, text


def _printer_symbol(command: str, data: str) -> np.ndarray:
    """The symbol a printer draws from a ^BQ or ^BX field (already unescaped), drawn
    here by zint: ``>8`` first in ^BQ data, or ``_1`` first in ^BX data, makes it GS1."""
    if "^BQ" in command:
        level, rest = data[0], data[3:]  # "{level}A," then the data
        fmt, options = zxingcpp.BarcodeFormat.QRCode, {"ec_level": level}
        gs1_mode, text = rest.startswith(">8"), rest.removeprefix(">8")
    else:
        fmt, options = zxingcpp.BarcodeFormat.DataMatrix, {"force_square": True}
        gs1_mode, text = _unescape_datamatrix(data)
    if gs1_mode:
        barcode = zxingcpp.create_barcode(zint_gs1(text), fmt, gs1=True, **options)
    else:
        barcode = zxingcpp.create_barcode(text, fmt, **options)
    return np.asarray(barcode.to_image(scale=4))


@pytest.mark.parametrize(("symbol", "content"), SYMBOL_CONTENT)
def test_zpl_payloads_are_the_content(
    cli, batch, tmp_path: Path, symbol: str, content: str
) -> None:
    out = tmp_path / "zpl"
    rows = _labels(
        cli, batch, out, "-f", "zpl", "--symbol", symbol, "--content", content, "--dpi", "300",
        "--scale", "6", "--size", "60x40",
    )  # fmt: skip
    assert {row["code_file"] for row in rows} == {"part-00000.zpl"}
    stream = (out / "part-00000.zpl").read_text(encoding="utf-8")
    labels = zpl_labels(stream)
    assert len(labels) == len(rows)
    for fields, row in zip(labels, rows, strict=True):
        (command, data), *text = fields
        expected = _content(row, content)
        if symbol == "qr":
            assert command.endswith("^BQN,2,6")
            fnc1 = ">8" if content == "element-string" else ""  # GS1: FNC1 first
            assert data == "MA," + fnc1 + expected  # level M, automatic input
        else:
            assert command.endswith("^BXN,6,200,,,,_")
            fnc1, sent = _unescape_datamatrix(data)
            assert fnc1 == (content == "element-string") and sent == expected
        _read_one(_printer_symbol(command, data), symbol, content, expected)
        hri = row["human_readable"].split(" ")
        assert [line for _, line in text] == [
            " ".join(hri[i : i + 2]) for i in range(0, len(hri), 2)
        ]
    # 60 x 40 mm at 300 dpi
    assert stream.count("^PW709^LL472") == len(rows)


def test_zpl_refuses_what_printers_cannot_draw(cli, batch, tmp_path: Path) -> None:
    for args, needle in (
        (("--scale", "11"), "at most 10"),
        (("--size", "10x10", "--scale", "10"), "does not fit"),
    ):
        out = tmp_path / "refused"
        r = cli("labels", batch, "-o", out, "--url-base", BASE, "-f", "zpl", *args)
        assert r.exit_code == EXIT_USAGE, (args, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr and needle in r.stderr.lower(), r.stderr
