"""The label formats ``provmint labels`` writes, and the symbols on them.

- :mod:`~provmint.labelformats.symbols`: QR and DataMatrix module matrices (zxing-cpp's
  writer, zint inside), plain or GS1 (FNC1 in first position);
- :mod:`~provmint.labelformats.runs`: the runs of dark modules that SVG paths and PDF
  sheets draw a symbol with;
- :mod:`~provmint.labelformats.layout`: label sizes, printer resolutions and sheet grids,
  and the parsers of the options that give them;
- :mod:`~provmint.labelformats.images`: SVG and PNG files, with the human-readable text;
- :mod:`~provmint.labelformats.zpl`: ZPL for thermal printers, which draw the symbol;
- :mod:`~provmint.labelformats.pdf`: label sheets for office printers (fpdf2).

Nothing here reads the store: :mod:`provmint.labels` hands each writer the contents and
texts of a run of labels.
"""

from __future__ import annotations

from provmint.labelformats.layout import (
    DPIS,
    PAGES,
    Grid,
    LabelSize,
    parse_grid,
    parse_size,
)
from provmint.labelformats.symbols import Content, Symbol, SymbolSpec

__all__ = [
    "DPIS",
    "PAGES",
    "Content",
    "Grid",
    "LabelSize",
    "Symbol",
    "SymbolSpec",
    "parse_grid",
    "parse_size",
]
