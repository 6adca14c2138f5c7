"""Every setting of the config file, given a value of every other TOML type, is one
ConfigError naming the file and the setting: never a TypeError or a silent coercion."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provmint.config import resolve_chain, resolve_settings
from provmint.errors import ConfigError

TOP = ["store", "key_file", "url_base", "workers", "lock_timeout", "scan_log", "chain"]
CHAIN = [
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
]

# TOML values of every type; for each setting, some are right and most are wrong.
VALUES = st.sampled_from(
    [
        "5",
        "",
        "a\\u0000b",
        "5",
        "5.5",
        "true",
        "[1, 2]",
        '["x"]',
        "{ a = 1 }",
        "1979-05-27T07:32:00Z",
        "-1",
        "0",
        "1e300",
        "nan",
        "inf",
        '"-5"',
        '"~/x"',
        '"http://x"',
    ]
)


def _settle(call) -> None:
    """The call returns or raises ConfigError; nothing else."""
    try:
        call()
    except ConfigError as exc:
        assert str(exc)
    # Anything else (TypeError, ValueError, OverflowError) fails the test.


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(key=st.sampled_from(TOP), value=VALUES)
def test_top_level_settings_of_any_type(tmp_path: Path, key: str, value: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f"{key} = {value}\n", encoding="utf-8")
    env = {"HOME": str(tmp_path)}
    _settle(lambda: resolve_settings(config_file=config, env=env))


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(key=st.sampled_from(CHAIN), value=VALUES)
def test_chain_settings_of_any_type(tmp_path: Path, key: str, value: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'chain = "dev"\n[chains.dev]\n{key} = {value}\n', encoding="utf-8")
    env = {"HOME": str(tmp_path)}
    _settle(lambda: resolve_chain(config_file=config, env=env))


@pytest.mark.parametrize("value", ["5", "true", "[1]", "{ a = 1 }", '""'])
def test_a_path_setting_that_is_not_a_path_is_refused(tmp_path: Path, value: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f"store = {value}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"store.*must be a path"):
        resolve_settings(config_file=config, env={"HOME": str(tmp_path)})


@pytest.mark.parametrize("value", ["true", "2.5", "inf", "nan", '"two"', "[2]"])
def test_a_whole_number_setting_is_never_coerced(tmp_path: Path, value: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f"workers = {value}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="workers must be"):
        resolve_settings(config_file=config, env={"HOME": str(tmp_path)})


def test_a_whole_float_is_a_whole_number(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("workers = 2.0\n", encoding="utf-8")
    assert resolve_settings(config_file=config, env={"HOME": str(tmp_path)}).workers == 2
