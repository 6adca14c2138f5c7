"""The JSON contract (issue 13): every command's ``--json`` output, provmint serve's JSON
answers and the dashboard's ``/stats.json`` validate against their schemas in
docs/schemas/, run as a user runs them, on a real store (and a real anvil for the chain
commands). A command that takes ``--json`` without a schema fails here, so that none
can leave the contract."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from conftest import EXAMPLE_CSV, ROOT, Anvil, dev_key, free_port
from helpers import mint_example
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from provmint.cli import build_app
from provmint.errors import EXIT_INVALID, EXIT_KEY, EXIT_NOT_FOUND, EXIT_PENDING

SCHEMAS = ROOT / "docs" / "schemas"
PROOF_SCHEMA = ROOT / "src" / "provmint" / "schemas" / "proof-1.schema.json"
GTIN = "09520123450014"
SERIAL = "546CAWQDCR56"
JSON_ACCEPT = {"Accept": "application/json"}

COMMAND_SCHEMAS: dict[str, str] = {
    "keys init": "commands/keys-init",
    "keys rotate": "commands/keys-rotate",
    "keys list": "commands/keys-list",
    "batch create": "commands/batch-create",
    "batch list": "commands/batch-list",
    "batch show": "commands/batch-show",
    "product show": "commands/product-show",
    "token verify": "commands/token-verify",
    "scan": "commands/scan",
    "verify": "commands/verify",
    "proof upgrade": "commands/proof-upgrade",
    "proof calldata": "commands/proof-calldata",
    "labels": "commands/labels",
    "anchor": "commands/anchor",
    "anchor status": "commands/anchor-status",
    "anchor deploy-registry": "commands/anchor-deploy-registry",
    "anchor deploy-verifier": "commands/anchor-deploy-verifier",
    "store repair": "commands/store-repair",
    "scans list": "commands/scans-list",
    "scans show": "commands/scans-show",
    "scans clear": "commands/scans-clear",
    "scans prune": "commands/scans-prune",
    "stats": "commands/stats",
    "config show": "commands/config-show",
    "verifier-page": "commands/verifier-page",
    "devchain": "commands/devchain",
}
"""Every command that takes --json, and the schema of what it prints (docs/schemas/...).
A failing command prints commands/error whatever it is; ``anchor --every`` prints
commands/anchor-every, one line per run."""

OFFLINE = {
    "keys init",
    "keys rotate",
    "keys list",
    "batch create",
    "batch list",
    "batch show",
    "product show",
    "token verify",
    "scan",
    "verify",
    "proof upgrade",
    "labels",
    "store repair",
    "scans list",
    "scans show",
    "scans clear",
    "scans prune",
    "stats",
    "config show",
    "verifier-page",
}
"""What :func:`test_every_command_without_a_chain` runs; the chain test runs the rest."""
ON_CHAIN = set(COMMAND_SCHEMAS) - OFFLINE


def _registry() -> Registry[Any]:
    """Every schema of docs/schemas and the proof's, by their $id (they refer to each
    other by it)."""
    resources = []
    for path in [*sorted(SCHEMAS.rglob("*.schema.json")), PROOF_SCHEMA]:
        document = json.loads(path.read_text(encoding="utf-8"))
        resources.append((document["$id"], Resource.from_contents(document)))
    registry: Registry[Any] = Registry().with_resources(resources)
    return registry


REGISTRY = _registry()


def validate(document: Any, schema: str) -> Any:
    """Fail unless ``document`` is valid under docs/schemas/``schema``.schema.json;
    return it."""
    path = SCHEMAS / f"{schema}.schema.json"
    validator = Draft202012Validator(
        json.loads(path.read_text(encoding="utf-8")),
        registry=REGISTRY,
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    assert not errors, f"{schema}: " + "; ".join(
        f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in errors[:5]
    )
    return document


class Contract:
    """Runs commands with --json through the CLI and validates what they print."""

    def __init__(self, cli: Callable[..., Any]) -> None:
        self.cli = cli
        self.validated: set[str] = set()

    def run(self, command: str, *args: object, exit_code: int = 0) -> Any:
        """``provmint COMMAND ARGS --json``: it must end with ``exit_code`` and print one
        JSON document valid under the command's schema (the error schema for a failure
        with an error, as every failing command prints it)."""
        r = self.cli(*command.split(), *args, "--json")
        assert "Traceback" not in r.stdout + r.stderr, r.stderr
        assert r.exit_code == exit_code, (command, args, r.exit_code, r.stdout, r.stderr)
        document = json.loads(r.stdout)
        if "error" in document and set(document) == {"error"}:
            validate(document, "commands/error")
            assert document["error"]["exit"] == exit_code
        else:
            validate(document, COMMAND_SCHEMAS[command])
            self.validated.add(command)
        return document

    def fails(self, command: str, *args: object, exit_code: int) -> dict[str, Any]:
        """A failing run: the error object on standard output, its exit code."""
        document: dict[str, Any] = self.run(command, *args, exit_code=exit_code)
        assert set(document) == {"error"}, document
        return document


def json_commands() -> dict[str, Any]:
    """Every command of the CLI (``group command``) that has a --json option."""
    found: dict[str, Any] = {}

    def walk(command: Any, path: list[str]) -> None:
        if any("--json" in (param.opts or []) for param in command.params):
            found[" ".join(path)] = command
        for name, sub in (getattr(command, "commands", None) or {}).items():
            walk(sub, [*path, name])

    walk(typer.main.get_command(build_app()), [])
    return found


# --------------------------------------------------------------------------- the schemas


def test_every_command_with_json_has_a_schema() -> None:
    commands = json_commands()
    assert set(commands) == set(COMMAND_SCHEMAS), (
        "a command with --json needs its schema in docs/schemas/commands/ and a line in "
        f"COMMAND_SCHEMAS: missing {sorted(set(commands) - set(COMMAND_SCHEMAS))}, "
        f"gone {sorted(set(COMMAND_SCHEMAS) - set(commands))}"
    )
    for schema in COMMAND_SCHEMAS.values():
        assert (SCHEMAS / f"{schema}.schema.json").is_file(), schema
    # Each command is run by one of the two tests below.
    assert set(COMMAND_SCHEMAS) >= OFFLINE and set(COMMAND_SCHEMAS) == ON_CHAIN | OFFLINE


def test_the_schemas_are_valid_draft_2020_12() -> None:
    ids = set()
    for path in sorted(SCHEMAS.rglob("*.schema.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        Draft202012Validator.check_schema(document)
        assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema", path
        assert document["$id"].startswith("urn:provmint:schema:"), path
        assert document["$id"] not in ids, path
        ids.add(document["$id"])
        # Every reference resolves (a typo would only show on the data that reaches it).
        for ref in _refs(document):
            target = ref if ref.startswith("urn:") else document["$id"] + ref
            REGISTRY.resolver(document["$id"]).lookup(target)
    stems = {p.name for p in SCHEMAS.glob("*.schema.json")}
    for name in ("batch", "product", "verdict", "anchor", "key", "error", "scan"):
        assert f"{name}.schema.json" in stems  # the objects of the contract


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def test_the_schemas_refuse_the_old_shapes() -> None:
    """What changed in the contract fails its schema (so the schemas do check)."""
    with pytest.raises(AssertionError):
        validate([], "commands/batch-list")  # a bare array
    with pytest.raises(AssertionError):
        validate({"valid": True, "gtin": GTIN, "serial": SERIAL, "key_id": None}, "verdict")
    answer = {"verdict": "pending", "reason": "r", "record": None, "batch_id": None}
    with pytest.raises(AssertionError):  # scans as a number
        validate({**answer, "anchor": None, "scans": 3, "logged": True}, "http/code")
    with pytest.raises(AssertionError):
        validate({"error": "no such page"}, "http/error")


# --------------------------------------------------------------------------- the commands


def test_every_command_without_a_chain(cli, tmp_path: Path, serve_store) -> None:
    c = Contract(cli)
    init = c.run("keys init")
    assert c.fails("keys init", exit_code=EXIT_KEY)["error"]["code"] == "keyring"
    created = c.run("batch create", EXAMPLE_CSV)
    batch_id = created["batch_id"]
    assert created["key_id"] == init["key"]["id"] and created["anchor"] is None
    listed = c.run("batch list")["batches"]
    shown = c.run("batch show", batch_id)
    assert listed == [shown]
    # One shape of a batch: create gives the batch object, and what the run did.
    assert {k: v for k, v in created.items() if k in shown} == shown
    c.fails("batch show", "nosuch", exit_code=EXIT_NOT_FOUND)

    product = c.run("product show", "--gtin", GTIN, "--serial", SERIAL)
    token = product["token"]
    valid = c.run("token verify", token, "--gtin", GTIN, "--serial", SERIAL)
    assert valid["verdict"] == "valid"
    invalid = c.run(
        "token verify", token, "--gtin", GTIN, "--serial", "OTHER1", exit_code=EXIT_INVALID
    )
    assert invalid["verdict"] == "invalid"

    scan = c.run("scan", token, "--location", "Dock 1", exit_code=EXIT_PENDING)
    assert scan["record"] == product["record"] and scan["scans"]["count"] == 1
    unknown = c.run(
        "scan", f"https://id.example.com/01/{GTIN}/21/NOSUCH?t={token}", exit_code=EXIT_NOT_FOUND
    )
    assert unknown["record"] is None and unknown["scans"] is None

    assert cli("proof", "export", "--token", token, "-o", "p.json").exit_code == 0
    one = c.run("verify", "p.json", exit_code=EXIT_PENDING)
    assert one["record"] == product["record"]  # a verdict's record, as scan gives it
    r = cli("proof", "export", "--batch", batch_id, "--all", "-o", "all.jsonl")
    assert r.exit_code == 0, r.output
    (tmp_path / "all.jsonl").write_text(
        (tmp_path / "all.jsonl").read_text() + "{not json\n", encoding="utf-8"
    )
    many = c.run("verify", "all.jsonl", exit_code=EXIT_INVALID)
    assert many["summary"]["proofs"] == 10 and many["proofs"][-1]["verdict"] == "invalid"
    audit = c.run("verify", "--batch", batch_id, exit_code=EXIT_PENDING)
    assert audit["batch_id"] == batch_id
    c.fails("verify", "missing.json", exit_code=EXIT_NOT_FOUND)
    upgrade = c.run("proof upgrade", "p.json", exit_code=EXIT_PENDING)
    assert upgrade["state"] == "pending"

    run = c.run("labels", batch_id, "-o", "labels", "--format", "none", "--allow-placeholder")
    assert run["labels"] == 9
    printed = c.run("batch show", batch_id)["printed"]
    assert [p["output"] for p in printed] == ["labels"]

    code = f"01/{GTIN}/21/{SERIAL}"
    assert len(c.run("scans list")["scans"]) == 1
    assert c.run("scans show", code)["evidence"]["all_scans"] == 1
    assert "cleared" in c.run("scans clear", code)
    assert c.run("scans prune", "--older-than", "30d")["removed"] == 0
    stats = c.run("stats")
    assert stats["products"]["total"] == 9
    assert c.run("store repair", "--dry-run")["batches"] == [batch_id]
    assert c.run("config show")["settings"]
    assert c.run("verifier-page", "-o", "verify.html")["bytes"] > 0

    rotated = c.run("keys rotate")
    retired_at = rotated["retired"]["retired_at"]
    assert rotated["retired"] == {**init["key"], "status": "retired", "retired_at": retired_at}
    keys = c.run("keys list")["keys"]
    assert keys == [rotated["retired"], rotated["active"]]

    assert c.validated == OFFLINE, sorted(OFFLINE - c.validated)

    # The service answers with the same verdict object (scans: the count only).
    server = serve_store()
    url = server.url + f"/01/{GTIN}/21/{SERIAL}?t={token}"
    answer = validate(httpx.get(url, headers=JSON_ACCEPT, timeout=10).json(), "http/code")
    validate(answer, "verdict")
    assert answer["record"] == scan["record"] and answer["batch_id"] == scan["batch_id"]
    assert answer["scans"] == {"count": 2}  # the CLI's scan, then this one
    assert set(answer) - {"logged"} <= set(scan)  # the same fields, less the operator's
    forged = httpx.get(url.replace(token, "A" * 22), headers=JSON_ACCEPT, timeout=10)
    assert forged.status_code == 404
    assert validate(forged.json(), "http/code")["verdict"] == "unknown"
    missing = httpx.get(server.url + "/nowhere", headers=JSON_ACCEPT, timeout=10)
    assert validate(missing.json(), "http/error")["error"]["status"] == 404
    validate(httpx.get(server.url + "/healthz", timeout=10).json(), "http/health")
    proof = httpx.get(server.url + f"/proof/01/{GTIN}/21/{SERIAL}?t={token}", timeout=10)
    Draft202012Validator(
        json.loads(PROOF_SCHEMA.read_text(encoding="utf-8")), registry=REGISTRY
    ).validate(proof.json())


def test_the_dashboard_serves_the_stats_schema(cli, keyed) -> None:
    from test_dashboard import TOKEN, Dashboard

    mint_example(cli)
    server = Dashboard(env={"PROVMINT_DASHBOARD_TOKEN": TOKEN})
    try:
        r = httpx.get(
            server.url + "/stats.json", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=20
        )
        assert r.status_code == 200
        stats = validate(r.json(), "stats")
        assert stats["products"]["total"] == 9
    finally:
        server.stop()


# --------------------------------------------------------------------------- on chain


def test_every_command_on_a_chain(cli, keyed, chain_env: Anvil, serve_store) -> None:
    c = Contract(cli)
    batch_id = mint_example(cli)
    assert cli("proof", "export", "--gtin", GTIN, "--serial", SERIAL, "-o", "p.json").exit_code == 0
    registry = c.run("anchor deploy-registry")["address"]
    verifier = c.run("anchor deploy-verifier", "--registry", registry)
    assert verifier["registry"] == registry
    sender = dev_key(0)[0]
    method = ("--method", "registry", "--registry", registry)
    plan = c.run("anchor", "--dry-run", "--from", sender, *method)["plan"]
    assert plan["batches"] == [batch_id]
    run = c.run("anchor", *method)
    anchor = run["anchor"]
    assert anchor["state"] == "confirmed"
    status = c.run("anchor status")
    assert [a["anchor_id"] for a in status["anchors"]] == [anchor["anchor_id"]]
    # One shape of an anchor: anchor, anchor status, batch show and product show (the
    # listings leave out the transactions sent; status adds the live confirmations).
    assert set(status["anchors"][0]) == set(anchor) | {"confirmations"}
    fields = {k: v for k, v in anchor.items() if k not in ("updated_at", "attempts")}
    for shown in (
        status["anchors"][0],
        c.run("batch show", batch_id)["anchor"],
        c.run("batch list")["batches"][0]["anchor"],
        c.run("product show", "--gtin", GTIN, "--serial", SERIAL)["anchor"],
    ):
        assert {k: v for k, v in shown.items() if k in fields} == fields
        assert set(shown) - {"attempts", "confirmations"} == set(fields) | {"updated_at"}

    upgraded = c.run("proof upgrade", "p.json")
    assert upgraded["state"] == "upgraded"
    assert c.run("proof upgrade", "p.json")["state"] == "already anchored"
    call = c.run("proof calldata", "p.json", "--verifier", verifier["address"])
    assert call["to"] == verifier["address"]
    verdict = c.run("verify", "p.json")
    assert verdict["verdict"] == "valid" and verdict["chain"]["chain_id"] == 31337
    token = c.run("product show", "--gtin", GTIN, "--serial", SERIAL)["token"]
    scan = c.run("scan", token)
    assert scan["verdict"] == "genuine" and scan["anchor"] == verdict["anchor"]

    server = serve_store()
    url = server.url + f"/01/{GTIN}/21/{SERIAL}?t={token}"
    answer = validate(httpx.get(url, headers=JSON_ACCEPT, timeout=10).json(), "http/code")
    assert answer["verdict"] == "genuine" and answer["anchor"] == scan["anchor"]

    # anchor --every: one JSON line per run.
    write_second_batch(cli)
    provmint = [sys.executable, "-m", "provmint"]
    line = first_line_then_stop([*provmint, "anchor", "--every", "1h", "--json", *method])
    every = validate(json.loads(line), "commands/anchor-every")
    assert every["error"] is None and every["result"]["anchor"]["state"] == "confirmed"

    # devchain: one JSON line, then it waits.
    line = first_line_then_stop([*provmint, "devchain", "--json", "--port", str(free_port())])
    assert validate(json.loads(line), "commands/devchain")["chain_id"] == 31337
    c.validated.add("devchain")

    assert c.validated - OFFLINE == ON_CHAIN


def write_second_batch(cli: Callable[..., Any]) -> None:
    """A second batch, pending, for the anchor loop to anchor."""
    Path("second.csv").write_text(f"gtin,serial\n{GTIN},SECOND1\n", encoding="utf-8")
    r = cli("batch", "create", "second.csv", "--json")
    assert r.exit_code == 0, r.output


def first_line_then_stop(command: list[str], timeout: float = 120) -> str:
    """Start a long-running command, wait for its first line on standard output, stop
    it with SIGTERM (as an operator would) and return the line."""
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout
    reader = threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True)
    reader.start()
    try:
        line = lines.get(timeout=timeout)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        reader.join(10)
    assert line, err
    return line
