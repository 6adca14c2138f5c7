"""End-to-end smoke test of the README flow through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import EXAMPLE_CSV


def test_readme_flow(cli, isolated: Path) -> None:
    result = cli("keys", "init")
    assert result.exit_code == 0, result.output
    result = cli("batch", "create", EXAMPLE_CSV, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["products"] == 9 and summary["rejected"] == 0
    result = cli(
        "proof",
        "export",
        "--gtin",
        "09520123450014",
        "--serial",
        "546CAWQDCR56",
        "-o",
        "proof.json",
    )
    assert result.exit_code == 0, result.output
    result = cli("verify", "proof.json", "--json")
    assert result.exit_code == 4, result.output  # valid, not anchored yet
    report = json.loads(result.stdout)
    assert report["verdict"] == "pending"
    assert report["computed_root"] == summary["tree"]["root"]
