"""What every command shares: option types, settings resolution, consoles, and the one
place where library errors become messages and exit codes."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from provmint.errors import EXIT_ERROR, ProvmintError

F = TypeVar("F", bound=Callable[..., Any])

StoreOpt = Annotated[
    Path | None,
    typer.Option(
        "--store",
        help="Product store directory [env: PROVMINT_STORE]",
        show_default=False,
        rich_help_panel="Locations",
    ),
]
KeyFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--key-file",
        help="Issuer key file [env: PROVMINT_KEY_FILE]",
        show_default=False,
        rich_help_panel="Locations",
    ),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="Config file [env: PROVMINT_CONFIG]",
        show_default=False,
        rich_help_panel="Locations",
    ),
]
BatchIdArg = Annotated[
    str, typer.Argument(metavar="ID", help="Batch id or unique prefix.", show_default=False)
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
WorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers",
        "-j",
        min=1,
        max=256,
        help="Worker processes [env: PROVMINT_WORKERS; default: CPU count]",
        show_default=False,
    ),
]
LockTimeoutOpt = Annotated[
    float | None,
    typer.Option(
        "--lock-timeout",
        help="Seconds to wait for another provmint process "
        "[env: PROVMINT_LOCK_TIMEOUT, default 60]",
        show_default=False,
    ),
]


def settings(
    store: Path | None = None,
    key_file: Path | None = None,
    config: Path | None = None,
    **overrides: Any,
) -> Any:
    """Resolve settings from options, environment, config file and defaults."""
    from provmint.config import resolve_settings

    return resolve_settings(store=store, key_file=key_file, config_file=config, **overrides)


def _console(stderr: bool) -> Any:
    from rich.console import Console

    console = Console(stderr=stderr, highlight=False, soft_wrap=True)
    if not console.is_terminal:  # piped or redirected: never cut ids and hashes short
        console = Console(stderr=stderr, highlight=False, soft_wrap=True, width=200)
    return console


def stdout() -> Any:
    """Console for results."""
    return _console(False)


def stderr() -> Any:
    """Console for progress, notices and errors."""
    return _console(True)


def print_json(value: Any) -> None:
    """Machine-readable output: one JSON document on standard output."""
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def report_error(exc: ProvmintError) -> None:
    """One ``error:`` line (and a ``hint:`` line when there is one) on standard error."""
    from rich.markup import escape

    console = stderr()
    console.print(f"[bold red]error:[/] {escape(str(exc))}")
    if exc.hint:
        console.print(f"[yellow]hint:[/] {escape(exc.hint)}")


def handle_errors(fn: F) -> F:
    """Turn library errors into an error line and their exit code (the only place)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ProvmintError as exc:
            report_error(exc)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            stderr().print("[bold red]interrupted[/]")
            raise typer.Exit(130) from None
        except OSError as exc:  # disk full, permission denied outside the library's reach
            stderr().print(f"[bold red]error:[/] {exc.strerror or exc}: {exc.filename or ''}")
            raise typer.Exit(EXIT_ERROR) from None

    return wrapper  # type: ignore[return-value]


@contextmanager
def counting_progress(console: Any, *, enabled: bool) -> Iterator[Callable[[int, int], None]]:
    """A bar with done/total and elapsed time on ``console``; yields ``update(done, total)``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress(
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not enabled or not console.is_terminal,
    ) as progress:
        task = progress.add_task("work", total=None)
        yield lambda done, total: progress.update(task, completed=done, total=total)


def short(hexdigest: str, width: int = 16) -> str:
    """A hash shortened for tables (full values are in --json and the files)."""
    return hexdigest[:width] + "…" if len(hexdigest) > width else hexdigest
