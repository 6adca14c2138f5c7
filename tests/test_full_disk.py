"""A full disk during ``batch create``, at every stage: the command fails with one clear
line (exit 1), the staging directory is gone and the store is exactly as it was.

A real full disk: a small tmpfs mounted in a private user and mount namespace, filled
with a ballast file so that only ``free`` bytes are left, for a sweep of ``free`` from
nothing to just enough, so that the disk fills while writing parts, the tree file, the
manifest, the catalog's indexes and its commit.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import EXAMPLE_CSV, ROOT

sys.path.insert(0, str(ROOT / "scripts"))
from make_products import write_csv as write_products

pytestmark = pytest.mark.slow

_DRIVER = r"""
import json, os, shutil, subprocess, sys
fs, csv, example, points = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
os.makedirs(fs, exist_ok=True)
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", fs], check=True)

def provmint(store, *args):
    env = {**os.environ, "PROVMINT_STORE": store}
    return subprocess.run([sys.executable, "-m", "provmint", *args], capture_output=True,
                          text=True, env=env)

def free():
    return shutil.disk_usage(fs).free

def listing(store):
    r = provmint(store, "batch", "list", "--json")
    return json.loads(r.stdout)["batches"] if r.returncode == 0 else r.stderr

# How much a mint of `csv` takes, measured in a throwaway store on the same disk.
probe = os.path.join(fs, "probe")
assert provmint(probe, "batch", "create", example).returncode == 0
before = free()
assert provmint(probe, "batch", "create", csv, "--workers", "2").returncode == 0
need = before - free()
shutil.rmtree(probe)

store = os.path.join(fs, "store")
assert provmint(store, "batch", "create", example).returncode == 0
initial = listing(store)
results = []
for i in range(points + 1):
    # The last point leaves room for the work files too (chunk files, spilled index
    # runs, tree levels before assembly), which need about as much again while it runs.
    left = need * i // points + (2 * need if i == points else 0)
    ballast = os.path.join(fs, "ballast")
    with open(ballast, "wb") as fh:
        os.posix_fallocate(fh.fileno(), 0, max(0, free() - left))
    r = provmint(store, "batch", "create", csv, "--workers", "2", "--json")
    os.unlink(ballast)
    results.append({"left": left, "rc": r.returncode, "stderr": r.stderr,
                    "staging": os.listdir(os.path.join(store, "staging")),
                    "batches": listing(store)})
    if r.returncode == 0:
        break
exports = [provmint(store, "batch", "export", b["batch_id"], "--allow-placeholder").returncode
           for b in listing(store)]
print(json.dumps({"need": need, "initial": initial, "results": results, "exports": exports}))
"""


def test_full_disk_at_every_stage_of_a_mint(keyed, tmp_path: Path) -> None:
    probe = subprocess.run(["unshare", "-r", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"user namespaces unavailable here: {probe.stderr.decode().strip()}")
    big = tmp_path / "big.csv"
    write_products(big, 32_000, seed=3)  # over 2 MiB: minted by the worker pool
    done = subprocess.run(
        [
            "unshare",
            "-r",
            "-m",
            sys.executable,
            "-c",
            _DRIVER,
            str(tmp_path / "fs"),
            str(big),
            str(EXAMPLE_CSV),
            "10",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)
    initial, results = outcome["initial"], outcome["results"]
    assert results[-1]["rc"] == 0, results[-1]["stderr"]  # with enough space it works
    failures = results[:-1]
    assert len(failures) >= 8, [r["left"] for r in results]
    for r in failures:
        where = f"with {r['left']:,} bytes free"
        assert "Traceback" not in r["stderr"], (where, r["stderr"])
        assert r["rc"] == 1, (where, r["rc"], r["stderr"])
        errors = [ln for ln in r["stderr"].splitlines() if ln.startswith("error: ")]
        assert len(errors) == 1, (where, r["stderr"])
        assert "no space left" in errors[0].lower(), (where, errors[0])
        assert "free" in errors[0] and "None" not in errors[0], (where, errors[0])
        assert r["staging"] == [], (where, r["staging"])
        assert r["batches"] == initial, (where, r["batches"])
    final = results[-1]
    assert final["batches"][: len(initial)] == initial
    assert len(final["batches"]) == len(initial) + 1 and final["staging"] == []
    assert outcome["exports"] == [0, 0]  # both batches whole and readable
