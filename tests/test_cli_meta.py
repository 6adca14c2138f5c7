"""Meta-tests: every command documents itself, start-up stays light, the public API is
pinned, and the README's exit codes match the code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

import provmint
from provmint import errors
from provmint.cli._common import EXAMPLE_LINE

COMMANDS = [
    ["keys", "init"],
    ["keys", "rotate"],
    ["keys", "list"],
    ["batch", "create"],
    ["batch", "list"],
    ["batch", "show"],
    ["batch", "export"],
    ["proof", "export"],
    ["proof", "calldata"],
    ["product", "show"],
    ["token", "verify"],
    ["verify"],
    ["anchor"],
    ["anchor", "status"],
    ["anchor", "deploy-registry"],
    ["anchor", "deploy-verifier"],
    ["labels"],
    ["scan"],
    ["serve"],
    ["scans", "prune"],
    ["config", "show"],
    ["scans", "list"],
    ["scans", "show"],
    ["scans", "clear"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help_with_an_example(cli, command: list[str]) -> None:
    result = cli(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "Example" in result.output
    assert "provmint " + " ".join(command) in result.output or command == ["verify"]


@pytest.mark.parametrize("command", [[], *COMMANDS], ids=lambda c: " ".join(c) or "provmint")
def test_help_examples_are_never_wrapped(command: list[str]) -> None:
    """At 80 columns every example in a help page is one whole line (so it copies and
    pastes), and the prose around it still wraps within the width."""
    env = {**os.environ, "COLUMNS": "80", "TERM": "dumb"}
    out = subprocess.run(
        [sys.executable, "-m", "provmint", *command, "--help"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    lines = out.splitlines()
    examples = [i for i, line in enumerate(lines) if EXAMPLE_LINE.match(line)]
    assert examples, out
    for i in examples:
        after = lines[i + 1] if i + 1 < len(lines) else ""
        # The next line is blank, another example, or the start of another section.
        assert (
            not after.strip()
            or EXAMPLE_LINE.match(after)
            or (len(after) - len(after.lstrip()) < len(lines[i]) - len(lines[i].lstrip()))
        ), f"example wrapped: {lines[i]!r} / {after!r}"
    prose = [line for i, line in enumerate(lines) if i not in examples]
    assert max(len(line) for line in prose) <= 80


def test_help_does_not_import_heavy_modules() -> None:
    """``provmint --help`` must stay fast: no pyarrow, duckdb, numpy or web3 at start-up."""
    # Read at exit: a finished command ends the process itself (cli._exit runs the
    # exit handlers, then os._exit), so nothing after run_module would run.
    code = (
        "import atexit, sys, runpy\n"
        "def heavy():\n"
        "    found = [m for m in ('pyarrow', 'duckdb', 'numpy', 'web3', 'pydantic')"
        " if m in sys.modules]\n"
        "    print('HEAVY', found, flush=True)\n"
        "atexit.register(heavy)\n"
        "sys.argv = ['provmint', '--help']\n"
        "runpy.run_module('provmint', run_name='__main__')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "HEAVY []" in out, out


def test_the_minting_process_leaves_compute_parquet_and_rich_to_others(
    keyed, tmp_path: Path
) -> None:
    """A pooled mint (input of at least POOL_MIN_BYTES) for a pipe: this process only
    reads the file and hands chunks out; pyarrow.compute and pyarrow.parquet are the
    workers' (the fork server imports them), and neither its JSON nor its warning needs
    rich (a sixth of a second of its start, a twentieth at its end)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from make_products import write_csv

    from provmint.batch import POOL_MIN_BYTES

    source = tmp_path / "big.csv"
    write_csv(source, 40_000)
    assert source.stat().st_size >= POOL_MIN_BYTES
    code = (
        "import atexit, sys, runpy\n"
        "def loaded():\n"
        "    found = [m for m in ('pyarrow.compute', 'pyarrow.parquet', 'rich')"
        " if m in sys.modules]\n"
        "    print('LOADED', found, 'csv' if 'pyarrow.csv' in sys.modules else '', flush=True)\n"
        "atexit.register(loaded)\n"
        f"sys.argv = ['provmint', 'batch', 'create', {str(source)!r}, '--workers', '2', '--json']\n"
        "runpy.run_module('provmint', run_name='__main__')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "warning: no verification URL base is set" in done.stderr
    assert "LOADED [] csv" in done.stdout, done.stdout  # it did read the CSV with pyarrow


def test_import_provmint_is_light() -> None:
    code = (
        "import sys, provmint; provmint.__version__; "
        "print([m for m in ('pyarrow', 'duckdb', 'numpy', 'typer', 'rich') "
        "if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_public_api_is_pinned() -> None:
    expected = {
        "MintSummary",
        "ProvmintError",
        "Reject",
        "Settings",
        "Verdict",
        "VerificationReport",
        "__version__",
        "export_batch_proofs",
        "export_labels",
        "export_proof",
        "find_product",
        "init_keyring",
        "list_batches",
        "load_keyring",
        "merkle",
        "mint_batch",
        "parse_proof",
        "resolve_settings",
        "rotate_key",
        "show_batch",
        "verify_proof",
        "verify_token",
        "anchor_batches",
        "anchor_status",
        "audit_batch",
        "check_anchor_on_chain",
        "create_app",
        "deploy_registry",
        "load_chain_key",
        "render_labels",
        "resolve_chain",
        "scan_code",
    }
    assert set(provmint.__all__) == expected
    for name in provmint.__all__:
        assert getattr(provmint, name) is not None


def test_readme_lists_every_exit_code() -> None:
    readme = (ROOT / "README.md").read_text()
    codes = {getattr(errors, n) for n in dir(errors) if n.startswith("EXIT_") and n != "EXIT_CODES"}
    for code in codes:
        assert f"{code} " in readme, f"exit code {code} is not documented in the README"
    assert codes == set(range(13)) | {errors.EXIT_INTERRUPTED}


def test_python_dash_m_runs_the_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "provmint", "--version"], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == f"provmint {provmint.__version__}"


def test_shell_completion_is_offered_and_completes_commands() -> None:
    """``provmint --install-completion`` exists; the completion it installs asks
    ``provmint`` itself, which answers with the commands that fit."""
    installed = str(Path(sys.executable).parent / "provmint")  # the console script
    script = subprocess.run(
        [installed, "--show-completion", "bash"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "_PROVMINT_COMPLETE=complete_bash" in script
    assert script.rstrip().endswith(" provmint")
    help_text = subprocess.run(
        [sys.executable, "-m", "provmint", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "--install-completion" in help_text

    def complete(words: str) -> list[str]:
        env = {
            **os.environ,
            "_PROVMINT_COMPLETE": "complete_bash",
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(words.split()) - 1),
        }
        run = subprocess.run(
            [installed],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        return run.stdout.split()

    assert "batch" in complete("provmint bat")
    assert complete("provmint batch li") == ["list"]
