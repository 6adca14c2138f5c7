"""The process-wide settings the command line makes for itself (``provmint.cli._tuning``):
made before numpy is imported, inherited by the workers, and never over a user's own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from provmint.config import Settings

_REPORT = (
    "import atexit, os, sys, runpy\n"
    "def report():\n"
    "    names = ('OPENBLAS_NUM_THREADS', 'NUMPY_MADVISE_HUGEPAGE')\n"
    "    print('ENV', *(os.environ.get(n) for n in names), 'numpy' in sys.modules, flush=True)\n"
    "atexit.register(report)\n"
    "sys.argv = ['provmint', *sys.argv[1:]]\n"
    "runpy.run_module('provmint', run_name='__main__')\n"
)


def _run(args: list[str], **env: str) -> str:
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OPENBLAS_NUM_THREADS", "NUMPY_MADVISE_HUGEPAGE")
    }
    done = subprocess.run(
        [sys.executable, "-c", _REPORT, *args],
        capture_output=True,
        text=True,
        env=base | env,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize(("given", "expected"), [(None, "1"), ("3", "3")])
def test_commands_keep_numpys_blas_to_one_thread_unless_told(
    given: str | None, expected: str
) -> None:
    """numpy's OpenBLAS spins a thread per core after its import (a fourteenth of a 1M
    mint's CPU on 2 cores): every command runs with OPENBLAS_NUM_THREADS=1 unless the
    user set it; a command that never imports numpy is not tuned for batch work."""
    out = _run(
        ["config", "show", "--json"], **({} if given is None else {"OPENBLAS_NUM_THREADS": given})
    )
    assert f"ENV {expected} None" in out, out


@pytest.mark.parametrize("given", [None, "1"])
def test_a_mint_runs_without_numpys_huge_pages_unless_told(
    keyed: Settings, given: str | None
) -> None:
    out = _run(
        ["batch", "create", str(ROOT / "examples" / "products.csv"), "--json"],
        **({} if given is None else {"NUMPY_MADVISE_HUGEPAGE": given}),
    )
    assert f"ENV 1 {given or '0'} True" in out, out


_FAULTS = (
    "import resource, sys\n"
    "{tune}\n"
    "def faults_of_a_block():\n"
    "    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
    "    block = bytearray(16 << 20)\n"
    "    block[::4096] = b'x' * len(block[::4096])\n"
    "    del block\n"
    "    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before\n"
    "faults_of_a_block()\n"
    "print(faults_of_a_block())\n"
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
@pytest.mark.parametrize("tuned", [True, False])
def test_batch_work_reuses_freed_memory(tuned: bool, tmp_path: Path) -> None:
    """A chunk's arrays, freed, are reused by the next chunk instead of being returned to
    the system and faulted in again: after ``for_batch_work`` a second 16 MB block costs
    (almost) no page faults; without it, one a page."""
    tune = "from provmint.cli._tuning import for_batch_work; for_batch_work()" if tuned else ""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    done = subprocess.run(
        [sys.executable, "-c", _FAULTS.format(tune=tune)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    faults = int(done.stdout)
    pages = (16 << 20) // 4096
    assert (faults < pages // 16) if tuned else (faults > pages // 2), faults


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
@pytest.mark.parametrize(
    "users",
    [
        {"MALLOC_TRIM_THRESHOLD_": "0", "MALLOC_MMAP_THRESHOLD_": str(1 << 20)},
        {"MALLOC_MMAP_THRESHOLD_": str(1 << 20)},
        {"GLIBC_TUNABLES": f"glibc.malloc.mmap_threshold={1 << 20}"},
    ],
)
def test_a_users_malloc_settings_are_kept(users: dict[str, str]) -> None:
    """With either of the user's own glibc thresholds (variable or tunable), glibc keeps
    what the user chose: here, 16 MB blocks mapped and unmapped each time."""
    code = _FAULTS.format(tune="from provmint.cli._tuning import for_batch_work; for_batch_work()")
    base = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env = {**base, **users}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert int(done.stdout) > (16 << 20) // 4096 // 2, done.stdout
