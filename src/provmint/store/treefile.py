"""FORMAT-CRITICAL: ``provmint-tree/1``, a batch's whole Merkle tree in one flat file.

Layout: a 64-byte header, then every level of :mod:`provmint.merkle`'s level arrays, leaves
first, each node 32 bytes::

    b"PMTREE01" || u64 size || u32 level_count || u32 32 || 40 zero bytes

Node ``j`` of level ``L`` sits at ``64 + 32 * (sum of the sizes of levels below L) + 32 * j``,
so an inclusion proof is ``log2(n)`` reads of 32 bytes.

A batch is minted in aligned chunks of ``2^k`` leaves before its size is known (the CSV is
read as a stream), so the file cannot be laid out up front. Only the leaves' place does
not depend on the size: workers write their chunk's leaves straight into the tree file,
after the header, and its levels ``1..k`` into one spill file per level
(:class:`TreeSpill`; node ``j`` of a level at ``32 * j`` whatever the size).
:meth:`TreeSpill.assemble` then writes the header, and appends those levels and the
levels above ``k`` (built from the chunk roots). Chunks are ``2^k``
aligned, so each level of the tree is the concatenation of the chunks' own levels (a short
last chunk's root is promoted unchanged above its own height, as RFC 9162 does).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from provmint import merkle
from provmint.errors import StoreCorruptError

__all__ = ["HEADER_SIZE", "TreeFile", "TreeSpill", "level_offsets"]

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


class TreeSpill:
    """Levels ``0..chunk_level`` of a tree minted in chunks of ``2^chunk_level`` leaves,
    until the size is known (see the module docstring): the leaves in the tree file
    ``tree`` itself, at their final place, and each level above in a file of its own in
    ``directory``. ``paths`` (level 0 first) is what a worker needs to write its chunk."""

    def __init__(self, directory: Path, chunk_level: int, tree: Path) -> None:
        self.directory = directory
        self.chunk_level = chunk_level
        self.tree = tree
        levels = [str(directory / f"level-{i:02d}.bin") for i in range(1, chunk_level + 1)]
        self.paths = (str(tree), *levels)

    def create(self) -> None:
        """Make the (empty) tree file and level files."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for path in self.paths:
            Path(path).touch()

    @staticmethod
    def write_chunk(paths: tuple[str, ...], start: int, levels: list[bytes]) -> None:
        """Write the levels of the chunk whose first leaf is ``start`` (from a worker)."""
        for level, path in enumerate(paths):
            # Above a short last chunk's own height, its root is promoted unchanged.
            node = levels[level] if level < len(levels) else levels[-1]
            # No fsync: the level files are scratch, read back through the page cache by
            # :meth:`assemble`, which fsyncs the tree file it writes (a crash before the
            # commit discards the whole staging directory anyway). An fsync here cost
            # one call per level and chunk: most of a mint's fsyncs.
            fd = os.open(path, os.O_WRONLY)
            try:
                os.pwrite(fd, node, _spill_offset(level) + merkle.HASH_SIZE * (start >> level))
            finally:
                os.close(fd)

    def assemble(self, size: int, chunk_roots: bytes) -> bytes:
        """Complete the tree file of ``size`` leaves: its header, then the spilled levels
        and those above them from the chunks' roots (in order); returns the root."""
        sizes = merkle.level_sizes(size)
        upper = merkle.build_levels(chunk_roots)[1:] if len(sizes) > len(self.paths) else []
        # Unbuffered: the kernel copies below advance the same file offset as the writes.
        with open(self.tree, "r+b", buffering=0) as out:
            leaves_end = HEADER_SIZE + sizes[0] * merkle.HASH_SIZE
            if os.fstat(out.fileno()).st_size < leaves_end:
                raise StoreCorruptError(f"{self.tree}: a chunk's leaves are missing")
            out.write(_header(size))
            out.seek(leaves_end)
            for level, count in enumerate(sizes[1:], start=1):
                want = count * merkle.HASH_SIZE
                if level < len(self.paths):
                    _copy(Path(self.paths[level]), out.fileno(), want)
                else:
                    out.write(upper[level - len(self.paths)])
            # A second pass (after refused rows) leaves fewer leaves than the first wrote.
            out.truncate()
            os.fsync(out.fileno())
        return TreeFile(self.tree).root


def _spill_offset(level: int) -> int:
    """Where node 0 of ``level`` is written: after the tree file's header for the leaves."""
    return HEADER_SIZE if level == 0 else 0


def _copy(source: Path, target_fd: int, count: int) -> None:
    """Append the first ``count`` bytes of ``source`` to ``target_fd`` (in the kernel)."""
    with open(source, "rb") as fh:
        if os.fstat(fh.fileno()).st_size < count:
            raise StoreCorruptError(f"{source}: a chunk's tree levels are missing")
        left = count
        while left:
            done = os.copy_file_range(fh.fileno(), target_fd, left)
            if done == 0:
                raise StoreCorruptError(f"{source}: a chunk's tree levels are missing")
            left -= done
