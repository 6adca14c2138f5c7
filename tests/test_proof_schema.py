"""The JSON Schema of ``provmint-proof/1`` (``provmint/schemas/proof-1.schema.json``) and
the parser's error messages.

- The schema is a valid draft 2020-12 schema, shipped in the package, and the core never
  imports ``jsonschema`` (the schema is for other implementations and for tests).
- Every proof ``provmint proof export`` writes (one product, ``--all`` JSON lines) and
  anchored proofs (built offline, calldata and registry) are valid.
- On generated structural mutations of those proofs, the schema and
  :func:`provmint.proofs.parse_proof` agree: the schema never refuses what the parser
  accepts, and accepts what the parser refuses only where JSON Schema cannot say it
  (``leaf_index < size``; see docs/FORMATS.md, "The JSON Schema"). When both refuse, the
  parser's error names a field at or just below one the schema faults.
- Every structural error is ``proof field <path> <why>`` (or ``proof <why>`` for the
  document as a whole), the first fault in the documented order, and ``provmint verify``
  prints it as its one error line.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from conftest import EXAMPLE_CSV
from helpers import example_store
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provmint import anchoring
from provmint.errors import EXIT_INVALID, ProofError
from provmint.proofs import parse_proof
from provmint.verify import Verdict, verify_proof

SCHEMA_FILE = files("provmint").joinpath("schemas/proof-1.schema.json")
SCHEMA = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
GTIN, SERIAL = "09520123450014", "546CAWQDCR56"
REGISTRY = "0x5FbDB2315678afecb367f032d93F642f64180aa3"


def schema_errors(doc: Any) -> list[jsonschema.ValidationError]:
    return list(VALIDATOR.iter_errors(doc))


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The example minted once; its proofs exported through the CLI, as a user would:
    one product to a file, and every product as JSON lines."""
    from typer.testing import CliRunner

    from provmint.cli import app

    base = tmp_path_factory.mktemp("schema")
    with example_store(base) as (_, summary):
        (base / "none.toml").write_text("")  # the config file the block points at
        runner = CliRunner()
        single, lines = base / "one.json", base / "all.jsonl"
        for args in (
            ["proof", "export", "--gtin", GTIN, "--serial", SERIAL, "-o", str(single)],
            ["proof", "export", "--batch", summary.batch_id, "--all", "-o", str(lines)],
        ):
            r = runner.invoke(app, args)
            assert r.exit_code == 0, r.output
        return {
            "single": json.loads(single.read_text()),
            "all": [json.loads(line) for line in lines.read_text().splitlines()],
        }


def anchored(doc: dict[str, Any], method: str) -> dict[str, Any]:
    """``doc`` with an anchor section, as provmint builds it once its batch is in a block:
    a tree of this batch and two others, a made-up chain record (checked offline only)."""
    commitment = bytes.fromhex(doc["batch"]["commitment"])
    tree = anchoring.build_anchor_tree([commitment, b"\x01" * 32, b"\xee" * 32])
    record = {
        "chain_id": 31337,
        "method": method,
        "contract": REGISTRY if method == "registry" else None,
        "sender": "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
        "tx_hash": "0x" + "ab" * 32,
        "block_number": 12,
        "block_hash": "0x" + "cd" * 32,
        "block_time": 1767268800,
    }
    out = copy.deepcopy(doc)
    out["anchor"] = anchoring.anchor_section(tree, commitment, record)
    return out


@pytest.fixture(scope="module")
def bases(exported: dict[str, Any]) -> list[dict[str, Any]]:
    """Proofs to mutate: pending, anchored by calldata, anchored by registry."""
    last = exported["all"][-1]  # the promoted leaf: a one-hash path
    return [
        exported["single"],
        anchored(exported["single"], "calldata"),
        anchored(last, "registry"),
    ]


# --------------------------------------------------------------------------- the schema itself


def test_schema_is_a_valid_draft_2020_12_schema_shipped_in_the_package() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert SCHEMA["title"] == "provmint-proof/1"
    pyproject = (Path(__file__).parent.parent / "pyproject.toml").read_text()
    assert '"schemas/*.json"' in pyproject  # package data: installed with provmint


def test_the_core_never_imports_jsonschema() -> None:
    code = (
        "import sys, json\n"
        "from provmint.verify import verify_proof\n"
        "from provmint.proofs import parse_proof\n"
        "try:\n"
        "    parse_proof('{}')\n"
        "except Exception:\n"
        "    pass\n"
        "print('jsonschema' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_exported_proof_is_valid(exported: dict[str, Any]) -> None:
    docs = [exported["single"], *exported["all"]]
    assert len(docs) == 10
    assert exported["single"] in exported["all"]
    for doc in docs:
        assert doc["anchor"] is None
        assert schema_errors(doc) == []
        parse_proof(json.dumps(doc))


@pytest.mark.parametrize("method", ["calldata", "registry"])
def test_anchored_proofs_are_valid(exported: dict[str, Any], method: str) -> None:
    for doc in exported["all"]:
        proof = anchored(doc, method)
        assert schema_errors(proof) == []
        report = verify_proof(json.dumps(proof))
        assert report.verdict is Verdict.UNCHECKED, report.reason  # offline checks all hold


def test_the_worked_example_of_the_spec_is_valid() -> None:
    text = (Path(__file__).parent.parent / "docs" / "FORMATS.md").read_text(encoding="utf-8")
    block = text.split("```vector name=example-proof kind=proof\nproof =\n", 1)[1]
    lines = []
    for line in block.splitlines():
        if not line.startswith("  "):
            break
        lines.append(line[2:])
    doc = json.loads("\n".join(lines))
    assert doc["anchor"]["method"] == "calldata"
    assert schema_errors(doc) == []


# ------------------------------------------------------------------- schema and parser agree


_PATH_PART = re.compile(r'\.?([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]|\[("(?:[^"\\]|\\.)*")\]')


def parser_path(message: str) -> list[str | int] | None:
    """The path an error message names: ``proof field a.b[2]["c d"] ...`` -> [a, b, 2, c d];
    None for a fault of the whole document (``proof <why>``)."""
    if not message.startswith("proof field "):
        assert re.match(r"proof (is|has|must|contains) ", message), message
        return [] if message.startswith("proof has a duplicate") else None
    rest = message[len("proof field ") :]
    path: list[str | int] = []
    pos = 0
    while pos < len(rest) and rest[pos] != " ":
        m = _PATH_PART.match(rest, pos)
        assert m, message
        if m.group(1) is not None:
            path.append(m.group(1))
        elif m.group(2) is not None:
            path.append(int(m.group(2)))
        else:
            path.append(json.loads(m.group(3)))
        pos = m.end()
    return path


def _all_errors(errors: list[jsonschema.ValidationError]) -> list[list[str | int]]:
    found: list[list[str | int]] = []
    for e in errors:
        found.append(list(e.absolute_path))
        found += _all_errors(list(e.context or []))
    return found


def parser_verdict(doc: Any) -> str | None:
    """None if the parser accepts the document, else its error message."""
    try:
        parse_proof(json.dumps(doc))
    except ProofError as exc:
        return str(exc)
    return None


def only_the_parser_can_tell(doc: dict[str, Any], message: str) -> bool:
    """Faults JSON Schema cannot express: an index not below its tree's size."""
    for where, tree in (
        ("tree", doc.get("tree")),
        ("anchor.tree", (doc.get("anchor") or {}).get("tree")),
    ):
        if f"proof field {where}.leaf_index " in message and isinstance(tree, dict):
            size, index = tree.get("size"), tree.get("leaf_index")
            if type(size) is int and type(index) is int and 0 <= size <= index:
                return True
    return False


_DECODING = re.compile(r" is an integer of | is a non-integer number | not valid Unicode")


def assert_agree(doc: dict[str, Any]) -> None:
    message = parser_verdict(doc)
    errors = schema_errors(doc)
    if message is None:
        assert errors == [], f"the schema refuses what the parser accepts: {errors[0].message}"
        return
    if not errors:
        assert only_the_parser_can_tell(doc, message), f"the schema accepts: {message}"
        return
    path = parser_path(message)
    assert path is not None, message
    faulted = [p for p in _all_errors(errors) if p == path[: len(p)]]
    assert faulted, (message, [list(e.absolute_path) for e in errors])
    if not _DECODING.search(message):
        # A value refused while decoding (found first, in document order) may sit inside
        # a member the schema refuses as a whole (an unknown one); otherwise the parser
        # names the schema's field or a member of it (a missing or unknown key).
        assert len(path) - max(len(p) for p in faulted) <= 1, (message, faulted)


def _locations(doc: Any, where: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every member and item of the document, by path (the root excluded)."""
    found: list[tuple[Any, ...]] = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            found += [(*where, k), *_locations(v, (*where, k))]
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            found += [(*where, i), *_locations(v, (*where, i))]
    return found


def _objects(doc: Any, where: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found: list[tuple[Any, ...]] = []
    if isinstance(doc, dict):
        found.append(where)
        for k, v in doc.items():
            found += _objects(v, (*where, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            found += _objects(v, (*where, i))
    return found


def _get(doc: Any, where: tuple[Any, ...]) -> Any:
    for k in where:
        doc = doc[k]
    return doc


HEX = "ab" * 32
INTERESTING_INTS = [
    0,
    1,
    -1,
    2,
    3,
    8,
    9,
    10,
    63,
    64,
    4095,
    4096,
    4097,
    2**53,
    2**53 + 1,
    2**63 - 1,
    2**63,
    10**20 - 1,
    -(2**53) - 1,
]
INTERESTING_TEXT = [
    "",
    "x",
    HEX,
    HEX.upper(),
    HEX[:63],
    HEX + "0",
    "0x" + HEX,
    HEX + "\n",
    " " + HEX,
    "0x" + "ab" * 20,
    "0x" + "AB" * 20,
    "0x" + "ab" * 19,
    REGISTRY,
    "calldata",
    "registry",
    "provmint-proof/1",
    "provmint-record/1",
    "provmint-anchor/1",
    "rfc9162-sha256",
    "09520123450014",
    "0952012345001",
    "0952012345001x",
    "20261128-4884667e",
    "a/b",
    "a\n",
    "é" * 3,
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from(INTERESTING_INTS),
    st.integers(-(2**70), 2**70),
    st.sampled_from(INTERESTING_TEXT),
    st.text(max_size=12),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["a", "format", "x_1", "Lot", "a b"]), inner, max_size=3),
    ),
    max_leaves=6,
)
KEYS = st.one_of(
    st.sampled_from(
        ["extra", "format", "gtin", "serial", "color", "Lot", "a b", "", "path", "root"]
    ),
    st.text(max_size=8),
)


@settings(
    max_examples=600,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_schema_and_parser_agree_on_structural_mutations(bases, data) -> None:
    doc = copy.deepcopy(data.draw(st.sampled_from(bases), label="base"))
    op = data.draw(st.sampled_from(["replace", "replace", "delete", "add"]), label="op")
    if op == "add":
        where = data.draw(st.sampled_from(_objects(doc)), label="object")
        _get(doc, where)[data.draw(KEYS, label="key")] = data.draw(VALUES, label="value")
    else:
        where = data.draw(st.sampled_from(_locations(doc)), label="where")
        parent = _get(doc, where[:-1])
        if op == "delete":
            del parent[where[-1]]
        else:
            parent[where[-1]] = data.draw(VALUES, label="value")
    assert_agree(doc)


@pytest.mark.parametrize(
    ("change", "looser"),
    [
        (lambda d: d["tree"].update(leaf_index=d["tree"]["size"]), True),
        (lambda d: d["anchor"]["tree"].update(leaf_index=3), True),
        (lambda d: d["anchor"]["tree"].update(size=1), True),
        (lambda d: d["tree"].update(size=0), False),
        (lambda d: d["anchor"].update(contract=REGISTRY), False),
        (lambda d: d["anchor"].pop("contract"), False),
        (lambda d: d["anchor"].update(block_number=2**63), False),
        (lambda d: d["batch"]["manifest"].update(rows=2**53 + 1), False),
        (lambda d: d["batch"]["manifest"].update(rows=[{"x": -(2**53) - 1}]), False),
        (lambda d: d["batch"].update(id="a\n"), False),
        (lambda d: d["product"]["record"].update({"lot\n": "x"}), False),
        (lambda d: d["product"]["record"].update(gtin="0952012345001"), False),
        (lambda d: d["product"]["record"].update(gtin="0952012345001\n"), False),
        (lambda d: d["tree"].update(root=d["tree"]["root"] + "\n"), False),
    ],
)
def test_known_cases(bases, change, looser: bool) -> None:
    """Pinned cases, among them each place where the schema is knowingly looser."""
    doc = copy.deepcopy(bases[1])
    change(doc)
    assert parser_verdict(doc) is not None
    assert (schema_errors(doc) == []) is looser
    assert_agree(doc)


def test_a_record_value_of_4096_characters_but_more_bytes(bases) -> None:
    """The schema counts characters (JSON Schema cannot count UTF-8 bytes): looser."""
    doc = copy.deepcopy(bases[0])
    doc["product"]["record"]["lot"] = "é" * 4096
    assert "longer than 4096 bytes" in (parser_verdict(doc) or "")
    assert schema_errors(doc) == []
    doc["product"]["record"]["lot"] = "é" * 4097
    assert schema_errors(doc) != []


# --------------------------------------------------------------------------- the first fault, named


def _text(doc: dict[str, Any]) -> str:
    return json.dumps(doc)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda d: _text(d).replace('"rejected": 0', '"rejected": 0.0'),
            "proof field batch.manifest.rejected is a non-integer number '0.0'",
        ),
        (
            lambda d: _text(d).replace('"size": 9', '"size": 9e0', 1),
            "proof field tree.size is a non-integer number '9e0'",
        ),
        (
            lambda d: _text(d).replace('"anchor": null', '"anchor": NaN'),
            "proof field anchor is a non-integer number 'NaN'",
        ),
        (
            lambda d: _text(d).replace('"rejected": 0', '"rejected": ' + "9" * 30),
            "proof field batch.manifest.rejected is an integer of 30 digits; at most 20",
        ),
        (
            lambda d: _text(d).replace('"rows": 9', '"rows": 9, "rows": 9'),
            "proof field batch.manifest.source has a duplicate field 'rows'",
        ),
        (
            lambda d: '{"anchor": null, ' + _text(d)[1:],
            "proof has a duplicate field 'anchor'",
        ),
        (
            lambda d: _text(d).replace('"L2406A"', '"L\\ud800"', 1),
            "proof field product.record.lot is not valid Unicode (a lone surrogate)",
        ),
        (
            lambda d: _text(d).replace('"lot":', '"\\udc00":', 1),
            "proof field product.record has a field name that is not valid Unicode",
        ),
        (
            lambda d: _text(
                {**d, "tree": {**d["tree"], "path": [*d["tree"]["path"][:3], "Z" * 64]}}
            ),
            "proof field tree.path[3] must be 64 lowercase hex digits",
        ),
        (
            lambda d: _text({**d, "a b": 1}),
            'proof field ["a b"] is not part of provmint-proof/1',
        ),
        (
            lambda d: _text({**d, "tree": {**d["tree"], "x" * 5000: 1}}),
            'proof field tree["' + "x" * 40 + '"] is not part of provmint-proof/1',
        ),
        (
            lambda d: _text(
                {
                    **d,
                    "product": {
                        **d["product"],
                        "record": {**d["product"]["record"], "gtin": "123"},
                    },
                }
            ),
            "proof field product.record.gtin must be 14 ASCII digits",
        ),
        (
            lambda d: _text(
                {
                    **d,
                    "batch": {**d["batch"], "manifest": {**d["batch"]["manifest"], "rows": 2**60}},
                }
            ),
            "proof field batch.manifest.rows is beyond 2^53, which canonical JSON cannot hold",
        ),
        (
            lambda d: _text({**d, "format": "provmint-proof/2", "tree": 1}),
            "proof field format names an unsupported proof format 'provmint-proof/2'",
        ),
        (  # two faults: the one in the earlier section (product) is named
            lambda d: _text(
                {
                    **d,
                    "tree": {**d["tree"], "root": d["tree"]["root"].upper()},
                    "product": {**d["product"], "token_commitment": "0"},
                }
            ),
            "proof field product.token_commitment must be 64 lowercase hex digits",
        ),
        (  # a fault in the tree comes before one in the anchor
            lambda d: _text(
                {
                    **anchored(d, "calldata"),
                    "tree": {**d["tree"], "size": "9"},
                }
            ).replace('"chain_id": 31337', '"chain_id": 0'),
            "proof field tree.size must be a whole number in [1, ",
        ),
        (
            lambda d: _text(anchored(d, "calldata")).replace(
                '"block_number": 12', '"block_number": 9223372036854775808'
            ),
            "proof field anchor.block_number must be a whole number in [0, 2^63-1]",
        ),
        (
            lambda d: _text(anchored(d, "calldata")).replace('"contract": null, ', ""),
            "proof field anchor.contract is missing",
        ),
        (
            lambda d: _text(anchored(d, "calldata")).replace(
                '"format": "provmint-anchor/1"', '"format": "provmint-anchor/1", "a\\nb": 0'
            ),
            'proof field anchor["a\\nb"] is not part of provmint-anchor/1',
        ),
        (
            lambda d: _text(anchored(d, "registry")).replace('"size": 3', '"size": 4097'),
            "proof field anchor.tree.size is out of range; a whole number in [1, 4096]",
        ),
    ],
)
def test_the_first_fault_is_named_by_its_path(
    cli, tmp_path: Path, exported, build, message: str
) -> None:
    text = build(copy.deepcopy(exported["single"]))
    with pytest.raises(ProofError) as caught:
        parse_proof(text)
    assert str(caught.value).startswith(message), str(caught.value)
    path = tmp_path / "proof.json"
    path.write_text(text, encoding="utf-8")
    r = cli("verify", path)
    assert r.exit_code == EXIT_INVALID
    assert r.stdout == ""
    assert r.stderr.strip().splitlines() == [f"error: {caught.value}"]


def test_a_proof_given_as_a_dict_is_checked_the_same(exported) -> None:
    doc = copy.deepcopy(exported["single"])
    doc["batch"]["manifest"]["label"] = [[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]
    with pytest.raises(
        ProofError, match=r"^proof field batch\.manifest\.label(\[0\])+ is nested too deeply"
    ):
        parse_proof(doc)
    with pytest.raises(ProofError, match="proof is nested too deeply"):
        parse_proof(json.dumps(doc))
    doc["batch"]["manifest"]["label"] = "\ud800"
    with pytest.raises(
        ProofError, match=r"^proof field batch\.manifest\.label is not valid Unicode"
    ):
        parse_proof(doc)


def test_example_csv_is_the_one_the_messages_assume() -> None:
    """The replacements above rely on the example's values."""
    text = Path(EXAMPLE_CSV).read_text()
    assert "L2406A" in text and GTIN in text and SERIAL in text
