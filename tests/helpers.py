"""Small helpers shared by several test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import json
from typing import Any

from conftest import EXAMPLE_CSV

# Runs provmint's CLI in a process that SIGKILLs itself when ``target`` is first called
# (after ``skip`` earlier calls), exactly as if killed from outside at that instant:
#   python -c KILLER module attr skip provmint-args...
KILLER = """
import os, signal, sys, importlib
module_name, attr, skip = sys.argv[1], sys.argv[2], int(sys.argv[3])
module = importlib.import_module(module_name)
owner_name, _, func_name = attr.rpartition(".")
owner = getattr(module, owner_name) if owner_name else module
original = getattr(owner, func_name)
calls = [0]
def die(*args, **kwargs):
    calls[0] += 1
    if calls[0] > skip:
        os.kill(os.getpid(), signal.SIGKILL)
    return original(*args, **kwargs)
setattr(owner, func_name, die)
sys.argv = ["provmint"] + sys.argv[4:]
from provmint.cli import main
main()
"""


def mint_example(cli: Any) -> str:
    """Mint examples/products.csv through the CLI; return the batch id."""
    r = cli("batch", "create", EXAMPLE_CSV, "--json")
    assert r.exit_code == 0, r.output
    return str(json.loads(r.stdout)["batch_id"])


def anchor_json(cli: Any, *args: object) -> dict[str, Any]:
    """``provmint anchor --json`` that must succeed."""
    r = cli("anchor", "--json", *args)
    assert r.exit_code == 0, r.output
    result: dict[str, Any] = json.loads(r.stdout)
    return result


def status_json(cli: Any, *args: object) -> dict[str, Any]:
    """``provmint anchor status --json`` that must succeed."""
    r = cli("anchor", "status", "--json", *args)
    assert r.exit_code == 0, r.output
    result: dict[str, Any] = json.loads(r.stdout)
    return result


def one_error(r: Any, code: int, *needles: str) -> str:
    """The run failed with ``code`` and exactly one ``error:`` line holding ``needles``."""
    assert "Traceback" not in r.stdout + r.stderr
    assert r.exit_code == code, (r.exit_code, r.stdout, r.stderr, r.exception)
    lines = [ln for ln in r.stderr.strip().splitlines() if not ln.startswith("hint: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]
