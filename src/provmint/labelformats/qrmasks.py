"""QR data-mask choice for symbols zint made with mask 0, on bit-packed rows.

zint spends about three quarters of a QR code's time scoring the eight data masks
(ISO/IEC 18004:2015, 7.8.3). Here a symbol made with mask 0 is unmasked, the eight
candidates (each with its own format information, 7.9) are scored at once, each row and
column one 64-bit word, and the best is returned: module for module the symbol zint makes
when told to use that mask (a test checks every mask on many URLs).

The penalty is the standard's: N1 3 + (length - 5) per run of 5 or more same-coloured
modules in a row or column; N2 3 per 2x2 block of one colour; N3 40 per 1:1:3:1:1 dark
pattern with 4 light modules before or after it (the quiet zone counts as light; a
pattern with light on both sides counts twice); N4 10 per 5% the dark share is away from
50%. The first of equal scores wins. (zint's own scoring differs in details and picks
the same mask for about three symbols in four.) Symbols wider than 56 modules (version
10 and up) are left to zint.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

__all__ = ["MAX_SIZE", "best_masked", "format_bits", "penalties"]

_PAD = 4  # light columns either side of a row in its word: the quiet zone, for N3
MAX_SIZE = 64 - 2 * _PAD
"""The widest symbol the fast path scores (version 9 and below)."""
_LEVEL_BITS = {"l": 1, "m": 0, "q": 3, "h": 2}
_N3_LIGHT_FIRST = (0, 0, 0, 0, 1, 0, 1, 1, 1, 0, 1)
_N3_LIGHT_AFTER = _N3_LIGHT_FIRST[::-1]


def format_bits(level: str, mask: int) -> int:
    """The 15-bit format information of an error correction level and mask (BCH(15,5),
    XOR 101010000010010).

    >>> f"{format_bits('m', 0):015b}"
    '101010000010010'
    """
    data = (_LEVEL_BITS[level] << 3) | mask
    rem = data
    for _ in range(10):
        rem = (rem << 1) ^ ((rem >> 9) * 0x537)
    return ((data << 10) | rem) ^ 0x5412


@lru_cache(maxsize=64)
def _format_places(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows, columns and bit numbers of both copies of the format information."""
    import numpy as np

    places = [(i, 8, i) for i in range(6)]
    places += [(7, 8, 6), (8, 8, 7), (8, 7, 8)]
    places += [(8, 14 - i, i) for i in range(9, 15)]
    places += [(8, size - 1 - i, i) for i in range(8)]
    places += [(size - 15 + i, 8, i) for i in range(8, 15)]
    rows, cols, bits = (np.array(v) for v in zip(*places, strict=True))
    return rows, cols, bits


@lru_cache(maxsize=64)
def _format_values(size: int, level: str) -> np.ndarray:
    """(8, 30): each mask's format information modules, in :func:`_format_places` order."""
    import numpy as np

    _, _, bits = _format_places(size)
    return np.array([[(format_bits(level, m) >> b) & 1 for b in bits] for m in range(8)], bool)


def _candidates(masked0: np.ndarray, level: str) -> np.ndarray:
    """(g, 8, n, n): the eight masked symbols of each of (g, n, n) symbols made with
    mask 0, as whole matrices (the tests hold them against zint's)."""
    from provmint.qrmask import _patterns  # the 8 masks over the encoding region

    size = masked0.shape[-1]
    patterns = _patterns(size).astype(bool)
    unmasked = masked0 ^ patterns[0]
    candidates: np.ndarray = unmasked[:, None, :, :] ^ patterns[None, :, :, :]
    rows, cols, _ = _format_places(size)
    candidates[:, :, rows, cols] = _format_values(size, level)[None, :, :]
    return candidates


def _words(grid: np.ndarray) -> np.ndarray:
    """(..., n, n) bools -> (..., n) uint64: each row one word, column c at bit
    63 - PAD - c (packed to bytes first: an n-wide array, not a 64-wide one)."""
    import numpy as np

    packed = np.packbits(grid, axis=-1)
    wide = np.zeros((*packed.shape[:-1], 8), dtype=np.uint8)
    wide[..., : packed.shape[-1]] = packed
    words: np.ndarray = wide.view(">u8")[..., 0].astype(np.uint64) >> np.uint64(_PAD)
    return words


def _popcount(words: np.ndarray) -> np.ndarray:
    import numpy as np

    counts: np.ndarray = np.bitwise_count(words).astype(np.int64)
    return counts


def _span(first: int, last: int) -> int:
    """Bits of columns ``first`` to ``last`` (inclusive, word positions)."""
    return sum(1 << (63 - c) for c in range(first, last + 1))


def _line_penalties(words: np.ndarray, size: int) -> np.ndarray:
    """N1 + N3 of every line (row, or column once transposed), summed over the last
    axis. ``w << k`` holds, at column c, the module of column c + k."""
    import numpy as np

    u = np.uint64
    one = u(1)
    same = ~(words ^ (words << one)) & u(_span(_PAD, _PAD + size - 2))
    fives = same & (same << one) & (same << u(2)) & (same << u(3))
    starts = fives & ~(fives >> one)
    n1 = _popcount(fives) + 2 * _popcount(starts)
    light = ~(words | (words << one) | (words << u(2)) | (words << u(3)))  # 4 light from c
    core = words & ~(words << one) & (words << u(2)) & (words << u(3)) & (words << u(4))
    core &= ~(words << u(5)) & (words << u(6))  # 1011101 from c
    starts_ok = u(_span(0, _PAD + size + _PAD - 11))
    first = light & (core << u(4)) & starts_ok  # 0000 1011101
    after = core & (light << u(7)) & starts_ok  # 1011101 0000
    n3 = 40 * (_popcount(first) + _popcount(after))
    total: np.ndarray = (n1 + n3).sum(axis=-1)
    return total


def _block_penalties(words: np.ndarray, size: int) -> np.ndarray:
    """N2 per candidate: 3 for each 2x2 block of one colour."""
    import numpy as np

    one = np.uint64(1)
    valid = np.uint64(_span(_PAD, _PAD + size - 2))
    top, bottom = words[..., :-1], words[..., 1:]
    across = ~(top ^ (top << one))
    down = ~(top ^ bottom)
    blocks = across & down & (down << one) & valid
    total: np.ndarray = 3 * _popcount(blocks).sum(axis=-1)
    return total


def _scores(rows: np.ndarray, columns: np.ndarray, size: int) -> np.ndarray:
    """The penalty of each symbol, from its rows' and columns' words (..., n)."""
    import numpy as np

    n123 = (
        _line_penalties(rows, size) + _line_penalties(columns, size) + _block_penalties(rows, size)
    )
    dark = _popcount(rows).sum(axis=-1)
    cells = size * size
    n4 = 10 * (np.abs(20 * dark - 10 * cells) // cells)
    total: np.ndarray = n123 + n4
    return total


def penalties(candidates: np.ndarray) -> np.ndarray:
    """The mask penalty (N1 + N2 + N3 + N4) of each of (k, n, n) symbols."""
    size = candidates.shape[1]
    return _scores(_words(candidates), _words(candidates.transpose(0, 2, 1)), size)


@lru_cache(maxsize=64)
def _mask_words(size: int, level: str) -> tuple[np.ndarray, ...]:
    """Per mask, as row and column words: its pattern, and its format information
    modules with the mask of where they are (to clear them first)."""
    import numpy as np

    patterns = _patterns_of(size)
    rows, cols, _ = _format_places(size)
    place = np.zeros((size, size), dtype=bool)
    place[rows, cols] = True
    values = np.zeros((8, size, size), dtype=bool)
    values[:, rows, cols] = _format_values(size, level)
    return (
        _words(patterns),
        _words(patterns.transpose(0, 2, 1)),
        _words(place),
        _words(place.T),
        _words(values),
        _words(values.transpose(0, 2, 1)),
    )


def _patterns_of(size: int) -> np.ndarray:
    from provmint.qrmask import _patterns  # the 8 masks over the encoding region

    patterns: np.ndarray = _patterns(size).astype(bool)
    return patterns


def best_masked(symbols: np.ndarray, level: str) -> np.ndarray:
    """Each of (g, n, n) symbols made with mask 0, re-masked with the mask of least
    penalty. The eight candidates are scored as words (each unmasked symbol packed once,
    each mask XORed in, its format information put in place), many symbols together:
    numpy's cost is per operation. ``n`` must be at most :data:`MAX_SIZE`."""
    import numpy as np

    size = symbols.shape[-1]
    if size > MAX_SIZE:
        raise ValueError(f"a {size}-module QR code is wider than the fast path's words")
    pat_r, pat_c, place_r, place_c, fmt_r, fmt_c = _mask_words(size, level)
    unmasked = symbols ^ _patterns_of(size)[0]
    rows = (_words(unmasked)[:, None, :] ^ pat_r) & ~place_r | fmt_r
    columns = (_words(unmasked.transpose(0, 2, 1))[:, None, :] ^ pat_c) & ~place_c | fmt_c
    best = np.argmin(_scores(rows, columns, size), axis=1)
    chosen: np.ndarray = unmasked ^ _patterns_of(size)[best]
    rows_at, cols_at, _ = _format_places(size)
    chosen[:, rows_at, cols_at] = _format_values(size, level)[best]
    return chosen
