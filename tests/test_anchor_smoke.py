"""The anchoring happy path on a real local chain, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import EXAMPLE_CSV, dev_key


def test_anchor_then_verify_on_chain(cli, keyed, chain_env, tmp_path: Path) -> None:
    assert cli("batch", "create", EXAMPLE_CSV).exit_code == 0
    r = cli("anchor", "--json")
    assert r.exit_code == 0, r.output
    run = json.loads(r.stdout)
    assert run["anchor"]["state"] == "confirmed"
    assert run["anchor"]["sender"] == dev_key(0)[0]
    r = cli(
        "proof",
        "export",
        "--gtin",
        "09520123450014",
        "--serial",
        "546CAWQDCR56",
        "-o",
        tmp_path / "p.json",
    )
    assert r.exit_code == 0, r.output
    r = cli("verify", tmp_path / "p.json", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["verdict"] == "valid"
    assert report["chain"]["block_number"] == run["anchor"]["block_number"]
