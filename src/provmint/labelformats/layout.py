"""Label sizes, printer resolutions and sheet grids, and the parsers of ``--size`` and
``--grid`` (stranger input: every refusal is a :class:`~provmint.errors.ConfigError`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from provmint.errors import ConfigError

__all__ = ["DPIS", "PAGES", "Grid", "LabelSize", "parse_grid", "parse_size"]

DPIS = (203, 300, 600)
"""Thermal printer resolutions (dots per inch) ZPL labels are laid out for."""

PAGES: dict[str, tuple[float, float]] = {"a4": (210.0, 297.0), "letter": (215.9, 279.4)}
"""Sheet sizes in millimetres (width, height)."""

_MM_PER_INCH = 25.4
_SIZE = re.compile(r"([0-9]{1,4}(?:\.[0-9]{1,2})?)[x×]([0-9]{1,4}(?:\.[0-9]{1,2})?)")
_GRID = re.compile(r"([0-9]{1,3})[x×]([0-9]{1,3})")
_MIN_MM, _MAX_MM = 10.0, 1000.0  # a label a scanner can use; the widest print heads
_MAX_CELLS = 30  # columns or rows on one sheet: beyond that no label holds a symbol


@dataclass(frozen=True, slots=True)
class LabelSize:
    """A thermal label's width and height in millimetres."""

    width_mm: float
    height_mm: float

    def dots(self, dpi: int) -> tuple[int, int]:
        """Width and height in printer dots at ``dpi``."""
        return (
            round(self.width_mm * dpi / _MM_PER_INCH),
            round(self.height_mm * dpi / _MM_PER_INCH),
        )

    def __str__(self) -> str:
        return f"{self.width_mm:g}x{self.height_mm:g}"


@dataclass(frozen=True, slots=True)
class Grid:
    """Labels on a sheet: ``columns`` across, ``rows`` down."""

    columns: int
    rows: int

    @property
    def per_sheet(self) -> int:
        """Labels on one sheet."""
        return self.columns * self.rows

    def __str__(self) -> str:
        return f"{self.columns}x{self.rows}"


def parse_size(text: str) -> LabelSize:
    """``WIDTHxHEIGHT`` in millimetres (``50x30``, ``101.6x152.4``), each 10 to 1000.

    >>> parse_size("50x30")
    LabelSize(width_mm=50.0, height_mm=30.0)
    """
    m = _SIZE.fullmatch(text.strip().lower())
    if m is None:
        raise ConfigError(
            f"label size {text!r} is not WIDTHxHEIGHT in millimetres", hint="e.g. --size 50x30"
        )
    width, height = float(m[1]), float(m[2])
    for value in (width, height):
        if not _MIN_MM <= value <= _MAX_MM:
            raise ConfigError(
                f"label size {text!r}: each side must be {_MIN_MM:g} to {_MAX_MM:g} mm"
            )
    return LabelSize(width, height)


def parse_grid(text: str) -> Grid:
    """``COLUMNSxROWS`` of labels on a sheet (``3x7``), each 1 to 30.

    >>> parse_grid("3x7")
    Grid(columns=3, rows=7)
    """
    m = _GRID.fullmatch(text.strip().lower())
    if m is None:
        raise ConfigError(
            f"grid {text!r} is not COLUMNSxROWS", hint="e.g. --grid 3x7 (3 across, 7 down)"
        )
    columns, rows = int(m[1]), int(m[2])
    if not (1 <= columns <= _MAX_CELLS and 1 <= rows <= _MAX_CELLS):
        raise ConfigError(f"grid {text!r}: columns and rows must each be 1 to {_MAX_CELLS}")
    return Grid(columns, rows)
