"""Interrupted and concurrent minting: the store is as it was or finished, never between.

Real ``kill -9`` of real ``provmint batch create`` processes: at random moments from the
outside, and at exact points from the inside (a wrapper makes the process SIGKILL itself
at a chosen function, which is what an unlucky outside kill does, made repeatable).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import EXAMPLE_CSV, ROOT, run_provmint
from helpers import KILLER

sys.path.insert(0, str(ROOT / "scripts"))
from make_products import write_csv

pytestmark = pytest.mark.slow


def _batches() -> list[dict[str, object]]:
    """The listed batches, without what printing them adds (each check exports them)."""
    result = run_provmint("batch", "list", "--json")
    assert result.returncode == 0, result.stderr
    batches = json.loads(result.stdout)["batches"]
    return [{k: v for k, v in b.items() if k != "printed"} for b in batches]


def _assert_consistent(
    store: Path, before: list[dict[str, object]], most: int = 1
) -> list[dict[str, object]]:
    """Every listed batch is whole; no new batch is half there. Returns the batch list."""
    after = _batches()
    assert after[: len(before)] == before, "existing batches changed"
    assert len(before) <= len(after) <= len(before) + most
    listed = {b["batch_id"] for b in after}
    batches_dir = store / "batches"
    on_disk = {p.name for p in batches_dir.iterdir()} if batches_dir.exists() else set()
    # batches/ only ever holds committed batches; a committed batch whose writer died
    # before moving it may still be in staging/ (readers find it there).
    assert on_disk <= listed
    staged = {
        p.name.split(".")[0]
        for p in (store / "staging").glob("*.*")
        if (p / "manifest.json").exists()
    }
    assert listed <= on_disk | staged
    for batch in after:
        bid = batch["batch_id"]
        rows = run_provmint("batch", "export", bid, "--allow-placeholder")
        assert rows.returncode == 0, rows.stderr
        assert rows.stdout.count("\n") == batch["products"] + 1  # header + one line each
    return after


def _prepare(tmp_path: Path, rows: int) -> tuple[Path, Path, list[dict[str, object]]]:
    assert run_provmint("keys", "init").returncode == 0
    first = run_provmint("batch", "create", EXAMPLE_CSV, "--json")
    assert first.returncode == 0, first.stderr
    big = tmp_path / "big.csv"
    write_csv(big, rows, seed=11)
    return big, tmp_path / "store", _batches()


def _verify_example_still_valid(tmp_path: Path) -> None:
    proof = run_provmint(
        "proof",
        "export",
        "--gtin",
        "09520123450014",
        "--serial",
        "546CAWQDCR56",
        "-o",
        tmp_path / "p.json",
    )
    assert proof.returncode == 0, proof.stderr
    assert run_provmint("verify", tmp_path / "p.json").returncode == 4


@pytest.mark.parametrize(
    ("module", "target", "skip"),
    [
        ("provmint.engine", "run_chunk", 1),  # mid-mint: some chunks written
        ("provmint.store", "Store.commit_batch", 0),  # staging complete, nothing committed
        ("provmint.store", "insert_batch", 0),  # in the commit's transaction
        ("provmint.store", "Store.publish", 0),  # committed, files still in staging/
        ("provmint.store", "Store.refresh_view", 0),  # committed and moved into place
        ("provmint.batch", "MintSummary", 0),  # committed, before the summary
    ],
)
def test_kill_at_exact_points(tmp_path: Path, module: str, target: str, skip: int) -> None:
    big, store, before = _prepare(tmp_path, 140_000)
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            KILLER,
            module,
            target,
            str(skip),
            "batch",
            "create",
            big,
            "--workers",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    after = _assert_consistent(store, before)
    committed = len(after) == len(before) + 1
    assert committed == (target in ("Store.publish", "Store.refresh_view", "MintSummary"))
    _verify_example_still_valid(tmp_path)
    rerun = run_provmint("batch", "create", big, "--json")
    if committed:
        assert rerun.returncode == 6 and "already minted" in rerun.stderr
    else:
        assert rerun.returncode == 0, rerun.stderr
        assert json.loads(rerun.stdout)["products"] == 140_000
    assert not any((store / "staging").iterdir()), "staging leftovers were not cleaned"
    final = _assert_consistent(store, before)
    assert len(final) == len(before) + 1


@pytest.mark.parametrize("delay", [0.3, 0.8, 1.4, 2.2])
def test_kill_from_outside_at_random_moments(tmp_path: Path, delay: float) -> None:
    big, store, before = _prepare(tmp_path, 200_000)
    proc = subprocess.Popen(
        [sys.executable, "-m", "provmint", "batch", "create", big],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    after = _assert_consistent(store, before)
    rerun = run_provmint("batch", "create", big)
    assert rerun.returncode == (6 if len(after) > len(before) else 0), rerun.stderr
    final = _assert_consistent(store, before)
    assert len(final) == len(before) + 1
    _verify_example_still_valid(tmp_path)


def test_concurrent_creates_of_the_same_file_mint_once(tmp_path: Path) -> None:
    big, store, before = _prepare(tmp_path, 100_000)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "provmint",
                "batch",
                "create",
                big,
                "--json",
                "--rejects",
                tmp_path / f"r{i}.csv",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for p in procs:
        p.communicate(timeout=120)
    assert sorted(p.returncode for p in procs) == [0, 6]
    after = _assert_consistent(store, before)
    assert len(after) == len(before) + 1
    assert after[-1]["products"] == 100_000


def test_second_writer_waits_for_the_lock_then_succeeds(tmp_path: Path) -> None:
    from provmint.store.lock import store_lock

    _, store, before = _prepare(tmp_path, 10)
    other = tmp_path / "other.csv"
    write_csv(other, 1000, seed=99)
    with store_lock(store, exclusive=True, timeout=0, purpose="batch create"):
        waiting = subprocess.Popen(
            [sys.executable, "-m", "provmint", "batch", "create", other],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(2.0)
        assert waiting.poll() is None, "the second writer did not wait for the lock"
    _, err = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, err
    assert f"waiting for the store: provmint pid {os.getpid()}" in err
    assert len(_assert_consistent(store, before)) == len(before) + 1


def test_busy_store_fails_clearly_without_waiting(tmp_path: Path) -> None:
    from provmint.store.lock import store_lock

    _, store, before = _prepare(tmp_path, 10)
    other = tmp_path / "other.csv"
    write_csv(other, 1000, seed=99)
    with store_lock(store, exclusive=True, timeout=0, purpose="batch create"):
        second = run_provmint("batch", "create", other, "--lock-timeout", "0.5")
        reader = run_provmint("batch", "list", "--lock-timeout", "0")
    assert second.returncode == 8, second.stderr
    assert f"provmint pid {os.getpid()} (batch create" in second.stderr
    assert "error: store" in second.stderr and "is busy" in second.stderr
    assert reader.returncode == 8, reader.stderr
    assert _batches() == before  # nothing was written while busy


def _wait_for_lock_holder(store: Path, timeout: float = 30) -> None:
    """Until a writer is minting (its staging directory exists)."""
    deadline = time.monotonic() + timeout
    staging = store / "staging"
    while time.monotonic() < deadline:
        if staging.exists() and any(staging.iterdir()):
            return
        time.sleep(0.01)
    raise AssertionError("the writer never started minting")


def test_no_worker_outlives_a_killed_parent(tmp_path: Path) -> None:
    big, store, _ = _prepare(tmp_path, 300_000)
    proc = subprocess.Popen(
        [sys.executable, "-m", "provmint", "batch", "create", big, "--workers", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    _wait_for_lock_holder(store)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        alive = subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True, text=True)
        if not alive.stdout.strip():
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"workers still running: {alive.stdout}")
