"""With ``--json``, a failing command still prints JSON on standard output: ``{"error":
{"code", "exit", "message", "hint"}}`` (and the ``error:`` line on standard error), so a
program reading the output never gets an empty stream."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import EXAMPLE_CSV

from provmint.errors import EXIT_USAGE, MissingFileError, ProvmintError, StoreError


@pytest.mark.parametrize(
    ("args", "exit_code", "code"),
    [
        (["batch", "show", "nosuch"], 7, "not_found"),
        (["verify", "/nonexistent/proof.json"], 7, "missing_file"),
        (["scans", "list", "--since", "yesterday"], EXIT_USAGE, "config"),
        (["product", "show", "--gtin", "1", "--serial", "2"], EXIT_USAGE, "config"),
        (["batch", "create", "/nonexistent/products.csv"], 7, "missing_file"),
        (["proof", "upgrade", "/nonexistent/proof.json"], 7, "missing_file"),
    ],
)
def test_a_failure_with_json_prints_the_error_as_json(
    cli, keyed, args: list[str], exit_code: int, code: str
) -> None:
    assert cli("batch", "create", EXAMPLE_CSV).exit_code == 0
    r = cli(*args, "--json")
    assert r.exit_code == exit_code, r.output
    error = json.loads(r.stdout)["error"]
    assert error["code"] == code and error["exit"] == exit_code
    assert error["message"] and error["message"] in r.stderr
    assert set(error) == {"code", "exit", "message", "hint"}
    without = cli(*args)
    assert without.exit_code == exit_code and without.stdout == ""


def test_error_codes_are_stable_names(tmp_path: Path) -> None:
    assert MissingFileError(tmp_path, "proof file").code == "missing_file"
    assert ProvmintError("x").code == "provmint"
    assert StoreError("x").code == "store"
    assert ProvmintError("x", hint="h").to_json() == {
        "code": "provmint",
        "exit": 1,
        "message": "x",
        "hint": "h",
    }
