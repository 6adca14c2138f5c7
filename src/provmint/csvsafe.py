"""CSV files that are safe to open in a spreadsheet (OWASP, "CSV Injection").

A spreadsheet runs a cell that starts with ``=``, ``+``, ``-`` or ``@`` as a formula, and
tab and carriage return can smuggle one in. Such values are valid in GS1 serials and lots
(``=1+2``, ``-1+2``, ``+SUM(1)``), in extra columns and in rejected rows, and one token
in 64 starts with ``-``. So every CSV written for people (``batch export``,
``labels.csv``, the rejects report) follows OWASP's advice by default: such a value is
prefixed with a single quote (``'=1+2``) and every field is enclosed in double quotes.

Machine consumers (label printers, scripts) ask for the values as stored with ``--raw``:
the same quoting, no prefix. A neutralised file is for reading, never for printing
labels: its ``'-1+2`` is not the serial ``-1+2``.

Both writers (Python's :mod:`csv` for row-wise files, Arrow's for column-wise exports)
produce the same dialect: UTF-8, ``,``, every field quoted, ``"`` doubled, LF line ends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "FORMULA_PREFIXES",
    "LINE_END",
    "csv_writer",
    "neutralise",
    "neutralise_column",
    "neutralise_table",
]

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make a spreadsheet cell a formula (OWASP's list)."""
_FORMULA_START = "^[=+\\-@\t\r]"
LINE_END = "\n"


def neutralise(value: str) -> str:
    """``value`` made inert for a spreadsheet: a formula-like value gets a leading ``'``."""
    return "'" + value if value.startswith(FORMULA_PREFIXES) else value


def neutralise_column(column: pa.Array | pa.ChunkedArray) -> Any:
    """:func:`neutralise` over an Arrow string column, vectorised (no per-row Python)."""
    import pyarrow.compute as pc

    risky = pc.match_substring_regex(column, _FORMULA_START)
    return pc.if_else(risky, pc.binary_join_element_wise("'", column, ""), column)


def neutralise_table(table: pa.Table) -> pa.Table:
    """Every string column of ``table`` neutralised (other columns as they are)."""
    import pyarrow as pa

    columns = [
        neutralise_column(table.column(i))
        if pa.types.is_string(field.type) or pa.types.is_large_string(field.type)
        else table.column(i)
        for i, field in enumerate(table.schema)
    ]
    return pa.table(columns, schema=table.schema)


def csv_writer(text: Any) -> Any:
    """A :func:`csv.writer` on a text stream in the shared dialect (all fields quoted)."""
    import csv

    return csv.writer(text, quoting=csv.QUOTE_ALL, lineterminator=LINE_END)


def arrow_write_options() -> Any:
    """``pyarrow.csv.WriteOptions`` in the shared dialect."""
    import pyarrow.csv as pacsv

    return pacsv.WriteOptions(quoting_style="all_valid", eol=LINE_END)
