"""Listings (``batch list``, ``keys list``): a table for people on a terminal, tab-separated
lines for pipes; ids never cut; ``latest`` names the newest batch."""

from __future__ import annotations

import json
import re
from pathlib import Path

from conftest import EXAMPLE_CSV, run_provmint
from helpers import mint_example, one_error

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _mint_renamed(cli, tmp_path: Path, name: str) -> str:
    """Mint the example under another file name (other serials, so no duplicates)."""
    header, *rows = EXAMPLE_CSV.read_text(encoding="utf-8").splitlines()
    rows = [row.replace(",", ",Z", 1) for row in rows]  # serials prefixed: new products
    text = "\n".join([header, *rows]) + "\n"
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    r = cli("batch", "create", path, "--json")
    assert r.exit_code == 0, r.output
    return str(json.loads(r.stdout)["batch_id"])


def test_piped_listing_is_tab_separated_and_whole(cli, keyed, tmp_path: Path) -> None:
    first = mint_example(cli)
    # A file name with a tab and a newline: still one line of seven fields.
    second = _mint_renamed(cli, tmp_path, "odd\tname\n.csv")
    r = cli("batch", "list")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].split("\t") == [
        "batch",
        "created",
        "products",
        "rejected",
        "source",
        "root",
        "anchor",
    ]
    rows = [line.split("\t") for line in lines[1:]]
    assert [row[0] for row in rows] == [first, second]
    assert all(len(row) == 7 for row in rows)
    batches = json.loads(cli("batch", "list", "--json").stdout)["batches"]
    listed = {b["batch_id"]: b for b in batches}
    for row in rows:
        assert row[5] == listed[row[0]]["tree"]["root"]  # the whole hash, not shortened
        assert row[1] == listed[row[0]]["created_at"]
    assert rows[1][4] == "odd name .csv"
    assert not re.search(r"[\u2500-\u257f]", r.stdout)  # no box drawing


def test_terminal_listing_keeps_ids_whole_at_80_columns(keyed, tmp_path: Path) -> None:
    env = {"FORCE_COLOR": "1", "COLUMNS": "80"}
    created = run_provmint("batch", "create", EXAMPLE_CSV, "--json")
    assert created.returncode == 0, created.stderr
    batch_id = json.loads(created.stdout)["batch_id"]
    r = run_provmint("batch", "list", env=env)
    assert r.returncode == 0, r.stderr
    text = _ANSI.sub("", r.stdout)
    assert batch_id in text
    assert "products.csv" in text and "pending" in text
    assert max(len(line) for line in text.splitlines()) <= 80
    keys = run_provmint("keys", "list", env=env)
    assert keys.returncode == 0, keys.stderr
    key_id = json.loads(run_provmint("keys", "list", "--json").stdout)["keys"][0]["id"]
    assert key_id in _ANSI.sub("", keys.stdout)


def test_latest_names_the_newest_batch(cli, keyed, tmp_path: Path) -> None:
    mint_example(cli)
    newest = _mint_renamed(cli, tmp_path, "second.csv")
    shown = cli("batch", "show", "latest", "--json")
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["batch_id"] == newest
    audited = cli("verify", "--batch", "latest", "--json")
    assert json.loads(audited.stdout)["batch_id"] == newest


def test_latest_without_batches_says_so(cli, keyed, tmp_path: Path, write_csv) -> None:
    bad = write_csv("bad.csv", "gtin,serial\n123,\n")
    assert cli("batch", "create", bad).exit_code != 0  # creates the store, mints nothing
    one_error(cli("batch", "show", "latest"), 7, "no batches yet")
