"""Who may see the dashboard: whoever holds its token.

The token comes from a file (``--token-file``) or ``PROVMINT_DASHBOARD_TOKEN``; on the
loopback interface with neither, a random one is made for this run (and shown once to
whoever started it). Bound to any other address, the dashboard refuses to start
without one given.

A request shows the token in one of three ways:

- ``Authorization: Bearer TOKEN`` (scripts, Prometheus);
- ``?token=TOKEN`` on any page: a login. The answer sets a session cookie and sends the
  browser to the same page without the token in its address;
- the session cookie: an HMAC of a fixed text under the token, so the cookie is not the
  token, and changing the token ends every session.

Every comparison is of SHA-256 digests with :func:`hmac.compare_digest`: its time tells
nothing about the token, not even its length.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from provmint.errors import ConfigError

__all__ = [
    "COOKIE",
    "MIN_TOKEN_CHARS",
    "TOKEN_ENV",
    "DashboardToken",
    "is_loopback",
    "resolve_token",
]

TOKEN_ENV = "PROVMINT_DASHBOARD_TOKEN"
"""The environment variable a token may come from."""
COOKIE = "provmint_dashboard"
"""The session cookie's name."""
MIN_TOKEN_CHARS = 16
"""The shortest token accepted (a generated one has 43 characters: 256 random bits)."""
MAX_TOKEN_CHARS = 512
_SESSION_LABEL = b"provmint-dashboard-session/1"


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


@dataclass(frozen=True, slots=True)
class DashboardToken:
    """The dashboard's token, and where it came from (never in the repr)."""

    secret: bytes = field(repr=False)
    origin: str
    """``file PATH``, ``env PROVMINT_DASHBOARD_TOKEN`` or ``generated``."""

    @property
    def generated(self) -> bool:
        """Made for this run (to be shown once to whoever started it)."""
        return self.origin == "generated"

    @property
    def text(self) -> str:
        """The token itself (to show a generated one)."""
        return self.secret.decode("ascii")

    @property
    def session(self) -> str:
        """The session cookie's value."""
        return hmac.new(self.secret, _SESSION_LABEL, hashlib.sha256).hexdigest()

    def matches(self, given: str | bytes) -> bool:
        """Whether ``given`` is the token (constant time)."""
        raw = given.encode("utf-8", "surrogateescape") if isinstance(given, str) else given
        return hmac.compare_digest(_digest(raw), _digest(self.secret))

    def matches_session(self, given: str | bytes) -> bool:
        """Whether ``given`` is a session cookie of this token (constant time)."""
        raw = given.encode("utf-8", "surrogateescape") if isinstance(given, str) else given
        return hmac.compare_digest(_digest(raw), _digest(self.session.encode()))


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine only (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _checked(text: str, origin: str) -> DashboardToken:
    token = text.strip()
    if not MIN_TOKEN_CHARS <= len(token) <= MAX_TOKEN_CHARS:
        raise ConfigError(
            f"the dashboard token from {origin} must have {MIN_TOKEN_CHARS} to "
            f"{MAX_TOKEN_CHARS} characters, it has {len(token)}",
            hint="make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'",
        )
    if not (token.isascii() and token.isprintable()) or any(c.isspace() for c in token):
        raise ConfigError(
            f"the dashboard token from {origin} must be printable ASCII without spaces",
            hint="make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'",
        )
    return DashboardToken(token.encode("ascii"), origin)


def resolve_token(host: str, token_file: Path | None, env: Mapping[str, str]) -> DashboardToken:
    """The token: from ``token_file``, else ``PROVMINT_DASHBOARD_TOKEN`` in ``env``, else
    a new random one when ``host`` is a loopback address. Raises ConfigError (exit 2)
    when none is given for another address, or the one given is too short or not one
    line of printable ASCII."""
    if token_file is not None:
        try:
            text = token_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(f"cannot read the token file {token_file}: {reason}") from None
        return _checked(text, f"file {token_file}")
    if env.get(TOKEN_ENV):
        return _checked(env[TOKEN_ENV], f"env {TOKEN_ENV}")
    if not is_loopback(host):
        raise ConfigError(
            f"the dashboard listens on {host}, beyond this machine, and has no token",
            hint=f"give one with --token-file FILE or {TOKEN_ENV} (and serve it through a "
            "TLS proxy), or listen on 127.0.0.1",
        )
    return DashboardToken(secrets.token_urlsafe(32).encode("ascii"), "generated")
