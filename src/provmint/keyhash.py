"""FORMAT-CRITICAL: ``provmint-keyhash/1``, the store's 64-bit lookup key of a product.

The key of (gtin14, serial) is computed over a 40-byte block::

    gtin14 (14 ASCII digits) || serial (ASCII, NUL-padded to 20 bytes) || 6 NUL bytes

read as five little-endian u64 words ``w0..w4`` and mixed splitmix64-style (all
arithmetic modulo 2**64)::

    h = 0x9E3779B97F4A7C15
    for w in w0..w4:  h = (h ^ w) * 0xBF58476D1CE4E5B9;  h ^= h >> 31
    h = (h ^ (h >> 30)) * 0xBF58476D1CE4E5B9
    h = (h ^ (h >> 27)) * 0x94D049BB133111EB
    h ^= h >> 31

It is not a security boundary: every index hit is confirmed against the stored record.
The same function is written over whole columns in :func:`provmint.ingest.key_hashes`
(numpy, and C in ``_native.c``) and, independently, in the audit; all of them are
pinned to the known-answer vectors in ``tests/vectors/keyhash.json``.
"""

from __future__ import annotations

__all__ = ["KEYHASH_VERSION", "key_block", "key_hash"]

KEYHASH_VERSION = "provmint-keyhash/1"

_M64 = (1 << 64) - 1
_SEED = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB


def key_block(gtin14: str, serial: str) -> bytes:
    """The 40-byte block that is hashed (ValueError unless gtin14 is 14 ASCII characters
    and serial at most 20)."""
    gtin = gtin14.encode("ascii")
    raw = serial.encode("ascii")
    if len(gtin) != 14 or len(raw) > 20:
        raise ValueError("gtin14 must be 14 digits and serial at most 20 ASCII characters")
    return gtin + raw.ljust(20, b"\0") + bytes(6)


def key_hash(gtin14: str, serial: str) -> int:
    """The ``provmint-keyhash/1`` key of one (gtin14, serial) pair."""
    block = key_block(gtin14, serial)
    h = _SEED
    for i in range(0, 40, 8):
        h = ((h ^ int.from_bytes(block[i : i + 8], "little")) * _M1) & _M64
        h ^= h >> 31
    h = ((h ^ (h >> 30)) * _M1) & _M64
    h = ((h ^ (h >> 27)) * _M2) & _M64
    return h ^ (h >> 31)
