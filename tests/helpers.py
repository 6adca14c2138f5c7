"""Small helpers shared by several test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import EXAMPLE_CSV

from provmint.batch import MintSummary, mint_batch
from provmint.config import Settings
from provmint.keys import init_keyring

# Runs provmint's CLI in a process that SIGKILLs itself when ``target`` is first called
# (after ``skip`` earlier calls), exactly as if killed from outside at that instant:
#   python -c KILLER module attr skip provmint-args...
KILLER = """
import os, signal, sys, importlib
module_name, attr, skip = sys.argv[1], sys.argv[2], int(sys.argv[3])
module = importlib.import_module(module_name)
owner_name, _, func_name = attr.rpartition(".")
owner = getattr(module, owner_name) if owner_name else module
original = getattr(owner, func_name)
calls = [0]
def die(*args, **kwargs):
    calls[0] += 1
    if calls[0] > skip:
        os.kill(os.getpid(), signal.SIGKILL)
    return original(*args, **kwargs)
setattr(owner, func_name, die)
sys.argv = ["provmint"] + sys.argv[4:]
from provmint.cli import main
main()
"""


def mint_example(cli: Any) -> str:
    """Mint examples/products.csv through the CLI; return the batch id."""
    r = cli("batch", "create", EXAMPLE_CSV, "--json")
    assert r.exit_code == 0, r.output
    return str(json.loads(r.stdout)["batch_id"])


def anchor_json(cli: Any, *args: object) -> dict[str, Any]:
    """``provmint anchor --json`` that must succeed."""
    r = cli("anchor", "--json", *args)
    assert r.exit_code == 0, r.output
    result: dict[str, Any] = json.loads(r.stdout)
    return result


def status_json(cli: Any, *args: object) -> dict[str, Any]:
    """``provmint anchor status --json`` that must succeed."""
    r = cli("anchor", "status", "--json", *args)
    assert r.exit_code == 0, r.output
    result: dict[str, Any] = json.loads(r.stdout)
    return result


def one_error(r: Any, code: int, *needles: str) -> str:
    """The run failed with ``code`` and exactly one ``error:`` line holding ``needles``."""
    assert "Traceback" not in r.stdout + r.stderr
    assert r.exit_code == code, (r.exit_code, r.stdout, r.stderr, r.exception)
    lines = [ln for ln in r.stderr.strip().splitlines() if not ln.startswith("hint: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def csv_text(header: list[str], rows: list[list[str]], delimiter: str = ",") -> str:
    """A CSV document from a header and rows (for ingest and minting tests)."""
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=delimiter, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


@contextmanager
def example_store(base: Path) -> Iterator[tuple[Settings, MintSummary]]:
    """The example minted in a fresh store and key file under ``base``: (settings, summary).

    Settings are built explicitly (the library reads the environment only when resolving
    settings), and the environment points there too inside the block, so nothing outside
    ``base`` is touched.
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PROVMINT_STORE", str(base / "store"))
        mp.setenv("PROVMINT_KEY_FILE", str(base / "keys" / "keys.json"))
        mp.setenv("PROVMINT_CONFIG", str(base / "none.toml"))
        cfg = Settings(store=base / "store", key_file=base / "keys" / "keys.json", workers=1)
        init_keyring(cfg.key_file)
        yield cfg, mint_batch(EXAMPLE_CSV, settings=cfg)


def no_crash(r: Any) -> None:
    """The run ended through the CLI's error handling, not in a traceback."""
    assert "Traceback" not in r.stdout + r.stderr
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)


def verify_report(cli: Any, *args: object) -> tuple[Any, dict[str, Any]]:
    """``provmint verify ARGS --json``: the result and its report, whose verdict must
    agree with the exit code."""
    r = cli("verify", *args, "--json")
    no_crash(r)
    assert r.stdout, (r.exit_code, r.stderr)
    report: dict[str, Any] = json.loads(r.stdout)
    assert (
        report["verdict"] == {0: "valid", 3: "invalid", 4: "pending", 5: "unchecked"}[r.exit_code]
    )
    return r, report


def failed_checks(report: dict[str, Any]) -> list[str]:
    """Names of the checks of a verify report that did not pass."""
    return [c["name"] for c in report["checks"] if not c["ok"]]


def as_part_layout_v1(part: Path) -> None:
    """Rewrite a product part as provmint wrote parts before ``provmint-store/2``
    (:attr:`provmint.store.PartLayout.V1`): the same columns and writer settings, plus a
    ``url`` column after ``token`` (each URL made by the pure core's
    :func:`provmint.gs1.digital_link`), and no layout metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from provmint import gs1
    from provmint.engine import _write_part

    url_base = json.loads((part.parent.parent / "manifest.json").read_text())["url_base"]
    table = pq.read_table(part).replace_schema_metadata(None)
    urls = [
        gs1.digital_link(url_base, r["gtin"], r["serial"], r.get("lot") or "", r["token"])
        for r in table.select(
            [c for c in ("gtin", "serial", "lot", "token") if c in table.column_names]
        ).to_pylist()
    ]
    _write_part(table.append_column("url", pa.array(urls, pa.string())), part)


def as_store_format_v1(store: Path) -> None:
    """Turn a store into one written before ``provmint-store/2``: every part of every
    batch in :attr:`~provmint.store.PartLayout.V1`, and the ``provmint-store/1`` marker."""
    for batch_dir in sorted((store / "batches").iterdir()):
        for part in sorted((batch_dir / "products").glob("part-*.parquet")):
            as_part_layout_v1(part)
    marker = store / "STORE"
    doc = json.loads(marker.read_text())
    marker.write_text(json.dumps({**doc, "format": "provmint-store/1"}) + "\n")


def count_index_reads(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Bytes read from each index run file from now on (by file name): every read of a
    run goes through ``keyindex._pread_exact``, which this counts."""
    from provmint.store import keyindex

    read: dict[str, int] = {}
    original = keyindex._pread_exact

    def counting(fd: int, size: int, offset: int, path: Path) -> bytes:
        read[path.name] = read.get(path.name, 0) + size
        return original(fd, size, offset, path)

    monkeypatch.setattr(keyindex, "_pread_exact", counting)
    return read
