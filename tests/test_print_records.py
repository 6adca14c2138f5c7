"""A label run or export whose print record cannot be written is refused before any
output is made: the labels never leave without their URL base recorded (the store's
``prints/<batch>.jsonl``, :mod:`provmint.store.prints`). The fault is a real one: the
record's path taken by a directory, as a damaged or foreign store has it (running as
root, a read-only mode would not stop the write)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import EXAMPLE_CSV

from provmint.batch import mint_batch
from provmint.store import Store
from provmint.store.prints import PrintRecord, print_log, prints_path, read_prints

BRAND = "https://id.brand.test"


@pytest.fixture
def blocked(keyed) -> str:
    """A minted batch whose print record file cannot be opened: its id."""
    batch_id = mint_batch(EXAMPLE_CSV, settings=keyed).batch_id
    prints_path(Store.open(keyed.store), batch_id).mkdir(parents=True)
    return batch_id


@pytest.mark.parametrize("fmt", ["svg", "zpl"])
def test_labels_refuse_before_drawing(cli, blocked: str, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / "labels"
    r = cli("labels", blocked, "-o", out, "--format", fmt, "--url-base", BRAND)
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    assert f"prints/{blocked}.jsonl" in r.stderr and "nothing was written" in r.stderr
    assert not out.exists()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_exports_refuse_before_writing(cli, blocked: str, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"labels.{fmt}"
    r = cli("batch", "export", blocked, "-f", fmt, "-o", out, "--url-base", BRAND)
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    assert f"prints/{blocked}.jsonl" in r.stderr and "nothing was written" in r.stderr
    assert not out.exists() and not list(tmp_path.glob("labels*"))


def test_the_log_is_opened_first_and_appended_last(keyed, tmp_path: Path) -> None:
    batch_id = mint_batch(EXAMPLE_CSV, settings=keyed).batch_id
    store = Store.open(keyed.store)
    with print_log(store, batch_id) as log:
        assert prints_path(store, batch_id).exists()  # opened (created) before any output
        assert read_prints(store, batch_id) == []
        record = PrintRecord.now(BRAND, "labels", "svg", 9, placeholder=False)
        log.append(record)
    assert read_prints(store, batch_id) == [record]
