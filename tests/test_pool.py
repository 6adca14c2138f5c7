"""Worker pools (provmint.pool): the fork server ends without tearing its modules down."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Preloaded into the fork server beside provmint's own: an object whose finalizer runs
# only when the interpreter tears the module down, and an exit handler that must run.
WITNESS = """
import atexit, os

LOG = os.environ["WITNESS_LOG"]

def _note(what, _open=open, _log=LOG):  # usable while the module is torn down
    with _open(_log, "a") as fh:
        fh.write(what + "\\n")

class _Witness:
    def __init__(self):
        self.note = _note

    def __del__(self):
        self.note("torn down")

witness = _Witness()
atexit.register(_note, "exit handler ran")
"""

# Starts a pool with the witness preloaded, runs one task, and exits normally.
SCRIPT = """
import sys
from multiprocessing import get_context
from concurrent.futures import ProcessPoolExecutor

if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "provmint":
        from provmint.pool import start_pool
        pool = start_pool(1, preload=["pool_witness"])
    else:  # the same pool without provmint's preload: the control
        context = get_context("forkserver")
        context.set_forkserver_preload(["pool_witness"])
        pool = ProcessPoolExecutor(1, mp_context=context)
    print(pool.submit(sum, [1, 2]).result())
    pool.shutdown()
"""


def _run(tmp_path: Path, mode: str) -> list[str]:
    (tmp_path / "pool_witness.py").write_text(WITNESS)
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(SCRIPT))
    log = tmp_path / f"{mode}.log"
    env = {"PYTHONPATH": f"{tmp_path}:{Path(__file__).parents[1] / 'src'}", "WITNESS_LOG": str(log)}
    # communicate() returns once every holder of the pipes, the fork server included, is gone
    done = subprocess.run(
        [sys.executable, str(script), mode], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "3\n"
    assert done.stderr == ""
    return log.read_text().splitlines()


def test_the_fork_server_ends_without_tearing_down(tmp_path: Path) -> None:
    assert _run(tmp_path, "provmint") == ["exit handler ran"]


def test_control_a_plain_fork_server_tears_its_modules_down(tmp_path: Path) -> None:
    # Shows that the witness sees a tear-down when there is one (the test above can fail).
    assert _run(tmp_path, "plain") == ["exit handler ran", "torn down"]


@pytest.mark.parametrize("imported_by", ["import", "run"])
def test_elsewhere_the_module_does_nothing(imported_by: str) -> None:
    code = (
        "import atexit, provmint._forkserver as f; print(f.in_fork_server(), atexit._ncallbacks())"
        if imported_by == "import"
        else "import atexit; n = atexit._ncallbacks(); import provmint._forkserver as f; "
        "print(f.in_fork_server(), atexit._ncallbacks() - n)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    in_server, handlers = done.stdout.split()
    assert in_server == "False"
    if imported_by == "run":
        assert handlers == "0"


FORKED = """
import os, sys, threading

import provmint.pool
from provmint.pool import fork_pool

INITIALISED = []


def initialise(note):
    INITIALISED.append(note)


def probe(_):
    modules = ("colorsys" in sys.modules, "provmint.pool" in sys.modules)
    return (os.getppid(), *modules, tuple(INITIALISED))


if __name__ == "__main__":
    if sys.argv[1] == "thread":
        stop = threading.Event()
        threading.Thread(target=stop.wait).start()
        try:
            fork_pool(1)
        except RuntimeError as exc:
            print("refused:", exc)
        stop.set()
    else:
        assert "colorsys" not in sys.modules
        pool = fork_pool(2, preload=["colorsys"], initializer=initialise, initargs=("ready",))
        seen = set(pool.map(probe, range(8)))
        pool.shutdown()
        print(seen == {(os.getpid(), True, True, ("ready",))}, "colorsys" in sys.modules)
"""


@pytest.mark.parametrize("case", ["alone", "thread"])
def test_fork_pool(tmp_path: Path, case: str) -> None:
    """Forked workers are this process's children with its modules, import ``preload``
    (this process does not) and run the initializer; with another thread running, no
    fork: a thread's locks would stay held in the children."""
    script = tmp_path / "forked.py"
    script.write_text(textwrap.dedent(FORKED))
    env = {"PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    done = subprocess.run(
        [sys.executable, str(script), case], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    expected = (
        "True False\n"
        if case == "alone"
        else "refused: a pool is forked only from a process running one thread\n"
    )
    assert done.stdout == expected
