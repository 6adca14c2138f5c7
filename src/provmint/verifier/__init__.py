"""The browser verifier: one static HTML page (``verify.html``, shipped with the package)
that checks a ``provmint-proof/1`` document with WebCrypto, as ``provmint verify`` does.

The page's script and style are inline and fixed; what varies per brand (the default
node, the expected issuer, the confirmations) is a JSON data block, which is never run.
So the Content-Security-Policy can name the script and style by their SHA-256
(``script-src 'sha256-...'``, never ``'unsafe-inline'``), computed here once.

``provmint serve`` answers ``GET /verify`` with :func:`verifier_page`;
``provmint verifier-page -o verify.html`` writes it for a brand to host anywhere. The
shipped file is exactly ``verifier_page()`` (no defaults): a test keeps it so.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
from dataclasses import dataclass
from importlib import resources

from provmint.config import MAX_PUBLIC_NODE_URL, check_issuer_address, check_public_node_url
from provmint.errors import ConfigError

__all__ = [
    "MAX_RPC_URL",
    "VerifierPage",
    "check_issuer",
    "check_rpc_url",
    "content_security_policy",
    "verifier_page",
]

MAX_RPC_URL = MAX_PUBLIC_NODE_URL
"""The longest node URL a page accepts as its default."""

_LOCAL_NODES = "http://localhost:* http://127.0.0.1:*"
"""Plain-HTTP nodes the page may always reach: a node on the user's own computer."""

_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)
_STYLE = re.compile(r"<style>(.*?)</style>", re.S)
_META = re.compile(r'(<meta http-equiv="Content-Security-Policy" content=")[^"]*(">)')
_CONFIG = re.compile(r'(<script type="application/json" id="provmint-config">)[^<]*(</script>)')


@dataclass(frozen=True, slots=True)
class VerifierPage:
    """The verifier page as served or written, and the policy to send with it."""

    html: str
    policy: str
    """The Content-Security-Policy header: the page's own ``<meta>`` policy plus
    ``frame-ancestors 'none'`` (which only a header can carry)."""


@functools.cache
def _template() -> str:
    return (resources.files("provmint") / "verifier" / "verify.html").read_text("utf-8")


def _digest(pattern: re.Pattern[str], text: str) -> str:
    """The CSP hash source of an inline element's text, ``'sha256-<base64>'``."""
    found = pattern.search(text)
    if found is None:  # pragma: no cover - the shipped file has both
        raise RuntimeError("the verifier page has no inline script or style")
    digest = hashlib.sha256(found.group(1).encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


def check_rpc_url(url: str) -> str:
    """A node URL fit to be a page's default, as given (:func:`check_public_node_url`)."""
    return check_public_node_url(url, "--rpc")


def check_issuer(issuer: str) -> str:
    """An issuer address (``0x`` and 40 hex digits), as given; ConfigError otherwise."""
    return check_issuer_address(issuer, "--issuer")


@functools.cache
def content_security_policy() -> str:
    """The page's policy: its own script and style only (by hash), images inline, and
    requests to its own origin (a ``?proof=`` link), to any https node and to a node on
    this computer: the node is the user's choice, and the page sends it nothing but the
    proof's transaction hash. No forms to elsewhere, no base URL, no plugins."""
    page = _template()
    return (
        f"default-src 'none'; script-src {_digest(_SCRIPT, page)}; "
        f"style-src {_digest(_STYLE, page)}; img-src data:; "
        f"connect-src 'self' https: {_LOCAL_NODES}; base-uri 'none'; form-action 'none'"
    )


def _config_json(rpc_url: str | None, issuer: str | None, confirmations: int) -> str:
    config: dict[str, object] = {}
    if rpc_url:
        config["rpc_url"] = check_rpc_url(rpc_url)
    if issuer:
        config["issuer"] = check_issuer(issuer)
    if confirmations != 1:
        if not 1 <= confirmations <= 1_000_000:
            raise ConfigError("--confirmations must be between 1 and 1000000")
        config["confirmations"] = confirmations
    # Inside <script>: "<" escaped, so no value can close the element.
    return json.dumps(config, ensure_ascii=True).replace("<", "\\u003c")


def verifier_page(
    *, rpc_url: str | None = None, issuer: str | None = None, confirmations: int = 1
) -> VerifierPage:
    """The verifier page with these defaults (the user can change each in the page).
    Raises ConfigError for a node URL, issuer or confirmations a public page cannot
    carry (:func:`check_rpc_url`, :func:`check_issuer`)."""
    policy = content_security_policy()
    html = _META.sub(lambda m: m.group(1) + policy + m.group(2), _template(), count=1)
    config = _config_json(rpc_url, issuer, confirmations)
    html = _CONFIG.sub(lambda m: m.group(1) + config + m.group(2), html, count=1)
    return VerifierPage(html=html, policy=f"{policy}; frame-ancestors 'none'")
