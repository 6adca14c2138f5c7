"""The ``provmint`` command line: parse, call one library function, render.

Only this package prints, prompts or exits. Heavy modules (pyarrow, duckdb) are imported
inside commands so that ``provmint --help`` stays fast.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any, NoReturn

import typer

from provmint import __version__
from provmint.cli._common import TokenArgCommand, keep_examples_whole
from provmint.errors import EXIT_CODES

if TYPE_CHECKING:
    from typer.core import TyperCommand


# Every help page of this program keeps its example command lines whole.
keep_examples_whole()


def _new_app(completion: bool) -> typer.Typer:
    return typer.Typer(
        rich_markup_mode=None,
        help=(
            "Mint product-authenticity records offline: tokens, verification URLs and Merkle "
            "proofs for a CSV of serialized products, checkable by anyone without our database."
        ),
        epilog=(
            "\b\nExamples:\n"
            "  provmint keys init\n"
            "  provmint batch create examples/products.csv\n"
            "  provmint proof export --gtin 09520123450014 --serial 546CAWQDCR56 -o proof.json\n"
            "  provmint verify proof.json\n"
            "  provmint anchor --rpc-url http://127.0.0.1:8545\n"
            "\n\b\nExit codes:\n"
            + "".join(f"  {code:<4}{meaning}\n" for code, meaning in EXIT_CODES.items())
        ),
        no_args_is_help=True,
        add_completion=completion,
        pretty_exceptions_show_locals=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )


def _version(value: bool) -> None:
    if value:
        typer.echo(f"provmint {__version__}")
        raise typer.Exit()


def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """provmint: offline batch minting of product-authenticity records."""


# Where each group and command is defined (module of provmint.cli, attribute): a run
# imports the module of its own command only, not every command's options and imports.
_GROUPS: dict[str, tuple[str, str]] = {
    "keys": ("keys", "app"),
    "batch": ("batch", "app"),
    "proof": ("proof", "app"),
    "product": ("proof", "product_app"),
    "token": ("proof", "token_app"),
    "anchor": ("anchor", "app"),
    "store": ("store", "app"),
    "scans": ("scans", "app"),
    "config": ("config", "app"),
}
_COMMANDS: dict[str, tuple[str, str, type[TyperCommand] | None]] = {
    "labels": ("consumer", "labels", None),
    # A bare token may start with "-" (base64url): it is read as the code, never as options.
    "scan": ("consumer", "scan", TokenArgCommand),
    "serve": ("consumer", "serve", None),
    "verify": ("verify", "verify", None),
    "verifier-page": ("verifier", "verifier_page", None),
    "devchain": ("devchain", "devchain", None),
    "stats": ("stats", "stats", None),
    "dashboard": ("dashboard", "dashboard", None),
}


def _defined(module: str, name: str) -> Any:
    return getattr(importlib.import_module(f"provmint.cli.{module}"), name)


def build_app(only: str | None = None) -> typer.Typer:
    """The command line; with ``only``, holding that one top-level command or group
    (what :func:`main` runs: Typer turns every registered function into a click command
    on each run, which the others need not pay for). Shell completion
    (``--install-completion``) is on the whole command line only: a shell asks for
    completions by running ``provmint`` with no arguments."""
    root = _new_app(completion=only is None)
    root.callback()(_root)
    for name, (module, attr) in _GROUPS.items():
        if only in (None, name):
            root.add_typer(_defined(module, attr), name=name)
    for name, (module, attr, cls) in _COMMANDS.items():
        if only in (None, name):
            function = _defined(module, attr)
            if cls is None:
                root.command(name)(function)
            else:
                root.command(name, cls=cls)(function)
    return root


def __getattr__(name: str) -> Any:
    """``app``: the whole command line, built on first use (``from provmint.cli import
    app``); a run of one command builds only its own (:func:`main`)."""
    if name == "app":
        built = build_app()
        globals()["app"] = built
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    """Console-script entry point: runs one command, then exits at once (:func:`_exit`)."""
    from provmint.cli._tuning import one_blas_thread

    one_blas_thread()
    name = sys.argv[1] if len(sys.argv) > 1 else None
    try:
        build_app(name if name in _GROUPS or name in _COMMANDS else None)()
    except SystemExit as done:  # how click ends every run, with its exit code
        if done.code is None or isinstance(done.code, int):
            _exit(done.code or 0)
        raise


def _exit(code: int) -> NoReturn:
    """End the process as the interpreter would, less the tear-down of its modules: with
    numpy, pyarrow and DuckDB loaded that took 0.13-0.2 s after every command, longer
    than some commands' work. What an exit owes is still done: other threads are
    joined, atexit handlers run (multiprocessing's, logging's, temporary directories'),
    the standard streams are flushed. Everything the commands write is closed (and
    synced where it must be) before they return, and nothing relies on objects being
    collected at exit."""
    import atexit
    import os
    import threading

    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader gone, or a stream already closed
            code = code or 120  # the interpreter's own status when it cannot flush
    os._exit(code)
