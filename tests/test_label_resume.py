"""``labels --resume``: parts the output directory's manifest lists as complete are not
drawn again; a part not listed (a run killed while drawing it) is drawn again; a
manifest of another batch or other options is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import EXAMPLE_CSV

from provmint.errors import EXIT_USAGE

BASE = "https://id.brand.test"


def _ok(r: Any, code: int = 0) -> Any:
    assert "Traceback" not in r.stdout + r.stderr
    assert r.exit_code == code, (r.exit_code, r.stdout, r.stderr, r.exception)
    return json.loads(r.stdout) if r.stdout.strip().startswith("{") else r.stdout


def _labels(cli: Any, batch: str, out: Path, *args: str, code: int = 0) -> Any:
    return _ok(cli("labels", batch, "-o", out, "--url-base", BASE, "--json", *args), code)


def test_resume_skips_complete_parts_and_redraws_the_rest(cli, keyed, tmp_path: Path) -> None:
    batch = _ok(cli("batch", "create", EXAMPLE_CSV, "--json"))["batch_id"]
    out = tmp_path / "labels"
    first = _labels(cli, batch, out, "-f", "png")
    assert first["images"] == first["labels"] == 9 and first["skipped"] == 0
    manifest = out / "manifest.jsonl"
    header, *parts = manifest.read_text().splitlines()
    assert json.loads(header)["batch_id"] == batch
    assert json.loads(header)["options"]["format"] == "png"
    assert [json.loads(p) for p in parts] == [{"part": 0, "labels": 9}]
    files = sorted((out / "part-00000").iterdir())
    stamps = [f.stat().st_mtime_ns for f in files]

    again = _labels(cli, batch, out, "-f", "png", "--resume")
    assert again["skipped"] == 9 and again["images"] == 0 and again["labels"] == 9
    assert [f.stat().st_mtime_ns for f in files] == stamps  # not drawn again
    assert (out / "labels.csv").read_text().count("\n") == 10  # the CSV is whole

    # Killed while drawing part 0: its entry never written, a torn line after the header.
    manifest.write_text(header + "\n" + '{"part": 0, "lab')
    files[0].write_bytes(b"half a PNG")
    redrawn = _labels(cli, batch, out, "-f", "png", "--resume")
    assert redrawn["skipped"] == 0 and redrawn["images"] == 9
    assert files[0].read_bytes().startswith(b"\x89PNG")
    assert json.loads(manifest.read_text().splitlines()[-1]) == {"part": 0, "labels": 9}
    assert _labels(cli, batch, out, "-f", "png", "--resume")["skipped"] == 9


def test_resume_refuses_other_options_and_format_none(cli, keyed, tmp_path: Path) -> None:
    batch = _ok(cli("batch", "create", EXAMPLE_CSV, "--json"))["batch_id"]
    out = tmp_path / "labels"
    _labels(cli, batch, out, "-f", "svg")
    r = cli("labels", batch, "-o", out, "--url-base", BASE, "-f", "svg", "--scale", "5", "--resume")
    assert r.exit_code == EXIT_USAGE and "other options" in r.stderr, r.stderr
    r = cli("labels", batch, "-o", out, "--url-base", BASE + "/x", "--resume")
    assert r.exit_code == EXIT_USAGE and "other options" in r.stderr, r.stderr
    r = cli("labels", batch, "-o", out, "--url-base", BASE, "-f", "none", "--resume")
    assert r.exit_code == EXIT_USAGE and "--format none" in r.stderr, r.stderr
    # Without --resume the directory is simply drawn afresh, with a new manifest.
    fresh = _labels(cli, batch, out, "-f", "svg", "--scale", "5")
    assert fresh["images"] == 9
    header = json.loads((out / "manifest.jsonl").read_text().splitlines()[0])
    assert header["options"]["scale"] == 5
