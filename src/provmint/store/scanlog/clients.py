"""Who scanned a code, as the copy signal counts them: a *client*.

A client is the network prefix the request came from (IPv4 /24, IPv6 /48: a household
or an office, not one device) and its user agent, hashed with a salt that is random per
scan log (32 bytes, made with the log's tables and kept in them, so every replica
sharing a PostgreSQL log computes the same keys; never printed). Only the 16-byte key is
stored: neither the address nor the user agent is ever written to the log, and without
the salt a key cannot be tested against guessed addresses.

Known link-preview bots and crawlers (a link pasted into a chat is fetched by the chat's
servers, and by every crawler that finds it) are logged, but marked as not counted.

``provmint scan`` on the command line counts as one client per machine: its address is
``cli:`` and the host name, its user agent ``provmint scan`` (:func:`cli_client`).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import socket

__all__ = [
    "CLIENT_BYTES",
    "SALT_BYTES",
    "UNKNOWN_CLIENT",
    "ClientKeys",
    "cli_client",
    "client_key",
    "is_preview_bot",
    "network_prefix",
]

SALT_BYTES = 32
"""Length of a scan log's client salt."""
CLIENT_BYTES = 16
"""Length of a client key (HMAC-SHA256, truncated)."""
UNKNOWN_CLIENT = bytes(CLIENT_BYTES)
"""The client of scans logged without one: those written before schema 3, and any a
caller logs without saying who scanned. All of them count as one client."""

MAX_TEXT = 512
"""Characters of an address or user agent that are hashed (the service cuts headers to
this already)."""

# Substrings of the user agents of link-preview fetchers and crawlers (case-insensitive).
# Specific names only: a bare "bot" would also match phones (a CUBOT handset says so).
PREVIEW_BOTS = (
    "facebookexternalhit",
    "facebookcatalog",
    "facebot",
    "meta-externalagent",
    "slackbot",  # Slackbot, Slackbot-LinkExpanding
    "slack-imgproxy",
    "twitterbot",
    "whatsapp",
    "telegrambot",
    "discordbot",
    "linkedinbot",
    "skypeuripreview",  # Skype and Microsoft Teams
    "microsoftpreview",
    "googlebot",
    "google-inspectiontool",
    "googleother",
    "adsbot-google",
    "mediapartners-google",
    "storebot-google",
    "feedfetcher-google",
    "google-read-aloud",
    "bingbot",
    "bingpreview",
    "adidxbot",
    "applebot",
    "redditbot",
    "pinterestbot",
    "pinterest/0.",  # the pin crawler (the app's own browser says "Pinterest for")
    "embedly",
    "iframely",
    "vkshare",
    "kakaotalk-scrap",
    "mastodon",
    "bluesky cardyb",
    "yandexbot",
    "yandeximages",
    "duckduckbot",
    "duckassistbot",
    "baiduspider",
    "yeti/",
    "seznambot",
    "qwantify",
    "petalbot",
    "sogou web spider",
    "bytespider",
    "ia_archiver",
    "archive.org_bot",
    "gptbot",
    "chatgpt-user",
    "oai-searchbot",
    "claudebot",
    "claude-user",
    "perplexitybot",
    "amazonbot",
    "ccbot",
    "semrushbot",
    "ahrefsbot",
    "mj12bot",
    "dotbot",
    "dataforseobot",
    "slurp",
)
_BOTS = re.compile("|".join(re.escape(name) for name in PREVIEW_BOTS), re.IGNORECASE)


def is_preview_bot(user_agent: str | None) -> bool:
    """Whether ``user_agent`` is a known link-preview fetcher or crawler."""
    if not user_agent:
        return False
    return _BOTS.search(user_agent[:MAX_TEXT]) is not None


def network_prefix(address: str | None) -> str:
    """The network a client's address belongs to: ``203.0.113.0/24`` for IPv4 (and
    IPv4-mapped IPv6), ``2001:db8:1::/48`` for IPv6. Anything that is not an IP address
    (an empty peer, a Unix socket, ``cli:host``) is kept as given, to be hashed."""
    text = (address or "")[:MAX_TEXT].strip()
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])  # without an IPv6 zone
    except ValueError:
        return text
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    bits = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{bits}", strict=False))


def client_key(salt: bytes, address: str | None, user_agent: str | None) -> bytes:
    """The client of a scan: HMAC-SHA256(salt, prefix || 0 || user agent), truncated to
    :data:`CLIENT_BYTES`. Never raises, whatever the strings hold."""
    prefix = network_prefix(address).encode("utf-8", "surrogatepass")
    agent = (user_agent or "")[:MAX_TEXT].strip().encode("utf-8", "surrogatepass")
    return hmac.new(salt, prefix + b"\0" + agent, hashlib.sha256).digest()[:CLIENT_BYTES]


def cli_client() -> tuple[str, str]:
    """The address and user agent ``provmint scan`` logs its scans under: one client per
    machine."""
    return f"cli:{socket.gethostname()}", "provmint scan"


class ClientKeys:
    """Client keys with one scan log's salt, remembering the latest few thousand (a
    phone reloading a page asks for the same key again)."""

    CACHED = 4096

    def __init__(self, salt: bytes) -> None:
        if len(salt) < 16:
            raise ValueError("a client salt has at least 16 bytes")
        self._salt = salt
        self._cache: dict[tuple[str | None, str | None], tuple[bytes, bool]] = {}

    def __repr__(self) -> str:
        return "ClientKeys(salt='********')"

    def of(self, address: str | None, user_agent: str | None) -> tuple[bytes, bool]:
        """(client key, counted): counted is False for a link-preview bot or crawler.
        ``address`` None (and no user agent): the :data:`UNKNOWN_CLIENT`."""
        if address is None and user_agent is None:
            return UNKNOWN_CLIENT, True
        found = self._cache.get((address, user_agent))
        if found is None:
            found = (client_key(self._salt, address, user_agent), not is_preview_bot(user_agent))
            if len(self._cache) >= self.CACHED:
                self._cache.clear()
            self._cache[(address, user_agent)] = found
        return found
