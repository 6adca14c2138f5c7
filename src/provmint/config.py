"""Settings, resolved once: command-line flags > ``PROVMINT_*`` environment > config file >
defaults. This is the only module that reads the environment.

The config file is TOML, at ``$PROVMINT_CONFIG`` or ``$XDG_CONFIG_HOME/provmint/config.toml``
(``~/.config/provmint/config.toml``)::

    store = "/srv/provmint/store"
    key_file = "/etc/provmint/issuer-keys.json"
    url_base = "https://id.example-brand.com"
    workers = 2
    lock_timeout = 60
    scan_log = "postgresql://provmint@db.example.com/provmint"   # default: <store>/scans.sqlite

Secrets never live in the config file: the issuer key has its own 0600 key file (and a
PostgreSQL password belongs in ``~/.pgpass`` or ``PGPASSWORD``, not in ``scan_log``).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from provmint.errors import ConfigError, MissingFileError, PlaceholderBaseError

__all__ = [
    "DEFAULT_LOCK_TIMEOUT",
    "DEFAULT_URL_BASE",
    "PG_SCHEMES",
    "BrandSettings",
    "ChainSettings",
    "CopySignalSettings",
    "Origin",
    "Secret",
    "ServeSettings",
    "Settings",
    "check_scan_log_url",
    "checked_age",
    "contrast_ratio",
    "default_config_file",
    "explain_settings",
    "is_placeholder",
    "output_url_base",
    "redact",
    "resolve_chain",
    "resolve_settings",
]

DEFAULT_URL_BASE = "https://id.example.com"
"""Placeholder verification domain (RFC 2606 reserves example.com); set your own."""
EXAMPLE_BASE = "https://id.your-brand.com"
"""The base shown in messages that say how to set one."""
DEFAULT_LOCK_TIMEOUT = 60.0
"""Seconds a command waits for another provmint process to release the store."""

_KNOWN_KEYS = {
    "store",
    "key_file",
    "url_base",
    "workers",
    "lock_timeout",
    "chain",
    "scan_log",
    "brand",
    "serve",
    "copy_signal",
}
_CHAIN_KEYS = {
    "rpc_url",
    "chain_id",
    "confirmations",
    "method",
    "registry",
    "poa",
    "max_fee_gwei",
    "max_spend_eth",
    "keystore",
    "receipt_timeout",
}


class Secret:
    """A secret value whose repr and str never show it."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        self._value = value

    def reveal(self) -> bytes:
        """The secret itself; call only where it is used."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("secrets are not pickled")


# -- [brand]: how the public page presents the brand ----------------------------------


DEFAULT_BRAND_COLOUR = "#24292f"
"""The page's accent when ``[brand] colour`` is not set (a near-black, 14.7:1 on white)."""
MAX_LOGO_BYTES = 256 * 1024
"""The largest logo file accepted: it is held in memory by every serving process."""
MIN_CONTRAST = 4.5
"""WCAG AA's least contrast ratio for normal text."""
_BRAND_KEYS = (
    "name",
    "logo",
    "contact",
    "colour",
    "product_name",
    "explorer",
    "verifier_rpc",
    "issuer",
)
_HEX_COLOUR = re.compile(r"#[0-9a-fA-F]{6}")
_EMAIL = re.compile(r"[A-Za-z0-9._+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})+")
"""An address a mailto: link can carry as is (no characters that would need escaping)."""
_COLUMN = re.compile(r"[a-z][a-z0-9_]{0,63}")
_URL_UNSAFE = re.compile(r"[\s\"'<>\\^`{|}]")
_SVG_ACTIVE = re.compile(rb"<script|<foreignobject|\son[a-z]+\s*=|javascript:", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class BrandSettings:
    """The ``[brand]`` table: how the public verification page presents the brand.

    Every value is optional. The logo is read (and checked) when the settings are
    resolved, so that the service serves it itself and the page loads nothing from
    elsewhere."""

    name: str | None = None
    """The brand's name, at the top of the page (None: no name shown)."""
    logo: Path | None = None
    """The logo file given (PNG, SVG, JPEG or WebP, at most :data:`MAX_LOGO_BYTES`)."""
    logo_type: str | None = None
    """The logo's media type, from its content."""
    logo_data: bytes = field(default=b"", repr=False)
    """The logo's bytes."""
    contact: str | None = None
    """Where a consumer reports a product: ``mailto:ADDRESS`` or an https URL of a report
    form (where ``{code}`` is replaced by the scanned code's path, percent-encoded)."""
    colour: str = DEFAULT_BRAND_COLOUR
    """The accent colour, ``#rrggbb`` in lower case, readable on white and under white
    text (contrast at least :data:`MIN_CONTRAST`)."""
    product_name: str = "product_name"
    """The record column shown as the page's headline."""
    explorer: str | None = None
    """A block explorer's https transaction URL with ``{tx}`` where the hash goes."""
    verifier_rpc: str | None = None
    """The node the browser verifier (``/verify``) offers by default: a public JSON-RPC
    URL that anyone may read (never the service's own, which may hold a key)."""
    issuer: str | None = None
    """The brand's issuer address (its chain key's), which ``/verify`` expects by
    default of an anchor."""


def contrast_ratio(first: str, second: str) -> float:
    """The WCAG 2 contrast ratio of two ``#rrggbb`` colours (1 to 21)."""

    def luminance(colour: str) -> float:
        channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
        r, g, b = (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    light, dark = sorted((luminance(first), luminance(second)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def _brand_text(value: Any, source: str, limit: int) -> str:
    """A one-line text setting of at most ``limit`` characters."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{source} must be a non-empty string, got {value!r}")
    text = value.strip()
    if len(text) > limit or any(ord(c) < 32 or 127 <= ord(c) < 160 for c in text):
        raise ConfigError(f"{source} must be one line of at most {limit} characters")
    return text


def _logo_type(data: bytes) -> str | None:
    """The media type of a logo file, from its first bytes (None: not one we serve)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if b"<svg" in data[:4096].lower():
        return "image/svg+xml"
    return None


def _brand_logo(value: Any, source: str) -> tuple[Path, str, bytes]:
    """The logo file: its path, media type and bytes. A URL is refused: the page must
    not load anything from another site (it would learn who scans what, and could
    change the brand's page)."""
    text = _brand_text(value, source, 4096)
    if "://" in text or text.lower().startswith(("http:", "https:", "data:", "//")):
        raise ConfigError(
            f"{source} must be the path of an image file, not a URL: the page loads "
            "nothing from elsewhere",
            hint="download the logo and give its path; the service serves it itself",
        )
    path = Path(text).expanduser()
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_LOGO_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read {path}: {exc.strerror}") from exc
    if len(data) > MAX_LOGO_BYTES:
        raise ConfigError(f"{source}: {path} is larger than {MAX_LOGO_BYTES // 1024} KiB")
    media_type = _logo_type(data)
    if media_type is None:
        raise ConfigError(f"{source}: {path} is not a PNG, SVG, JPEG or WebP image")
    if media_type == "image/svg+xml" and _SVG_ACTIVE.search(data):
        raise ConfigError(f"{source}: {path} holds scripts or event handlers; use a plain SVG")
    return path, media_type, data


def _brand_contact(value: Any, source: str) -> str:
    """``mailto:ADDRESS`` for an e-mail address, or the https URL of a report form."""
    text = _brand_text(value, source, 2000)
    address = text.removeprefix("mailto:")
    if _EMAIL.fullmatch(address):
        return "mailto:" + address
    if not _https_url(text.replace("{code}", "")):
        raise ConfigError(
            f"{source} must be an e-mail address or an https URL of a report form, got {text!r}"
        )
    return text


def _https_url(text: str) -> bool:
    """Whether ``text`` is an https URL with a host and nothing a link would need escaped."""
    try:
        parts = urlsplit(text)
        host = parts.hostname
    except ValueError:  # a malformed [IPv6] host or port
        return False
    return parts.scheme == "https" and bool(host) and not _URL_UNSAFE.search(text)


def _brand_colour(value: Any, source: str) -> str:
    """``#rrggbb``, lower case, with at least :data:`MIN_CONTRAST` against white (the page
    puts it behind white text and as text on white)."""
    if not isinstance(value, str) or not _HEX_COLOUR.fullmatch(value.strip()):
        raise ConfigError(f"{source} must be a colour written #rrggbb, got {value!r}")
    colour = value.strip().lower()
    ratio = contrast_ratio(colour, "#ffffff")
    if ratio < MIN_CONTRAST:
        raise ConfigError(
            f"{source}: {colour} against white has a contrast ratio of {ratio:.2f}:1, below "
            f"the {MIN_CONTRAST}:1 that text needs to be readable (WCAG AA)",
            hint="choose a darker shade of the colour",
        )
    return colour


def _brand_column(value: Any, source: str) -> str:
    """A record column's name as provmint stores it (lower case, digits, underscores)."""
    if not isinstance(value, str) or not _COLUMN.fullmatch(value):
        raise ConfigError(
            f"{source} must be a column name in lower case (like product_name), got {value!r}"
        )
    return value


def _brand_explorer(value: Any, source: str) -> str:
    """A block explorer's transaction URL: https, with ``{tx}`` once and no other braces."""
    text = _brand_text(value, source, 2000)
    if text.count("{tx}") != 1 or not _https_url(text.replace("{tx}", "")):
        raise ConfigError(
            f"{source} must be an https URL with {{tx}} where the transaction hash goes, "
            f"got {text!r}",
            hint="for example https://etherscan.io/tx/{tx}",
        )
    return text


MAX_PUBLIC_NODE_URL = 2048
"""The longest node URL a public page holds."""
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


def check_public_node_url(url: str, source: str = "--rpc") -> str:
    """A node URL fit to be a public page's default, as given; ConfigError otherwise:
    https (or http to this computer), a host, no user or password (the page is public:
    whatever the URL holds, everyone reads), no quotes, spaces or control characters.
    ``source`` names the setting in errors."""
    if (
        not isinstance(url, str)
        or len(url) > MAX_PUBLIC_NODE_URL
        or re.search(r"[\s\"'<>\\`\x00-\x1f\x7f]", url)
    ):
        raise ConfigError(f"{source} {str(url)[:60]!r} is not a URL a page can hold")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        raise ConfigError(f"{source} {url[:60]!r} is not a URL: {exc}") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError(f"{source} {url[:60]!r} must be an https:// URL of a node")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            f"{source} must not hold a user name or password: the page is public",
            hint="give the page a node URL anyone may read",
        )
    if parts.scheme == "http" and parts.hostname not in ("localhost", "127.0.0.1"):
        raise ConfigError(
            f"{source} {url[:60]!r} is plain http to another computer",
            hint="use https (browsers block plain http from an https page)",
        )
    return url


def check_issuer_address(issuer: str, source: str = "--issuer") -> str:
    """An issuer address (``0x`` and 40 hex digits), as given; ConfigError otherwise."""
    if not isinstance(issuer, str) or not _ADDRESS.fullmatch(issuer):
        raise ConfigError(f"{source} {str(issuer)[:50]!r} is not an address (0x + 40 hex digits)")
    return issuer


def _brand(table: Mapping[str, Any], where: str) -> BrandSettings:
    """The ``[brand]`` table, checked (``where`` names it in errors)."""

    def pick(key: str, check: Callable[[Any, str], _T]) -> _T | None:
        return check(table[key], f"{where} {key}") if key in table else None

    logo = pick("logo", _brand_logo)
    return BrandSettings(
        name=pick("name", lambda value, source: _brand_text(value, source, 80)),
        logo=logo[0] if logo else None,
        logo_type=logo[1] if logo else None,
        logo_data=logo[2] if logo else b"",
        contact=pick("contact", _brand_contact),
        colour=pick("colour", _brand_colour) or DEFAULT_BRAND_COLOUR,
        product_name=pick("product_name", _brand_column) or "product_name",
        explorer=pick("explorer", _brand_explorer),
        verifier_rpc=pick("verifier_rpc", check_public_node_url),
        issuer=pick("issuer", check_issuer_address),
    )


# -- [serve]: the public service's edges (rate limit, proxies, limits, timeouts) -------


@dataclass(frozen=True, slots=True)
class ServeSettings:
    """The ``[serve]`` table: limits and timeouts of the public service (each worker
    process applies them to its own connections). docs/DEPLOY.md says how to set them
    behind a TLS proxy."""

    trusted_proxies: tuple[str, ...] = ()
    """Networks (CIDR) of the proxies in front of the service: only from them is
    ``X-Forwarded-For`` believed, to find the client's address (none: every connection
    is the client's own)."""
    rate_limit: int = 60
    """Requests a client may make per ``rate_window`` (0: no limit); ``/healthz`` is not
    limited."""
    rate_window: float = 60.0
    """Seconds over which ``rate_limit`` requests are allowed."""
    rate_burst: int | None = None
    """Requests a client may make at once (None: ``rate_limit``)."""
    max_header_bytes: int = 8192
    """The largest size of a request's header fields, in bytes: 431 beyond."""
    max_headers: int = 64
    """The most header fields in a request: 431 beyond."""
    header_timeout: float = 10.0
    """Seconds a client has to send a whole request once it began it (or opened the
    connection): closed beyond."""
    keep_alive_timeout: int = 5
    """Seconds an idle kept-alive connection stays open."""
    limit_concurrency: int = 1000
    """Requests in progress in one worker beyond which new ones are answered 503 at
    once (0: no limit)."""
    check_host: bool = True
    """Answer a code asked for on another host than the service's as an unknown code
    (``Host``, or ``X-Forwarded-Host`` from a trusted proxy); never with the placeholder
    base, and never for ``/healthz``. The service's hosts are the url base's, those of
    every url base a batch was minted or its labels printed with, and ``hosts``."""
    hosts: tuple[str, ...] = ()
    """More host names codes may be asked on (lower case), such as a domain whose labels
    were printed elsewhere."""


_SERVE_KEYS = (
    "trusted_proxies",
    "rate_limit",
    "rate_window",
    "rate_burst",
    "max_header_bytes",
    "max_headers",
    "header_timeout",
    "keep_alive_timeout",
    "limit_concurrency",
    "check_host",
    "hosts",
)
_SERVE_BOUNDS: dict[str, tuple[type, float, float]] = {
    "rate_limit": (int, 0, 1_000_000),
    "rate_window": (float, 0.1, 86_400),
    "rate_burst": (int, 1, 1_000_000),
    "max_header_bytes": (int, 1024, 1_048_576),
    "max_headers": (int, 8, 1000),
    "header_timeout": (float, 0.5, 3600),
    "keep_alive_timeout": (int, 1, 3600),
    "limit_concurrency": (int, 0, 1_000_000),
}
"""Each numeric ``[serve]`` setting: whole number or seconds, and its bounds."""


def _serve_number(value: Any, source: str, kind: type, low: float, high: float) -> Any:
    """A TOML number within bounds: a whole number for ``int``, any number for ``float``
    (never a boolean or a string)."""
    whole = kind is int
    allowed = (int,) if whole else (int, float)
    if isinstance(value, bool) or not isinstance(value, allowed):
        noun = "a whole number" if whole else "a number of seconds"
        raise ConfigError(f"{source} must be {noun}, got {value!r}")
    if not low <= value <= high:
        low_text, high_text = (f"{int(b)}" if b == int(b) else f"{b}" for b in (low, high))
        raise ConfigError(f"{source} must be between {low_text} and {high_text}, got {value!r}")
    return kind(value)


_HOST_NAME = re.compile(
    r"(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*"
)
"""A DNS name in lower case: dot-separated labels of letters, digits and inner hyphens."""


def _string_list(value: Any, source: str, what: str, example: str) -> list[str]:
    """A setting that is one string or a list of strings, as a list (``what`` names the
    items in the error, ``example`` is its hint)."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise ConfigError(
            f"{source} must be a list of {what}, got {value!r}", hint=f"for example {example}"
        )
    return items


def _host_names(value: Any, source: str) -> tuple[str, ...]:
    """Host names (a DNS name or an IP address, no scheme, port or path), lower case."""
    import ipaddress

    items = _string_list(
        value, source, "host names", 'hosts = ["id.brand.com", "verify.brand.com"]'
    )
    names = []
    for item in items:
        name = item.strip().lower().rstrip(".")
        try:
            name = str(ipaddress.ip_address(name))
        except ValueError:
            if not _HOST_NAME.fullmatch(name):
                raise ConfigError(
                    f"{source}: {item[:80]!r} is not a host name",
                    hint="a name only, without https://, port or path: id.brand.com",
                ) from None
        names.append(name)
    return tuple(dict.fromkeys(names))


def _trusted_proxies(value: Any, source: str) -> tuple[str, ...]:
    """The proxies' networks, canonical (``10.0.0.0/8``; a bare address is its /32 or
    /128). A network with host bits set is refused: it is probably a typo."""
    import ipaddress

    items = _string_list(
        value, source, "networks", 'trusted_proxies = ["127.0.0.1/32", "10.0.0.0/8"]'
    )
    networks = []
    for item in items:
        try:
            networks.append(str(ipaddress.ip_network(item.strip())))
        except ValueError as exc:
            raise ConfigError(
                f"{source}: {item!r} is not a network ({exc})",
                hint="write a network as an address and prefix length, as 10.0.0.0/8",
            ) from None
    return tuple(dict.fromkeys(networks))


def _serve(table: Mapping[str, Any], where: str) -> ServeSettings:
    """The ``[serve]`` table, checked (``where`` names it in errors)."""
    values: dict[str, Any] = {
        key: _serve_number(table[key], f"{where} {key}", *bounds)
        for key, bounds in _SERVE_BOUNDS.items()
        if key in table
    }
    if "trusted_proxies" in table:
        values["trusted_proxies"] = _trusted_proxies(
            table["trusted_proxies"], f"{where} trusted_proxies"
        )
    if "check_host" in table:
        if not isinstance(table["check_host"], bool):
            raise ConfigError(f"{where} check_host must be true or false")
        values["check_host"] = table["check_host"]
    if "hosts" in table:
        values["hosts"] = _host_names(table["hosts"], f"{where} hosts")
    return ServeSettings(**values)


# -- [copy_signal]: when a genuine code looks copied ------------------------------------


MAX_AGE = timedelta(days=100 * 366)
"""The longest age a setting or option accepts (a copy-signal window, a retention)."""
_AGE = re.compile(r"([0-9]{1,6})([hdw])")
_AGE_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
_COPY_SIGNAL_KEYS = ("window", "max_clients", "max_places")


def read_age(text: str) -> timedelta | None:
    """An age written as a whole number and a unit, ``12h``, ``7d`` or ``52w`` (hours,
    days, weeks); None when ``text`` is not one. Callers check the bounds (more than 0, at
    most :data:`MAX_AGE`): ``[copy_signal] window`` here, ``scans prune --older-than``."""
    found = _AGE.fullmatch(text.strip())
    if found is None:
        return None
    return int(found.group(1)) * _AGE_UNITS[found.group(2)]


@dataclass(frozen=True, slots=True)
class CopySignalSettings:
    """The ``[copy_signal]`` table: when a genuine code is flagged as a possible copy.

    Within ``window`` (until the operator clears the code, ``provmint scans clear``), a
    genuine code is suspect when more than ``max_clients`` distinct clients saw it, or
    when it was seen from more than ``max_places`` distinct places given by more than
    ``max_places`` distinct clients. A client is a salted hash of the network prefix and
    the user agent; repeated loads by one client count once, and known link-preview bots
    and crawlers not at all (see :mod:`provmint.store.scanlog.clients`)."""

    window: timedelta = timedelta(days=7)
    """How long a scan counts as evidence: older ones stop counting, so a flag clears
    itself once its evidence is older than this."""
    max_clients: int = 5
    """More distinct clients than this within the window flag the code."""
    max_places: int = 1
    """More distinct places than this, given by more distinct clients than this, within
    the window flag the code (1: two places from two clients)."""


def checked_age(value: Any, source: str) -> timedelta:
    """An age such as ``365d``, ``12h`` or ``52w`` (hours, days, weeks: the grammar of
    :func:`read_age`), more than 0 and at most 100 years. Raises ConfigError (exit 2)
    naming ``source``: an option (``--older-than``) or a file's setting (``PATH
    [copy_signal] window``), where the age is a quoted string."""
    age = read_age(value) if isinstance(value, str) else None
    if age is None:
        raise ConfigError(
            f"{source} {value!r} is not an age",
            hint="write a whole number and a unit: h (hours), d (days) or w (weeks), as in "
            '365d, 12h or 52w (in a config file, in quotes: window = "7d")',
        )
    if not timedelta(0) < age <= MAX_AGE:
        raise ConfigError(f"{source} {value!r} must be more than 0 and at most 100 years")
    return age


MAX_THRESHOLD = 10_000
"""The highest copy-signal threshold: the scan log keeps a code's latest ``threshold + 1``
clients in the code's row, rewritten with each of its scans."""


def _count(value: Any, source: str) -> int:
    """A whole number from 1 to :data:`MAX_THRESHOLD` (a TOML integer, not a float or a
    boolean)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_THRESHOLD:
        raise ConfigError(
            f"{source} must be a whole number from 1 to {MAX_THRESHOLD}, got {value!r}"
        )
    return value


def _copy_signal(table: Mapping[str, Any], where: str) -> CopySignalSettings:
    """The ``[copy_signal]`` table, checked (``where`` names it in errors)."""
    defaults = CopySignalSettings()
    return CopySignalSettings(
        window=checked_age(table["window"], f"{where} window")
        if "window" in table
        else defaults.window,
        max_clients=_count(table["max_clients"], f"{where} max_clients")
        if "max_clients" in table
        else defaults.max_clients,
        max_places=_count(table["max_places"], f"{where} max_places")
        if "max_places" in table
        else defaults.max_places,
    )


# -- Settings ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Settings:
    """Resolved settings for one provmint invocation."""

    store: Path
    key_file: Path
    url_base: str = DEFAULT_URL_BASE
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    config_file: Path | None = None
    scan_log: str | None = field(default=None, repr=False)
    """Where scans are logged: a ``postgresql://`` URL, ``sqlite:/path``, or None for
    ``<store>/scans.sqlite``. Not in the repr: a URL may carry a password."""
    brand: BrandSettings = field(default_factory=BrandSettings)
    serve: ServeSettings = field(default_factory=ServeSettings)
    copy_signal: CopySignalSettings = field(default_factory=CopySignalSettings)


def _xdg(env: Mapping[str, str], var: str, fallback: str) -> Path:
    base = env.get(var) or str(Path(env.get("HOME", str(Path.home()))) / fallback)
    return Path(base)


def _config_dir(env: Mapping[str, str]) -> Path:
    """``$XDG_CONFIG_HOME/provmint``: the config file and, by default, the issuer key."""
    return _xdg(env, "XDG_CONFIG_HOME", ".config") / "provmint"


def _data_dir(env: Mapping[str, str]) -> Path:
    """``$XDG_DATA_HOME/provmint``: the default store's parent."""
    return _xdg(env, "XDG_DATA_HOME", ".local/share") / "provmint"


def default_config_file(env: Mapping[str, str] | None = None) -> Path:
    """Where the config file is looked for."""
    env = os.environ if env is None else env
    if env.get("PROVMINT_CONFIG"):
        return Path(env["PROVMINT_CONFIG"]).expanduser()
    return _config_dir(env) / "config.toml"


@dataclass(frozen=True, slots=True)
class _ConfigFile:
    """The config file as read: where it is (named in error messages) and its tables."""

    path: Path
    data: dict[str, Any]


def _read_config(config_file: Path | str | None, env: Mapping[str, str]) -> _ConfigFile:
    """The config file named by ``config_file`` or ``PROVMINT_CONFIG``, else the default
    one. A named file must exist (a typo would silently drop every setting); the default
    one may be missing, and then reads as empty."""
    explicit = config_file is not None or bool(env.get("PROVMINT_CONFIG"))
    path = Path(config_file).expanduser() if config_file else default_config_file(env)
    return _ConfigFile(path, _load_file(path, explicit))


_T = TypeVar("_T")
_D = TypeVar("_D")
_N = TypeVar("_N", bound=float)


@dataclass(frozen=True, slots=True)
class _Picked:
    """One setting's raw value from the highest layer that sets it, and that layer's name:
    a bad value's error says where to fix it."""

    value: Any
    source: str

    def checked(self, check: Callable[[Any, str], _T], default: _D) -> _T | _D:
        """``check(value, source)``, or ``default`` when no layer sets the value."""
        return default if self.value is None else check(self.value, self.source)


@dataclass(frozen=True, slots=True)
class _Layers:
    """The layers a setting is looked up in after its option, highest first: the
    environment, then one table of the config file (its top level for ``Settings``, a
    ``[chains.NAME]`` profile for ``ChainSettings``)."""

    env: Mapping[str, str]
    table: Mapping[str, Any]
    where: Callable[[str], str]
    """How an error names the table's ``key`` (the file, and the key or the profile)."""

    def pick(self, arg: Any, env_name: str | None, key: str) -> _Picked:
        """The option ``arg`` if given, else the variable ``env_name`` if set and not
        empty, else the table's ``key``; else None, from ``default``."""
        if arg is not None:
            return _Picked(arg, "option")
        if env_name and self.env.get(env_name):
            return _Picked(self.env[env_name], env_name)
        if key in self.table:
            return _Picked(self.table[key], self.where(key))
        return _Picked(None, "default")

    def number(self, arg: Any, rule: _Number[_N], default: _D) -> _N | _D:
        """A numeric setting that has no environment variable, checked against ``rule``."""
        return self.pick(arg, None, rule.name).checked(rule, default)


def _load_file(path: Path, explicit: bool) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if explicit:
            raise MissingFileError(
                path, "config file", hint="it is named by --config or PROVMINT_CONFIG"
            ) from None
        return {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    unknown = sorted(set(data) - _KNOWN_KEYS - {"chains"})
    chains = data.get("chains", {})
    if not isinstance(chains, dict) or not all(isinstance(v, dict) for v in chains.values()):
        raise ConfigError(f"{path}: [chains.NAME] sections must be tables")
    for name, profile in chains.items():
        bad = sorted(set(profile) - _CHAIN_KEYS)
        if bad:
            raise ConfigError(
                f"{path}: unknown setting {bad[0]!r} in [chains.{name}]",
                hint=f"known chain settings: {', '.join(sorted(_CHAIN_KEYS))}",
            )
    if unknown:
        raise ConfigError(
            f"{path}: unknown setting {unknown[0]!r}",
            hint=f"known settings: {', '.join(sorted(_KNOWN_KEYS))}",
        )
    for name, keys in _TABLE_KEYS.items():  # the settings that are tables
        if not isinstance(data.get(name, {}), dict):
            raise ConfigError(f"{path}: {name} must be a table ([{name}])")
        bad = sorted(set(data.get(name, {})) - set(keys))
        if bad:
            raise ConfigError(
                f"{path} [{name}]: unknown setting {bad[0]!r}",
                hint=f"known {name.replace('_', '-')} settings: {', '.join(keys)}",
            )
    return data


def _check_url_base(value: Any, source: str) -> str:
    """The verification URL base without its trailing slash; it is printed on every
    label, so a typo is refused here rather than minted into a batch."""
    text = str(value)
    parts = urlsplit(text)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError(f"{source}: url base {text!r} must be an http(s) URL with a host")
    if parts.query or parts.fragment:
        raise ConfigError(f"{source}: url base {text!r} must not have a query or fragment")
    return text.rstrip("/")


def is_placeholder(url_base: str) -> bool:
    """Whether ``url_base`` is the placeholder domain (no base was configured)."""
    return url_base.rstrip("/") == DEFAULT_URL_BASE


def output_url_base(settings: Settings, *, allow_placeholder: bool, command: str) -> str:
    """The verification URL base labels and label exports are produced with: the
    ``--url-base`` option, else ``PROVMINT_URL_BASE`` or the config file's ``url_base``
    (all resolved into ``settings``), else the placeholder, which is refused unless
    ``allow_placeholder``: codes printed with it would point nowhere. ``command`` is the
    command the refusal tells the user to run, with ``--url-base`` (for example
    ``provmint labels 20261128-4884 --out labels/``).

    Raises PlaceholderBaseError (exit 2)."""
    if is_placeholder(settings.url_base) and not allow_placeholder:
        raise PlaceholderBaseError(DEFAULT_URL_BASE, f"{command} --url-base {EXAMPLE_BASE}")
    return settings.url_base


def _path(value: Any, source: str) -> Path:
    """A path setting, ``~`` expanded: a non-empty string (an option may give a Path); the
    file could give a number or a table."""
    if isinstance(value, Path):
        return value.expanduser()
    if not isinstance(value, str) or not value or "\0" in value:
        raise ConfigError(f"{source}: must be a path (a non-empty string), got {value!r}")
    return Path(value).expanduser()


@dataclass(frozen=True, slots=True)
class _Number(Generic[_N]):
    """A numeric setting's rule: its name, type and bounds. Called with a raw value (a
    string from the environment, a TOML number, an option) and its source, it returns
    the number or raises ConfigError naming the setting and the source."""

    name: str
    kind: Callable[[Any], _N]
    low: float
    high: float
    noun: str = "a number"
    """What a value that does not parse is told it must be."""
    unit: str | None = None
    """When set, an out-of-range error names the unit instead of echoing the value."""

    def __call__(self, value: Any, source: str) -> _N:
        # TOML's true is not 1, and 2.5 workers is not 2: neither is coerced.
        fractional = isinstance(value, float) and self.kind is int and not value.is_integer()
        try:
            if isinstance(value, bool) or fractional:
                raise ValueError(value)
            number = self.kind(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"{source}: {self.name} must be {self.noun}, got {value!r}") from None
        if not self.low <= number <= self.high:
            tail = f" {self.unit}" if self.unit else f", got {number}"
            raise ConfigError(
                f"{source}: {self.name} must be between {self.low} and {self.high}{tail}"
            )
        return number


_WORKERS = _Number("workers", int, 1, 256, noun="a whole number")
_LOCK_TIMEOUT = _Number("lock_timeout", float, 0, 86400, unit="seconds")


PG_SCHEMES = ("postgresql://", "postgres://")
"""URL schemes of a PostgreSQL scan log."""


def redact(url: str) -> str:
    """``url`` without its password (in the authority or a ``password=`` parameter)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        netloc = f"{userinfo}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if k == "password" else v) for k, v in pairs])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def check_scan_log_url(value: str, source: str) -> str:
    """A ``scan_log`` setting made canonical: a PostgreSQL URL as given, or
    ``sqlite:/absolute/path``. Raises ConfigError naming ``source``."""
    text = value.strip()
    if text.startswith(PG_SCHEMES):
        if not urlsplit(text).path.strip("/") and "dbname=" not in text:
            raise ConfigError(
                f"{source}: the scan log URL {redact(text)!r} names no database",
                hint="for example postgresql://provmint@db.example.com/provmint",
            )
        return text
    if text.startswith("sqlite:"):
        raw = text[len("sqlite:") :]
        if raw.startswith("//"):  # sqlite:///abs/path, as SQLAlchemy writes it
            raw = raw[2:]
        if not raw:
            raise ConfigError(
                f"{source}: the scan log sqlite: needs a file, as in sqlite:/srv/scans.sqlite"
            )
        return "sqlite:" + str(Path(raw).expanduser().absolute())
    raise ConfigError(
        f"{source}: scan log {redact(text)!r} must be a postgresql:// URL or sqlite:PATH",
        hint="for example --scan-log postgresql://provmint@db.example.com/provmint",
    )


def _scan_log(value: Any, source: str) -> str:
    """The ``scan_log`` setting, canonical; the file could give a number or a table."""
    if not isinstance(value, str):
        raise ConfigError(f"{source}: scan_log must be a string, got {value!r}")
    return check_scan_log_url(value, source)


def _is_within(child: Path, parent: Path) -> bool:
    try:
        child.resolve().relative_to(parent.resolve())
    except ValueError:
        return False
    return True


def _refuse_key_in_store(key_path: Path, store_path: Path) -> None:
    """Stores are copied and shared whole; an issuer key inside one would travel along."""
    if _is_within(key_path, store_path):
        raise ConfigError(
            f"key file {key_path} is inside the product store {store_path}",
            hint="keep the issuer key outside the store: stores are copied and shared",
        )


_ENV = {
    "store": "PROVMINT_STORE",
    "key_file": "PROVMINT_KEY_FILE",
    "url_base": "PROVMINT_URL_BASE",
    "workers": "PROVMINT_WORKERS",
    "lock_timeout": "PROVMINT_LOCK_TIMEOUT",
    "scan_log": "PROVMINT_SCAN_LOG",
}
"""Each top-level setting's environment variable."""


def resolve_settings(
    *,
    store: Path | str | None = None,
    key_file: Path | str | None = None,
    url_base: str | None = None,
    workers: int | None = None,
    lock_timeout: float | None = None,
    config_file: Path | str | None = None,
    scan_log: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve every setting once: explicit argument, then environment, then file, then
    default. Raises ConfigError naming the source of a bad value."""
    env = os.environ if env is None else env
    config = _read_config(config_file, env)
    layers = _Layers(env, config.data, lambda key: f"{config.path} ({key})")
    store_path = layers.pick(store, _ENV["store"], "store").checked(_path, _data_dir(env) / "store")
    key_path = layers.pick(key_file, _ENV["key_file"], "key_file").checked(
        _path, _config_dir(env) / "keys.json"
    )
    _refuse_key_in_store(key_path, store_path)
    url = layers.pick(url_base, _ENV["url_base"], "url_base")
    n_workers = layers.pick(workers, _ENV["workers"], "workers")
    timeout = layers.pick(lock_timeout, _ENV["lock_timeout"], "lock_timeout")
    log = layers.pick(scan_log, _ENV["scan_log"], "scan_log")
    return Settings(
        store=store_path,
        key_file=key_path,
        url_base=url.checked(_check_url_base, DEFAULT_URL_BASE),
        workers=n_workers.checked(_WORKERS, os.cpu_count() or 1),
        lock_timeout=timeout.checked(_LOCK_TIMEOUT, DEFAULT_LOCK_TIMEOUT),
        config_file=config.path if config.path.exists() else None,
        scan_log=log.checked(_scan_log, None),
        brand=_brand(config.data.get("brand", {}), f"{config.path} [brand]"),
        serve=_serve(config.data.get("serve", {}), f"{config.path} [serve]"),
        copy_signal=_copy_signal(
            config.data.get("copy_signal", {}), f"{config.path} [copy_signal]"
        ),
    )


@dataclass(frozen=True, slots=True)
class Origin:
    """One setting as resolved: its name (``store``, ``serve.rate_limit``), its value
    (JSON-ready; a scan log URL without its password) and where it came from:
    ``option``, an environment variable's name, ``file``, or ``default``."""

    name: str
    value: Any
    source: str

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"name": self.name, "value": self.value, "source": self.source}


_TABLE_KEYS = {
    "brand": _BRAND_KEYS,
    "serve": _SERVE_KEYS,
    "copy_signal": _COPY_SIGNAL_KEYS,
}
"""The settings each table of the config file may hold (checked once, when the file is
read; listed by ``config show``)."""


def explain_settings(
    *,
    options: Mapping[str, Any] | None = None,
    config_file: Path | str | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[Settings, list[Origin]]:
    """The settings (as :func:`resolve_settings` resolves them from ``options``, the
    environment, the config file and the defaults) and, for each one, its value and
    where it came from (``provmint config show``). Raises what resolving raises."""
    env = os.environ if env is None else env
    options = dict(options or {})
    settings = resolve_settings(**options, config_file=config_file, env=env)
    data = _read_config(config_file, env).data
    layers = _Layers(env, data, lambda key: "file")
    origins = [
        Origin(
            name, _shown(getattr(settings, name)), layers.pick(options.get(name), var, name).source
        )
        for name, var in _ENV.items()
    ]
    for table, keys in _TABLE_KEYS.items():
        given = data.get(table, {})
        values = getattr(settings, table)
        for key in keys:
            source = "file" if key in given else "default"
            origins.append(Origin(f"{table}.{key}", _shown(getattr(values, key)), source))
    return settings, origins


def _shown(value: Any) -> Any:
    """A setting's value as ``config show`` prints it (never a password)."""
    if isinstance(value, str) and value.startswith(PG_SCHEMES):
        return redact(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, timedelta):  # as the file writes an age: "7d", "12h"
        seconds = int(value.total_seconds())
        return f"{seconds // 86400}d" if seconds % 86400 == 0 else f"{seconds // 3600}h"
    if isinstance(value, tuple):
        return [_shown(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class ChainSettings:
    """Where and how to anchor: resolved from flags, ``PROVMINT_*`` environment and a
    ``[chains.NAME]`` profile of the config file. Secrets are masked in the repr."""

    profile: str | None
    rpc_url: str | None = field(repr=False)
    chain_id: int | None = None
    confirmations: int = 1
    method: str = "calldata"
    registry: str | None = None
    poa: bool = False
    max_fee_gwei: float | None = None
    max_spend_eth: float | None = None
    receipt_timeout: float = 120.0
    keystore: Path | None = None
    keystore_password: Secret | None = None
    chain_key: Secret | None = None


_CHAIN_ID = _Number("chain_id", int, 1, 2**63 - 1)
_CONFIRMATIONS = _Number("confirmations", int, 1, 10_000)
_MAX_FEE_GWEI = _Number("max_fee_gwei", float, 0, 1e9)
_MAX_SPEND_ETH = _Number("max_spend_eth", float, 0, 1e9)
_RECEIPT_TIMEOUT = _Number("receipt_timeout", float, 1, 86_400)


@dataclass(frozen=True, slots=True)
class _Profile:
    """The ``[chains.NAME]`` profile in use (empty when none is named), and how errors
    name it."""

    name: str | None
    values: dict[str, Any]
    where: str


def _chain_profile(chain: str | None, config: _ConfigFile, env: Mapping[str, str]) -> _Profile:
    """The profile named by the ``chain`` flag, else ``PROVMINT_CHAIN``, else the file's
    top-level ``chain``. A name the file lacks is refused rather than ignored, so that a
    typo does not fall back to the defaults unnoticed."""
    name = chain or env.get("PROVMINT_CHAIN") or config.data.get("chain")
    profiles = config.data.get("chains", {})
    if name is not None and name not in profiles:
        known = ", ".join(sorted(profiles)) or "none"
        raise ConfigError(f"no chain profile {name!r} in {config.path} (profiles: {known})")
    values: dict[str, Any] = dict(profiles.get(name, {})) if name else {}
    where = f"{config.path} [chains.{name}]" if name else "default"
    return _Profile(name, values, where)


def _rpc_url(value: Any, source: str) -> str:
    """The node's URL. The error shows neither the URL nor its source: a node URL often
    carries an API key (``ChainSettings`` keeps it out of its repr too)."""
    text = str(value)
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("the RPC URL must be an http(s) URL")
    return text


def _method(value: Any, source: str) -> str:
    """How batches are anchored: in a transaction's calldata or through a registry."""
    if value not in ("calldata", "registry"):
        raise ConfigError(f"{source}: method must be calldata or registry, got {value!r}")
    return str(value)


def _registry(value: Any, source: str) -> str:
    """The registry contract's address, checked for shape before any transaction."""
    text = str(value)
    if not re.fullmatch(r"0x[0-9a-fA-F]{40}", text):
        raise ConfigError(f"{source}: registry must be a contract address (0x + 40 hex)")
    return text


def _poa(value: Any, source: str) -> bool:
    """Whether the chain is proof-of-authority; TOML's true or false only, not a string."""
    if not isinstance(value, bool):
        raise ConfigError(f"{source}: poa must be true or false")
    return value


def _keystore(value: Any, source: str) -> Path:
    """The encrypted keystore's path, ``~`` expanded."""
    return _path(value, source)


def _secret(env: Mapping[str, str], name: str) -> Secret | None:
    """A secret from the environment only (never the config file), masked from here on."""
    value = env.get(name)
    return None if value is None else Secret(value.encode())


def resolve_chain(
    *,
    chain: str | None = None,
    rpc_url: str | None = None,
    chain_id: int | None = None,
    method: str | None = None,
    registry: str | None = None,
    confirmations: int | None = None,
    max_fee_gwei: float | None = None,
    max_spend_eth: float | None = None,
    receipt_timeout: float | None = None,
    keystore: Path | str | None = None,
    config_file: Path | str | None = None,
    env: Mapping[str, str] | None = None,
) -> ChainSettings:
    """Resolve chain settings: flag > environment > ``[chains.NAME]`` profile > default.

    The profile is ``chain`` (flag), ``PROVMINT_CHAIN``, or the file's top-level
    ``chain``. The chain key comes from ``PROVMINT_CHAIN_KEY`` (hex) or an encrypted
    keystore (``keystore`` / ``PROVMINT_KEYSTORE``, password ``PROVMINT_KEYSTORE_PASSWORD``).
    """
    env = os.environ if env is None else env
    profile = _chain_profile(chain, _read_config(config_file, env), env)
    layers = _Layers(env, profile.values, lambda key: profile.where)
    # poa has no flag and no variable: only a profile sets it.
    url = layers.pick(rpc_url, "PROVMINT_RPC_URL", "rpc_url").checked(_rpc_url, None)
    way = layers.pick(method, None, "method").checked(_method, "calldata")
    reg = layers.pick(registry, "PROVMINT_REGISTRY", "registry").checked(_registry, None)
    poa = layers.pick(None, None, "poa").checked(_poa, False)
    return ChainSettings(
        profile=profile.name,
        rpc_url=url,
        chain_id=layers.number(chain_id, _CHAIN_ID, None),
        confirmations=layers.number(confirmations, _CONFIRMATIONS, 1),
        method=way,
        registry=reg,
        poa=poa,
        max_fee_gwei=layers.number(max_fee_gwei, _MAX_FEE_GWEI, None),
        max_spend_eth=layers.number(max_spend_eth, _MAX_SPEND_ETH, None),
        receipt_timeout=layers.number(receipt_timeout, _RECEIPT_TIMEOUT, 120.0),
        keystore=layers.pick(keystore, "PROVMINT_KEYSTORE", "keystore").checked(_keystore, None),
        keystore_password=_secret(env, "PROVMINT_KEYSTORE_PASSWORD"),
        chain_key=_secret(env, "PROVMINT_CHAIN_KEY"),
    )
