"""Every error has its own exit code, is mapped once at the CLI boundary and is
documented: the pinned table below, ``handle_errors``, the help's table and the README's
must all agree. And a missing input file is "not found" (7) in every command."""

from __future__ import annotations

import errno
import importlib
import json
import os
import pkgutil
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from conftest import EXAMPLE_CSV, ROOT, run_provmint
from helpers import one_error
from typer.testing import CliRunner

import provmint
from provmint import errors
from provmint.errors import (
    EXIT_CODES,
    EXIT_ERROR,
    EXIT_NOT_FOUND,
    MissingColumnError,
    MissingFileError,
    OutputError,
    ProvmintError,
    Reject,
    RowsRejectedError,
    os_error,
)

# The pin: changing an error's exit code, or adding an error class, must change this.
PINNED = {
    "provmint.errors.ProvmintError": 1,
    "provmint.errors.OutputError": 1,
    "provmint.errors.ConfigError": 2,
    "provmint.errors.PlaceholderBaseError": 2,
    "provmint.errors.InputError": 6,
    "provmint.errors.InputFileError": 6,
    "provmint.errors.MissingColumnError": 6,
    "provmint.errors.RowsRejectedError": 6,
    "provmint.errors.KeyringError": 9,
    "provmint.errors.StoreError": 1,
    "provmint.errors.StoreBusyError": 8,
    "provmint.errors.StoreCorruptError": 1,
    "provmint.store.scanlog.ScanLogError": 1,
    "provmint.errors.NotFoundError": 7,
    "provmint.errors.MissingFileError": 7,
    "provmint.errors.ProofError": 3,
    "provmint.errors.ProofUnreadableError": 5,
    "provmint.errors.NotOnChainError": 5,
    "provmint.errors.AnchorError": 10,
    "provmint.errors.NodeUnreachableError": 10,
    "provmint.errors.ChainMismatchError": 10,
    "provmint.errors.InsufficientFundsError": 10,
}

REJECT = Reject(row=2, line=3, column="serial", value="B A D", code="cset82", reason="bad")
# Classes whose constructor is not (message, *, hint): how to make one.
FACTORIES: dict[type[ProvmintError], Callable[[], ProvmintError]] = {
    OutputError: lambda: OutputError("/x/out.csv", "disk full writing /x/out.csv", hint="h"),
    errors.PlaceholderBaseError: lambda: errors.PlaceholderBaseError(
        "https://id.example.com", "provmint labels B --out l/ --url-base https://id.b.com"
    ),
    errors.InputFileError: lambda: errors.InputFileError("in.csv", "file is empty", hint="h"),
    MissingColumnError: lambda: MissingColumnError("in.csv", "serial", ["gtin"], ["sn"]),
    RowsRejectedError: lambda: RowsRejectedError("in.csv", [REJECT], 1, 2, None),
    MissingFileError: lambda: MissingFileError("/x/keys.json", "issuer key file", hint="h"),
}


def _error_classes() -> Iterator[type[ProvmintError]]:
    for module in pkgutil.walk_packages(provmint.__path__, "provmint."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    pending: list[type[ProvmintError]] = [ProvmintError]
    while pending:
        cls = pending.pop()
        yield cls
        pending.extend(cls.__subclasses__())


CLASSES = sorted(
    {c for c in _error_classes() if c.__module__.startswith("provmint.")},
    key=lambda c: f"{c.__module__}.{c.__qualname__}",
)


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _instance(cls: type[ProvmintError]) -> ProvmintError:
    factory = FACTORIES.get(cls)
    return factory() if factory else cls("something happened", hint="do this")


def test_every_error_class_is_pinned() -> None:
    assert {_name(c): c.exit_code for c in CLASSES} == PINNED


def test_every_exit_code_is_a_documented_constant() -> None:
    constants = {v for k, v in vars(errors).items() if k.startswith("EXIT_") and k != "EXIT_CODES"}
    assert constants == set(EXIT_CODES)
    assert {c.exit_code for c in CLASSES} <= set(EXIT_CODES)
    assert len(set(EXIT_CODES)) == len(EXIT_CODES)


def _raising(exc: BaseException) -> typer.Typer:
    """A one-command app whose command raises ``exc`` through ``handle_errors``."""
    from provmint.cli._common import handle_errors

    app = typer.Typer()

    @app.command()
    @handle_errors
    def fail() -> None:
        raise exc

    return app


@pytest.mark.parametrize("cls", CLASSES, ids=_name)
def test_the_cli_maps_each_class_to_its_exit_code(cls: type[ProvmintError]) -> None:
    error = _instance(cls)
    r = CliRunner().invoke(_raising(error), [])
    line = one_error(r, PINNED[_name(cls)], str(error))
    assert line == f"error: {error}"
    if error.hint:
        assert r.stderr.splitlines()[1] == f"hint: {error.hint}"


@pytest.mark.parametrize(
    ("exc", "code", "needle"),
    [
        (
            OSError(errno.ENOSPC, "No space left on device", "/tmp"),
            EXIT_ERROR,
            "error: no space left on device writing /tmp (",
        ),
        (OSError("IOError: No space left on device"), EXIT_ERROR, "error: no space left on device"),
        (
            PermissionError(errno.EACCES, "Permission denied", "/root/x"),
            EXIT_ERROR,
            "error: permission denied writing /root/x",
        ),
        (KeyboardInterrupt(), 130, "interrupted"),
    ],
    ids=["ENOSPC", "ENOSPC without errno", "EACCES", "Ctrl-C"],
)
def test_the_cli_maps_stray_errors(exc: BaseException, code: int, needle: str) -> None:
    """An OSError the library did not map still gets one line naming what it can, never
    "None" or a traceback; Ctrl-C is 130."""
    r = CliRunner().invoke(_raising(exc), [])
    assert r.exit_code == code and "Traceback" not in r.output
    assert needle in r.stderr.splitlines()[0] and "None" not in r.stderr


def test_os_error_names_path_free_space_and_advice(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.csv"
    error = os_error(OSError(errno.ENOSPC, "No space left on device"), target)
    assert isinstance(error, OutputError) and error.exit_code == EXIT_ERROR
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    assert error.free_bytes is not None and abs(error.free_bytes - free) < 64 << 20
    assert re.fullmatch(
        rf"no space left on device writing {re.escape(str(target))} "
        r"\(\d+(\.\d)? (B|KiB|MiB|GiB|TiB) free\)",
        str(error),
    ), str(error)
    assert error.hint and "space" in error.hint
    # The error's own file name wins over the context given; pyarrow's errno-less text
    # is recognised; a missing file met while reading is "not found".
    named = os_error(OSError(errno.ENOSPC, "x", str(tmp_path / "part.parquet")), tmp_path)
    assert f"writing {tmp_path / 'part.parquet'} (" in str(named)
    assert os_error(OSError("Error writing bytes: No space left on device")).errno == errno.ENOSPC
    missing = os_error(
        FileNotFoundError(errno.ENOENT, "x", "/x/p.json"), action="reading", what="proof file"
    )
    assert isinstance(missing, MissingFileError) and missing.exit_code == EXIT_NOT_FOUND
    assert str(missing) == "proof file not found: /x/p.json"


def _help_table(text: str) -> dict[int, str]:
    table = text.split("Exit codes:", 1)[1]
    return {int(m[1]): m[2].strip() for m in re.finditer(r"^\s+(\d+)\s+(.+)$", table, re.M)}


def test_the_help_lists_every_exit_code(cli) -> None:
    r = cli("--help")
    assert r.exit_code == 0
    assert _help_table(r.stdout) == EXIT_CODES


def test_the_readme_lists_every_exit_code() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### All exit codes", 1)[1].split("\n#", 1)[0]
    rows = dict(re.findall(r"^\| (\d+) \| (.+) \|$", section, re.M))
    assert {int(code) for code in rows} == set(EXIT_CODES)
    for code, meaning in EXIT_CODES.items():
        first_words = meaning.split(" (")[0].split(" /")[0]
        assert rows[str(code)].startswith(first_words.split()[0]), (code, rows[str(code)])


# --------------------------------------------------------------------------- missing files

TOKEN = "A" * 22


def _missing_cases(tmp: Path) -> list[tuple[str, list[object], Path]]:
    missing = tmp / "missing"
    return [
        ("batch create FILE", ["batch", "create", missing / "in.csv"], missing / "in.csv"),
        (
            "batch create --key-file",
            ["batch", "create", EXAMPLE_CSV, "--key-file", missing / "k.json"],
            missing / "k.json",
        ),
        ("verify PROOF", ["verify", missing / "p.json"], missing / "p.json"),
        (
            "keys list --key-file",
            ["keys", "list", "--key-file", missing / "k.json"],
            missing / "k.json",
        ),
        (
            "keys rotate --key-file",
            ["keys", "rotate", "--key-file", missing / "k.json"],
            missing / "k.json",
        ),
        (
            "token verify --key-file",
            [
                "token",
                "verify",
                TOKEN,
                "--gtin",
                "09520123450014",
                "--serial",
                "S",
                "--key-file",
                missing / "k.json",
            ],
            missing / "k.json",
        ),
        ("scan --key-file", ["scan", TOKEN, "--key-file", missing / "k.json"], missing / "k.json"),
        ("--config", ["batch", "list", "--config", missing / "c.toml"], missing / "c.toml"),
        (
            "anchor --keystore",
            ["anchor", "--dry-run", "--keystore", missing / "ks.json"],
            missing / "ks.json",
        ),
    ]


def test_a_missing_file_is_not_found_in_every_command(cli, keyed, tmp_path: Path) -> None:
    for name, args, path in _missing_cases(tmp_path):
        r = cli(*args)
        line = one_error(r, EXIT_NOT_FOUND, f"not found: {path}")
        assert name and line.startswith("error: ")


def test_serve_without_its_key_file_is_not_found(keyed, tmp_path: Path) -> None:
    """A real process (serve would otherwise run until stopped)."""
    from provmint.batch import mint_batch

    mint_batch(EXAMPLE_CSV, settings=keyed)
    p = run_provmint("serve", "--port", "0", "--key-file", tmp_path / "none.json", timeout=60)
    assert p.returncode == EXIT_NOT_FOUND, p.stderr
    assert p.stderr.startswith(f"error: issuer key file not found: {tmp_path / 'none.json'}")


def test_library_callers_get_missing_file_errors(keyed, tmp_path: Path) -> None:
    from provmint.batch import mint_batch
    from provmint.keys import load_keyring

    with pytest.raises(MissingFileError) as caught:
        mint_batch(tmp_path / "none.csv", settings=keyed)
    assert caught.value.path == str(tmp_path / "none.csv")
    with pytest.raises(MissingFileError, match="issuer key file not found"):
        load_keyring(tmp_path / "none.json")


def test_output_failures_are_not_input_rejected(cli, keyed, tmp_path: Path, write_csv) -> None:
    """A rejects file that cannot be written is exit 1 naming it, not 6 (input rejected);
    so is a labels directory that cannot be made."""
    bad = write_csv("bad.csv", "gtin,serial\n09520123450014,B A D\n")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory\n")
    r = cli("batch", "create", bad, "--rejects", blocker / "rejects.csv")
    one_error(r, EXIT_ERROR, f"writing {blocker / 'rejects.csv'}")
    r = cli("batch", "create", EXAMPLE_CSV, "--json")
    assert r.exit_code == 0, r.output
    batch_id: Any = json.loads(r.stdout)["batch_id"]
    r = cli(
        "labels", batch_id, "--out", blocker / "labels", "--format", "none", "--allow-placeholder"
    )
    one_error(r, EXIT_ERROR, f"creating {blocker / 'labels'}")


@pytest.mark.parametrize("cls", CLASSES, ids=_name)
def test_each_class_crosses_a_process_boundary(cls: type[ProvmintError]) -> None:
    """A worker's error reaches the parent pickled: each class comes back whole (an
    OutputError that could not be rebuilt once broke the worker pool on a full disk)."""
    import pickle

    error = _instance(cls)
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is cls
    assert (str(back), back.hint, back.exit_code) == (str(error), error.hint, error.exit_code)
    assert vars(back) == vars(error)
