"""PDF label sheets for office printers (fpdf2): A4 or Letter pages cut into a grid of
labels, each with its symbol (vector: one filled rectangle per run of dark modules) and
its human-readable text to the right, in Courier so every character has the same width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from provmint.labelformats.layout import PAGES, Grid

if TYPE_CHECKING:
    import numpy as np

__all__ = ["SheetLabel", "SheetLayout", "sheet_pdf"]

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


def _draw(pdf: object, layout: SheetLayout, x: float, y: float, label: SheetLabel) -> None:
    import numpy as np

    cell_w, cell_h = layout.cell
    rows, cols = label.matrix.shape
    lines = label.lines if layout.text else []
    room = cell_w - 2 * _PAD
    side = min(cell_h - 2 * _PAD, room * (0.5 if lines else 1.0))
    module = side / (max(rows, cols) + 2 * label.quiet)
    left, top = x + _PAD + label.quiet * module, y + _PAD + label.quiet * module
    padded = np.zeros((rows, cols + 2), dtype=np.int8)
    padded[:, 1:-1] = label.matrix
    edges = np.diff(padded, axis=1)
    start_r, start_c = np.nonzero(edges == 1)
    _, end_c = np.nonzero(edges == -1)
    for r, c, e in zip(start_r.tolist(), start_c.tolist(), end_c.tolist(), strict=True):
        pdf.rect(left + c * module, top + r * module, (e - c) * module, module, style="F")  # type: ignore[attr-defined]
    if lines:
        text_x = x + 2 * _PAD + side
        width = x + cell_w - _PAD - text_x
        longest = max(len(line) for line in lines)
        size = min(9.0, width / (longest * _COURIER_EM) * _PT_PER_MM)
        step = size / _PT_PER_MM * 1.3
        size = min(size, (cell_h - 2 * _PAD) / (len(lines) * 1.3) * _PT_PER_MM)
        pdf.set_font("Courier", size=size)  # type: ignore[attr-defined]
        for i, line in enumerate(lines):
            pdf.text(text_x, y + _PAD + (i + 1) * step, line)  # type: ignore[attr-defined]


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
    for i, label in enumerate(labels):
        place = i % per_sheet
        if place == 0:
            pdf.add_page()
        column, row = place % layout.grid.columns, place // layout.grid.columns
        _draw(pdf, layout, _MARGIN + column * cell_w, _MARGIN + row * cell_h, label)
    return bytes(pdf.output())
