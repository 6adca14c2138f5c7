"""PDF label sheets for office printers (fpdf2): A4 or Letter pages cut into a grid of
labels, each with its symbol (vector: one filled path of a rectangle per run of dark
modules) and its human-readable text to the right, in Courier so every character has the
same width.

A symbol is written as raw content-stream operators: a transform to module units
(``cm``: origin at the symbol's top left corner, y downwards), then ``col row length 1
re`` per run and one ``f``. Drawing each run with ``FPDF.rect`` cost several
microseconds a rectangle (a few hundred per QR code), most of a sheet's time; the
operators are built for all symbols of a file at once from tables of numbers, from
the runs the SVG paths are drawn with (:mod:`provmint.labelformats.runs`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from provmint.labelformats.layout import PAGES, Grid

if TYPE_CHECKING:
    import numpy as np
    from fpdf import FPDF

__all__ = ["SheetLabel", "SheetLayout", "run_ops", "sheet_pdf"]

_MARGIN = 8.0  # mm around the grid: inside what office printers can reach
_PAD = 2.0  # mm inside each label
_PT_PER_MM = 72 / 25.4
_COURIER_EM = 0.6  # width of a Courier character, in em


@dataclass(frozen=True, slots=True)
class SheetLayout:
    """A sheet: its paper (``a4`` or ``letter``), grid, and whether labels carry text."""

    page: str
    grid: Grid
    text: bool = True

    @property
    def cell(self) -> tuple[float, float]:
        """One label's width and height in mm."""
        width, height = PAGES[self.page]
        return (
            (width - 2 * _MARGIN) / self.grid.columns,
            (height - 2 * _MARGIN) / self.grid.rows,
        )


@dataclass(frozen=True, slots=True)
class SheetLabel:
    """What one label holds: its module matrix, quiet zone, and text lines."""

    matrix: np.ndarray
    quiet: int
    lines: list[str]


@lru_cache(maxsize=1)
def _numbers() -> np.ndarray:
    """``"nnn "`` for 0 to 999, as a (1000, 4) array of ASCII bytes."""
    import numpy as np

    text = "".join(f"{i:3d} " for i in range(1000)).encode()
    return np.frombuffer(text, dtype=np.uint8).reshape(1000, 4)


_RUN = 17
"""Bytes of one run's operators, ``ccc rrr nnn 1 re`` and a newline (numbers up to 999
modules, right-aligned with spaces, which PDF allows between tokens)."""


def run_ops(matrices: list[np.ndarray]) -> list[bytes]:
    """Each symbol's dark runs as PDF path operators in module units, ``ccc rrr nnn 1
    re`` (a line a run: column, row, length, height), built for all symbols of a shape
    at once."""
    import numpy as np

    from provmint.labelformats.runs import dark_runs

    out: list[bytes] = [b""] * len(matrices)
    numbers = _numbers()
    for runs in dark_runs(matrices):
        ops = np.empty((len(runs.length), _RUN), dtype=np.uint8)
        ops[:, 0:4] = numbers[runs.col]
        ops[:, 4:8] = numbers[runs.row]
        ops[:, 8:12] = numbers[runs.length]
        ops[:, 12:] = np.frombuffer(b"1 re\n", dtype=np.uint8)
        runs.split(ops.tobytes(), _RUN, out)
    return out


def _draw(
    pdf: FPDF, layout: SheetLayout, x: float, y: float, label: SheetLabel, runs: bytes
) -> None:
    cell_w, cell_h = layout.cell
    rows, cols = label.matrix.shape
    lines = label.lines if layout.text else []
    room = cell_w - 2 * _PAD
    side = min(cell_h - 2 * _PAD, room * (0.5 if lines else 1.0))
    module = side / (max(rows, cols) + 2 * label.quiet)
    left, top = x + _PAD + label.quiet * module, y + _PAD + label.quiet * module
    # Page space is in points from the bottom left: scale to modules, y downwards. The
    # operators go in as FPDF.rect writes its one rectangle (fpdf2 has no public call
    # for raw content); q ... Q keeps the transform to the symbol.
    k = pdf.k
    to_modules = f"{module * k:.4f} 0 0 {-module * k:.4f} {left * k:.2f} {(pdf.h - top) * k:.2f}"
    pdf._out(b"q " + to_modules.encode() + b" cm\n" + runs + b"f Q")
    if lines:
        text_x = x + 2 * _PAD + side
        width = x + cell_w - _PAD - text_x
        longest = max(len(line) for line in lines)
        size = min(9.0, width / (longest * _COURIER_EM) * _PT_PER_MM)
        step = size / _PT_PER_MM * 1.3
        size = min(size, (cell_h - 2 * _PAD) / (len(lines) * 1.3) * _PT_PER_MM)
        pdf.set_font("Courier", size=size)
        for i, line in enumerate(lines):
            pdf.text(text_x, y + _PAD + (i + 1) * step, line)


def sheet_pdf(layout: SheetLayout, labels: list[SheetLabel]) -> bytes:
    """A PDF of ``labels``, filling each sheet's grid row by row."""
    from fpdf import FPDF

    width, height = PAGES[layout.page]
    pdf = FPDF(unit="mm", format=(width, height))
    pdf.set_auto_page_break(False)
    pdf.set_creator("provmint")
    pdf.set_fill_color(0, 0, 0)
    cell_w, cell_h = layout.cell
    per_sheet = layout.grid.per_sheet
    runs = run_ops([label.matrix for label in labels])
    for i, (label, ops) in enumerate(zip(labels, runs, strict=True)):
        place = i % per_sheet
        if place == 0:
            pdf.add_page()
        column, row = place % layout.grid.columns, place // layout.grid.columns
        _draw(pdf, layout, _MARGIN + column * cell_w, _MARGIN + row * cell_h, label, ops)
    return bytes(pdf.output())
