"""``provmint labels``: the label-printer CSV and one QR code per product.

Every image written is read back with a real QR decoder (zxing-cpp): PNG files through a
small PNG reader, SVG files by drawing the module path onto a bitmap (``--no-text``
here, so each image is the symbol alone; tests/test_label_formats.py covers the text,
the other symbols and formats). The decoded text must be the CSV's URL exactly,
percent-encoding included, and the 4-module quiet zone must be there.
"""

from __future__ import annotations

import csv
import json
import re
import struct
import sys
import time
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zxingcpp
from conftest import EXAMPLE_CSV, ROOT

from provmint import gs1
from provmint.errors import EXIT_NOT_FOUND, EXIT_USAGE

HEADER = [
    "gtin",
    "serial",
    "lot",
    "expiry",
    "token",
    "url",
    "element_string",
    "human_readable",
    "code_file",
]
GTIN = "09520123450014"
QUIET = 4


# --------------------------------------------------------------------------- image readers


def read_png(path: Path) -> np.ndarray:
    """Decode a greyscale or palette PNG (any bit depth up to 8) to a uint8 image."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    pos, idat, palette = 8, b"", None
    width = height = depth = color = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        assert (
            zlib.crc32(kind + body)
            == struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])[0]
        )
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert color in (0, 3) and depth in (1, 2, 4, 8) and interlace == 0, (color, depth)
        elif kind == b"PLTE":
            palette = np.frombuffer(body, dtype=np.uint8).reshape(-1, 3)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    raw = zlib.decompress(idat)
    stride = (width * depth + 7) // 8
    rows = np.zeros((height, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.int32)
    bpp = max(1, depth // 8)
    for y in range(height):
        line = raw[y * (stride + 1) : (y + 1) * (stride + 1)]
        filt, cur = line[0], np.frombuffer(line[1:], dtype=np.uint8).astype(np.int32)
        out = np.zeros(stride, dtype=np.int32)
        for x in range(stride):
            a = out[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if filt == 0:
                pred = 0
            elif filt == 1:
                pred = a
            elif filt == 2:
                pred = b
            elif filt == 3:
                pred = (a + b) // 2
            else:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            out[x] = (cur[x] + pred) & 0xFF
        rows[y] = out
        prev = out
    if depth < 8:
        bits = np.unpackbits(rows, axis=1)
        per = depth
        values = bits[:, : width * per].reshape(height, width, per)
        weights = 1 << np.arange(per - 1, -1, -1)
        samples = (values * weights).sum(axis=2).astype(np.uint8)
    else:
        samples = rows[:, :width]
    if color == 3:
        assert palette is not None
        return palette[samples].mean(axis=2).astype(np.uint8)
    return (samples.astype(np.uint32) * 255 // ((1 << depth) - 1)).astype(np.uint8)


def svg_modules(path: Path) -> tuple[np.ndarray, int]:
    """The module grid (True = dark) drawn by a label SVG without text, and its scale."""
    root = ET.parse(path).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    width, height = int(root.get("width", "0")), int(root.get("height", "0"))
    assert width == height > 0
    paths = root.findall("{http://www.w3.org/2000/svg}path")
    assert len(paths) == 1
    scale_match = re.fullmatch(r"scale\((\d+)\)", paths[0].get("transform", "scale(1)"))
    assert scale_match
    scale = int(scale_match.group(1))
    assert width % scale == 0
    size = width // scale
    grid = np.zeros((size, size), dtype=bool)
    data = paths[0].get("d", "")
    runs = re.findall(r"M *(\d+) +(\d+)\.5h *(\d+) ", data)
    assert "".join(f"M{x:>3} {y:>3}.5h {n:>3} " for x, y, n in runs) == data  # nothing else
    for x, y, n in runs:
        grid[int(y), int(x) : int(x) + int(n)] = True
    return grid, scale


def decode(image: np.ndarray) -> str:
    found = zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.QRCode)
    assert len(found) == 1, f"{len(found)} QR codes found"
    return found[0].text


def decode_grid(grid: np.ndarray, pixels: int = 4) -> str:
    image = np.where(grid, 0, 255).astype(np.uint8)
    return decode(np.kron(image, np.ones((pixels, pixels), dtype=np.uint8)))


def assert_quiet_zone(grid: np.ndarray) -> int:
    """Exactly 4 light modules around a QR symbol; returns its module count."""
    size = grid.shape[0]
    modules = size - 2 * QUIET
    assert (modules - 17) % 4 == 0 and 21 <= modules <= 177, modules
    assert not grid[:QUIET].any() and not grid[-QUIET:].any()
    assert not grid[:, :QUIET].any() and not grid[:, -QUIET:].any()
    symbol = grid[QUIET:-QUIET, QUIET:-QUIET]
    # The three finder patterns sit in the symbol's corners, right against the margin.
    for r, c in ((0, 0), (0, modules - 7), (modules - 7, 0)):
        finder = symbol[r : r + 7, c : c + 7]
        assert finder[0].all() and finder[-1].all() and finder[:, 0].all() and finder[:, -1].all()
        assert finder[2:5, 2:5].all() and not finder[1, 1:6].any()
    return modules


def png_modules(image: np.ndarray, scale: int) -> np.ndarray:
    assert image.shape[0] == image.shape[1] and image.shape[0] % scale == 0
    cells = image[scale // 2 :: scale, scale // 2 :: scale]
    # Every module is a solid scale x scale block.
    blocks = image.reshape(cells.shape[0], scale, cells.shape[1], scale)
    assert (blocks.min(axis=(1, 3)) == blocks.max(axis=(1, 3))).all()
    return cells < 128


# --------------------------------------------------------------------------- fixtures


def _ok(r: Any, code: int = 0) -> Any:
    assert "Traceback" not in r.stdout + r.stderr
    assert r.exit_code == code, (r.exit_code, r.stdout, r.stderr, r.exception)
    return json.loads(r.stdout) if r.stdout.strip().startswith("{") else r.stdout


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "labels.csv", newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == HEADER
        return list(reader)


SPECIAL = [("A/B%C", "L&1"), ('Q,"1', "L/2"), ("P+1", ""), ("a?b=c", "L;4"), ("x<y>", "L5")]


@pytest.fixture
def cli(cli: Any) -> Any:
    """The CLI, with ``labels`` printing the placeholder base: these tests check the
    URLs drawn against the ones minted (the refusal is tested in test_url_base.py)."""

    def invoke(*args: object, **kwargs: Any) -> Any:
        extra = ("--allow-placeholder",) if args and args[0] == "labels" else ()
        return cli(*args, *extra, **kwargs)

    return invoke


@pytest.fixture
def batch(cli, keyed, tmp_path: Path) -> str:
    """The example plus serials and lots that need percent-encoding, in one batch."""
    source = tmp_path / "labels-in.csv"
    with open(EXAMPLE_CSV, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    for serial, lot in SPECIAL:
        rows.append([GTIN, serial, lot, "2028-01-31", "Special", "2026-01-02"])
    with open(source, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)
    summary = _ok(cli("batch", "create", source, "--json"))
    assert summary["products"] == 9 + len(SPECIAL)
    return summary["batch_id"]


def _check_rows(cli, rows: list[dict[str, str]], batch_id: str, fmt: str) -> None:
    assert len(rows) == 9 + len(SPECIAL)
    for leaf, row in enumerate(rows):
        shown = _ok(
            cli("product", "show", "--gtin", row["gtin"], "--serial", row["serial"], "--json")
        )
        assert shown["batch_id"] == batch_id and shown["leaf_index"] == leaf
        assert row["token"] == shown["token"] and row["url"] == shown["url"]
        assert row["lot"] == shown["record"].get("lot", "")
        assert row["expiry"] == shown["record"].get("expiry", "")
        assert row["url"] == gs1.digital_link(
            "https://id.example.com", row["gtin"], row["serial"], row["lot"], row["token"]
        )
        if fmt == "none":
            assert row["code_file"] == ""
        else:
            assert re.fullmatch(
                rf"part-00000/{leaf:07d}-{row['gtin']}-[^/]+\.{fmt}", row["code_file"]
            ), row["code_file"]


# --------------------------------------------------------------------------- tests


def test_svg_labels_decode_to_the_csv_urls(cli, batch, tmp_path: Path) -> None:
    out = tmp_path / "labels"
    r = cli("labels", batch[:12], "--out", out, "--json", "--raw", "--no-text")
    summary = _ok(r)
    assert summary["batch_id"] == batch
    assert summary["labels"] == summary["images"] == 9 + len(SPECIAL)
    assert Path(summary["csv"]) == out / "labels.csv"
    rows = _rows(out)
    _check_rows(cli, rows, batch, "svg")
    by_serial = {row["serial"]: row for row in rows}
    assert "/10/L%261/21/A%2FB%25C?t=" in by_serial["A/B%C"]["url"]
    assert "/21/Q%2C%221?t=" in by_serial['Q,"1']["url"]
    assert "/21/x%3Cy%3E?t=" in by_serial["x<y>"]["url"]
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.svg"))
    assert files == sorted(row["code_file"] for row in rows)
    for row in rows:
        grid, scale = svg_modules(out / row["code_file"])
        assert scale == 4  # the default
        modules = assert_quiet_zone(grid)
        assert grid.shape[0] * scale == (modules + 2 * QUIET) * 4
        assert decode_grid(grid) == row["url"], row["serial"]
    assert not list(out.glob(".labels.csv.*"))  # no temporary file left


def test_png_labels_with_error_level_and_scale(cli, batch, tmp_path: Path) -> None:
    out = tmp_path / "png"
    # --raw: the rows are compared as data (one token in 64 starts with "-", which the
    # spreadsheet-safe default would prefix with "'").
    _ok(
        cli(
            "labels",
            batch,
            "--out",
            out,
            "--format",
            "png",
            "--error",
            "Q",
            "--scale",
            "6",
            "--json",
            "--raw",
            "--no-text",
        )
    )
    rows = _rows(out)
    _check_rows(cli, rows, batch, "png")
    assert not list(out.rglob("*.svg"))
    assert len(list(out.rglob("*.png"))) == len(rows)
    for row in rows:
        image = read_png(out / row["code_file"])
        assert decode(image) == row["url"], row["serial"]
        grid = png_modules(image, 6)
        modules = assert_quiet_zone(grid)
        assert image.shape == ((modules + 8) * 6, (modules + 8) * 6)
        assert decode_grid(grid) == row["url"]


def test_error_level_changes_the_symbol_not_the_text(cli, batch, tmp_path: Path) -> None:
    sizes = {}
    for level in ("L", "h"):  # either case
        out = tmp_path / level
        _ok(
            cli(
                "labels",
                batch,
                "--out",
                out,
                "--format",
                "png",
                "--error",
                level,
                "--scale",
                "3",
                "--json",
                "--no-text",
            )
        )
        rows = _rows(out)
        row = next(r for r in rows if r["serial"] == "A/B%C")
        image = read_png(out / row["code_file"])
        assert decode(image) == row["url"]
        sizes[level.upper()] = (
            assert_quiet_zone(png_modules(image, 3)),
            row["url"],
            (out / row["code_file"]).read_bytes(),
        )
    assert sizes["L"][1] == sizes["H"][1]
    assert sizes["L"][2] != sizes["H"][2]
    # ~100 bytes: version 5 at level L, a larger symbol at H.
    assert sizes["H"][0] > sizes["L"][0]


def test_format_none_writes_only_the_csv(cli, batch, tmp_path: Path) -> None:
    out = tmp_path / "none"
    summary = _ok(cli("labels", batch, "--out", out, "--format", "none", "--json", "--raw"))
    assert summary["labels"] == 9 + len(SPECIAL) and summary["images"] == 0
    assert sorted(p.name for p in out.iterdir()) == ["labels.csv"]
    _check_rows(cli, _rows(out), batch, "none")


def test_large_batch_csv_only_is_fast(cli, keyed, tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from make_products import write_csv as make_products
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    source = tmp_path / "big.csv"
    make_products(source, 70_000, seed=5)
    summary = _ok(cli("batch", "create", source, "--json"))
    assert summary["products"] == 70_000
    out = tmp_path / "big-labels"
    started = time.perf_counter()
    report = _ok(
        cli("labels", summary["batch_id"], "--out", out, "--format", "none", "--json", "--raw")
    )
    elapsed = time.perf_counter() - started
    assert report["labels"] == 70_000 and report["images"] == 0
    assert elapsed < 20, elapsed
    assert sorted(p.name for p in out.iterdir()) == ["labels.csv"]
    with open(out / "labels.csv", newline="", encoding="utf-8") as fh:
        lines = fh.read().rstrip("\n").split("\n")  # U+001D (in element_string) is no line end
    assert len(lines) == 70_001 and lines[0] == ",".join(f'"{name}"' for name in HEADER)
    rows = _rows(out)
    with open(source, newline="", encoding="utf-8") as fh:
        source_rows = list(csv.DictReader(fh))
    # Every input row once, in leaf order across both parts (65,536 + 4,464).
    assert [(r["gtin"], r["serial"], r["lot"], r["expiry"]) for r in rows] == [
        (r["gtin"], r["serial"], r["lot"], r["expiry"]) for r in source_rows
    ]
    assert all(r["code_file"] == "" for r in rows)
    for r in rows[::997] + rows[65_535:65_538] + rows[-1:]:
        assert r["url"] == gs1.digital_link(
            "https://id.example.com", r["gtin"], r["serial"], r["lot"], r["token"]
        )
    assert len({r["token"] for r in rows}) == 70_000
    last = _ok(
        cli("product", "show", "--gtin", rows[-1]["gtin"], "--serial", rows[-1]["serial"], "--json")
    )
    assert last["leaf_index"] == 69_999 and last["token"] == rows[-1]["token"]


def test_worker_pool_path_renders_every_file(
    cli, keyed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pool is used above one chunk of rows (4096). Minting 5,000 rows to get there
    would cost this test seconds: the chunk is made small instead, which sends the same
    code path (several jobs over a 2-process pool) 300 rows."""
    import provmint.labels

    monkeypatch.setattr(provmint.labels, "_CHUNK", 64)
    pools: list[int] = []
    real_start_pool = provmint.labels.start_pool

    def spy(workers: int, **kwargs: Any) -> Any:
        pools.append(workers)
        return real_start_pool(workers, **kwargs)

    monkeypatch.setattr(provmint.labels, "start_pool", spy)
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from make_products import write_csv as make_products
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    source = tmp_path / "pool.csv"
    make_products(source, 300, seed=9)
    batch_id = _ok(cli("batch", "create", source, "--json"))["batch_id"]
    out = tmp_path / "pool-labels"
    report = _ok(
        cli("labels", batch_id, "--out", out, "--workers", "2", "--json", "--raw", "--no-text")
    )
    assert report["labels"] == report["images"] == 300
    assert pools == [2]
    rows = _rows(out)
    assert len(rows) == 300
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.svg"))
    assert files == sorted(r["code_file"] for r in rows)
    assert all(r["code_file"].startswith("part-00000/") for r in rows)
    for r in rows[::37] + rows[-1:]:
        grid, _ = svg_modules(out / r["code_file"])
        assert_quiet_zone(grid)
        assert decode_grid(grid) == r["url"]


def test_label_errors(cli, batch, tmp_path: Path) -> None:
    out = tmp_path / "err"
    r = cli("labels", "19990101-dead", "--out", out)
    assert r.exit_code == EXIT_NOT_FOUND and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: ")
    for args, needle in (
        (("--format", "jpg"), "format"),
        (("--error", "X"), "error"),
        (("--scale", "0"), "scale"),
        (("--format", ""), "format"),
    ):
        r = cli("labels", batch, "--out", out, *args)
        assert r.exit_code == EXIT_USAGE, (args, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr and needle in r.stderr.lower(), r.stderr
    assert not out.exists()  # refused before anything was written
