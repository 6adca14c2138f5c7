"""SVG and PNG label images: the symbol with its quiet zone, and the human-readable
text under it (one line per GS1 element, as the HRI is usually printed).

Both are written here rather than by an imaging library: an SVG is one ``<path>`` of
horizontal runs (stroked one unit high, as segno draws them) and ``<text>`` lines; a PNG
is 1 bit per pixel, text drawn with Pillow's built-in 6x11 bitmap font scaled by whole
pixels, so every edge stays sharp for a scanner and a thermal head.

Both are built for many labels at once (a few hundred of one size): per label, numpy's
cost per call would be more than the work. A PNG's pixels are made, packed to bits and
given their filter bytes for the whole group; per label there remain its text lines
(cached, scaled, by line) and the zlib stream.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape

if TYPE_CHECKING:
    import numpy as np

__all__ = ["ImageStyle", "png_bytes", "png_images", "svg_bytes", "svg_paths", "text_lines"]

_GLYPH_W, _GLYPH_H = 6, 11  # Pillow's built-in bitmap font
_LINE_GAP = 1


@dataclass(frozen=True, slots=True)
class ImageStyle:
    """How big an image is drawn: ``scale`` pixels (SVG units) per module; the text
    under the symbol, or none."""

    scale: int
    text: bool = True

    @property
    def glyph(self) -> int:
        """Pixels per font pixel: text about as tall as five modules."""
        return max(1, self.scale // 2)


def text_lines(hri: str) -> list[str]:
    """The HRI text split into one line per element (``(01) 0952... (21) SER1`` ->
    ``["(01) 0952...", "(21) SER1"]``). Values hold no spaces (CSET 82 has none), so
    the words alternate AI, value: a value that looks like ``(21)`` stays a value."""
    words = hri.split(" ") if hri else []
    return [" ".join(words[i : i + 2]) for i in range(0, len(words), 2)]


@dataclass(frozen=True, slots=True)
class _Frame:
    """Where things go on an image, in pixels."""

    width: int
    height: int
    symbol_x: int
    symbol_side: tuple[int, int]  # width, height of symbol + quiet zone
    text_top: int
    line_height: int


def _frame(shape: tuple[int, int], quiet: int, style: ImageStyle, lines: list[str]) -> _Frame:
    rows, cols = shape
    sw, sh = (cols + 2 * quiet) * style.scale, (rows + 2 * quiet) * style.scale
    g = style.glyph
    line_height = (_GLYPH_H + _LINE_GAP) * g
    text_w = max((len(line) for line in lines), default=0) * _GLYPH_W * g + 2 * g
    width = max(sw, text_w if lines else 0)
    height = sh + (len(lines) * line_height + g if lines else 0)
    return _Frame(width, height, (width - sw) // 2, (sw, sh), sh, line_height)


@lru_cache(maxsize=1)
def _numerals() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three tables of 4 ASCII bytes (as uint32) for 0 to 999: ``Mxxx``, `` yyy`` and
    ``nnn `` (numbers right-aligned with spaces, which path data allows)."""
    import numpy as np

    def table(template: str) -> np.ndarray:
        text = "".join(template.format(i) for i in range(1000)).encode()
        return np.frombuffer(text, dtype=np.uint32)

    return table("M{:3d}"), table(" {:3d}"), table("{:3d} ")


def svg_paths(matrices: list[np.ndarray], quiet: int) -> list[bytes]:
    """The SVG path data of each symbol's dark runs, ``Mxxx yyy.5h nnn `` per run (16
    bytes), built from tables for all symbols of a shape at once."""
    import numpy as np

    from provmint.labelformats.runs import dark_runs

    out: list[bytes] = [b""] * len(matrices)
    at_x, at_y, across = _numerals()
    for runs in dark_runs(matrices):
        cells = np.empty((len(runs.length), 4), dtype=np.uint32)
        cells[:, 0] = at_x.take(runs.col + quiet)
        cells[:, 1] = at_y.take(runs.row + quiet)
        cells[:, 2] = np.frombuffer(b".5h ", dtype=np.uint32)[0]  # native, as the tables
        cells[:, 3] = across.take(runs.length)
        runs.split(cells.tobytes(), 16, out)
    return out


def svg_bytes(
    matrix: np.ndarray, quiet: int, style: ImageStyle, hri: str, path: bytes | None = None
) -> bytes:
    """An SVG of the symbol (``matrix``: True is dark) and, if asked, its text
    (``path``: the symbol's :func:`svg_paths`, when made for many at once)."""
    lines = text_lines(hri) if style.text else []
    frame = _frame(matrix.shape, quiet, style, lines)
    # Text wider than the symbol: the symbol is centred (in module units, after scale).
    shift = f" translate({frame.symbol_x / style.scale:g} 0)" if frame.symbol_x else ""
    if path is None:
        (path,) = svg_paths([matrix], quiet)
    parts = [
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{frame.width}" '
        f'height="{frame.height}" viewBox="0 0 {frame.width} {frame.height}">'
        f'<rect width="{frame.width}" height="{frame.height}" fill="#fff"/>'
        f'<path transform="scale({style.scale}){shift}" stroke="#000" d="{path.decode()}"/>'
    ]
    size = _GLYPH_H * style.glyph - style.glyph
    for i, line in enumerate(lines):
        baseline = frame.text_top + (i + 1) * frame.line_height - 2 * style.glyph
        parts.append(
            f'<text x="{frame.width // 2}" y="{baseline}" text-anchor="middle" '
            f'font-family="DejaVu Sans Mono,Menlo,Consolas,monospace" font-size="{size}">'
            f"{escape(line)}</text>"
        )
    parts.append("</svg>\n")
    return "".join(parts).encode()


@lru_cache(maxsize=1)
def _font() -> object:
    from PIL import ImageFont

    return ImageFont.load_default_imagefont()


@lru_cache(maxsize=4096)
def _line_ink(line: str, factor: int) -> np.ndarray:
    """A text line in the bitmap font, scaled by ``factor``: True where ink is. Cached:
    most lines (the GTIN, the expiry, often the lot) repeat from label to label."""
    import numpy as np
    from PIL import Image

    # getmask gives Pillow's core image; wrapped as an Image, numpy reads it in one go
    # (read as a sequence, pixel by pixel, it was most of a PNG label's time).
    mask = Image.Image()._new(_font().getmask(line))  # type: ignore[attr-defined]
    ink: np.ndarray = np.asarray(mask) > 0
    if factor > 1:
        ink = ink.repeat(factor, axis=0).repeat(factor, axis=1)
    return ink


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IMAGES_TOGETHER = 256
"""PNG labels of one frame whose pixels are made in one go (~12 MB of pixels for a GS1
DataMatrix with its text at scale 4)."""


def png_bytes(matrix: np.ndarray, quiet: int, style: ImageStyle, hri: str) -> bytes:
    """A 1-bit greyscale PNG of the symbol and, if asked, its text."""
    (png,) = png_images([matrix], quiet, style, [hri])
    return png


def png_images(
    matrices: list[np.ndarray], quiet: int, style: ImageStyle, hris: list[str]
) -> list[bytes]:
    """Each label's 1-bit greyscale PNG: its symbol (``matrices``: True is dark) and, if
    asked, its text (``hris``), made for all the labels of a frame at once."""
    out: list[bytes] = [b""] * len(matrices)
    lines = [text_lines(hri) if style.text else [] for hri in hris]
    by_frame: dict[_Frame, list[int]] = {}
    for i, matrix in enumerate(matrices):
        by_frame.setdefault(_frame(matrix.shape, quiet, style, lines[i]), []).append(i)
    for frame, places in by_frame.items():
        for start in range(0, len(places), _IMAGES_TOGETHER):
            group = places[start : start + _IMAGES_TOGETHER]
            rows = _png_rows(
                frame, quiet, style, [matrices[i] for i in group], [lines[i] for i in group]
            )
            header = _chunk(
                b"IHDR", struct.pack(">IIBBBBB", frame.width, frame.height, 1, 0, 0, 0, 0)
            )
            for i, raw in zip(group, rows, strict=True):
                out[i] = (
                    _PNG_SIGNATURE
                    + header
                    + _chunk(b"IDAT", zlib.compress(raw, 1))
                    + _chunk(b"IEND", b"")
                )
    return out


def _png_rows(
    frame: _Frame, quiet: int, style: ImageStyle, matrices: list[np.ndarray], lines: list[list[str]]
) -> np.ndarray:
    """The PNG scanlines of labels of one frame (filter byte 0, then 1 bit a pixel, 1 is
    white, as greyscale has it), one label a row of the result."""
    import numpy as np

    scale = style.scale
    dark = np.zeros((len(matrices), frame.height, frame.width), dtype=bool)
    symbols = np.stack(matrices).repeat(scale, axis=1).repeat(scale, axis=2)
    top, left = quiet * scale, frame.symbol_x + quiet * scale
    dark[:, top : top + symbols.shape[1], left : left + symbols.shape[2]] = symbols
    for label, label_lines in zip(dark, lines, strict=True):
        for i, line in enumerate(label_lines):  # under the symbol, each in its own band
            ink = _line_ink(line, style.glyph)
            y = frame.text_top + i * frame.line_height
            x = (frame.width - ink.shape[1]) // 2
            label[y : y + ink.shape[0], x : x + ink.shape[1]] = ink
    packed = np.packbits(~dark, axis=2)
    raw = np.zeros((len(matrices), frame.height, packed.shape[2] + 1), dtype=np.uint8)
    raw[:, :, 1:] = packed
    return raw.reshape(len(matrices), -1)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
