"""Shared fixtures: an isolated store and key file per test, a CLI runner, CSV helpers.

Every test gets its own ``PROVMINT_STORE``, ``PROVMINT_KEY_FILE`` and ``PROVMINT_CONFIG``
under ``tmp_path`` (the user's real config and keys are never touched) and runs in
``tmp_path`` as its working directory (rejects files land there).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from provmint.cli import app
from provmint.config import Settings, resolve_settings
from provmint.keys import init_keyring

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_CSV = ROOT / "examples" / "products.csv"
VECTORS = Path(__file__).parent / "vectors" / "rfc6962"  # copied from ../shared/vectors
LOCAL_VECTORS = Path(__file__).parent / "vectors"

HEADER = "gtin,serial,lot,expiry,product_name\n"


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point every provmint location at the test's temporary directory."""
    monkeypatch.setenv("PROVMINT_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("PROVMINT_KEY_FILE", str(tmp_path / "keys" / "keys.json"))
    monkeypatch.setenv("PROVMINT_CONFIG", str(tmp_path / "no-config.toml"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    for name in ("PROVMINT_URL_BASE", "PROVMINT_WORKERS", "PROVMINT_LOCK_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "no-config.toml").write_text("")
    monkeypatch.chdir(tmp_path)
    yield tmp_path


@pytest.fixture
def settings(isolated: Path) -> Settings:
    """Resolved settings for the isolated locations (no key created yet)."""
    return resolve_settings()


@pytest.fixture
def keyed(settings: Settings) -> Settings:
    """Settings with an issuer key file already created."""
    init_keyring(settings.key_file)
    return settings


@pytest.fixture
def runner() -> CliRunner:
    """Typer's CLI runner."""
    return CliRunner()


@pytest.fixture
def cli(runner: CliRunner) -> Callable[..., object]:
    """Invoke the CLI in-process: ``cli("batch", "create", path)`` -> click Result."""

    def invoke(*args: object, input: str | None = None) -> object:
        return runner.invoke(app, [str(a) for a in args], input=input)

    return invoke


@pytest.fixture
def write_csv(tmp_path: Path) -> Callable[..., Path]:
    """Write a CSV file from text or bytes: ``write_csv("name.csv", text)``."""

    def write(name: str, content: str | bytes) -> Path:
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    return write


def run_provmint(*args: object, env: dict[str, str] | None = None,
                 timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run provmint as a real subprocess (``python -m provmint``) with the test's env."""
    return subprocess.run([sys.executable, "-m", "provmint", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
