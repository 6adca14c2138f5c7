"""The horizontal runs of dark modules in symbols: what an SVG path
(:func:`provmint.labelformats.images.svg_paths`) and a PDF sheet's path operators
(:func:`provmint.labelformats.pdf.run_ops`) are drawn from.

Runs are found for all symbols of one shape at once: per symbol, numpy's cost per call
would be more than the work. Each format then encodes every run as a fixed number of
bytes and :meth:`Runs.split` cuts the result into each symbol's share.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

__all__ = ["Runs", "dark_runs"]


@dataclass(frozen=True, slots=True)
class Runs:
    """The dark runs of the symbols of one shape, in reading order (symbol by symbol,
    row by row, left to right): each run's ``symbol`` (an index into ``places``), its
    ``row``, its first column ``col`` and its ``length`` in modules."""

    places: list[int]
    """Where each symbol of this shape is in the list given to :func:`dark_runs`."""
    symbol: np.ndarray
    row: np.ndarray
    col: np.ndarray
    length: np.ndarray

    def split(self, data: bytes, width: int, out: list[bytes]) -> None:
        """Cut ``data`` (``width`` bytes a run, in the runs' order) into each symbol's
        bytes, stored in ``out`` at the symbol's place."""
        import numpy as np

        ends = np.cumsum(np.bincount(self.symbol, minlength=len(self.places))) * width
        begins = [0, *ends[:-1].tolist()]
        for place, begin, end in zip(self.places, begins, ends.tolist(), strict=True):
            out[place] = data[begin:end]


def dark_runs(matrices: list[np.ndarray]) -> Iterator[Runs]:
    """The dark runs of ``matrices`` (True: dark), one :class:`Runs` per shape."""
    import numpy as np

    by_shape: dict[tuple[int, int], list[int]] = {}
    for i, matrix in enumerate(matrices):
        by_shape.setdefault(matrix.shape, []).append(i)
    for (rows, cols), places in by_shape.items():
        padded = np.zeros((len(places), rows, cols + 2), dtype=np.int8)
        padded[:, :, 1:-1] = np.stack([matrices[i] for i in places])
        edges = np.diff(padded.ravel())  # runs never cross rows: each row ends light
        starts = np.flatnonzero(edges == 1)
        lengths = np.flatnonzero(edges == -1) - starts
        symbol, cell = np.divmod(starts, rows * (cols + 2))
        row, col = np.divmod(cell, cols + 2)
        yield Runs(places, symbol, row, col, lengths)
