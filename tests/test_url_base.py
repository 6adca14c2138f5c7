"""The verification domain is chosen when labels are produced, not defaulted (issue 14).

- ``labels`` and ``batch export`` build each URL on the base resolved by
  ``config.output_url_base`` (``--url-base``, ``PROVMINT_URL_BASE``, the config file) and
  refuse the placeholder (exit 2, naming the command) unless ``--allow-placeholder``;
  for the base a batch was minted with, the URLs are the stored ones, byte for byte.
- Each production is recorded in ``<store>/prints/<batch>.jsonl`` (``batch show``),
  append-only, and survives a catalog rebuild.
- ``batch create`` warns once when no base is set.
- ``serve`` answers a code asked on another host as an unknown code (real uvicorn).
- One label CSV: hostile values round-trip through ``csv.reader``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest
from conftest import EXAMPLE_CSV
from hypothesis import given, settings
from hypothesis import strategies as st
from test_serve import GTIN, JSON, SERIAL, _path, _product

from provmint import csvsafe, gs1
from provmint.batch import mint_batch
from provmint.config import DEFAULT_URL_BASE, resolve_settings
from provmint.edge import HostCheck
from provmint.engine import digital_links
from provmint.errors import EXIT_OK, EXIT_USAGE
from provmint.products import LABEL_COLUMNS, LABEL_CSV_COLUMNS, LabelCsv, label_table
from provmint.store import Store
from provmint.store.prints import PrintRecord, prints_path, read_prints, record_print

BRAND = "https://id.brand.test"
PREFIXED = "https://id.brand.test/scan/"
"""A base with a path prefix and a trailing slash (the slash is not doubled)."""


def _ok(r: Any, code: int = EXIT_OK) -> Any:
    assert "Traceback" not in r.stdout + r.stderr, r.stderr
    assert r.exit_code == code, (r.exit_code, r.stdout, r.stderr)
    return json.loads(r.stdout) if r.stdout.strip().startswith(("{", "[")) else r.stdout


def _minted(cli: Any) -> str:
    return str(_ok(cli("batch", "create", EXAMPLE_CSV, "--json"))["batch_id"])


def _printed(cli: Any, batch: str) -> list[dict[str, Any]]:
    return list(_ok(cli("batch", "show", batch, "--json"))["printed"])


def _rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


# --------------------------------------------------------------------------- the placeholder


def test_labels_and_exports_refuse_the_placeholder_and_name_the_command(
    cli, keyed, tmp_path: Path
) -> None:
    batch = _minted(cli)
    out = tmp_path / "labels.csv"
    r = cli("batch", "export", batch, "--raw", "-o", out)
    _ok(r, EXIT_USAGE)
    assert r.stderr.startswith("error: no verification URL base is set")
    hint = " ".join(r.stderr.split())  # the console may wrap the hint
    assert f"provmint batch export {batch} --raw -o {out} --url-base https://id.your-brand.com" in (
        hint
    )
    assert "export PROVMINT_URL_BASE=https://id.your-brand.com" in hint
    r = cli("labels", batch, "--out", tmp_path / "labels", "--format", "none")
    _ok(r, EXIT_USAGE)
    hint = " ".join(r.stderr.split())
    assert f"provmint labels {batch} --out {tmp_path / 'labels'} --url-base https://" in hint
    # Refused before anything was written, the record included.
    assert not out.exists() and not (tmp_path / "labels").exists()
    assert _printed(cli, batch) == []
    # --allow-placeholder prints it anyway, and the record says it was the placeholder.
    _ok(cli("batch", "export", batch, "--allow-placeholder", "-o", out))
    assert all(DEFAULT_URL_BASE + "/01/" in row[5] for row in _rows(out.read_text())[1:])
    [record] = _printed(cli, batch)
    assert record["url_base"] == DEFAULT_URL_BASE and record["placeholder"] is True
    assert record["output"] == "export" and record["labels"] == 9


def test_the_base_is_the_option_else_the_environment_else_the_config_file(
    cli, keyed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = _minted(cli)

    def urls(*args: str) -> set[str]:
        text = _ok(cli("batch", "export", batch, "--raw", *args))
        return {row[5].split("/01/")[0] for row in _rows(text)[1:]}

    config = tmp_path / "no-config.toml"
    config.write_text('url_base = "https://file.brand.test"\n' + config.read_text())
    assert urls() == {"https://file.brand.test"}
    monkeypatch.setenv("PROVMINT_URL_BASE", "https://env.brand.test/")
    assert urls() == {"https://env.brand.test"}
    assert urls("--url-base", PREFIXED) == {PREFIXED.rstrip("/")}
    # A base that is not an http(s) URL with a host is refused like any bad option.
    r = cli("batch", "export", batch, "--url-base", "id.brand.test")
    _ok(r, EXIT_USAGE)
    assert "must be an http(s) URL with a host" in r.stderr


def test_batch_create_warns_once_without_a_base(
    cli, keyed, write_csv: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = cli("batch", "create", EXAMPLE_CSV, "--json")
    _ok(r)
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "PROVMINT_URL_BASE=" in warnings[0], r.stderr
    assert json.loads(r.stdout)["url_base"] == DEFAULT_URL_BASE  # the JSON is untouched
    monkeypatch.setenv("PROVMINT_URL_BASE", BRAND)
    other = write_csv("other.csv", f"gtin,serial\n{GTIN},ONE-MORE\n")
    r = cli("batch", "create", other)
    _ok(r)
    assert "warning" not in r.stderr


# --------------------------------------------------------------------------- the URLs


CSET82 = "!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
x20 = st.text(alphabet=CSET82, min_size=1, max_size=20)


GTINS = [GTIN, "00000000000000", "12345678901231"]


@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(GTINS),
            x20,
            st.one_of(st.just(""), x20),
            st.sampled_from(["", "2027-06-30", "271200", "2028-02-29"]),
        ),
        min_size=0,
        max_size=40,
    ),
    base=st.sampled_from([BRAND, PREFIXED, "http://127.0.0.1:8080", DEFAULT_URL_BASE]),
)
def test_label_columns_are_gs1s_row_by_row(rows: list[tuple[str, ...]], base: str) -> None:
    """The vectorised label columns equal gs1's functions row by row: the URL
    (``gs1.digital_link``, whatever needs percent-encoding, with and without a lot
    column), the element string and the human-readable text."""
    rng = random.Random(len(rows))
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"  # base64url
    tokens = ["".join(rng.choice(alphabet) for _ in range(22)) for _ in rows]
    names = ("gtin", "serial", "lot", "expiry")
    table = pa.table(
        {
            **{
                name: pa.array([row[i] for row in rows], pa.string())
                for i, name in enumerate(names)
            },
            "token": pa.array(tokens, pa.string()),
        }
    )
    labels = label_table(table, base).to_pylist()
    for row, token, label in zip(rows, tokens, labels, strict=True):
        gtin, serial, lot, expiry = row
        assert label["url"] == gs1.digital_link(base, gtin, serial, lot, token)
        assert label["element_string"] == gs1.element_string(gtin, serial, lot, expiry)
        assert label["human_readable"] == gs1.human_readable(gtin, serial, lot, expiry)
        assert [label[name] for name in names] == list(row)
    assert digital_links(table.drop_columns(["lot"]), base).to_pylist() == [
        gs1.digital_link(base, row[0], row[1], "", token)
        for row, token in zip(rows, tokens, strict=True)
    ]


def test_for_the_minted_base_the_rebuilt_url_is_the_stored_one(
    keyed, write_csv: Any, tmp_path: Path
) -> None:
    """Generated serials and lots (percent-encoded ones among them), minted on a base
    with a prefix: labels on that base and the catalog's products view carry exactly the
    URLs of gs1.digital_link; on another base, the same paths."""
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    serials = {"".join(rng.choice(CSET82) for _ in range(rng.randint(1, 20))) for _ in range(400)}
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["gtin", "serial", "lot", "expiry"])
    for serial in sorted(serials):
        lot = rng.choice(["", "".join(rng.choice(CSET82) for _ in range(rng.randint(1, 20)))])
        writer.writerow([GTIN, serial, lot, rng.choice(["", "2027-06-30", "271200"])])
    source = write_csv("generated.csv", buffer.getvalue())
    minted = resolve_settings(url_base=PREFIXED)
    summary = mint_batch(source, settings=minted)
    store = Store.open(minted.store)
    with store.reading(timeout=5) as con:
        batch = store.batch(con, summary.batch_id)
    part = store.read_part(batch, 0)
    with store.reading(timeout=5) as con:  # the catalog's products view rebuilds them too
        stored = [
            u for (u,) in con.execute("SELECT url FROM products ORDER BY leaf_index").fetchall()
        ]
    assert stored == [
        gs1.digital_link(PREFIXED, r["gtin"], r["serial"], r["lot"], r["token"])
        for r in part.to_pylist()
    ], seed
    assert label_table(part, minted.url_base).column("url").to_pylist() == stored, seed
    moved = label_table(part, BRAND)
    assert moved.column("url").to_pylist() == [
        BRAND + url[len(PREFIXED.rstrip("/")) :] for url in stored
    ], seed
    labels = moved.to_pylist()
    for row in labels:
        fields = (row["gtin"], row["serial"], row["lot"], row["expiry"])
        assert row["element_string"] == gs1.element_string(*fields)
        assert row["human_readable"] == gs1.human_readable(*fields)
    assert [row["serial"] for row in labels] == sorted(serials)


# --------------------------------------------------------------------------- the record


def test_every_production_is_recorded_and_survives_a_catalog_rebuild(
    cli, keyed, tmp_path: Path
) -> None:
    batch = _minted(cli)
    _ok(cli("batch", "export", batch, "--url-base", BRAND, "-o", tmp_path / "a.csv"))
    _ok(cli("labels", batch, "--url-base", PREFIXED, "--out", tmp_path / "l", "--format", "none"))
    _ok(cli("batch", "export", batch, "--url-base", BRAND, "-f", "parquet", "-o", tmp_path / "p"))
    printed = _printed(cli, batch)
    assert [(p["url_base"], p["output"], p["format"], p["labels"]) for p in printed] == [
        (BRAND, "export", "csv", 9),
        (PREFIXED.rstrip("/"), "labels", "none", 9),
        (BRAND, "export", "parquet", 9),
    ]
    assert not any(p["placeholder"] for p in printed)
    shown = _ok(cli("batch", "show", batch))
    assert f"{BRAND}  (2 times" in shown and "export parquet, 9 labels" in shown
    listed = _ok(cli("batch", "list", "--json"))["batches"]
    assert listed[0]["printed"] == printed
    # The catalog is lost and rebuilt from the files: the record is still there.
    store = Store.open(keyed.store)
    store.catalog_path.unlink()
    _ok(cli("store", "repair"))
    assert _printed(cli, batch) == printed


def test_a_record_cut_short_is_skipped_and_the_next_one_kept(keyed, tmp_path: Path) -> None:
    store = Store.open(keyed.store, create=True)
    first = PrintRecord("2026-12-01T00:00:00Z", BRAND, "labels", "svg", 3, False)
    record_print(store, "20261201-00000000", first)
    path = prints_path(store, "20261201-00000000")
    with open(path, "ab") as fh:
        fh.write(b'{"at":"2026-12-01T00:00:01Z","url_base":"https://id.br')  # a crash
    second = PrintRecord("2026-12-01T00:00:02Z", PREFIXED, "export", "csv", 5, False)
    record_print(store, "20261201-00000000", second)
    assert read_prints(store, "20261201-00000000") == [first, second]
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"
    assert read_prints(store, "20261201-ffffffff") == []


@settings(max_examples=150, deadline=None)
@given(garbage=st.lists(st.one_of(st.binary(max_size=80), st.text(max_size=80).map(str.encode))))
def test_damaged_record_files_never_raise(garbage: list[bytes]) -> None:
    """Any bytes between records: reading skips them and keeps every whole record."""
    import tempfile

    with tempfile.TemporaryDirectory() as root:
        store = Store(Path(root))
        record = PrintRecord("2026-12-01T00:00:00Z", BRAND, "labels", "png", 1, False)
        path = prints_path(store, "b")
        path.parent.mkdir()
        path.write_bytes(b"\n".join(garbage))
        record_print(store, "b", record)
        got = read_prints(store, "b")
        assert got[-1] == record
        assert all(isinstance(r, PrintRecord) and isinstance(r.labels, int) for r in got)


# --------------------------------------------------------------------------- one label CSV


hostile = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["=1+2", "+SUM(1)", "-1+2", "@x", "\t=1", "\r=1", '"', '""', "a,b", "\n"]),
    st.text(alphabet='=+-@\t\r\n",;\x1d\u00e9\u202e\U0001f600 ', max_size=12),
)


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(st.lists(hostile, min_size=8, max_size=8), min_size=0, max_size=6),
    files=st.booleans(),
)
def test_the_label_csv_round_trips_hostile_values(rows: list[list[str]], files: bool) -> None:
    """Formula starts, quotes, commas, CR and LF, U+001D, bidi controls, emoji: raw,
    csv.reader gives back every value; neutralised, every formula start gets a ' and
    nothing else changes; the header is the one shape, every field quoted."""
    table = pa.table(
        {
            name: pa.array([row[i] for row in rows], pa.string())
            for i, name in enumerate(LABEL_COLUMNS)
        }
    )
    names = [f"part-00000/{i}.svg" for i in range(len(rows))] if files else None
    for raw in (True, False):
        text = io.StringIO(newline="")
        writer = LabelCsv(text, raw=raw)
        writer.write(table, names)
        written = text.getvalue()
        assert written.startswith(",".join(f'"{n}"' for n in LABEL_CSV_COLUMNS) + "\n")
        back = _rows(written)
        assert back[0] == list(LABEL_CSV_COLUMNS)
        cell = (lambda v: v) if raw else csvsafe.neutralise
        assert back[1:] == [
            [*map(cell, row), names[i] if names else ""] for i, row in enumerate(rows)
        ]
        if not raw:
            assert not any(v.startswith(csvsafe.FORMULA_PREFIXES) for r in back for v in r)


# --------------------------------------------------------------------------- serve


def test_the_host_check_reads_host_values_strictly() -> None:
    check = HostCheck("https://id.brand.test/scan")
    for ours in (b"id.brand.test", b"ID.BRAND.TEST", b"id.brand.test:443", b"id.brand.test."):
        assert check.allows(ours), ours
    for other in (
        b"",
        b"evil.test",
        b"id.brand.test.evil.test",
        b"id.brand.test:x",
        b"id.brand.test:99999999",
        b"id.brand.test@evil.test",
        b"[id.brand.test]",
        b"id.brand.t\xc3\xa9st",
    ):
        assert not check.allows(other), other
    six = HostCheck("http://[2001:db8::7]:8080")
    assert six.allows(b"[2001:DB8::7]") and six.allows(b"[2001:db8::7]:80")
    assert not six.allows(b"2001:db8::7")  # a bare IPv6 literal is not a Host value
    assert HostCheck.forwarded(b"a.test, b.test,  id.brand.test ") == b"id.brand.test"


@settings(max_examples=300, deadline=None)
@given(host=st.one_of(st.binary(max_size=300), st.text(max_size=40).map(str.encode)))
def test_the_host_check_never_raises_and_allows_only_the_host(host: bytes) -> None:
    """Any bytes a client sends as Host: no exception, and only a spelling of the
    url base's host (letter case, a port, a trailing dot) is allowed."""
    check = HostCheck(BRAND)
    if check.allows(host):
        name = host.decode("ascii").strip(" \t").lower()
        name = name.rsplit(":", 1)[0] if ":" in name else name
        assert name.rstrip(".") == "id.brand.test", host


def _serve_config(tmp_path: Path, **serve: Any) -> None:
    lines = ["[serve]", "rate_limit = 0"]
    for key, value in serve.items():
        shown = json.dumps(value) if not isinstance(value, bool) else str(value).lower()
        lines.append(f"{key} = {shown}")
    (tmp_path / "no-config.toml").write_text("\n".join(lines) + "\n")


def _get(server: Any, path: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.get(server.url + path, headers={**JSON, **headers}, timeout=15)


def test_serve_answers_a_code_on_another_host_as_unknown(
    cli, keyed, serve_store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROVMINT_URL_BASE", BRAND)
    _minted(cli)
    path = _path(_product(cli)["url"])
    unknown_path = path.replace(SERIAL, "NOSUCHSERIAL1")
    _serve_config(tmp_path)
    server = serve_store()
    ours = {"Host": "id.brand.test"}
    genuine = _get(server, path, ours)
    assert genuine.status_code == 200 and genuine.json()["verdict"] == "pending"  # not anchored
    assert genuine.json()["scans"] == {"count": 1}
    unknown = _get(server, unknown_path, ours)
    assert unknown.status_code == 404
    # Another host, whatever the code: the unknown code's answer, word for word.
    for host in ("evil.test", "id.brand.test.evil.test", "brand.test", "127.0.0.1", "x:y"):
        for asked in (path, unknown_path):
            answer = _get(server, asked, {"Host": host})
            assert (answer.status_code, answer.json()) == (404, unknown.json()), host
        page = httpx.get(server.url + path, headers={"Host": host}, timeout=15)
        assert page.status_code == 404 and SERIAL not in page.text
        proof = _get(server, "/proof" + path, {"Host": host})
        assert proof.status_code == 404
        assert proof.json()["error"]["message"] == "no proof for this code"
    # The same host in another spelling, with a port: ours.
    for host in ("ID.Brand.Test", "id.brand.test:8443", "id.brand.test."):
        assert _get(server, path, {"Host": host}).json()["verdict"] == "pending", host
    # Not behind a trusted proxy, X-Forwarded-Host is anyone's text.
    lie = {"Host": "evil.test", "X-Forwarded-Host": "id.brand.test"}
    assert _get(server, path, lie).status_code == 404
    # The foreign requests were not logged: this is the code's fifth logged scan.
    assert _get(server, path, ours).json()["scans"] == {"count": 5}
    # Monitoring answers on any host.
    assert _get(server, "/healthz", {"Host": "evil.test"}).status_code == 200
    server.stop()

    # Behind a trusted proxy, the host it forwarded counts (the right-most one).
    _serve_config(tmp_path, trusted_proxies=["127.0.0.1/32"])
    server = serve_store()
    inside = {"Host": "127.0.0.1:8000"}
    assert _get(server, path, {**inside, "X-Forwarded-Host": "id.brand.test"}).status_code == 200
    assert _get(server, path, {**inside, "X-Forwarded-Host": "evil.test"}).status_code == 404
    both = {**inside, "X-Forwarded-Host": "id.brand.test, evil.test"}
    assert _get(server, path, both).status_code == 404
    server.stop()

    # check_host = false: any host (a deployment that checks hosts in its proxy).
    _serve_config(tmp_path, check_host=False)
    server = serve_store()
    assert _get(server, path, {"Host": "evil.test"}).status_code == 200
    server.stop()
