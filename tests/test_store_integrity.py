"""The store never loses what it holds: a missing, damaged or stale catalog stops writers
with a hint naming ``provmint store repair``, which rebuilds it from the batch directories
and the anchor records; leftover cleanup touches only staging directories of dead
writers; a read-only store can be read.

Real stores, real processes, a real read-only mount (in a user namespace), a real chain.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import EXAMPLE_CSV, ROOT, Anvil, run_provmint
from helpers import anchor_json, csv_text, mint_example, no_crash, one_error

sys.path.insert(0, str(ROOT / "scripts"))
from make_products import write_csv as write_products

EXAMPLE_GTIN, EXAMPLE_SERIAL = "09520123450014", "546CAWQDCR56"


def _tree_digest(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` but the lock files (relative path -> bytes)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.endswith(".lock")
    }


def _other_csv(write_csv: Any, name: str = "other.csv", serial: str = "ZZ1") -> Path:
    return write_csv(name, csv_text(["gtin", "serial"], [[EXAMPLE_GTIN, serial]]))


def _batches(cli: Any) -> list[dict[str, Any]]:
    r = cli("batch", "list", "--json")
    assert r.exit_code == 0, r.output
    result: list[dict[str, Any]] = json.loads(r.stdout)["batches"]
    return result


def _repair(cli: Any, *args: str) -> dict[str, Any]:
    r = cli("store", "repair", "--json", *args)
    no_crash(r)
    assert r.exit_code == 0, r.output
    result: dict[str, Any] = json.loads(r.stdout)
    return result


# --------------------------------------------------------------------------- a missing catalog


def test_missing_catalog_never_deletes_batches(cli, keyed, tmp_path: Path, write_csv) -> None:
    """The reproducer: catalog.duckdb deleted, then batch create and anchor."""
    first = mint_example(cli)
    store = tmp_path / "store"
    before = _tree_digest(store / "batches")
    (store / "catalog.duckdb").unlink()

    create = cli("batch", "create", _other_csv(write_csv))
    one_error(create, 1, "has no catalog", "1 batch directory")
    assert "provmint store repair" in create.stderr
    anchor = cli("anchor", "--rpc-url", "http://127.0.0.1:9", "--chain-id", "31337")
    no_crash(anchor)
    assert anchor.exit_code != 0
    listing = cli("batch", "list")
    one_error(listing, 1, "has no catalog")
    assert not (store / "catalog.duckdb").exists(), "a command created an empty catalog"
    assert _tree_digest(store / "batches") == before

    report = _repair(cli)
    assert report["batches"] == [first] and report["products"] == 9
    assert [b["batch_id"] for b in _batches(cli)] == [first]
    # Everything the catalog indexes works again: duplicates, lookups by key and token.
    again = cli("batch", "create", EXAMPLE_CSV)
    assert again.exit_code == 6 and "already minted in batch " + first in again.stderr
    shown = cli("product", "show", "--gtin", EXAMPLE_GTIN, "--serial", EXAMPLE_SERIAL, "--json")
    assert shown.exit_code == 0, shown.output
    token = json.loads(shown.stdout)["token"]
    by_token = cli("product", "show", "--token", token, "--json")
    assert json.loads(by_token.stdout)["leaf_index"] == 0
    audit = cli("verify", "--batch", first)
    assert audit.exit_code == 4, audit.output  # intact, not anchored
    assert cli("batch", "create", _other_csv(write_csv)).exit_code == 0
    assert len(_batches(cli)) == 2


def test_repair_keeps_batch_numbers_and_the_old_catalog(
    cli, keyed, tmp_path: Path, write_csv
) -> None:
    ids = [mint_example(cli)]
    for i in range(3):
        r = cli("batch", "create", _other_csv(write_csv, f"o{i}.csv", f"S{i}"), "--json")
        ids.append(json.loads(r.stdout)["batch_id"])
    store = tmp_path / "store"
    before = _batches(cli)
    report = _repair(cli)
    assert report["previous_catalog"].startswith("catalog.duckdb.before-repair-")
    assert (store / report["previous_catalog"]).exists(), "the old catalog was not kept"
    assert _batches(cli) == before

    import duckdb

    con = duckdb.connect(str(store / "catalog.duckdb"), read_only=True)
    try:
        seqs = con.execute("SELECT batch_id, seq FROM batches ORDER BY seq").fetchall()
        counts = con.execute("SELECT sum(entries) FROM index_runs WHERE kind = 1").fetchone()
        view = con.execute("SELECT count(*) FROM products").fetchone()
    finally:
        con.close()
    assert [b for b, _ in seqs] == ids and [s for _, s in seqs] == [1, 2, 3, 4]
    assert counts == (12,) and view == (12,)


def test_dry_run_changes_nothing(cli, keyed, tmp_path: Path) -> None:
    mint_example(cli)
    store = tmp_path / "store"
    (store / "catalog.duckdb").unlink()
    before = _tree_digest(store)
    report = _repair(cli, "--dry-run")
    assert report["dry_run"] and report["products"] == 9
    assert _tree_digest(store) == before


# --------------------------------------------------------------------------- damaged catalogs


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_damaged_catalog_names_the_repair(
    cli, keyed, tmp_path: Path, write_csv, damage: str
) -> None:
    first = mint_example(cli)
    catalog = tmp_path / "store" / "catalog.duckdb"
    data = catalog.read_bytes()
    catalog.write_bytes(
        {"garbage": os.urandom(len(data)), "truncated": data[:5000], "empty": b""}[damage]
    )
    damaged = catalog.read_bytes()
    for args in (
        ("batch", "list"),
        ("batch", "create", _other_csv(write_csv)),
        ("product", "show", "--gtin", EXAMPLE_GTIN, "--serial", EXAMPLE_SERIAL),
    ):
        r = cli(*args)
        no_crash(r)
        assert r.exit_code == 1, (args, r.output)
        assert "catalog" in r.stderr and "provmint store repair" in r.stderr, r.stderr
    assert catalog.read_bytes() == damaged
    report = _repair(cli)
    assert report["batches"] == [first]
    assert (tmp_path / "store" / report["previous_catalog"]).read_bytes() == damaged
    assert cli("batch", "create", _other_csv(write_csv)).exit_code == 0


def test_stale_catalog_stops_writers_until_repaired(cli, keyed, tmp_path: Path, write_csv) -> None:
    """A catalog restored from a backup older than the batch files: minting on would miss
    duplicates in the newer batches, so writers stop; nothing is deleted."""
    mint_example(cli)
    catalog = tmp_path / "store" / "catalog.duckdb"
    backup = catalog.read_bytes()
    second = json.loads(cli("batch", "create", _other_csv(write_csv), "--json").stdout)
    catalog.write_bytes(backup)
    (catalog.parent / "catalog.duckdb.wal").unlink(missing_ok=True)
    before = _tree_digest(tmp_path / "store" / "batches")

    r = cli("batch", "create", _other_csv(write_csv, "third.csv", "ZZ3"))
    one_error(r, 1, f"batches/{second['batch_id']} is not in the catalog")
    assert "provmint store repair" in r.stderr
    assert _tree_digest(tmp_path / "store" / "batches") == before
    report = _repair(cli)
    assert report["batches"][-1] == second["batch_id"]
    dup = cli("batch", "create", _other_csv(write_csv, "again.csv", "ZZ1"))
    assert dup.exit_code == 6 and "already minted" in dup.stderr


def test_unrestorable_directories_are_quarantined_not_deleted(cli, keyed, tmp_path: Path) -> None:
    first = mint_example(cli)
    batches = tmp_path / "store" / "batches"
    junk = batches / "not-a-batch"
    junk.mkdir()
    (junk / "notes.txt").write_text("someone's file")
    broken = batches / "20260101-deadbeef"
    shutil.copytree(batches / first, broken)  # its manifest names another batch
    report = _repair(cli)
    assert report["batches"] == [first]
    moved = {q["directory"]: q for q in report["quarantined"]}
    assert set(moved) == {"batches/not-a-batch", "batches/20260101-deadbeef"}
    assert "no manifest.json" in moved["batches/not-a-batch"]["reason"]
    assert "does not describe" in moved["batches/20260101-deadbeef"]["reason"]
    store = tmp_path / "store"
    assert (
        store / moved["batches/not-a-batch"]["moved_to"] / "notes.txt"
    ).read_text() == "someone's file"
    assert [b.name for b in batches.iterdir()] == [first]


def test_repair_through_the_cli_for_people(cli, keyed, tmp_path: Path) -> None:
    mint_example(cli)
    (tmp_path / "store" / "catalog.duckdb").unlink()
    r = cli("store", "repair")
    assert r.exit_code == 0, r.output
    assert "Restored 1 batch (9 products)" in r.stdout
    assert "there was no catalog" in r.stdout
    helped = cli("store", "repair", "--help")
    assert "provmint store repair --dry-run" in helped.stdout


def test_repair_of_no_store_is_a_clear_error(cli) -> None:
    one_error(cli("store", "repair"), 1, "no provmint store")


# --------------------------------------------------------------------------- leftovers


def test_cleanup_removes_only_dead_writers_staging(cli, keyed, tmp_path: Path, write_csv) -> None:
    mint_example(cli)
    staging = tmp_path / "store" / "staging"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(dead.stdout)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        leftovers = {
            "dead": staging / f"20261130-0000aaaa.{dead_pid}",
            "alive": staging / f"20261130-0000bbbb.{sleeper.pid}",
            "stranger": staging / "my-notes",
        }
        for path in leftovers.values():
            (path / "products").mkdir(parents=True)
            (path / "products" / "x").write_text("data")
        assert cli("batch", "create", _other_csv(write_csv)).exit_code == 0
        assert not leftovers["dead"].exists()
        assert leftovers["alive"].exists() and leftovers["stranger"].exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_cleanup_removes_only_dead_writers_temporary_files(
    cli, keyed, tmp_path: Path, write_csv
) -> None:
    """A writer killed inside an atomic write leaves ``.<name>.<pid>.<hex>.tmp``: the
    next writer removes those of dead processes, and nothing else."""
    mint_example(cli)
    store = tmp_path / "store"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(dead.stdout)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (store / "anchors").mkdir(exist_ok=True)
        dead_files = [
            store / "anchors" / f".1.json.{dead_pid}.0a1b2c3d.tmp",
            store / "index" / f".runs.{dead_pid}.deadbeef.tmp",
            store / f".catalog.duckdb.{dead_pid}.00000000.tmp",
        ]
        kept = [
            store / "anchors" / f".2.json.{sleeper.pid}.0a1b2c3d.tmp",  # still writing
            store / "anchors" / f".3.json.{dead_pid}.0a1b2c3d.txt",  # not our shape
            store / "anchors" / f"notes.{dead_pid}.0a1b2c3d.tmp",  # not hidden: not ours
        ]
        for path in dead_files + kept:
            path.write_text("half")
        assert cli("batch", "create", _other_csv(write_csv)).exit_code == 0
        assert [p for p in dead_files if p.exists()] == []
        assert all(p.read_text() == "half" for p in kept)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_committed_batch_left_in_staging_is_read_then_finished(
    cli, keyed, tmp_path: Path, write_csv
) -> None:
    """A writer killed between its commit and its rename: readers find the batch in
    staging/, the next writer moves it into place."""
    first = mint_example(cli)
    store = tmp_path / "store"
    staged = store / "staging" / f"{first}.999999"
    os.replace(store / "batches" / first, staged)
    shown = cli("product", "show", "--gtin", EXAMPLE_GTIN, "--serial", EXAMPLE_SERIAL)
    assert shown.exit_code == 0, shown.output
    assert cli("verify", "--batch", first).exit_code == 4
    assert cli("batch", "create", _other_csv(write_csv)).exit_code == 0
    assert (store / "batches" / first / "manifest.json").exists() and not staged.exists()


# --------------------------------------------------------------------------- read-only stores


def _read_only(store: Path, *commands: list[str]) -> list[subprocess.CompletedProcess[str]]:
    """Run provmint commands with ``store`` mounted read-only (a bind mount in a private
    user and mount namespace: a real EROFS, no root needed)."""
    script = (
        "import subprocess, sys, json\n"
        f"subprocess.run(['mount', '--bind', '-o', 'ro', {str(store)!r}, {str(store)!r}],"
        " check=True)\n"
        "out = []\n"
        f"for args in {commands!r}:\n"
        "    r = subprocess.run([sys.executable, '-m', 'provmint', *args],"
        " capture_output=True, text=True)\n"
        "    out.append([r.returncode, r.stdout, r.stderr])\n"
        "print(json.dumps(out))\n"
    )
    probe = subprocess.run(["unshare", "-r", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"user namespaces unavailable here: {probe.stderr.decode().strip()}")
    done = subprocess.run(
        ["unshare", "-r", "-m", sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return [
        subprocess.CompletedProcess(args, rc, out, err)
        for args, (rc, out, err) in zip(commands, json.loads(done.stdout), strict=True)
    ]


def test_read_only_store_can_be_read(cli, keyed, tmp_path: Path, write_csv) -> None:
    first = mint_example(cli)
    store = tmp_path / "store"
    (store / ".lock").unlink()  # a copy made without it: readers must not need to make one
    other = _other_csv(write_csv)
    results = _read_only(
        store,
        ["batch", "list", "--json"],
        ["batch", "show", first, "--json"],
        ["product", "show", "--gtin", EXAMPLE_GTIN, "--serial", EXAMPLE_SERIAL, "--json"],
        ["proof", "export", "--gtin", EXAMPLE_GTIN, "--serial", EXAMPLE_SERIAL],
        ["verify", "--batch", first],
        ["batch", "create", str(other)],
        ["store", "repair"],
    )
    *reads, create, repair = results
    for r in reads:
        assert r.returncode in (0, 4), (r.args, r.stderr)
        assert "Traceback" not in r.stderr
    assert json.loads(reads[0].stdout)["batches"][0]["batch_id"] == first
    for r in (create, repair):
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        assert "read-only" in r.stderr, r.stderr


# --------------------------------------------------------------------------- anchors survive


def test_repair_restores_anchors_from_their_records(
    cli, keyed, chain_env: Anvil, tmp_path: Path
) -> None:
    first = mint_example(cli)
    anchored = anchor_json(cli)["anchor"]
    store = tmp_path / "store"
    records = sorted((store / "anchors").glob("*.json"))
    assert [json.loads(p.read_text())["state"] for p in records] == ["confirmed"]
    shown_before = json.loads(cli("batch", "show", first, "--json").stdout)["anchor"]

    (store / "catalog.duckdb").unlink()
    report = _repair(cli)
    assert report["anchors"] == 1
    assert json.loads(cli("batch", "show", first, "--json").stdout)["anchor"] == shown_before
    proof = tmp_path / "proof.json"
    r = cli("proof", "export", "--gtin", EXAMPLE_GTIN, "--serial", EXAMPLE_SERIAL, "-o", proof)
    assert r.exit_code == 0, r.output
    assert json.loads(proof.read_text())["anchor"]["tx_hash"] == anchored["tx_hash"]
    verified = cli("verify", proof, "--rpc-url", chain_env.url)
    assert verified.exit_code == 0, verified.output
    # Nothing is pending, so nothing is anchored twice.
    again = anchor_json(cli)
    assert again["anchor"] is None


def test_repair_takes_anchors_from_a_readable_catalog(
    cli, keyed, chain_env: Anvil, tmp_path: Path
) -> None:
    """Anchors recorded before anchor files existed survive a rebuild too."""
    first = mint_example(cli)
    anchor_json(cli)
    shutil.rmtree(tmp_path / "store" / "anchors")
    report = _repair(cli)
    assert report["anchors"] == 1
    assert (
        json.loads(cli("batch", "show", first, "--json").stdout)["anchor"]["state"] == "confirmed"
    )


# --------------------------------------------------------------------------- interrupted repair


@pytest.mark.parametrize("target", ["provmint.store.rebuild.swap_catalog", "os.replace"])
def test_repair_killed_midway_can_be_run_again(cli, keyed, tmp_path: Path, target: str) -> None:
    from helpers import KILLER

    first = mint_example(cli)
    store = tmp_path / "store"
    before = _tree_digest(store / "batches")
    module, _, attr = target.rpartition(".")
    skip = "1" if target == "os.replace" else "0"  # the second replace: old catalog moved
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, module, attr, skip, "store", "repair"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == -9, killed.stderr
    assert _tree_digest(store / "batches") == before
    again = run_provmint("store", "repair", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["batches"] == [first]
    assert not list(store.glob("catalog.duckdb.repair-*"))
    assert run_provmint("batch", "show", first).returncode == 0


def test_repair_restores_many_parts(cli, keyed, tmp_path: Path) -> None:
    """A batch of several Parquet parts: every product is found again after a rebuild."""
    big = tmp_path / "big.csv"
    write_products(big, 70_000, seed=5)
    created = cli("batch", "create", big, "--json", "--workers", "1")
    assert created.exit_code == 0, created.output
    (tmp_path / "store" / "catalog.duckdb").unlink()
    assert _repair(cli)["products"] == 70_000
    again = cli("batch", "create", big)
    assert again.exit_code == 6
    assert "70000 of 70000 rows are invalid" in again.stderr.replace(",", "")
