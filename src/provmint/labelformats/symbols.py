"""QR and DataMatrix symbols as module matrices, drawn by zxing-cpp's writer (zint).

Two contents (:class:`Content`):

- ``url``: the verification URL, a plain QR code or ECC 200 DataMatrix;
- ``element-string``: the GS1 element string (:func:`provmint.gs1.element_string`) in
  a GS1 symbol: **GS1 DataMatrix** (FNC1 codeword 232 in first position; a variable-length
  field that is not last ends with FNC1, which a scanner sends as the group separator
  U+001D) or **GS1 QR** (the FNC1-in-first-position mode indicator; separators are the
  GS byte, ISO/IEC 18004 7.4.8.1). zint takes GS1 data in its bracketed form
  ``[01]...[17]...`` and writes both the FNC1 and the separators itself; scanners report
  the symbology identifiers ``]d2`` and ``]Q3``.

DataMatrix symbols are square (zint would otherwise pick a rectangle for short data, which
ZPL printers cannot draw). The quiet zone is the symbology's minimum: 4 modules for QR
(ISO/IEC 18004), 1 for DataMatrix (ISO/IEC 16022).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from provmint.gs1 import GS

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "QUIET",
    "Content",
    "Symbol",
    "SymbolSpec",
    "modules",
    "modules_as_zint",
    "zint_gs1",
]


class Symbol(Enum):
    """The 2D symbology on a label."""

    QR = "qr"
    DATAMATRIX = "datamatrix"


class Content(Enum):
    """What the symbol carries."""

    URL = "url"
    ELEMENT_STRING = "element-string"


QUIET = {Symbol.QR: 4, Symbol.DATAMATRIX: 1}
"""The quiet zone each symbology needs, in modules."""

_FIXED = {"01": 14, "17": 6}
"""The fixed-length AIs an element string of :func:`provmint.gs1.element_string` holds."""


@dataclass(frozen=True, slots=True)
class SymbolSpec:
    """Which symbol to draw: symbology, content, and the QR error correction level
    (``l``, ``m``, ``q`` or ``h``; DataMatrix ECC 200 has one fixed level)."""

    symbol: Symbol
    content: Content
    level: str = "m"

    @property
    def gs1(self) -> bool:
        """A GS1 symbol (FNC1 in first position): the element string content."""
        return self.content is Content.ELEMENT_STRING

    def payload(self, url: str, element: str) -> str:
        """The text a scanner reads from this symbol: the URL, or the element string
        (with its group separators)."""
        return element if self.gs1 else url


def zint_gs1(element: str) -> str:
    """The bracketed form zint takes GS1 data in, from an element string.

    >>> zint_gs1("0109520123450014172612311" + "0LOT1\\x1d21SER1")
    '[01]09520123450014[17]261231[10]LOT1[21]SER1'
    """
    out = []
    rest = element
    while rest:
        ai, rest = rest[:2], rest[2:]
        size = _FIXED.get(ai)
        if size is None:
            value, _, rest = rest.partition(GS)
        else:
            value, rest = rest[:size], rest[size:]
        out.append(f"[{ai}]{value}")
    return "".join(out)


def _create(spec: SymbolSpec, payload: str, data_mask: int | None = None) -> Any:
    """zxing-cpp's barcode of ``payload`` (unknown options are ignored there, so each
    one used is checked by the tests: square DataMatrix, the QR level and mask, GS1)."""
    import zxingcpp

    options: dict[str, Any]
    if spec.symbol is Symbol.QR:
        fmt, options = zxingcpp.BarcodeFormat.QRCode, {"ec_level": spec.level.upper()}
        if data_mask is not None:
            options["data_mask"] = data_mask
    else:
        fmt, options = zxingcpp.BarcodeFormat.DataMatrix, {"force_square": True}
    if spec.gs1:
        return zxingcpp.create_barcode(zint_gs1(payload), fmt, gs1=True, **options)
    return zxingcpp.create_barcode(payload, fmt, **options)


def modules(spec: SymbolSpec, payloads: list[str]) -> list[np.ndarray]:
    """Each symbol's module matrix (True: dark), without its quiet zone.

    QR codes are made with data mask 0 and re-masked here with the mask of least
    penalty (:mod:`provmint.labelformats.qrmasks`, many symbols scored at once): the
    same symbol zint makes with that mask, for a quarter of the time zint takes to
    choose one. Raises ValueError when zint refuses the data (too long, say)."""
    if spec.symbol is not Symbol.QR:
        return [_matrix(spec, payload, None) for payload in payloads]
    import numpy as np

    from provmint.labelformats import qrmasks

    out = [_matrix(spec, payload, 0) for payload in payloads]
    by_size: dict[int, list[int]] = {}
    for i, matrix in enumerate(out):
        by_size.setdefault(matrix.shape[0], []).append(i)
    for size, places in by_size.items():
        if size > qrmasks.MAX_SIZE:  # larger than the fast path handles: zint chooses
            for i in places:
                out[i] = _matrix(spec, payloads[i], None)
            continue
        for start in range(0, len(places), _SCORED_TOGETHER):
            group = places[start : start + _SCORED_TOGETHER]
            best = qrmasks.best_masked(np.stack([out[i] for i in group]), spec.level)
            for i, matrix in zip(group, best, strict=True):
                out[i] = matrix
    return out


_SCORED_TOGETHER = 32
"""QR codes whose masks are scored in one go. Few enough that each intermediate array
(8 candidates x 32 symbols x a word a row: ~80 KB) stays in the CPU's cache: 256 at a
time took 100 us a symbol, 32 at a time 26 (8: 77, numpy's cost per call again)."""


def _matrix(spec: SymbolSpec, payload: str, data_mask: int | None) -> np.ndarray:
    import numpy as np

    try:
        barcode = _create(spec, payload, data_mask)
    except Exception as exc:  # zxing-cpp raises its own untyped errors
        raise ValueError(f"cannot encode {payload!r} as {spec.symbol.value}: {exc}") from exc
    dark: np.ndarray = np.asarray(barcode.to_image(scale=1, add_quiet_zones=False)) < 128
    return dark


def modules_as_zint(spec: SymbolSpec, payload: str, data_mask: int | None = None) -> np.ndarray:
    """The module matrix exactly as zint makes it (its own mask choice, or
    ``data_mask``): what :func:`modules` is tested against."""
    return _matrix(spec, payload, data_mask)
