"""QR data-mask selection with numpy, choosing exactly the mask segno would choose.

segno evaluates the eight data masks (ISO/IEC 18004:2015, 7.8.3) in pure Python: for a
100-character verification URL (version 6, 41 x 41 modules) that is about 80% of the
time it takes to make a code. This evaluates all eight masks at once with numpy, with
segno's own penalty rules (N1 runs, N2 blocks, N3 finder-like patterns, N4 dark
balance) and tie-breaking, so the symbols are identical module for module (a test
compares them with stock segno on many URLs). Micro QR codes and explicitly requested
masks go to segno's own code.

:func:`installed` swaps it in for the duration of a ``with`` block, in label workers.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import numpy as np

__all__ = ["best_mask", "installed"]

_N3 = bytes((1, 0, 1, 1, 1, 0, 1))


@lru_cache(maxsize=16)
def _patterns(size: int) -> np.ndarray:
    """The eight mask patterns, restricted to the encoding region, as (8, size, size) u8."""
    from segno import encoder as _encoder

    encoder: Any = _encoder  # untyped internals
    function = encoder.make_matrix(size, size)
    encoder.add_finder_patterns(function, size, size)
    encoder.add_alignment_patterns(function, size, size)
    function[-8][8] = 0x1
    region = (
        np.frombuffer(b"".join(bytes(r) for r in function), dtype=np.uint8).reshape(size, size) > 1
    )
    i, j = np.indices((size, size))
    masks = (
        (i + j) % 2 == 0,
        i % 2 == 0,
        j % 3 == 0,
        (i + j) % 3 == 0,
        (i // 2 + j // 3) % 2 == 0,
        (i * j) % 2 + (i * j) % 3 == 0,
        ((i * j) % 2 + (i * j) % 3) % 2 == 0,
        ((i + j) % 2 + (i * j) % 3) % 2 == 0,
    )
    return np.stack([(m & region) for m in masks]).astype(np.uint8)


def _runs_score(lines: np.ndarray) -> np.ndarray:
    """N1 per mask: each run of >= 5 same-colour modules in a line scores (length - 2).

    ``lines`` is (masks, lines, length); runs never continue across lines.
    """
    masks, count, length = lines.shape
    change = np.ones((masks, count, length + 1), dtype=bool)
    change[:, :, 1:length] = lines[:, :, 1:] != lines[:, :, :-1]
    flat = change.reshape(masks, -1)
    scores = np.zeros(masks, dtype=np.int64)
    for k in range(masks):
        edges = np.flatnonzero(flat[k])
        runs = np.diff(edges)
        # Boundaries between lines sit at multiples of length + 1: those gaps are not runs.
        runs = runs[(edges[:-1] % (length + 1)) != length]
        long = runs[runs >= 5]
        scores[k] = int((long - 2).sum())
    return scores


def _n3(line: bytes, size: int) -> int:
    """segno's N3 count for one row or column (same scan and restart rules)."""
    count = 0
    idx = line.find(_N3)
    while idx != -1:
        offset = idx + 7
        if (
            idx in (0, size - 7)
            or not any(line[max(idx - 4, 0) : min(idx, size)])
            or not any(line[max(offset, 0) : min(offset + 4, size)])
        ):
            count += 40
        else:
            offset = idx + 4
        idx = line.find(_N3, offset)
    return count


def _scores(matrix: np.ndarray) -> np.ndarray:
    size = matrix.shape[0]
    masked = matrix[None, :, :] ^ _patterns(size)
    n1 = _runs_score(masked) + _runs_score(masked.transpose(0, 2, 1))
    a = masked
    same = (
        (a[:, 1:, 1:] == a[:, 1:, :-1])
        & (a[:, 1:, 1:] == a[:, :-1, 1:])
        & (a[:, 1:, 1:] == a[:, :-1, :-1])
    )
    n2 = 3 * same.reshape(8, -1).sum(axis=1)
    n3 = np.zeros(8, dtype=np.int64)
    for k in range(8):
        rows = masked[k]
        n3[k] = sum(
            _n3(rows[i].tobytes(), size) + _n3(rows[:, i].tobytes(), size) for i in range(size)
        )
    darks = masked.reshape(8, -1).sum(axis=1)
    n4 = np.array([10 * int(abs(float(d) / (size**2) * 100 - 50) / 5) for d in darks])
    total: np.ndarray = n1 + n2 + n3 + n4
    return total


def best_mask(matrix: Any, width: int, height: int, proposed_mask: int | None = None) -> Any:
    """Drop-in for ``segno.encoder.find_and_apply_best_mask`` (QR codes; micro codes and
    a proposed mask are passed to segno's own function)."""
    if width != height or width < 21 or proposed_mask is not None:
        return _ORIGINAL(matrix, width, height, proposed_mask)
    data = np.frombuffer(b"".join(bytes(r) for r in matrix), dtype=np.uint8).reshape(height, width)
    scores = _scores(data)
    best = int(np.argmin(scores))  # the first of equal scores, like segno
    chosen = data ^ _patterns(width)[best]
    return best, tuple(bytearray(row.tobytes()) for row in chosen)


_ORIGINAL: Any = None
"""segno's own ``find_and_apply_best_mask``, saved while :func:`installed` is in effect."""
_ACTIVE = 0
"""How many :func:`installed` blocks are running (they may nest, or overlap in threads)."""
_INSTALL_LOCK = threading.Lock()


@contextmanager
def installed() -> Iterator[None]:
    """Use :func:`best_mask` inside segno while the block runs (this process only).

    Blocks may nest or overlap: segno is patched when the first one starts and restored
    when the last one ends. (Saving "whatever is there now" in each block would make a
    nested block save :func:`best_mask` itself, leave segno patched for good, and send
    micro codes round :func:`best_mask` forever.)
    """
    global _ORIGINAL, _ACTIVE
    from segno import encoder

    with _INSTALL_LOCK:
        if _ACTIVE == 0:
            _ORIGINAL = encoder.find_and_apply_best_mask
            encoder.find_and_apply_best_mask = best_mask
        _ACTIVE += 1
    try:
        yield
    finally:
        with _INSTALL_LOCK:
            _ACTIVE -= 1
            if _ACTIVE == 0:
                encoder.find_and_apply_best_mask = _ORIGINAL
