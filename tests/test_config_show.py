"""``provmint config show``: every setting's value and where it came from."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import one_error


def _by_name(r) -> dict[str, dict]:
    assert r.exit_code == 0, r.output
    return {s["name"]: s for s in json.loads(r.stdout)["settings"]}


def test_each_setting_says_where_it_came_from(cli, isolated: Path, monkeypatch) -> None:
    config = isolated / "config.toml"
    config.write_text(
        'url_base = "https://id.brand.example"\n'
        'scan_log = "postgresql://provmint:s3cret@db.example.com/provmint"\n'
        '[serve]\nrate_limit = 120\n[copy_signal]\nwindow = "48h"\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("PROVMINT_CONFIG", str(config))
    monkeypatch.setenv("PROVMINT_WORKERS", "3")
    r = cli("config", "show", "--store", isolated / "elsewhere", "--json")
    shown = _by_name(r)
    assert json.loads(r.stdout)["config_file"] == str(config)
    assert shown["store"] == {
        "name": "store",
        "value": str(isolated / "elsewhere"),
        "source": "option",
    }
    assert shown["workers"]["value"] == 3 and shown["workers"]["source"] == "PROVMINT_WORKERS"
    assert shown["url_base"]["source"] == "file"
    assert shown["lock_timeout"]["source"] == "default"
    assert shown["serve.rate_limit"] == {
        "name": "serve.rate_limit",
        "value": 120,
        "source": "file",
    }
    assert shown["serve.rate_window"]["source"] == "default"
    assert shown["copy_signal.window"]["value"] == "2d"  # 48h, as an age
    assert "s3cret" not in r.stdout  # a password in the scan log URL is never shown
    assert shown["scan_log"]["source"] == "file"
    text = cli("config", "show")
    assert text.exit_code == 0, text.output
    assert "s3cret" not in text.stdout
    lines = [line.split("\t") for line in text.stdout.splitlines()]
    assert lines[0] == ["setting", "value", "source"]
    assert ["workers", "3", "PROVMINT_WORKERS"] in lines


def test_an_invalid_setting_is_one_error_line(cli, isolated: Path, monkeypatch) -> None:
    config = isolated / "config.toml"
    config.write_text("[serve]\nrate_limit = -1\n", encoding="utf-8")
    monkeypatch.setenv("PROVMINT_CONFIG", str(config))
    one_error(cli("config", "show"), 2, "rate_limit")
