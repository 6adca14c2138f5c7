"""Piped command output without rich: :func:`provmint.cli._common.plain` and ``escape``
give exactly what rich would print, for any markup (rich itself is the reference)."""

from __future__ import annotations

import io
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from rich.errors import MarkupError
from rich.markup import escape as rich_escape
from rich.text import Text

from provmint.cli._common import Lines, escape, plain, stdout

# Text made of what markup is made of, so tags, escapes and near-tags all occur.
MARKUPISH = st.text(alphabet="[]\\/@#=ab Z:é\n", max_size=40)


def _rich_plain(markup: str) -> str:
    return Text.from_markup(markup, emoji=False).plain


@settings(max_examples=600, deadline=None)
@given(MARKUPISH)
def test_escape_is_richs(text: str) -> None:
    assert escape(text) == rich_escape(text)


@settings(max_examples=600, deadline=None)
@given(MARKUPISH)
def test_escaped_text_prints_as_rich_prints_it(text: str) -> None:
    assert plain(escape(text)) == _rich_plain(escape(text))
    assert plain(f"[bold]{escape(text)}[/]") == _rich_plain(f"[bold]{escape(text)}[/]")


@settings(max_examples=600, deadline=None)
@given(
    st.lists(
        st.one_of(
            MARKUPISH,
            st.sampled_from(
                ["[bold]", "[/]", "[red]", "[/red]", "[bold red]", "\\[x]", "[@click]"]
            ),
        ),
        max_size=8,
    )
)
def test_any_markup_prints_as_rich_prints_it(parts: list[str]) -> None:
    markup = "".join(parts)
    try:
        expected = _rich_plain(markup)
    except MarkupError:  # rich refuses it; our messages never hold such markup
        return
    assert plain(markup) == expected


def test_a_pipe_gets_plain_lines_and_tables_still_render(monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.table import Table

    buffer = io.StringIO()
    monkeypatch.setattr(sys, "stdout", buffer)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    out = stdout()
    assert isinstance(out, Lines) and not out.is_terminal
    message = "[bold green]VALID[/]: " + escape("[x] a\\")
    out.print(message)
    table = Table(show_header=False)
    table.add_row("id", "b" * 120)
    out.print(table)
    lines = buffer.getvalue().splitlines()
    assert lines[0] == "VALID: [x] a\\\\"  # rich shows a trailing escaped backslash twice
    assert any("b" * 120 in line for line in lines[1:])  # never cut short
    reference = io.StringIO()
    Console(file=reference, highlight=False, soft_wrap=True, width=200).print(message)
    assert reference.getvalue().splitlines()[0] == lines[0]


@settings(max_examples=300, deadline=None)
@given(st.lists(MARKUPISH.filter(lambda t: "\n" not in t), min_size=1, max_size=3))
def test_text_printed_without_markup_is_richs_and_needs_no_rich(texts: list[str]) -> None:
    """``print(text, markup=False, soft_wrap=True)`` (warnings naming paths and URLs)
    writes the text as provmint's rich console would, without making one; neither turns
    an emoji code such as ``:a:`` into a picture."""
    buffer = io.StringIO()
    lines = Lines(stderr=False)
    original, sys.stdout = sys.stdout, buffer
    try:
        lines.print(*texts, markup=False, soft_wrap=True)
    finally:
        sys.stdout = original
    assert lines._rich is None
    reference = io.StringIO()
    sys.stdout = reference
    try:  # the rich console Lines would have made (a terminal's, but for its width)
        Lines(stderr=False).rich.print(*texts, markup=False, soft_wrap=True)
    finally:
        sys.stdout = original
    assert buffer.getvalue() == reference.getvalue()


@pytest.mark.parametrize("json_out", [False, True])
def test_a_reader_that_stops_early_gets_no_error(cli, keyed, json_out: bool) -> None:
    """``provmint ... | head -c 1``: the reader closes the pipe at once; provmint stops
    quietly (no ``error: broken pipe``, no traceback at exit), as it did through rich."""
    import subprocess

    from conftest import EXAMPLE_CSV

    assert cli("batch", "create", EXAMPLE_CSV).exit_code == 0
    args = [
        sys.executable,
        "-m",
        "provmint",
        "product",
        "show",
        "--gtin",
        "09520123450014",
        "--serial",
        "546CAWQDCR56",
        *(["--json"] if json_out else []),
    ]
    for _ in range(8):
        with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as producer:
            assert producer.stdout is not None and producer.stderr is not None
            producer.stdout.read(1)
            producer.stdout.close()  # the reader is gone after one byte
            err = producer.stderr.read().decode()
            producer.wait(timeout=60)
        assert err == "", err
        assert producer.returncode in (0, 1)
