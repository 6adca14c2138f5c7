"""Types of the optional C module (see _native.c)."""

from collections.abc import Sequence

from typing_extensions import Buffer

SIMD_LANES: int
"""16 where this CPU runs the sixteen-lane SHA-256 loops (AVX-512), else 1."""

def reduce_level(level: Buffer, lanes: int = 0) -> bytes: ...
def concat(n: int, parts: Sequence[object]) -> tuple[bytes, bytes]: ...
def hash_products(
    secret: bytes,
    token_tag: bytes,
    commit_tag: bytes,
    record_header: bytes,
    gtin_offsets: Buffer,
    gtin_data: Buffer,
    serial_offsets: Buffer,
    serial_data: Buffer,
    fields: Sequence[tuple[bytes, Buffer, Buffer]],
    payloads: bool = False,
    lanes: int = 0,
) -> tuple[bytes, ...]: ...
def key_hashes(
    gtin_offsets: Buffer, gtin_data: Buffer, serial_offsets: Buffer, serial_data: Buffer
) -> bytes: ...
def merge_entries(pieces: Sequence[tuple[Buffer, Buffer]]) -> tuple[bytes, bytes]: ...
