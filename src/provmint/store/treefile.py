"""FORMAT-CRITICAL: ``provmint-tree/1``, a batch's whole Merkle tree in one flat file.

Layout: a 64-byte header, then every level of :mod:`provmint.merkle`'s level arrays, leaves
first, each node 32 bytes::

    b"PMTREE01" || u64 size || u32 level_count || u32 32 || 40 zero bytes

Node ``j`` of level ``L`` sits at ``64 + 32 * (sum of the sizes of levels below L) + 32 * j``,
so an inclusion proof is ``log2(n)`` reads of 32 bytes. Workers write their chunks' nodes
in place with ``pwrite``; the file is created at full size first.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from provmint import merkle
from provmint.errors import StoreCorruptError

__all__ = ["HEADER_SIZE", "TreeFile", "create_tree_file", "level_offsets"]

HEADER_SIZE = 64
_MAGIC = b"PMTREE01"


def level_offsets(size: int) -> tuple[int, ...]:
    """Byte offset of each level in a tree file of ``size`` leaves."""
    offsets = []
    position = HEADER_SIZE
    for count in merkle.level_sizes(size):
        offsets.append(position)
        position += count * merkle.HASH_SIZE
    return tuple(offsets)


def _header(size: int) -> bytes:
    levels = len(merkle.level_sizes(size))
    return _MAGIC + struct.pack(">QII", size, levels, merkle.HASH_SIZE) + bytes(40)


def create_tree_file(path: Path, size: int) -> tuple[int, ...]:
    """Create an all-zero tree file for ``size`` leaves; return its level offsets."""
    offsets = level_offsets(size)
    total = offsets[-1] + merkle.HASH_SIZE
    with open(path, "wb") as fh:
        fh.write(_header(size))
        fh.truncate(total)
    return offsets


class TreeFile:
    """Read access to a stored tree: nodes, the root and inclusion paths."""

    def __init__(self, path: Path) -> None:
        self.file = path
        try:
            with open(path, "rb") as fh:
                header = fh.read(HEADER_SIZE)
        except OSError as exc:
            raise StoreCorruptError(f"{path}: cannot read tree file: {exc.strerror}") from exc
        if len(header) != HEADER_SIZE or header[:8] != _MAGIC:
            raise StoreCorruptError(f"{path}: not a provmint tree file")
        self.size, self.level_count, hash_size = struct.unpack(">QII", header[8:24])
        if hash_size != merkle.HASH_SIZE or self.size < 1:
            raise StoreCorruptError(f"{path}: unsupported tree file header")
        self.sizes = merkle.level_sizes(self.size)
        self.offsets = level_offsets(self.size)
        if len(self.sizes) != self.level_count:
            raise StoreCorruptError(f"{path}: tree file header is inconsistent")
        expected = self.offsets[-1] + merkle.HASH_SIZE
        if os.path.getsize(path) != expected:
            raise StoreCorruptError(f"{path}: tree file has the wrong length")

    def node(self, level: int, index: int) -> bytes:
        """Node ``index`` of ``level`` (0 = leaves)."""
        if not 0 <= level < self.level_count or not 0 <= index < self.sizes[level]:
            raise IndexError(f"no node {index} on level {level}")
        with open(self.file, "rb") as fh:
            fh.seek(self.offsets[level] + merkle.HASH_SIZE * index)
            return fh.read(merkle.HASH_SIZE)

    def level(self, level: int) -> bytes:
        """A whole level (for bulk proof export)."""
        with open(self.file, "rb") as fh:
            fh.seek(self.offsets[level])
            return fh.read(merkle.HASH_SIZE * self.sizes[level])

    @property
    def root(self) -> bytes:
        """The tree's root hash."""
        return self.node(self.level_count - 1, 0)

    def leaf(self, index: int) -> bytes:
        """The leaf hash at ``index``."""
        return self.node(0, index)

    def inclusion_path(self, index: int) -> list[bytes]:
        """Inclusion path of leaf ``index`` (O(log n) reads, one open file)."""
        with open(self.file, "rb") as fh:

            def read(level: int, j: int) -> bytes:
                fh.seek(self.offsets[level] + merkle.HASH_SIZE * j)
                return fh.read(merkle.HASH_SIZE)

            return merkle.inclusion_path(read, index, self.size)
