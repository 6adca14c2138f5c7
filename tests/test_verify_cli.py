"""``provmint verify``: the receipt, exit codes, ``--token`` and hostile proof files.

A proof comes from strangers: whatever the bytes, ``provmint verify`` must end with a
verdict or exactly one ``error:`` line and a documented exit code, never a traceback.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import EXAMPLE_CSV, run_provmint
from helpers import example_store

from provmint.errors import EXIT_INVALID, EXIT_NOT_FOUND, EXIT_PENDING, EXIT_UNCHECKED
from provmint.products import export_proof, find_product
from provmint.proofs import MAX_PROOF_BYTES

GTIN = "09520123450014"
SERIAL = "546CAWQDCR56"
OTHER_SERIAL = "X67Y29DHPXTS"


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The example minted once per module in its own temporary store."""
    base = tmp_path_factory.mktemp("example")
    with example_store(base) as (cfg, summary):
        doc = export_proof(cfg, gtin=GTIN, serial=SERIAL)
        token = find_product(cfg, gtin=GTIN, serial=SERIAL).token
        other = find_product(cfg, gtin=GTIN, serial=OTHER_SERIAL).token
    return {"summary": summary, "doc": doc, "token": token, "other_token": other}


@pytest.fixture
def doc(example) -> dict[str, Any]:
    return copy.deepcopy(example["doc"])


@pytest.fixture
def proof_file(tmp_path: Path, doc) -> Path:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    return path


def write(tmp_path: Path, content: str | bytes, name: str = "hostile.json") -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def assert_clean_error(r: Any, exit_code: int, *needles: str) -> str:
    """Exit code as documented, one ``error:`` line on stderr naming the problem, nothing
    on stdout but the same error as JSON (with --json), and no traceback anywhere."""
    assert "Traceback" not in r.stdout + r.stderr
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert r.exit_code == exit_code, (r.exit_code, r.stdout, r.stderr, r.exception)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: "), r.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    if r.stdout:  # with --json: the same error as JSON, and nothing else
        error = json.loads(r.stdout)["error"]
        assert lines[0] == f"error: {error['message']}" and error["exit"] == exit_code
    return lines[0]


# --------------------------------------------------------------------------- good proofs


def test_receipt_of_a_good_proof(cli, example, proof_file: Path) -> None:
    summary = example["summary"]
    r = cli("verify", proof_file)
    assert r.exit_code == EXIT_PENDING == 4, r.output
    out = r.stdout
    report = json.loads(cli("verify", proof_file, "--json").stdout)
    assert re.search(rf"^product\s+GTIN {GTIN} serial {SERIAL} lot L2406A\s*$", out, re.M)
    assert re.search(rf"^leaf\s+{report['leaf_hash']}\s+\(#0 of 9\)", out, re.M)
    assert re.search(rf"^computed root\s+{summary.root}\s*$", out, re.M)
    assert re.search(rf"^expected root\s+{summary.root}\s*$", out, re.M)
    assert re.search(rf"^batch\s+{summary.batch_id}\s+commitment {summary.commitment}", out, re.M)
    assert re.search(r"^anchor\s+none yet\s*$", out, re.M)
    for name in (
        "inclusion",
        "manifest",
        "manifest binds tree",
        "manifest binds batch",
        "record fields",
        "record version",
        "batch commitment",
    ):
        assert re.search(rf"^  ok\s+{name}: ", out, re.M), name
    assert "FAIL" not in out
    assert out.rstrip().splitlines()[-1] == "PENDING: valid, but the batch is not anchored yet"
    assert r.stderr == ""


def test_json_report_of_a_good_proof(cli, example, proof_file: Path, doc) -> None:
    r = cli("verify", proof_file, "--json")
    assert r.exit_code == 4
    report = json.loads(r.stdout)
    assert report["verdict"] == "pending"
    assert report["reason"] == "valid, but the batch is not anchored yet"
    assert report["computed_root"] == report["expected_root"] == example["summary"].root
    assert report["batch_id"] == example["summary"].batch_id
    assert report["commitment"] == example["summary"].commitment
    assert report["record"] == doc["product"]["record"]
    assert (report["leaf_index"], report["tree_size"]) == (0, 9)
    assert report["anchor"] is None
    assert len(report["checks"]) == 7 and all(c["ok"] for c in report["checks"])


def test_proof_from_stdin(cli, doc) -> None:
    r = cli("verify", "-", "--json", input=json.dumps(doc))
    assert r.exit_code == 4, r.output
    assert json.loads(r.stdout)["verdict"] == "pending"


def test_tampered_proof_from_stdin_is_invalid(cli, doc) -> None:
    doc["product"]["record"]["lot"] = "L9999Z"
    r = cli("verify", "-", input=json.dumps(doc))
    assert r.exit_code == EXIT_INVALID
    assert re.search(r"^  FAIL inclusion: ", r.stdout, re.M)
    assert r.stdout.rstrip().splitlines()[-1].startswith("INVALID: inclusion: ")


def test_garbage_on_stdin_is_a_clean_error(cli) -> None:
    r = cli("verify", "-", input="not json at all")
    assert_clean_error(r, EXIT_INVALID, "not valid JSON")


def test_oversized_stdin_is_refused(cli, doc) -> None:
    text = json.dumps(doc) + " " * MAX_PROOF_BYTES
    r = cli("verify", "-", input=text)
    assert_clean_error(r, EXIT_INVALID, f"at most {MAX_PROOF_BYTES}")


def test_real_process_verifies_a_proof(proof_file: Path, doc) -> None:
    p = run_provmint("verify", proof_file)
    assert p.returncode == 4, p.stderr
    assert "PENDING" in p.stdout and "none yet" in p.stdout
    assert p.stderr == ""


@pytest.mark.parametrize(
    ("where", "value"),
    [
        (("product", "record", "serial"), "546CAWQDCR57"),
        (("product", "record", "product_name"), "Aurora Serum 50 ml"),
        (("tree", "leaf_index"), 1),
        (("batch", "commitment"), "0" * 64),
        (("batch", "manifest", "created_at"), "2020-01-01T00:00:00Z"),
    ],
)
def test_tampered_proof_file_is_invalid(cli, tmp_path: Path, doc, where, value) -> None:
    target = doc
    for key in where[:-1]:
        target = target[key]
    target[where[-1]] = value
    path = write(tmp_path, json.dumps(doc))
    r = cli("verify", path)
    assert r.exit_code == EXIT_INVALID, r.output
    assert "INVALID" in r.stdout and "FAIL" in r.stdout
    report = json.loads(cli("verify", path, "--json").stdout)
    assert report["verdict"] == "invalid"
    failed = [c["name"] for c in report["checks"] if not c["ok"]]
    assert failed and report["reason"].startswith(failed[0] + ": ")


def test_incomplete_anchor_section_is_malformed(cli, tmp_path: Path, doc) -> None:
    """An anchor section is parsed as strictly as the rest (real anchors: test_anchor.py)."""
    doc["anchor"] = {"format": "provmint-anchor/1", "chain": "example", "path": []}
    r = cli("verify", write(tmp_path, json.dumps(doc)))
    assert r.exit_code == EXIT_INVALID, r.output
    assert "anchor." in r.stderr


def test_present_anchor_on_a_tampered_proof_is_still_invalid(cli, tmp_path: Path, doc) -> None:
    doc["anchor"] = {"format": "provmint-anchor/1"}
    doc["product"]["record"]["lot"] = "X"
    r = cli("verify", write(tmp_path, json.dumps(doc)))
    assert r.exit_code == EXIT_INVALID


# --------------------------------------------------------------------------- --token


def test_correct_token_passes_every_check(cli, example, proof_file: Path) -> None:
    r = cli("verify", proof_file, "--token", example["token"], "--json")
    assert r.exit_code == 4, r.output
    report = json.loads(r.stdout)
    assert report["verdict"] == "pending"
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["token"]["ok"] is True
    assert checks["token"]["detail"] == "the token matches the committed token"
    assert all(c["ok"] for c in report["checks"]) and len(checks) == 8
    text = cli("verify", proof_file, "--token", example["token"])
    assert text.exit_code == 4
    assert re.search(r"^  ok\s+token: ", text.stdout, re.M)


def test_token_of_another_product_is_invalid(cli, example, proof_file: Path) -> None:
    r = cli("verify", proof_file, "--token", example["other_token"], "--json")
    assert r.exit_code == EXIT_INVALID, r.output
    report = json.loads(r.stdout)
    assert report["verdict"] == "invalid"
    assert report["reason"] == "token: the token is not the one committed for this product"
    assert [c["name"] for c in report["checks"] if not c["ok"]] == ["token"]


def _noncanonical(token: str) -> str:
    # the last of 22 base64url characters carries 2 data bits and 4 zero bits
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return token[:-1] + alphabet[alphabet.index(token[-1]) + 1]


@pytest.mark.parametrize(
    "make_bad",
    [
        lambda t: "abc",
        lambda t: t[:-1],
        lambda t: t + "A",
        lambda t: t[:-1] + "!",
        lambda t: t[:-1] + "=",
        lambda t: t.replace(t[0], "+", 1),
        lambda t: "",
        _noncanonical,
    ],
    ids=["short", "21 chars", "23 chars", "bang", "padding", "plus", "empty", "stray bits"],
)
def test_malformed_token_is_invalid(cli, example, proof_file: Path, make_bad) -> None:
    bad = make_bad(example["token"])
    assert bad != example["token"]
    r = cli("verify", proof_file, "--token", bad, "--json")
    assert r.exit_code == EXIT_INVALID, r.output
    report = json.loads(r.stdout)
    assert report["verdict"] == "invalid"
    assert report["reason"].startswith("token: ")
    assert "Traceback" not in r.stdout + r.stderr


# --------------------------------------------------------------------------- unreadable files


def test_missing_file_is_not_found(cli, tmp_path: Path) -> None:
    r = cli("verify", tmp_path / "nope.json")
    assert_clean_error(r, EXIT_NOT_FOUND, "proof file not found")


def test_directory_could_not_be_checked(cli, tmp_path: Path) -> None:
    (tmp_path / "adir").mkdir()
    r = cli("verify", tmp_path / "adir")
    assert_clean_error(r, EXIT_UNCHECKED, "is a directory")


def test_unreadable_file_could_not_be_checked(
    cli, proof_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def denied(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied", str(args[0]))

    # works as root too (chmod 000 would not stop root)
    monkeypatch.setattr("provmint.verify.open", denied, raising=False)
    r = cli("verify", proof_file)
    assert_clean_error(r, EXIT_UNCHECKED, "cannot read: Permission denied")


def test_file_over_one_mebibyte_is_refused(cli, tmp_path: Path, doc) -> None:
    # a valid proof padded with whitespace: refused on size alone, before parsing
    path = write(tmp_path, json.dumps(doc) + " " * MAX_PROOF_BYTES)
    r = cli("verify", path)
    assert_clean_error(r, EXIT_INVALID, "larger than 1048576 bytes")


def test_file_of_exactly_one_mebibyte_is_parsed(cli, tmp_path: Path, doc) -> None:
    text = json.dumps(doc)
    path = write(tmp_path, text + " " * (MAX_PROOF_BYTES - len(text.encode())))
    assert path.stat().st_size == MAX_PROOF_BYTES
    r = cli("verify", path)
    assert r.exit_code == 4, r.output


# --------------------------------------------------------------------------- hostile JSON


def _mutated(doc: dict[str, Any], *where: Any, value: Any = None, delete: bool = False) -> str:
    doc = copy.deepcopy(doc)
    target = doc
    for key in where[:-1]:
        target = target[key]
    if delete:
        del target[where[-1]]
    else:
        target[where[-1]] = value
    return json.dumps(doc)


HEX = "ab" * 32

HOSTILE: list[tuple[str, Any, str]] = [
    # (id, builder(doc) -> str|bytes, expected words in the error line)
    ("not json", lambda d: "hello, world", "not valid JSON"),
    ("empty file", lambda d: "", "not valid JSON"),
    ("truncated", lambda d: json.dumps(d)[:-10], "not valid JSON"),
    ("trailing garbage", lambda d: json.dumps(d) + "}", "not valid JSON"),
    ("utf-8 bom", lambda d: b"\xef\xbb\xbf" + json.dumps(d).encode(), "not valid JSON"),
    ("top-level array", lambda d: json.dumps([d]), "must be a JSON object"),
    ("top-level string", lambda d: '"proof"', "must be a JSON object"),
    ("top-level null", lambda d: "null", "must be a JSON object"),
    (
        "size as string",
        lambda d: _mutated(d, "tree", "size", value="9"),
        "tree.size must be a whole number",
    ),
    ("size zero", lambda d: _mutated(d, "tree", "size", value=0), "tree.size"),
    ("size negative", lambda d: _mutated(d, "tree", "size", value=-9), "tree.size"),
    ("size 2^63", lambda d: _mutated(d, "tree", "size", value=2**63), "tree.size"),
    ("size 2^64", lambda d: _mutated(d, "tree", "size", value=2**64), "tree.size"),
    (
        "leaf_index as bool",
        lambda d: _mutated(d, "tree", "leaf_index", value=True),
        "tree.leaf_index must be a whole number",
    ),
    ("size as bool", lambda d: _mutated(d, "tree", "size", value=True), "tree.size"),
    ("leaf_index null", lambda d: _mutated(d, "tree", "leaf_index", value=None), "tree.leaf_index"),
    (
        "leaf_index = size",
        lambda d: _mutated(d, "tree", "leaf_index", value=9),
        "tree.leaf_index must be a whole number in [0, 8]",
    ),
    (
        "path as dict",
        lambda d: _mutated(d, "tree", "path", value={"0": HEX}),
        "tree.path must be a list",
    ),
    (
        "path as string",
        lambda d: _mutated(d, "tree", "path", value=HEX),
        "tree.path must be a list",
    ),
    (
        "path item int",
        lambda d: _mutated(d, "tree", "path", value=[1]),
        "tree.path[0] must be 64 lowercase hex",
    ),
    (
        "path item nested list",
        lambda d: _mutated(d, "tree", "path", value=[[HEX]]),
        "tree.path[0] must be 64 lowercase hex",
    ),
    (
        "record value int",
        lambda d: _mutated(d, "product", "record", "lot", value=7),
        "product.record.lot must be a string",
    ),
    (
        "record value null",
        lambda d: _mutated(d, "product", "record", "lot", value=None),
        "product.record.lot must be a string",
    ),
    (
        "record value object",
        lambda d: _mutated(d, "product", "record", "lot", value={}),
        "product.record.lot must be a string",
    ),
    (
        "record as list",
        lambda d: _mutated(d, "product", "record", value=[]),
        "product.record must be an object",
    ),
    (
        "record bad field name",
        lambda d: _mutated(d, "product", "record", "Lot", value="x"),
        "invalid field name",
    ),
    (
        "record too many fields",
        lambda d: _mutated(
            d,
            "product",
            "record",
            value={**d["product"]["record"], **{f"f{i}": "" for i in range(64)}},
        ),
        "fields; at most 64",
    ),
    (
        "record value too long",
        lambda d: _mutated(d, "product", "record", "lot", value="x" * 4097),
        "longer than 4096 bytes",
    ),
    (
        "record lone surrogate",
        lambda d: _mutated(d, "product", "record", "lot", value="\ud800"),
        "not valid Unicode",
    ),
    ("product as list", lambda d: _mutated(d, "product", value=[]), "product must be an object"),
    ("tree null", lambda d: _mutated(d, "tree", value=None), "tree must be an object"),
    (
        "manifest as list",
        lambda d: _mutated(d, "batch", "manifest", value=[]),
        "batch.manifest must be an object",
    ),
    (
        "manifest too large",
        lambda d: _mutated(d, "batch", "manifest", "label", value="x" * 70000),
        "batch.manifest is too large",
    ),
    (
        "float size",
        lambda d: json.dumps(d).replace('"size": 9', '"size": 9.0', 1),
        "non-integer number '9.0'",
    ),
    (
        "exponent size",
        lambda d: json.dumps(d).replace('"size": 9', '"size": 9e0', 1),
        "non-integer number",
    ),
    (
        "float in manifest",
        lambda d: json.dumps(d).replace('"rejected": 0', '"rejected": 0.0'),
        "non-integer number",
    ),
    (
        "NaN",
        lambda d: json.dumps(d).replace('"anchor": null', '"anchor": NaN'),
        "non-integer number 'NaN'",
    ),
    (
        "Infinity",
        lambda d: json.dumps(d).replace('"size": 9', '"size": Infinity', 1),
        "non-integer number 'Infinity'",
    ),
    (
        "-Infinity",
        lambda d: json.dumps(d).replace('"size": 9', '"size": -Infinity', 1),
        "non-integer number '-Infinity'",
    ),
    (
        "path of 10^5 hashes",
        lambda d: _mutated(d, "tree", "path", value=[HEX] * 100_000),
        "larger than 1048576 bytes",
    ),
    (
        "path of 10^5 entries",
        lambda d: _mutated(d, "tree", "path", value=[""] * 100_000),
        "tree.path has 100000 entries; at most 63",
    ),
    (
        "path of 64 hashes",
        lambda d: _mutated(d, "tree", "path", value=[HEX] * 64),
        "tree.path has 64 entries; at most 63",
    ),
    (
        "record of 5*10^4 fields",
        lambda d: _mutated(d, "product", "record", value={f"f{i}": "" for i in range(50_000)}),
        "product.record has 50000 fields; at most 64",
    ),
    (
        "root uppercase",
        lambda d: _mutated(d, "tree", "root", value=d["tree"]["root"].upper()),
        "tree.root must be 64 lowercase hex digits",
    ),
    (
        "root 63 chars",
        lambda d: _mutated(d, "tree", "root", value=d["tree"]["root"][:63]),
        "tree.root must be 64 lowercase hex digits",
    ),
    (
        "root 65 chars",
        lambda d: _mutated(d, "tree", "root", value=d["tree"]["root"] + "0"),
        "tree.root must be 64 lowercase hex digits",
    ),
    (
        "root non-hex",
        lambda d: _mutated(d, "tree", "root", value="g" + d["tree"]["root"][1:]),
        "tree.root must be 64 lowercase hex digits",
    ),
    (
        "root with newline",
        lambda d: _mutated(d, "tree", "root", value=d["tree"]["root"] + "\n"),
        "tree.root must be 64 lowercase hex digits",
    ),
    (
        "root 0x",
        lambda d: _mutated(d, "tree", "root", value="0x" + d["tree"]["root"][2:]),
        "tree.root must be 64 lowercase hex digits",
    ),
    (
        "token_commitment 63",
        lambda d: _mutated(
            d, "product", "token_commitment", value=d["product"]["token_commitment"][:63]
        ),
        "product.token_commitment must be 64 lowercase hex digits",
    ),
    (
        "commitment uppercase",
        lambda d: _mutated(d, "batch", "commitment", value=d["batch"]["commitment"].upper()),
        "batch.commitment must be 64 lowercase hex digits",
    ),
    (
        "manifest_digest int",
        lambda d: _mutated(d, "batch", "manifest_digest", value=0),
        "batch.manifest_digest must be 64 lowercase hex digits",
    ),
    (
        "path uppercase",
        lambda d: _mutated(
            d, "tree", "path", value=[d["tree"]["path"][0].upper(), *d["tree"]["path"][1:]]
        ),
        "tree.path[0] must be 64 lowercase hex digits",
    ),
    (
        "path non-hex",
        lambda d: _mutated(d, "tree", "path", value=[*d["tree"]["path"][:3], "z" * 64]),
        "tree.path[3] must be 64 lowercase hex digits",
    ),
    (
        "duplicate top-level key",
        lambda d: '{"anchor": null, ' + json.dumps(d)[1:],
        "duplicate field 'anchor'",
    ),
    (
        "duplicate record key",
        lambda d: json.dumps(d).replace('"lot": "L2406A"', '"lot": "L2406A", "lot": "L2407B"'),
        "duplicate field 'lot'",
    ),
    (
        "duplicate root",
        lambda d: json.dumps(d).replace('"root": "', '"root": "' + "0" * 64 + '", "root": "', 1),
        "duplicate field 'root'",
    ),
    (
        "unknown top-level field",
        lambda d: _mutated(d, "signature", value="trust me"),
        "signature is not part of provmint-proof/1",
    ),
    (
        "unknown tree field",
        lambda d: _mutated(d, "tree", "hash", value="sha1"),
        "tree.hash is not part of provmint-proof/1",
    ),
    (
        "unknown batch field",
        lambda d: _mutated(d, "batch", "valid", value=True),
        "batch.valid is not part of provmint-proof/1",
    ),
    (
        "unknown product field",
        lambda d: _mutated(d, "product", "token", value="x"),
        "product.token is not part of provmint-proof/1",
    ),
    ("missing anchor", lambda d: _mutated(d, "anchor", delete=True), "anchor is missing"),
    ("missing format", lambda d: _mutated(d, "format", delete=True), "format is missing"),
    (
        "missing tree.root",
        lambda d: _mutated(d, "tree", "root", delete=True),
        "tree.root is missing",
    ),
    (
        "missing tree.path",
        lambda d: _mutated(d, "tree", "path", delete=True),
        "tree.path is missing",
    ),
    (
        "missing commitment",
        lambda d: _mutated(d, "batch", "commitment", delete=True),
        "batch.commitment is missing",
    ),
    (
        "missing token_commitment",
        lambda d: _mutated(d, "product", "token_commitment", delete=True),
        "product.token_commitment is missing",
    ),
    (
        "missing record gtin",
        lambda d: _mutated(d, "product", "record", "gtin", delete=True),
        "product.record.gtin is missing",
    ),
    ("empty object", lambda d: "{}", "is missing"),
    ("deep brackets", lambda d: "[" * 100_000, "nested too deeply"),
    ("deep closed brackets", lambda d: "[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ("deep objects", lambda d: '{"a":' * 100_000 + "1" + "}" * 100_000, "nested too deeply"),
    (
        "deep manifest",
        lambda d: _mutated(d, "batch", "manifest", "label", value=json.loads("[" * 20 + "]" * 20)),
        "nested too deeply",
    ),
    (
        "latin-1 bytes",
        lambda d: (
            json.dumps(d, ensure_ascii=False).replace("Aurora", "Aur\u00f6ra").encode("latin-1")
        ),
        "not UTF-8",
    ),
    ("invalid utf-8 start", lambda d: b"\xff\xfe{}", "not UTF-8 (byte 0)"),
    ("utf-16", lambda d: json.dumps(d).encode("utf-16"), "not UTF-8"),
    ("nul byte", lambda d: b"\x00" + json.dumps(d).encode(), "not valid JSON"),
    (
        "wrong format",
        lambda d: _mutated(d, "format", value="provmint-proof/2"),
        "unsupported proof format 'provmint-proof/2'",
    ),
    ("format int", lambda d: _mutated(d, "format", value=1), "format must be a string"),
    (
        "other format",
        lambda d: _mutated(d, "format", value="in-toto/1"),
        "unsupported proof format",
    ),
    (
        "anchor without format",
        lambda d: _mutated(d, "anchor", value={"chain": "x"}),
        "anchor.format must be 'provmint-anchor/1'",
    ),
    (
        "anchor wrong format",
        lambda d: _mutated(d, "anchor", value={"format": "x"}),
        "anchor.format must be 'provmint-anchor/1'",
    ),
    (
        "anchor string",
        lambda d: _mutated(d, "anchor", value="provmint-anchor/1"),
        "anchor must be an object",
    ),
    ("anchor false", lambda d: _mutated(d, "anchor", value=False), "anchor must be an object"),
    ("anchor list", lambda d: _mutated(d, "anchor", value=[]), "anchor must be an object"),
    (
        "record version",
        lambda d: _mutated(d, "product", "record_version", value="v2"),
        "unsupported record version",
    ),
    (
        "tree profile",
        lambda d: _mutated(d, "tree", "profile", value="sha1"),
        "unsupported tree profile",
    ),
    (
        "batch id with slash",
        lambda d: _mutated(d, "batch", "id", value="../../etc"),
        "batch.id has an invalid value",
    ),
    (
        "batch id empty",
        lambda d: _mutated(d, "batch", "id", value=""),
        "batch.id has an invalid value",
    ),
    (
        "batch id non-ascii",
        lambda d: _mutated(d, "batch", "id", value="b\u00e4tch"),
        "batch.id has an invalid value",
    ),
    (
        "batch id markup",
        lambda d: _mutated(d, "batch", "id", value="[red]x[/red]"),
        "batch.id has an invalid value",
    ),
]


@pytest.mark.parametrize(
    ("build", "needle"), [(b, n) for _, b, n in HOSTILE], ids=[i for i, _, _ in HOSTILE]
)
def test_hostile_proof_is_a_clean_error(cli, tmp_path: Path, doc, build, needle: str) -> None:
    path = write(tmp_path, build(doc))
    r = cli("verify", path)
    line = assert_clean_error(r, EXIT_INVALID, needle)
    assert len(line) < 400  # the message quotes at most a short excerpt
    # --json changes nothing for malformed input: still one error line, no JSON document
    r = cli("verify", path, "--json")
    assert_clean_error(r, EXIT_INVALID, needle)


@pytest.mark.parametrize(
    "case", ["deep brackets", "latin-1 bytes", "duplicate top-level key", "path of 10^5 entries"]
)
def test_hostile_proof_in_a_real_process(tmp_path: Path, doc, case: str) -> None:
    build, needle = next((b, n) for i, b, n in HOSTILE if i == case)
    p = run_provmint("verify", write(tmp_path, build(doc)))
    assert p.returncode == EXIT_INVALID, p.stderr
    assert "Traceback" not in p.stdout + p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], p.stderr


# --------------------------------------------------------------------------- known bugs


def test_huge_integer_is_a_clean_error(cli, tmp_path: Path, doc) -> None:
    """Python refuses integers of more than 4300 digits with a bare ValueError; the
    parser refuses long integers itself, so this is a clean error with exit 3."""
    text = json.dumps(doc).replace('"rejected": 0', '"rejected": ' + "9" * 5000)
    r = cli("verify", write(tmp_path, text))
    assert_clean_error(r, EXIT_INVALID)


def test_huge_integer_in_a_real_process_has_no_traceback(tmp_path: Path, doc) -> None:
    text = json.dumps(doc).replace('"size": 9', '"size": ' + "9" * 5000, 1)
    p = run_provmint("verify", write(tmp_path, text))
    assert "Traceback" not in p.stdout + p.stderr
    assert p.returncode == EXIT_INVALID, p.stderr[-500:]


def test_lone_surrogate_in_manifest_is_a_clean_error(cli, tmp_path: Path, doc) -> None:
    """A manifest string holding a lone surrogate (legal JSON: "\\ud800") is refused as
    malformed (exit 3), not a traceback from hashing the manifest."""
    text = json.dumps(doc).replace('"label": null', '"label": "\\ud800"')
    assert "\\ud800" in text
    r = cli("verify", write(tmp_path, text))
    assert_clean_error(r, EXIT_INVALID)


def test_a_manifest_must_name_its_tree_with_the_right_types(cli, keyed, tmp_path: Path) -> None:
    """A tree of one product: a manifest saying ``"size": true`` (equal to 1 in Python)
    with its digest and commitment recomputed does not bind the tree (FORMATS: types
    must match), and neither do columns named by something other than strings."""
    from provmint.canonical import batch_commitment, manifest_digest

    lines = EXAMPLE_CSV.read_text().splitlines()
    one = tmp_path / "one.csv"
    one.write_text("\n".join(lines[:2]) + "\n")
    assert cli("batch", "create", one).exit_code == 0
    gtin, serial = lines[1].split(",")[:2]
    good = json.loads(cli("proof", "export", "--gtin", gtin, "--serial", serial).stdout)
    assert good["tree"]["size"] == 1

    def forged(member: str, value: Any) -> dict[str, Any]:
        doc = copy.deepcopy(good)
        batch = doc["batch"]
        batch["manifest"]["tree" if member == "size" else member] = value
        digest = manifest_digest(batch["manifest"])
        batch["manifest_digest"] = digest.hex()
        batch["commitment"] = batch_commitment(
            batch["id"], 1, bytes.fromhex(doc["tree"]["root"]), digest
        ).hex()
        return doc

    tree = {**good["batch"]["manifest"]["tree"], "size": True}
    report = json.loads(
        cli("verify", write(tmp_path, json.dumps(forged("size", tree))), "--json").stdout
    )
    assert report["verdict"] == "invalid"
    assert [c["name"] for c in report["checks"] if not c["ok"]] == ["manifest binds tree"]
    assert (
        json.loads(cli("verify", write(tmp_path, json.dumps(good)), "--json").stdout)["verdict"]
        == "pending"
    )
