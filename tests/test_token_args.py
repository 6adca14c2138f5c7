"""Tokens are never options: ``token verify`` and ``scan`` read a token as the token,
whatever its first two characters (22 characters of base64url; one token in 64 starts
with "-", one in 4,096 with "-h", which Click would read as --help).

Every one of the 64 x 64 first-two-character combinations is checked three ways:
parsed by the real commands (the exact token arrives, wherever it stands among the
options), a genuine token with that prefix verified through the CLI (exit 0 proves the
command got the token byte for byte), and, for the prefixes Click could misread (the
64 that start with "-") plus one per first character, a genuine token scanned.
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

import pytest
import typer
from click.testing import CliRunner
from helpers import csv_text

from provmint.batch import mint_batch
from provmint.cli import app
from provmint.config import Settings
from provmint.errors import EXIT_OK, EXIT_PENDING
from provmint.keys import load_keyring
from provmint.tokens import format_token, make_token

ALPHABET = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
PREFIXES = [a + b for a in ALPHABET for b in ALPHABET]
GTIN = "09520123450014"
FILLER = "A" * 20  # 22 characters in all; "A" keeps the last character canonical

# The Click command tree, built once: typer rebuilds it on every CliRunner.invoke of
# the Typer app (40 ms), which would make 8,192 invocations take minutes.
COMMAND = typer.main.get_command(app)


def _parse(path: list[str], args: list[str]) -> dict[str, Any]:
    """The parameters the real command parses from ``args`` (no callback run), in the
    context chain a real invocation has (the root's settings make ``-h`` a help option)."""
    command: Any = COMMAND
    ctx = command.context_class(command, info_name="provmint", **command.context_settings)
    for name in path[:-1]:
        command = command.get_command(ctx, name)
        ctx = command.context_class(command, info_name=name, parent=ctx)
    command = command.get_command(ctx, path[-1])
    params: dict[str, Any] = command.make_context(path[-1], list(args), parent=ctx).params
    return params


def test_alphabet_is_base64url() -> None:
    assert len(ALPHABET) == len(set(ALPHABET)) == 64
    assert len(PREFIXES) == 4096 and len(set(PREFIXES)) == 4096


@pytest.mark.parametrize(
    ("path", "name", "rest"),
    [
        (["token", "verify"], "token", ["--gtin", GTIN, "--serial", "S1"]),
        (["scan"], "code", ["--location", "Dock 1", "--json"]),
    ],
    ids=["token verify", "scan"],
)
def test_every_two_character_prefix_parses_as_the_token(
    path: list[str], name: str, rest: list[str]
) -> None:
    for prefix in PREFIXES:
        token = prefix + FILLER
        for args in ([token, *rest], [*rest, token], [*rest[:2], token, *rest[2:]]):
            assert _parse(path, args)[name] == token, (prefix, args)


def test_help_and_option_values_stay_what_they_are() -> None:
    """``-h`` alone is still help; a value that looks like a token stays an option's value."""
    runner = CliRunner()
    for path in (["token", "verify"], ["scan"]):
        r = runner.invoke(COMMAND, [*path, "-h"])
        assert r.exit_code == 0 and r.output.startswith("Usage: "), r.output
    looks_like_a_token = "-hX" + "A" * 19
    params = _parse(["scan"], ["--location", looks_like_a_token, "-" + FILLER + "B"])
    assert params["location"] == looks_like_a_token
    assert params["code"] == "-" + FILLER + "B"


def _genuine_tokens(secret: bytes) -> dict[str, tuple[str, str]]:
    """A genuine (serial, token) of GTIN for every first-two-character prefix: about
    36,000 serials until all 4,096 prefixes are seen (the coupon collector's n ln n)."""
    found: dict[str, tuple[str, str]] = {}
    i = 0
    while len(found) < len(PREFIXES):
        serial = f"T{i}"
        token = format_token(make_token(secret, GTIN, serial))
        found.setdefault(token[:2], (serial, token))
        i += 1
    return found


@pytest.fixture(scope="module")
def genuine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, dict[str, Any]]:
    """A store holding a genuine product for every prefix, and its settings."""
    from provmint.keys import init_keyring

    base = tmp_path_factory.mktemp("prefixes")
    settings = Settings(store=base / "store", key_file=base / "keys.json", workers=1)
    init_keyring(settings.key_file)
    tokens = _genuine_tokens(load_keyring(settings.key_file).active.secret.reveal())
    source = base / "prefixes.csv"
    source.write_text(csv_text(["gtin", "serial"], [[GTIN, s] for s, _ in tokens.values()]))
    mint_batch(source, settings=settings)
    return settings, tokens


@pytest.fixture
def genuine_env(
    genuine: tuple[Settings, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> dict[str, tuple[str, str]]:
    settings, tokens = genuine
    monkeypatch.setenv("PROVMINT_STORE", str(settings.store))
    monkeypatch.setenv("PROVMINT_KEY_FILE", str(settings.key_file))
    return tokens


def test_token_verify_reads_every_prefix(genuine_env: dict[str, tuple[str, str]]) -> None:
    runner = CliRunner()
    for prefix in PREFIXES:
        serial, token = genuine_env[prefix]
        args = [token, "--gtin", GTIN, "--serial", serial, "--json"]
        if prefix[1] in "-h":  # and with the token last, after the options
            args = args[1:] + args[:1]
        r = runner.invoke(COMMAND, ["token", "verify", *args])
        assert r.exit_code == EXIT_OK, (prefix, token, r.output)
        assert json.loads(r.stdout)["verdict"] == "valid", (prefix, r.output)


def test_scan_reads_every_prefix_click_could_misread(
    genuine_env: dict[str, tuple[str, str]],
) -> None:
    """Scans take ~35 ms each (store lookup and scan log): the 64 "-" prefixes, the only
    ones an option parser can misread, and one prefix per other first character."""
    runner = CliRunner()
    prefixes = [p for p in PREFIXES if p[0] == "-"] + [c + "h" for c in ALPHABET if c != "-"]
    for prefix in prefixes:
        serial, token = genuine_env[prefix]
        r = runner.invoke(COMMAND, ["scan", token, "--json"])
        assert r.exit_code == EXIT_PENDING, (prefix, token, r.output)
        report = json.loads(r.stdout)
        assert report["verdict"] == "pending" and report["record"]["serial"] == serial


def test_a_real_process_reads_a_dash_h_token(
    genuine: tuple[Settings, dict[str, Any]], tmp_path: Path
) -> None:
    """The shell path too: ``provmint token verify -h...`` in a real process."""
    from conftest import run_provmint

    settings, tokens = genuine
    serial, token = tokens["-h"]
    p = run_provmint(
        "token",
        "verify",
        token,
        "--gtin",
        GTIN,
        "--serial",
        serial,
        "--key-file",
        settings.key_file,
    )
    assert p.returncode == EXIT_OK, p.stdout + p.stderr
    assert p.stdout.startswith("VALID")
