"""ZPL II label formats for thermal printers (Zebra and compatibles), which draw the
symbol themselves from the field data.

One ``^XA ... ^XZ`` format per label: the symbol at the top left, inside its quiet zone,
and the human-readable text to its right, one line per GS1 element (``^A0`` scalable
font). Every field is sent with ``^FH\\`` so that ``^``, ``~`` and ``\\`` in data are
written as hex escapes (``\\5E``, ``\\7E``, ``\\5C``) and cannot end the field or start
a command.

- QR: ``^BQN,2,{module dots}`` with field data ``{level}A,{data}`` (error correction
  level, automatic input: the printer chooses the encoding modes).
- GS1 QR: the same, with the data starting ``>8``, which sets the FNC1-in-first-position
  mode indicator (symbology identifier ``]Q3``); Zebra printers do this since Link-OS 6.6
  (older firmware prints ``>8`` as data: a plain QR code a GS1 scanner refuses). ``>8``
  does not make a separator inside the data, so each group separator is sent as the GS
  byte itself (``\\1D`` under ``^FH``): in a GS1 QR code the GS byte in byte mode *is*
  the FNC1 separator (ISO/IEC 18004, 7.4.8.1), and it is not an alphanumeric character,
  so the printer can only encode it in byte mode.
- DataMatrix: ``^BXN,{module dots},200,,,,_`` (ECC 200, escape character ``_`` set
  explicitly, as firmware defaults differ). GS1 data starts with ``_1`` (FNC1 in first
  position) and each group separator is written ``_1`` too; a literal ``_`` is ``__``
  (ZPL II Programming Guide, ^BX field data, quality 200).
"""

from __future__ import annotations

from dataclasses import dataclass

from provmint.gs1 import GS
from provmint.labelformats.layout import LabelSize
from provmint.labelformats.symbols import QUIET, Symbol, SymbolSpec

__all__ = ["ZplLayout", "hex_escape", "label_zpl"]

_HEX = str.maketrans({"^": "\\5E", "~": "\\7E", "\\": "\\5C"})
_MAX_QR_MAGNIFICATION = 10  # ^BQ's limit
_QR_FNC1_FIRST = ">8"  # at the start of ^BQ data: GS1 QR (FNC1 in first position)
_HEX_GS = "\\1D"  # the group separator byte, hex-escaped under ^FH\\


def hex_escape(text: str) -> str:
    """Field data safe inside ``^FH\\^FD...^FS``."""
    return text.translate(_HEX)


@dataclass(frozen=True, slots=True)
class ZplLayout:
    """A label's geometry in printer dots."""

    size: LabelSize
    dpi: int
    module: int  # dots per module
    text: bool = True

    def check(self, spec: SymbolSpec, modules: int) -> None:
        """Refuse what the printer cannot draw or the label cannot hold (ValueError)."""
        if spec.symbol is Symbol.QR and self.module > _MAX_QR_MAGNIFICATION:
            raise ValueError(f"a ZPL QR code's module is at most {_MAX_QR_MAGNIFICATION} dots")
        width, height = self.size.dots(self.dpi)
        side = (modules + 2 * QUIET[spec.symbol]) * self.module
        if side > min(width, height):
            raise ValueError(
                f"a {modules}-module symbol does not fit the {self.size} mm label: at "
                f"{self.module} dots a module it needs {side}x{side} dots, the label has "
                f"{width}x{height} at {self.dpi} dpi; use a larger --size or a smaller --scale"
            )


def _symbol_field(spec: SymbolSpec, payload: str, module: int) -> str:
    if spec.symbol is Symbol.QR:
        data = hex_escape(payload)
        if spec.gs1:
            data = _QR_FNC1_FIRST + data.replace(GS, _HEX_GS)
        return f"^BQN,2,{module}^FH\\^FD{spec.level.upper()}A,{data}^FS"
    data = payload.replace("_", "__")
    if spec.gs1:
        data = "_1" + data.replace(GS, "_1")
    return f"^BXN,{module},200,,,,_^FH\\^FD{hex_escape(data)}^FS"


def label_zpl(
    layout: ZplLayout, spec: SymbolSpec, payload: str, lines: list[str], modules: int
) -> str:
    """One label's ZPL format (``modules``: the symbol's size, for placing the text)."""
    width, height = layout.size.dots(layout.dpi)
    quiet = QUIET[spec.symbol] * layout.module
    parts = [
        f"^XA^CI28^PW{width}^LL{height}^LH0,0",
        f"^FO{quiet},{quiet}",
        _symbol_field(spec, payload, layout.module),
    ]
    if layout.text and lines:
        left = 2 * quiet + modules * layout.module
        line_height = max(12, min(height // (len(lines) + 1), (width - left) * 2 // 21))
        for i, line in enumerate(lines):
            parts.append(
                f"^FO{left},{quiet + i * line_height}^A0N,{line_height * 5 // 6},"
                f"{line_height * 5 // 6}^FH\\^FD{hex_escape(line)}^FS"
            )
    parts.append("^XZ\n")
    return "".join(parts)
