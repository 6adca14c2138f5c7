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
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from provmint.errors import ConfigError, MissingFileError

__all__ = [
    "DEFAULT_LOCK_TIMEOUT",
    "DEFAULT_URL_BASE",
    "PG_SCHEMES",
    "BrandSettings",
    "ChainSettings",
    "CopySignalSettings",
    "Secret",
    "ServeSettings",
    "Settings",
    "check_scan_log_url",
    "default_config_file",
    "redact",
    "resolve_chain",
    "resolve_settings",
]

DEFAULT_URL_BASE = "https://id.example.com"
"""Placeholder verification domain (RFC 2606 reserves example.com); set your own."""
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
_TABLES = ("brand", "serve", "copy_signal")
"""Top-level settings that are tables (``[brand]``, ``[serve]``, ``[copy_signal]``)."""
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


@dataclass(frozen=True, slots=True)
class BrandSettings:
    """The ``[brand]`` table: how the public verification page presents the brand."""


def _brand(table: Mapping[str, Any], where: str) -> BrandSettings:
    """The ``[brand]`` table, checked (``where`` names it in errors)."""
    return BrandSettings()


# -- [serve]: the public service's edges (rate limit, proxies, limits, timeouts) -------


@dataclass(frozen=True, slots=True)
class ServeSettings:
    """The ``[serve]`` table: limits and timeouts of the public service."""


def _serve(table: Mapping[str, Any], where: str) -> ServeSettings:
    """The ``[serve]`` table, checked (``where`` names it in errors)."""
    return ServeSettings()


# -- [copy_signal]: when a genuine code looks copied ------------------------------------


@dataclass(frozen=True, slots=True)
class CopySignalSettings:
    """The ``[copy_signal]`` table: when a genuine code is flagged as a possible copy."""


def _copy_signal(table: Mapping[str, Any], where: str) -> CopySignalSettings:
    """The ``[copy_signal]`` table, checked (``where`` names it in errors)."""
    return CopySignalSettings()


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
    for name in _TABLES:
        if not isinstance(data.get(name, {}), dict):
            raise ConfigError(f"{path}: {name} must be a table ([{name}])")
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


def _path(value: Any, source: str) -> Path:
    """A path setting, ``~`` expanded (``source`` unused: any path is accepted here)."""
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
        try:
            number = self.kind(value)
        except (TypeError, ValueError):
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
    store_path = layers.pick(store, "PROVMINT_STORE", "store").checked(
        _path, _data_dir(env) / "store"
    )
    key_path = layers.pick(key_file, "PROVMINT_KEY_FILE", "key_file").checked(
        _path, _config_dir(env) / "keys.json"
    )
    _refuse_key_in_store(key_path, store_path)
    url = layers.pick(url_base, "PROVMINT_URL_BASE", "url_base")
    n_workers = layers.pick(workers, "PROVMINT_WORKERS", "workers")
    timeout = layers.pick(lock_timeout, "PROVMINT_LOCK_TIMEOUT", "lock_timeout")
    log = layers.pick(scan_log, "PROVMINT_SCAN_LOG", "scan_log")
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
    return Path(str(value)).expanduser()


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
