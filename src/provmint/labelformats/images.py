"""SVG and PNG label images: the symbol with its quiet zone, and the human-readable
text under it (one line per GS1 element, as the HRI is usually printed).

Both are written here rather than by an imaging library: an SVG is one ``<path>`` of
horizontal runs (stroked one unit high, as segno draws them) and ``<text>`` lines; a PNG
is 1 bit per pixel, text drawn with Pillow's built-in 6x11 bitmap font scaled by whole
pixels, so every edge stays sharp for a scanner and a thermal head.
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

__all__ = ["ImageStyle", "png_bytes", "svg_bytes", "svg_paths", "text_lines"]

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
    bytes), built from tables for all symbols of a size at once: per symbol, even
    numpy's per-call cost would be more than encoding it."""
    import numpy as np

    out: list[bytes] = [b""] * len(matrices)
    by_shape: dict[tuple[int, int], list[int]] = {}
    for i, matrix in enumerate(matrices):
        by_shape.setdefault(matrix.shape, []).append(i)
    at_x, at_y, across = _numerals()
    for (rows, cols), places in by_shape.items():
        padded = np.zeros((len(places), rows, cols + 2), dtype=np.int8)
        padded[:, :, 1:-1] = np.stack([matrices[i] for i in places])
        edges = np.diff(padded.ravel())  # runs never cross rows: each row ends light
        starts = np.flatnonzero(edges == 1)
        lengths = np.flatnonzero(edges == -1) - starts
        symbol, cell = np.divmod(starts, rows * (cols + 2))
        row, col = np.divmod(cell, cols + 2)
        cells = np.empty((len(starts), 4), dtype=np.uint32)
        cells[:, 0] = at_x.take(col + quiet)
        cells[:, 1] = at_y.take(row + quiet)
        cells[:, 2] = np.frombuffer(b".5h ", dtype=np.uint32)[0]  # native, as the tables
        cells[:, 3] = across.take(lengths)
        data = cells.tobytes()
        ends = np.cumsum(np.bincount(symbol, minlength=len(places))) * 16
        for place, begin, end in zip(places, [0, *ends[:-1].tolist()], ends.tolist(), strict=True):
            out[place] = data[begin:end]
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
def _line_mask(line: str) -> np.ndarray:
    """A text line in the bitmap font, True where ink is."""
    import numpy as np

    mask = _font().getmask(line)  # type: ignore[attr-defined]
    width, height = mask.size
    ink: np.ndarray = np.asarray(mask, dtype=np.uint8).reshape(height, width) > 0
    return ink


def _upscale(image: np.ndarray, factor: int) -> np.ndarray:
    import numpy as np

    if factor == 1:
        return image
    big: np.ndarray = np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)
    return big


def png_bytes(matrix: np.ndarray, quiet: int, style: ImageStyle, hri: str) -> bytes:
    """A 1-bit greyscale PNG of the symbol and, if asked, its text."""
    import numpy as np

    lines = text_lines(hri) if style.text else []
    frame = _frame(matrix.shape, quiet, style, lines)
    dark = np.zeros((frame.height, frame.width), dtype=bool)
    top, left = quiet * style.scale, frame.symbol_x + quiet * style.scale
    symbol = _upscale(matrix, style.scale)
    dark[top : top + symbol.shape[0], left : left + symbol.shape[1]] = symbol
    g = style.glyph
    for i, line in enumerate(lines):
        ink = _upscale(_line_mask(line), g)
        y = frame.text_top + i * frame.line_height
        x = (frame.width - ink.shape[1]) // 2
        dark[y : y + ink.shape[0], x : x + ink.shape[1]] |= ink
    return _png(dark)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png(dark: np.ndarray) -> bytes:
    """PNG (greyscale, 1 bit, filter 0 on every row) of a dark/light bitmap."""
    import numpy as np

    height, width = dark.shape
    packed = np.packbits(~dark, axis=1)  # 1 is white in a greyscale PNG
    raw = np.zeros((height, packed.shape[1] + 1), dtype=np.uint8)
    raw[:, 1:] = packed
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw.tobytes(), 1))
        + _chunk(b"IEND", b"")
    )
