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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from provmint.errors import ConfigError, MissingFileError

__all__ = [
    "DEFAULT_LOCK_TIMEOUT",
    "DEFAULT_URL_BASE",
    "PG_SCHEMES",
    "ChainSettings",
    "Secret",
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

_KNOWN_KEYS = {"store", "key_file", "url_base", "workers", "lock_timeout", "chain", "scan_log"}
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


def _xdg(env: Mapping[str, str], var: str, fallback: str) -> Path:
    base = env.get(var) or str(Path(env.get("HOME", str(Path.home()))) / fallback)
    return Path(base)


def default_config_file(env: Mapping[str, str] | None = None) -> Path:
    """Where the config file is looked for."""
    env = os.environ if env is None else env
    if env.get("PROVMINT_CONFIG"):
        return Path(env["PROVMINT_CONFIG"]).expanduser()
    return _xdg(env, "XDG_CONFIG_HOME", ".config") / "provmint" / "config.toml"


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
    return data


def _check_url_base(value: str, source: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError(f"{source}: url base {value!r} must be an http(s) URL with a host")
    if parts.query or parts.fragment:
        raise ConfigError(f"{source}: url base {value!r} must not have a query or fragment")
    return value.rstrip("/")


def _positive_int(value: Any, source: str, name: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {name} must be a whole number, got {value!r}") from None
    if not 1 <= number <= 256:
        raise ConfigError(f"{source}: {name} must be between 1 and 256, got {number}")
    return number


def _timeout(value: Any, source: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: lock_timeout must be a number, got {value!r}") from None
    if not 0 <= number <= 86400:
        raise ConfigError(f"{source}: lock_timeout must be between 0 and 86400 seconds")
    return number


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


def _is_within(child: Path, parent: Path) -> bool:
    try:
        child.resolve().relative_to(parent.resolve())
    except ValueError:
        return False
    return True


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
    explicit_file = config_file is not None or bool(env.get("PROVMINT_CONFIG"))
    cfg_path = Path(config_file).expanduser() if config_file else default_config_file(env)
    file_values = _load_file(cfg_path, explicit_file)

    def pick(arg: Any, env_name: str, key: str) -> tuple[Any, str]:
        if arg is not None:
            return arg, "option"
        if env.get(env_name):
            return env[env_name], env_name
        if key in file_values:
            return file_values[key], f"{cfg_path} ({key})"
        return None, "default"

    store_v, _ = pick(store, "PROVMINT_STORE", "store")
    store_path = (
        Path(store_v).expanduser()
        if store_v is not None
        else _xdg(env, "XDG_DATA_HOME", ".local/share") / "provmint" / "store"
    )
    key_v, _ = pick(key_file, "PROVMINT_KEY_FILE", "key_file")
    key_path = (
        Path(key_v).expanduser()
        if key_v is not None
        else _xdg(env, "XDG_CONFIG_HOME", ".config") / "provmint" / "keys.json"
    )
    if _is_within(key_path, store_path):
        raise ConfigError(
            f"key file {key_path} is inside the product store {store_path}",
            hint="keep the issuer key outside the store: stores are copied and shared",
        )
    url_v, url_src = pick(url_base, "PROVMINT_URL_BASE", "url_base")
    url = _check_url_base(str(url_v), url_src) if url_v is not None else DEFAULT_URL_BASE
    workers_v, workers_src = pick(workers, "PROVMINT_WORKERS", "workers")
    n_workers = (
        _positive_int(workers_v, workers_src, "workers")
        if workers_v is not None
        else (os.cpu_count() or 1)
    )
    timeout_v, timeout_src = pick(lock_timeout, "PROVMINT_LOCK_TIMEOUT", "lock_timeout")
    timeout = _timeout(timeout_v, timeout_src) if timeout_v is not None else DEFAULT_LOCK_TIMEOUT
    log_v, log_src = pick(scan_log, "PROVMINT_SCAN_LOG", "scan_log")
    if log_v is not None and not isinstance(log_v, str):
        raise ConfigError(f"{log_src}: scan_log must be a string, got {log_v!r}")
    if log_v is not None:
        log_v = check_scan_log_url(log_v, log_src)
    return Settings(
        store=store_path,
        key_file=key_path,
        url_base=url,
        workers=n_workers,
        lock_timeout=timeout,
        config_file=cfg_path if cfg_path.exists() else None,
        scan_log=log_v,
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


def _number(value: Any, source: str, name: str, kind: type, low: float, high: float) -> Any:
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {name} must be a number, got {value!r}") from None
    if not low <= number <= high:
        raise ConfigError(f"{source}: {name} must be between {low} and {high}, got {number}")
    return number


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
    explicit_file = config_file is not None or bool(env.get("PROVMINT_CONFIG"))
    cfg_path = Path(config_file).expanduser() if config_file else default_config_file(env)
    data = _load_file(cfg_path, explicit_file)
    name = chain or env.get("PROVMINT_CHAIN") or data.get("chain")
    profiles = data.get("chains", {})
    if name is not None and name not in profiles:
        known = ", ".join(sorted(profiles)) or "none"
        raise ConfigError(f"no chain profile {name!r} in {cfg_path} (profiles: {known})")
    profile: dict[str, Any] = dict(profiles.get(name, {})) if name else {}
    where = f"{cfg_path} [chains.{name}]" if name else "default"

    def pick(arg: Any, env_name: str | None, key: str) -> tuple[Any, str]:
        if arg is not None:
            return arg, "option"
        if env_name and env.get(env_name):
            return env[env_name], env_name
        if key in profile:
            return profile[key], where
        return None, "default"

    url, _ = pick(rpc_url, "PROVMINT_RPC_URL", "rpc_url")
    if url is not None:
        parts = urlsplit(str(url))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("the RPC URL must be an http(s) URL")
    cid, cid_src = pick(chain_id, None, "chain_id")
    way, way_src = pick(method, None, "method")
    if way is not None and way not in ("calldata", "registry"):
        raise ConfigError(f"{way_src}: method must be calldata or registry, got {way!r}")
    reg, reg_src = pick(registry, "PROVMINT_REGISTRY", "registry")
    if reg is not None and not re.fullmatch(r"0x[0-9a-fA-F]{40}", str(reg)):
        raise ConfigError(f"{reg_src}: registry must be a contract address (0x + 40 hex)")
    conf, conf_src = pick(confirmations, None, "confirmations")
    fee, fee_src = pick(max_fee_gwei, None, "max_fee_gwei")
    spend, spend_src = pick(max_spend_eth, None, "max_spend_eth")
    wait, wait_src = pick(receipt_timeout, None, "receipt_timeout")
    store_path, _ = pick(keystore, "PROVMINT_KEYSTORE", "keystore")
    poa = profile.get("poa", False)
    if not isinstance(poa, bool):
        raise ConfigError(f"{where}: poa must be true or false")
    password = env.get("PROVMINT_KEYSTORE_PASSWORD")
    key = env.get("PROVMINT_CHAIN_KEY")
    return ChainSettings(
        profile=name,
        rpc_url=None if url is None else str(url),
        chain_id=None if cid is None else _number(cid, cid_src, "chain_id", int, 1, 2**63 - 1),
        confirmations=1
        if conf is None
        else _number(conf, conf_src, "confirmations", int, 1, 10_000),
        method=way or "calldata",
        registry=None if reg is None else str(reg),
        poa=poa,
        max_fee_gwei=None if fee is None else _number(fee, fee_src, "max_fee_gwei", float, 0, 1e9),
        max_spend_eth=None
        if spend is None
        else _number(spend, spend_src, "max_spend_eth", float, 0, 1e9),
        receipt_timeout=120.0
        if wait is None
        else _number(wait, wait_src, "receipt_timeout", float, 1, 86_400),
        keystore=None if store_path is None else Path(str(store_path)).expanduser(),
        keystore_password=None if password is None else Secret(password.encode()),
        chain_key=None if key is None else Secret(key.encode()),
    )
