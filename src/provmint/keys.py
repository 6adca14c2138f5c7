"""The issuer keyring: a private (0600) JSON file of HMAC secrets, one active at a time.

Format ``provmint-keyring/1``::

    {"format": "provmint-keyring/1",
     "keys": [{"id": "k-1a2b3c4d", "created_at": "2026-11-28T12:00:00Z",
               "status": "active" | "retired", "retired_at": null | "...",
               "secret": "<32 random bytes, base64url>"}]}

The key id is derived from the secret (``k-`` + 8 hex digits of a tagged SHA-256), so a
corrupted or edited secret is detected on load. Minting uses the active key; verifying
accepts every key in the file, so rotating never breaks printed labels. The file is
written atomically (temporary file, fsync, rename; through a symlink, the link's target)
and never inside a product store. A missing key file is "not found" (exit 7), like
every missing input file.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from provmint.config import Secret
from provmint.errors import KeyringError, MissingFileError, os_error
from provmint.outfile import write_output
from provmint.store.files import load_json
from provmint.tokens import MIN_SECRET_BYTES

__all__ = ["KEYRING_FORMAT", "IssuerKey", "Keyring", "init_keyring", "load_keyring", "rotate_key"]

KEYRING_FORMAT = "provmint-keyring/1"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def key_id_for(secret: bytes) -> str:
    """The public id of a secret: safe to print, store and put in manifests."""
    return "k-" + hashlib.sha256(b"provmint/key-id/v1\x00" + secret).hexdigest()[:8]


@dataclass(frozen=True, slots=True)
class IssuerKey:
    """One issuer key. ``secret`` never appears in repr or str."""

    id: str
    created_at: str
    status: str
    secret: Secret
    retired_at: str | None = None

    @property
    def active(self) -> bool:
        """Whether new tokens are minted with this key."""
        return self.status == "active"

    def to_json(self) -> dict[str, Any]:
        """The one JSON shape of a key (``docs/schemas/key.schema.json``): never the
        secret."""
        return {
            "id": self.id,
            "status": self.status,
            "created_at": self.created_at,
            "retired_at": self.retired_at,
        }


@dataclass(frozen=True, slots=True)
class Keyring:
    """All issuer keys of a key file, oldest first."""

    path: Path
    keys: tuple[IssuerKey, ...]

    @property
    def active(self) -> IssuerKey:
        """The key new tokens are minted with."""
        for key in self.keys:
            if key.active:
                return key
        raise KeyringError(f"{self.path}: no active key", hint="run: provmint keys rotate")

    def get(self, key_id: str) -> IssuerKey:
        """The key with this id; KeyringError if the file does not hold it."""
        for key in self.keys:
            if key.id == key_id:
                return key
        raise KeyringError(
            f"{self.path}: key {key_id} is not in this key file",
            hint="the batch was minted with another key file; point --key-file at it",
        )


def _encode(ring: list[IssuerKey]) -> bytes:
    doc = {
        "format": KEYRING_FORMAT,
        "keys": [
            {
                "id": k.id,
                "created_at": k.created_at,
                "status": k.status,
                "retired_at": k.retired_at,
                "secret": base64.urlsafe_b64encode(k.secret.reveal()).decode("ascii"),
            }
            for k in ring
        ],
    }
    return (json.dumps(doc, indent=2) + "\n").encode("utf-8")


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600, never world-readable even for
    a moment. Through a symlink the link's target is replaced and the link stays. Raises
    OutputError (exit 1) when the file cannot be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise os_error(exc, path.parent, action="creating") from exc
    write_output(path, data, private=True)


def _new_key() -> IssuerKey:
    secret = secrets.token_bytes(MIN_SECRET_BYTES)
    return IssuerKey(
        id=key_id_for(secret), created_at=_now(), status="active", secret=Secret(secret)
    )


def _parse_key(path: Path, entry: Any) -> IssuerKey:
    if not isinstance(entry, dict):
        raise KeyringError(f"{path}: a key entry is not an object")
    try:
        secret = base64.urlsafe_b64decode(str(entry["secret"]).encode("ascii"))
        key = IssuerKey(
            id=str(entry["id"]),
            created_at=str(entry["created_at"]),
            status=str(entry["status"]),
            retired_at=None if entry.get("retired_at") is None else str(entry["retired_at"]),
            secret=Secret(secret),
        )
    except (KeyError, binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise KeyringError(f"{path}: malformed key entry ({exc.__class__.__name__})") from exc
    if len(secret) < MIN_SECRET_BYTES:
        raise KeyringError(f"{path}: key {key.id} is shorter than {MIN_SECRET_BYTES} bytes")
    if key_id_for(secret) != key.id:
        raise KeyringError(f"{path}: key {key.id} does not match its secret (file damaged?)")
    if key.status not in ("active", "retired"):
        raise KeyringError(f"{path}: key {key.id} has unknown status {key.status!r}")
    return key


def load_keyring(path: Path) -> Keyring:
    """Read and check a key file. Raises KeyringError with the command to fix it."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise MissingFileError(
            path,
            "issuer key file",
            hint="create one with: provmint keys init"
            + ("" if path == Path() else f" --key-file {path}"),
        ) from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyringError(
            f"{path}: key file is readable by other users (mode {stat.S_IMODE(info.st_mode):o})",
            hint=f"run: chmod 600 {path}",
        )
    try:
        doc = load_json(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise KeyringError(f"{path}: not a readable provmint key file") from exc
    if not isinstance(doc, dict) or doc.get("format") != KEYRING_FORMAT:
        raise KeyringError(f"{path}: not a {KEYRING_FORMAT} key file")
    entries = doc.get("keys")
    if not isinstance(entries, list) or not entries:
        raise KeyringError(f"{path}: key file holds no keys")
    keys = tuple(_parse_key(path, e) for e in entries)
    if sum(k.active for k in keys) != 1:
        raise KeyringError(f"{path}: key file must have exactly one active key")
    return Keyring(path=path, keys=keys)


def init_keyring(path: Path, *, exist_ok: bool = False) -> IssuerKey:
    """Create a key file with one fresh active key, and return that key. Never
    overwrites an existing file: that is a KeyringError, unless ``exist_ok``, which
    returns the existing file's active key instead (a script can run again)."""
    if path.exists():
        if exist_ok:
            return load_keyring(path).active
        raise KeyringError(
            f"a key file already exists at {path}",
            hint="provmint never overwrites keys; use: provmint keys rotate",
        )
    key = _new_key()
    _write_private(path, _encode([key]))
    return key


def rotate_key(path: Path) -> tuple[IssuerKey, IssuerKey]:
    """Retire the active key and make a new one active. Returns ``(new, retired)``.

    Old keys stay in the file so tokens minted with them keep verifying.
    """
    ring = load_keyring(path)
    old = ring.active
    now = _now()
    retired = IssuerKey(
        id=old.id, created_at=old.created_at, status="retired", secret=old.secret, retired_at=now
    )
    new = _new_key()
    keys = [retired if k.id == old.id else k for k in ring.keys] + [new]
    _write_private(path, _encode(keys))
    return new, retired
