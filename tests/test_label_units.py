"""The label formats' parts, without a store: the option parsers (generated hostile
input), QR re-masking against zint itself, the mask penalty against a plain reading of
the standard, the ZPL escapes, and the images and PDF paths built for many labels at
once against one label at a time."""

from __future__ import annotations

import itertools
import random
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provmint import gs1
from provmint.errors import EXIT_NOT_FOUND, EXIT_USAGE, ConfigError
from provmint.labelformats import qrmasks
from provmint.labelformats.images import ImageStyle, png_bytes, png_images
from provmint.labelformats.layout import Grid, LabelSize, parse_grid, parse_size
from provmint.labelformats.options import LabelOptions
from provmint.labelformats.pdf import run_ops
from provmint.labelformats.symbols import (
    Content,
    Symbol,
    SymbolSpec,
    modules,
    modules_as_zint,
    zint_gs1,
)
from provmint.labelformats.zpl import hex_escape

# --------------------------------------------------------------------------- parsers

_NEAR_SIZE = st.one_of(
    st.text(max_size=16),
    st.text(alphabet="0123456789x×.X -+e", max_size=14),
    st.builds(lambda a, b: f"{a}x{b}", st.floats(allow_nan=True), st.floats()),
)


@settings(max_examples=150, deadline=None)
@given(_NEAR_SIZE)
def test_size_parser_accepts_or_refuses_cleanly(text: str) -> None:
    try:
        size = parse_size(text)
    except ConfigError as exc:
        assert "label size" in str(exc)
        return
    assert 10 <= size.width_mm <= 1000 and 10 <= size.height_mm <= 1000
    assert parse_size(str(size)) == size  # the manifest's form reads back the same


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=10, max_value=1000),
    st.integers(min_value=0, max_value=99),
    st.integers(min_value=10, max_value=1000),
)
def test_size_round_trips(width: int, hundredths: int, height: int) -> None:
    value = width + hundredths / 100 if width < 1000 else 1000.0
    size = parse_size(f" {value:g}X{height} ")
    assert size == LabelSize(value, float(height))
    assert parse_size(str(size)) == size


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.text(max_size=10), st.text(alphabet="0123456789x× -", max_size=9)))
def test_grid_parser_accepts_or_refuses_cleanly(text: str) -> None:
    try:
        grid = parse_grid(text)
    except ConfigError as exc:
        assert "grid" in str(exc)
        return
    assert 1 <= grid.columns <= 30 and 1 <= grid.rows <= 30
    assert parse_grid(str(grid)) == grid


@given(st.integers(min_value=-5, max_value=40), st.integers(min_value=-5, max_value=40))
def test_grid_bounds(columns: int, rows: int) -> None:
    text = f"{columns}x{rows}"
    if 1 <= columns <= 30 and 1 <= rows <= 30:
        assert parse_grid(text) == Grid(columns, rows)
    else:
        with pytest.raises(ConfigError):
            parse_grid(text)


@settings(max_examples=100, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "fmt": st.sampled_from(["svg", "png", "zpl", "pdf", "none", "SVG", "jpg", ""]),
            "symbol": st.sampled_from(["qr", "datamatrix", "aztec"]),
            "content": st.sampled_from(["url", "element-string", "gs1"]),
            "level": st.sampled_from(["l", "M", "q", "H", "x"]),
            "scale": st.integers(min_value=-1, max_value=120),
            "dpi": st.sampled_from([0, 203, 300, 600, 1200]),
            "page": st.sampled_from(["a4", "Letter", "legal"]),
            "grid": st.sampled_from(["3x7", "0x1", "2x40", "a"]),
            "size": st.sampled_from(["50x30", "5x5", "30"]),
        },
    )
)
def test_options_refuse_with_config_errors_only(given: dict[str, object]) -> None:
    try:
        options = LabelOptions.parse(**given)
    except ConfigError:
        return
    assert LabelOptions.parse(**given) == options
    assert options.fmt.value == given.get("fmt", "svg")


# --------------------------------------------------------------------------- QR masks


def _urls(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789%-._"
    return [
        f"https://id.brand.test/01/09520123450014/10/L{rng.randint(1, 99999)}/21/"
        + "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 20)))
        + "?t="
        + "".join(rng.choice("abcdefABCDEF0123456789_-") for _ in range(22))
        for _ in range(count)
    ]


@pytest.mark.parametrize("level", ["l", "m", "q", "h"])
def test_remasked_symbols_are_zints_with_that_mask(level: str) -> None:
    """Each of the eight candidates built from zint's mask-0 symbol is, module for
    module, the symbol zint makes with that mask (the format information included)."""
    spec = SymbolSpec(Symbol.QR, Content.URL, level)
    for url in _urls(12, seed=ord(level)):
        base = modules_as_zint(spec, url, data_mask=0)
        candidates = qrmasks._candidates(base[None], level)[0]
        for mask in range(8):
            assert (candidates[mask] == modules_as_zint(spec, url, data_mask=mask)).all()


def _reference_penalty(grid: np.ndarray) -> int:
    """ISO/IEC 18004 7.8.3.1, read plainly, one module at a time."""
    n = grid.shape[0]
    lines = [list(grid[i]) for i in range(n)] + [list(grid[:, i]) for i in range(n)]
    score = 0
    for line in lines:
        run = 1
        for a, b in itertools.pairwise(line):
            if a == b:
                run += 1
            else:
                score += run - 2 if run >= 5 else 0
                run = 1
        score += run - 2 if run >= 5 else 0
        padded = [False] * 4 + line + [False] * 4
        for i in range(len(padded) - 10):
            window = [int(v) for v in padded[i : i + 11]]
            score += 40 * (window == [0, 0, 0, 0, 1, 0, 1, 1, 1, 0, 1])
            score += 40 * (window == [1, 0, 1, 1, 1, 0, 1, 0, 0, 0, 0])
    blocks = grid[:-1, :-1] == grid[1:, :-1]
    blocks &= grid[:-1, :-1] == grid[:-1, 1:]
    blocks &= grid[:-1, :-1] == grid[1:, 1:]
    score += 3 * int(blocks.sum())
    dark = int(grid.sum())
    score += 10 * (abs(20 * dark - 10 * n * n) // (n * n))
    return score


def test_penalty_is_the_standards() -> None:
    spec = SymbolSpec(Symbol.QR, Content.URL, "m")
    for url in _urls(2, seed=7):
        base = modules_as_zint(spec, url, data_mask=0)
        candidates = qrmasks._candidates(base[None], "m")[0]
        scores = qrmasks.penalties(candidates)
        assert scores.tolist() == [_reference_penalty(c) for c in candidates]


def test_modules_pick_the_least_penalty_and_read_back() -> None:
    import zxingcpp

    spec = SymbolSpec(Symbol.QR, Content.URL, "q")
    urls = [*_urls(40, seed=3), "https://id.brand.test/" + "x" * 200]  # zint's own path
    for url, grid in zip(urls, modules(spec, urls), strict=True):
        candidates = [modules_as_zint(spec, url, data_mask=m) for m in range(8)]
        if grid.shape[0] <= qrmasks.MAX_SIZE:
            best = int(np.argmin(qrmasks.penalties(np.stack(candidates))))
            assert (grid == candidates[best]).all()
        else:
            assert (grid == modules_as_zint(spec, url)).all()
        image = np.kron(np.pad(~grid, 4, constant_values=True), np.ones((3, 3), bool))
        found = zxingcpp.read_barcodes(image.astype(np.uint8) * 255)
        assert [f.text for f in found] == [url]


def test_gs1_data_goes_to_zint_bracketed() -> None:
    element = gs1.element_string("09520123450014", "A(1)", "L_2", "2026-12-31")
    assert zint_gs1(element) == "[01]09520123450014[17]261231[10]L_2[21]A(1)"
    (grid,) = modules(SymbolSpec(Symbol.DATAMATRIX, Content.ELEMENT_STRING), [element])
    assert grid.shape[0] == grid.shape[1]  # square, as ZPL printers draw them


# --------------------------------------------------------------------------- ZPL escapes


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="ascii"), max_size=60))
def test_zpl_hex_escape_round_trips(text: str) -> None:
    escaped = hex_escape(text)
    assert "^" not in escaped and "~" not in escaped
    assert re.sub(r"\\([0-9A-F]{2})", lambda m: chr(int(m[1], 16)), escaped) == text


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.sampled_from(["--grid", "--size", "--dpi", "--page", "--symbol", "--content"]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12),
)
def test_hostile_label_options_exit_2_before_writing(
    cli, tmp_path_factory: pytest.TempPathFactory, option: str, value: str
) -> None:
    """Through the CLI: a bad value is refused (exit 2, one error line) before the store
    is opened or the output directory made; a good one gets as far as the batch. (The
    ``cli`` fixture is stateless: sharing it between examples is safe.)"""
    out = tmp_path_factory.mktemp("hostile") / "out"
    r = cli("labels", "19990101-dead", "-o", out, "--url-base", "https://id.brand.test",
            option, value)  # fmt: skip
    assert "Traceback" not in r.stdout + r.stderr
    assert r.exit_code in (EXIT_USAGE, EXIT_NOT_FOUND), (r.exit_code, r.stderr)
    assert r.stderr.startswith(("error: ", "Usage: ")), r.stderr
    assert not out.exists()


# --------------------------------------------------------------------------- many at once


def _mixed_labels(count: int) -> tuple[list[np.ndarray], list[str]]:
    """Symbols of several sizes and texts of several widths, interleaved."""
    rng = random.Random(9)
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZab/%&()"
    payloads, hris = [], []
    for _ in range(count):
        serial = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 21)))
        lot = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 9))) or None
        payloads.append(gs1.element_string("09520123450014", serial, lot, "2028-01-31"))
        hris.append(gs1.human_readable("09520123450014", serial, lot, "2028-01-31"))
    spec = SymbolSpec(Symbol.DATAMATRIX, Content.ELEMENT_STRING)
    return modules(spec, payloads), hris


@pytest.mark.parametrize(("scale", "text"), [(4, True), (1, True), (3, False)])
def test_png_images_are_each_labels_png(scale: int, text: bool) -> None:
    matrices, hris = _mixed_labels(300)
    assert len({m.shape for m in matrices}) > 1
    style = ImageStyle(scale, text)
    together = png_images(matrices, 1, style, hris)
    assert together == [png_bytes(m, 1, style, hri) for m, hri in zip(matrices, hris, strict=True)]


def test_pdf_run_operators_redraw_the_symbol() -> None:
    matrices, _ = _mixed_labels(60)
    for matrix, ops in zip(matrices, run_ops(matrices), strict=True):
        drawn = np.zeros_like(matrix)
        for line in ops.decode().splitlines():
            col, row, length, height, op = line.split()
            assert (height, op) == ("1", "re")
            drawn[int(row), int(col) : int(col) + int(length)] = True
        assert (drawn == matrix).all()
