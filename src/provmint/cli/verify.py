"""``provmint verify``: check a proof offline and print what was checked, like a receipt."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from provmint.cli._common import JsonOpt, handle_errors, print_json, stdout

if TYPE_CHECKING:
    from provmint.verify import VerificationReport


@handle_errors
def verify(
    proof: Annotated[
        Path,
        typer.Argument(help="Proof file (provmint-proof/1 JSON); - for stdin.", show_default=False),
    ],
    token: Annotated[
        str | None, typer.Option("--token", help="Also check the token printed on the label.")
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Verify a product's proof: leaf -> root -> batch commitment -> anchor.

    Exit codes: 0 valid, 3 invalid, 4 pending (valid, not yet anchored),
    5 could not check.

    Examples:

      provmint verify proof.json

      provmint verify proof.json --token 52VqMUmlXpKNjHggOl1ALg --json
    """
    import sys

    from provmint.verify import load_proof_file, verify_proof

    data = sys.stdin.buffer.read((1 << 20) + 1) if str(proof) == "-" else load_proof_file(proof)
    report = verify_proof(data, token=token)
    if json:
        print_json(report.to_json())
    else:
        _receipt(report)
    raise typer.Exit(report.verdict.exit_code)


def _receipt(report: VerificationReport) -> None:
    from rich.markup import escape
    from rich.table import Table

    from provmint.verify import Verdict

    out = stdout()
    rec = report.record
    lot = f" lot {rec['lot']}" if rec.get("lot") else ""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("product", escape(f"GTIN {rec['gtin']} serial {rec['serial']}{lot}"))
    grid.add_row("leaf", f"{report.leaf_hash}  (#{report.leaf_index} of {report.tree_size})")
    grid.add_row("computed root", report.computed_root or "-")
    grid.add_row("expected root", report.expected_root)
    grid.add_row("batch", f"{escape(report.batch_id)}  commitment {report.commitment}")
    anchor = "none yet" if report.anchor is None else "present (not checked offline)"
    grid.add_row("anchor", anchor)
    out.print(grid)
    for c in report.checks:
        mark = "[green]ok[/]  " if c.ok else "[red]FAIL[/]"
        out.print(f"  {mark} {c.name}: {escape(c.detail)}")
    style = {
        Verdict.VALID: "bold green",
        Verdict.INVALID: "bold red",
        Verdict.PENDING: "bold yellow",
        Verdict.UNCHECKED: "bold yellow",
    }[report.verdict]
    out.print(f"[{style}]{report.verdict.value.upper()}[/]: {escape(report.reason)}")
