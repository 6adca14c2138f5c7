"""Types of the optional C module (see _native.c)."""

from collections.abc import Sequence

from typing_extensions import Buffer

def reduce_level(level: Buffer) -> bytes: ...
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
) -> tuple[bytes, ...]: ...
def key_hashes(
    gtin_offsets: Buffer, gtin_data: Buffer, serial_offsets: Buffer, serial_data: Buffer
) -> bytes: ...
