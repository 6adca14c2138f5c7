"""What every command shares: option types, settings resolution, consoles, and the one
place where library errors become messages and exit codes."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from typer.core import TyperCommand

from provmint.errors import EXIT_INTERRUPTED, ProvmintError, os_error

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
    str,
    typer.Argument(metavar="ID", help="Batch id, unique prefix, or latest.", show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
RawOpt = Annotated[
    bool,
    typer.Option(
        "--raw",
        help="Write values exactly as stored, for machines (label printers, scripts). "
        "Without it, a value starting with = + - @ tab or CR gets a leading ' so that "
        "a spreadsheet shows it instead of running it.",
    ),
]
PrintBaseOpt = Annotated[
    str | None,
    typer.Option(
        "--url-base",
        help="The verification URL base printed on the labels, e.g. https://id.your-brand.com "
        "[env: PROVMINT_URL_BASE; default: url_base in the config file]",
        show_default=False,
    ),
]
"""``--url-base`` of the commands that produce labels (``labels``, ``batch export``)."""
AllowPlaceholderOpt = Annotated[
    bool,
    typer.Option(
        "--allow-placeholder",
        help="Print the placeholder https://id.example.com when no URL base is set "
        "(for trials: such codes point nowhere).",
    ),
]
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
ScanLogOpt = Annotated[
    str | None,
    typer.Option(
        "--scan-log",
        metavar="URL",
        help="Where scans are logged: postgresql://USER@HOST/DB (shared by replicas; the "
        "password goes in ~/.pgpass or PGPASSWORD) or sqlite:PATH "
        "[env: PROVMINT_SCAN_LOG; default: STORE/scans.sqlite]",
        show_default=False,
        rich_help_panel="Locations",
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


def keep_examples_whole() -> None:
    """Make every help page write a paragraph of command lines (every line starting
    with ``provmint``) as it is: an example wrapped at the terminal's width would no
    longer copy and paste. Other paragraphs wrap as usual. (Typer carries its own copy
    of Click: its context's formatter is the one to extend.)"""
    context: Any = TyperCommand.context_class
    base: Any = context.formatter_class

    class ExamplesFormatter(base):  # type: ignore[misc]
        def write_text(self, text: str) -> None:
            paragraphs = text.split("\n\n")
            kept = [
                "\b\n" + p if p.strip() and _all_commands(p) and not p.startswith("\b") else p
                for p in paragraphs
            ]
            super().write_text("\n\n".join(kept))

    if base.__name__ != "ExamplesFormatter":
        context.formatter_class = ExamplesFormatter


EXAMPLE_LINE = re.compile(r"^\s*(Example: )?([A-Z_]+=\S* )*provmint ")
"""A line of help that is a command to copy: ``provmint ...``, after ``Example:`` or
environment variables."""


def _all_commands(paragraph: str) -> bool:
    return all(EXAMPLE_LINE.match(line) for line in paragraph.strip().splitlines())


# A printed token: 22 characters of base64url, so one in 64 starts with "-".
_DASH_TOKEN = re.compile(r"-[A-Za-z0-9_-]{21}")


class TokenArgCommand(TyperCommand):
    """A command whose argument may be a token starting with ``-``: it is never an option.

    Click would read ``-hX...`` as ``-h`` (help) and ``-AB...`` as short options (1 in 64
    tokens), so before parsing, every argument that has the exact shape of a token and is
    not the value of an option is moved behind ``--``, where Click takes it as the
    argument. ``-h`` and ``--help`` alone still show the help.
    """

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, _tokens_behind_dashes(self.get_params(ctx), args))


def _tokens_behind_dashes(params: list[Any], args: list[str]) -> list[str]:
    """``args`` with every token-shaped argument moved behind ``--`` (see
    :class:`TokenArgCommand`)."""
    valued = {
        name
        for param in params
        if param.param_type_name == "option" and not param.is_flag and not param.count
        for name in param.opts
    }
    before: list[str] = []
    tokens: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            break
        if arg in valued:  # the next argument is this option's value, whatever it looks like
            before.extend(args[i : i + 2])
            i += 2
            continue
        (tokens if _DASH_TOKEN.fullmatch(arg) else before).append(arg)
        i += 1
    if not tokens:
        return args
    return [*before, "--", *tokens, *args[i + 1 :]]


def settings(
    store: Path | None = None,
    key_file: Path | None = None,
    config: Path | None = None,
    **overrides: Any,
) -> Any:
    """Resolve settings from options, environment, config file and defaults."""
    from provmint.config import resolve_settings

    return resolve_settings(store=store, key_file=key_file, config_file=config, **overrides)


def command_line(command: str, args: list[str]) -> str:
    """``provmint COMMAND ARGS...`` as one shell-quoted line a user can copy."""
    import shlex

    return shlex.join(["provmint", *command.split(), *args])


_TAG = re.compile(r"(\\*)\[([a-z#/@][^\[]*?)]")
"""A console-markup tag and the backslashes before it (rich.markup's syntax)."""


def escape(text: str) -> str:
    """``text`` safe inside console markup: what looks like a tag is shown, not applied
    (rich.markup.escape, without importing rich)."""

    def one(found: re.Match[str]) -> str:
        backslashes, tag = found.groups()
        return f"{backslashes}{backslashes}\\[{tag}]"

    text = _TAG.sub(one, text)
    return text + "\\" if text.endswith("\\") and not text.endswith("\\\\") else text


def plain(markup: str) -> str:
    """The text of console markup: tags dropped, escaped ones shown (as rich does)."""
    pieces, position = [], 0
    for found in _TAG.finditer(markup):
        pieces.append(markup[position : found.start()].replace("\\[", "["))
        backslashes, tag = found.groups()
        kept, escaped = divmod(len(backslashes), 2)
        pieces.append("\\" * kept + (f"[{tag}]" if escaped else ""))
        position = found.end()
    pieces.append(markup[position:].replace("\\[", "["))
    return "".join(pieces)


_PLAIN_OPTIONS = {"markup", "soft_wrap"}
"""The options of ``Console.print`` that :class:`Lines` honours without rich."""


class Lines:
    """The console of a pipe or a file: markup is written as plain lines without
    importing rich (a fifth of a short command's time); anything else, such as a table,
    goes to a rich console that never cuts ids and hashes short."""

    is_terminal = False

    def __init__(self, stderr: bool) -> None:
        self.stderr = stderr
        self._rich: Any = None

    @property
    def rich(self) -> Any:
        """The rich console behind this one, for tables and progress displays."""
        if self._rich is None:
            from rich.console import Console

            self._rich = Console(
                stderr=self.stderr, highlight=False, soft_wrap=True, width=200, emoji=False
            )
        return self._rich

    def print(self, *objects: Any, **options: Any) -> None:
        """Print like rich's ``Console.print``: markup strings as plain text (with
        ``markup=False``, as they are; lines are never wrapped, so ``soft_wrap`` changes
        nothing)."""
        if set(options) - _PLAIN_OPTIONS or not all(isinstance(o, str) for o in objects):
            self.rich.print(*objects, **options)
            return
        text = plain if options.get("markup", True) else str
        stream = sys.stderr if self.stderr else sys.stdout
        # Written at once, as rich does: a closed pipe is found here, not at exit.
        stream.write(" ".join(text(o) for o in objects) + "\n")
        stream.flush()


def _console(stderr: bool) -> Any:
    stream = sys.stderr if stderr else sys.stdout
    if not (stream.isatty() or os.environ.get("FORCE_COLOR")):
        return Lines(stderr)
    from rich.console import Console

    # No emoji codes: ":a:" in a path, a serial or a URL is printed as it is (as plain()
    # does), not as a picture.
    return Console(stderr=stderr, highlight=False, soft_wrap=True, emoji=False)


def stdout() -> Any:
    """Console for results (:class:`Lines` when piped)."""
    return _console(False)


def stderr() -> Any:
    """Console for progress, notices and errors (:class:`Lines` when redirected)."""
    return _console(True)


def print_json(value: Any) -> None:
    """Machine-readable output: one JSON document on standard output."""
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def report_error(exc: ProvmintError) -> None:
    """One ``error:`` line (and a ``hint:`` line when there is one) on standard error."""
    console = stderr()
    console.print(f"[bold red]error:[/] {escape(str(exc))}")
    if exc.hint:
        console.print(f"[yellow]hint:[/] {escape(exc.hint)}")


def reader_gone() -> NoReturn:
    """Standard output's reader has gone (``provmint ... | head``): stop quietly, as rich
    does, with exit 1 and nothing more written, not even when Python flushes at exit."""
    with contextlib.suppress(OSError, ValueError):  # not a real file under a test runner
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    raise typer.Exit(1)


def handle_errors(fn: F) -> F:
    """Turn library errors into an error line and their exit code (the only place);
    with ``--json``, the error also goes to standard output as ``{"error": {"code",
    "exit", "message", "hint"}}``, so a program reading the output always gets JSON."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ProvmintError as exc:
            report_error(exc)
            if kwargs.get("json") is True:
                print_json({"error": exc.to_json()})
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            stderr().print("[bold red]interrupted[/]")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except BrokenPipeError:
            reader_gone()
        except OSError as exc:  # disk full, permission denied outside the library's reach
            error = os_error(exc)
            report_error(error)
            if kwargs.get("json") is True:
                print_json({"error": error.to_json()})
            raise typer.Exit(error.exit_code) from None

    return wrapper  # type: ignore[return-value]


@contextmanager
def counting_progress(
    console: Any, *, enabled: bool, eta: bool = False
) -> Iterator[Callable[[int, int], None]]:
    """A bar with done/total and elapsed time on ``console`` (and, with ``eta``, the
    time left at the recent rate); yields ``update(done, total)``."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        *([TimeRemainingColumn()] if eta else []),
        console=console.rich if isinstance(console, Lines) else console,
        transient=True,
        disable=not enabled or not console.is_terminal,
    ) as progress:
        task = progress.add_task("work", total=None)
        yield lambda done, total: progress.update(task, completed=done, total=total)


def short(hexdigest: str, width: int = 16) -> str:
    """A hash shortened for tables (full values are in --json and the files)."""
    return hexdigest[:width] + "…" if len(hexdigest) > width else hexdigest


@dataclass(frozen=True, slots=True)
class Column:
    """A column of a listing: its name, and how a terminal shows it (pipes get every
    value whole)."""

    name: str
    right: bool = False
    """Right-aligned (numbers)."""
    whole: bool = False
    """An id: never wrapped or cut, whatever the terminal's width."""
    brief: Callable[[str], str] | None = None
    """How a terminal shows a value (a hash shortened, say); a pipe gets it whole."""
    piped_only: bool = False
    """Left out on a terminal (where 80 columns must hold the rest whole)."""


_TSV_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")


def print_table(title: str, columns: Sequence[Column], rows: Sequence[Sequence[str]]) -> None:
    """A listing on standard output: a table on a terminal; in a pipe or a file,
    tab-separated lines under a header line, with no drawing, nothing cut and nothing
    shortened (what ``cut``, ``awk`` and spreadsheets expect). Control characters in a
    value (a file name, say) become spaces in either form."""
    console = stdout()
    clean = [[_TSV_UNSAFE.sub(" ", value) for value in row] for row in rows]
    if isinstance(console, Lines):
        lines = ["\t".join(c.name for c in columns), *("\t".join(row) for row in clean)]
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()
        return
    from rich.table import Table

    # No box (as gh and git list things): a table is read, not framed, and the lines it
    # saves are what keeps ids whole on an 80-column terminal.
    table = Table(title=title, title_justify="left", box=None, header_style="bold", pad_edge=False)
    kept = [i for i, column in enumerate(columns) if not column.piped_only]
    shown = [[_brief(columns[i], row[i]) for i in kept] for row in clean]
    for place, i in enumerate(kept):
        column = columns[i]
        widest = max((len(row[place]) for row in shown), default=0)
        table.add_column(
            column.name,
            justify="right" if column.right else "left",
            no_wrap=column.whole or column.brief is not None,
            min_width=widest if column.whole else None,
            overflow="fold",
        )
    for row in shown:
        table.add_row(*(escape(value) for value in row))
    console.print(table)


def _brief(column: Column, value: str) -> str:
    return column.brief(value) if column.brief else value


def short_hash(hexdigest: str) -> str:
    """A hash as a listing shows it on a terminal."""
    return short(hexdigest, 8)


def minute(stamp: str) -> str:
    """An ISO 8601 UTC time (``2026-12-01T09:57:35Z``) to the minute, as a listing shows
    it on a terminal (``2026-12-01 09:57``)."""
    return stamp[:16].replace("T", " ")
