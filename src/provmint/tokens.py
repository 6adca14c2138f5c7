"""FORMAT-CRITICAL: per-product authentication tokens (``provmint-token/1``).

``token = HMAC-SHA256(issuer_secret, token_message(gtin14, serial))[:16]``: 128 bits,
the truncation RFC 2104 section 5 allows. Printed as 22 characters of unpadded base64url
(RFC 4648 section 5), which needs no percent-encoding in a URL. Parsing is strict: only the
canonical spelling of a token is accepted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Callable
from typing import Any

from provmint.canonical import TOKEN_TAG, token_message

__all__ = [
    "MIN_SECRET_BYTES",
    "TOKEN_BYTES",
    "TOKEN_CHARS",
    "format_token",
    "hmac_states",
    "make_token",
    "parse_token",
    "short_sha256",
    "tokens_equal",
]

TOKEN_BYTES = 16
TOKEN_CHARS = 22
MIN_SECRET_BYTES = 32

_TOKEN_TEXT = re.compile(r"[A-Za-z0-9_-]{22}")
# 22 characters carry 132 bits for 128: the last one's low 4 bits must be zero.
_CANONICAL_LAST = frozenset("AQgw")
_BLOCK = 64


def _short_sha256() -> Callable[..., Any]:
    try:  # CPython's own SHA-256: _sha2 from 3.12, _sha256 before
        from _sha2 import sha256 as builtin  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        try:
            from _sha256 import sha256 as builtin  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            return hashlib.sha256
    if builtin(b"abc").digest() != hashlib.sha256(b"abc").digest():
        return hashlib.sha256  # (never seen: a module of that name that is not SHA-256)
    constructor: Callable[..., Any] = builtin
    return constructor


short_sha256: Callable[..., Any] = _short_sha256()
"""A SHA-256 constructor for many short messages (one 64-byte block) and copied states:
CPython's built-in SHA-256 where it has one, else :func:`hashlib.sha256`. Per call it
costs about two thirds of hashlib's (OpenSSL 3 sets up a context each call, and copies
one expensively); for longer messages hashlib's is the faster (OpenSSL uses the CPU's
SHA instructions). Both compute SHA-256: only the speed differs."""


def hmac_states(secret: bytes) -> tuple[Any, Any]:
    """Precomputed HMAC-SHA256 inner and outer states for ``secret``.

    The inner state has also absorbed the token tag. Per product the token is then
    ``outer.copy().update(inner.copy().update(gtin14 + serial).digest()).digest()[:16]``,
    about twice as fast as ``hmac.digest`` (which re-fetches the digest every call).
    """
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"an issuer secret has at least {MIN_SECRET_BYTES} bytes")
    key = hashlib.sha256(secret).digest() if len(secret) > _BLOCK else secret
    key = key.ljust(_BLOCK, b"\x00")
    # Copied once a product and given one block each: the short-message constructor.
    inner = short_sha256(bytes(b ^ 0x36 for b in key))
    outer = short_sha256(bytes(b ^ 0x5C for b in key))
    inner.update(TOKEN_TAG)
    return inner, outer


def make_token(secret: bytes, gtin14: str, serial: str) -> bytes:
    """The raw 16-byte token of one product (the reference path, via the stdlib hmac)."""
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"an issuer secret has at least {MIN_SECRET_BYTES} bytes")
    return hmac.digest(secret, token_message(gtin14, serial), "sha256")[:TOKEN_BYTES]


def format_token(token: bytes) -> str:
    """Printed form of a raw token: 22 characters of unpadded base64url."""
    if len(token) != TOKEN_BYTES:
        raise ValueError(f"a token is {TOKEN_BYTES} bytes")
    return base64.urlsafe_b64encode(token).decode("ascii").rstrip("=")


def parse_token(text: str) -> bytes:
    """Raw bytes of a printed token. Raises ValueError unless ``text`` is canonical."""
    if not isinstance(text, str) or not _TOKEN_TEXT.fullmatch(text):
        raise ValueError("a token is 22 characters of base64url (A-Z a-z 0-9 - _)")
    if text[-1] not in _CANONICAL_LAST:
        raise ValueError("a token's last character has stray bits (not canonical base64url)")
    try:
        return base64.urlsafe_b64decode(text + "==")
    except binascii.Error as exc:  # pragma: no cover - the pattern already rules this out
        raise ValueError("a token is not valid base64url") from exc


def tokens_equal(a: bytes, b: bytes) -> bool:
    """Constant-time comparison of two raw tokens."""
    return hmac.compare_digest(a, b)
