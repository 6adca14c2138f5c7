"""The ``provmint-proof/1`` document: its structure, offline verification and tampering.

Library level: proofs are exported with :func:`provmint.products.export_proof` and checked
with :func:`provmint.verify.verify_proof`. Every single-field tamper must be refused,
either as a verdict ``invalid`` whose reason names the failed check, or as a
``ProofError`` naming the field at fault.
"""

from __future__ import annotations

import copy
import csv
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import EXAMPLE_CSV
from helpers import example_store
from hypothesis import given, settings
from hypothesis import strategies as st

from provmint import merkle
from provmint.batch import mint_batch
from provmint.canonical import (
    batch_commitment,
    encode_record,
    manifest_digest,
    token_commitment,
)
from provmint.errors import EXIT_INVALID, EXIT_PENDING, ProofError
from provmint.products import export_batch_proofs, export_proof, find_product
from provmint.proofs import MAX_PROOF_BYTES, PROOF_FORMAT, Proof, parse_proof, proof_to_json
from provmint.tokens import parse_token
from provmint.verify import Verdict, verify_proof

GTIN = "09520123450014"
SERIAL = "546CAWQDCR56"  # leaf 0 of the example
MIDDLE_SERIAL = "WNXF176E0ZV2"  # leaf 4
LAST = ("09520123450021", "372NFAX682Q2")  # leaf 8, the lone right node
HEX64 = re.compile(r"[0-9a-f]{64}")
CHECK_NAMES = [
    "inclusion",
    "manifest",
    "manifest binds tree",
    "manifest binds batch",
    "record fields",
    "record version",
    "batch commitment",
]


def example_rows() -> list[dict[str, str]]:
    with open(EXAMPLE_CSV, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The example minted once per module, in its own temporary store and key file.
    Tests get deep copies of the exported proofs."""
    base = tmp_path_factory.mktemp("example")
    with example_store(base) as (cfg, summary):
        out = base / "all.jsonl"
        export_batch_proofs(cfg, summary.batch_id, out)
        docs = [json.loads(line) for line in out.read_text().splitlines()]
        token = find_product(cfg, gtin=GTIN, serial=SERIAL).token
        single = export_proof(cfg, gtin=GTIN, serial=SERIAL)
    return {"settings": cfg, "summary": summary, "docs": docs, "token": token, "single": single}


@pytest.fixture
def minted(keyed):
    """The example minted in this test's isolated store: (settings, summary)."""
    return keyed, mint_batch(EXAMPLE_CSV, settings=keyed)


@pytest.fixture
def proof_doc(example) -> dict[str, Any]:
    """The exported proof of leaf 0 (a fresh copy per test)."""
    return copy.deepcopy(example["single"])


def _proof_of(example, gtin: str, serial: str) -> dict[str, Any]:
    for doc in example["docs"]:
        record = doc["product"]["record"]
        if (record["gtin"], record["serial"]) == (gtin, serial):
            return copy.deepcopy(doc)
    raise AssertionError(f"no product {gtin} {serial} in the example")


def assert_rejected(
    doc: dict[str, Any], *, check: str | None = None, field: str | None = None
) -> None:
    """The document never verifies; with ``check`` the verdict is invalid and the reason
    names that check; with ``field`` a ProofError names that field."""
    try:
        report = verify_proof(json.dumps(doc))
    except ProofError as exc:
        assert field is not None, f"unexpected ProofError: {exc}"
        assert field in str(exc), str(exc)
        assert exc.exit_code == EXIT_INVALID
        return
    assert field is None, f"expected ProofError naming {field}, got {report.verdict}"
    assert report.verdict is Verdict.INVALID, report.reason
    assert report.verdict.exit_code == EXIT_INVALID
    assert check is not None
    assert report.reason.startswith(f"{check}: "), report.reason
    failed = [c for c in report.checks if not c.ok]
    assert failed and failed[0].name == check
    assert any(c.name == check and not c.ok for c in report.checks)


# --------------------------------------------------------------------------- structure


def test_exported_proof_has_documented_structure(example, proof_doc) -> None:
    summary = example["summary"]
    doc = proof_doc
    assert list(doc) == ["format", "product", "tree", "batch", "anchor"]
    assert doc["format"] == PROOF_FORMAT == "provmint-proof/1"
    assert doc["anchor"] is None

    product = doc["product"]
    assert set(product) == {"record_version", "record", "token_commitment"}
    assert product["record_version"] == "provmint-record/1"
    assert product["record"] == example_rows()[0]
    assert HEX64.fullmatch(product["token_commitment"])
    token = example["token"]
    assert product["token_commitment"] == token_commitment(parse_token(token)).hex()
    assert token not in json.dumps(doc)  # the proof carries only the commitment

    tree = doc["tree"]
    assert set(tree) == {"profile", "size", "leaf_index", "path", "root"}
    assert tree["profile"] == merkle.PROFILE == "rfc9162-sha256"
    assert tree["size"] == 9 == summary.tree_size
    assert tree["leaf_index"] == 0
    assert len(tree["path"]) == 4  # ceil(log2(9)) for leaf 0
    assert all(HEX64.fullmatch(h) for h in tree["path"])
    assert tree["root"] == summary.root
    assert doc == example["docs"][0]  # single export == batch export

    batch = doc["batch"]
    assert set(batch) == {"id", "manifest", "manifest_digest", "commitment"}
    assert batch["id"] == summary.batch_id
    manifest = batch["manifest"]
    assert manifest["batch_id"] == summary.batch_id
    assert manifest["tree"] == {"profile": tree["profile"], "size": 9, "root": tree["root"]}
    assert manifest["columns"] == sorted(product["record"])
    assert manifest["record_version"] == product["record_version"]
    assert manifest["key_id"] == summary.key_id
    assert batch["manifest_digest"] == manifest_digest(manifest).hex()
    expected_commitment = batch_commitment(
        batch["id"], 9, bytes.fromhex(tree["root"]), bytes.fromhex(batch["manifest_digest"])
    )
    assert batch["commitment"] == expected_commitment.hex() == summary.commitment


def test_exported_proof_verifies_pending_with_all_checks_ok(example, proof_doc) -> None:
    summary = example["summary"]
    report = verify_proof(proof_doc)
    assert report.verdict is Verdict.PENDING
    assert report.verdict.exit_code == EXIT_PENDING
    assert report.reason == "valid, but the batch is not anchored yet"
    assert [c.name for c in report.checks] == CHECK_NAMES
    assert all(c.ok for c in report.checks), report.checks
    record = proof_doc["product"]["record"]
    tc = bytes.fromhex(proof_doc["product"]["token_commitment"])
    assert report.leaf_hash == merkle.leaf_hash(encode_record(record) + tc).hex()
    assert report.computed_root == report.expected_root == summary.root
    assert report.commitment == summary.commitment
    assert report.batch_id == summary.batch_id
    assert (report.leaf_index, report.tree_size) == (0, 9)
    assert report.record == record
    assert report.anchor is None
    as_json = report.to_json()
    assert as_json["verdict"] == "pending"
    assert len(as_json["checks"]) == len(CHECK_NAMES)


def test_every_input_form_gives_the_same_report(proof_doc) -> None:
    text = proof_to_json(proof_doc)
    reports = [
        verify_proof(proof_doc),
        verify_proof(text),
        verify_proof(text.encode()),
        verify_proof(parse_proof(text)),
        verify_proof(proof_to_json(proof_doc, indent=None)),
    ]
    assert {r.verdict for r in reports} == {Verdict.PENDING}
    assert len({json.dumps(r.to_json(), sort_keys=True) for r in reports}) == 1


def test_parse_proof_exposes_typed_fields(proof_doc) -> None:
    p = parse_proof(json.dumps(proof_doc))
    assert isinstance(p, Proof)
    assert p.record == proof_doc["product"]["record"]
    assert p.size == 9 and p.leaf_index == 0
    assert p.path == tuple(bytes.fromhex(h) for h in proof_doc["tree"]["path"])
    assert p.root.hex() == proof_doc["tree"]["root"]
    assert p.commitment.hex() == proof_doc["batch"]["commitment"]
    assert p.manifest_digest.hex() == proof_doc["batch"]["manifest_digest"]
    assert p.token_commitment.hex() == proof_doc["product"]["token_commitment"]
    assert p.anchor is None


def test_every_proof_of_the_batch_verifies(minted, tmp_path: Path) -> None:
    """Minted in the test's own store: jsonl export and single export agree."""
    cfg, summary = minted
    out = tmp_path / "all.jsonl"
    export_batch_proofs(cfg, summary.batch_id, out)
    docs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [d["tree"]["leaf_index"] for d in docs] == list(range(9))
    # leaves 0-7 sit under a full subtree of 8; leaf 8 is promoted: one sibling (the 8-root)
    assert [len(d["tree"]["path"]) for d in docs] == [4] * 8 + [1]
    for doc, row in zip(docs, example_rows(), strict=True):
        report = verify_proof(doc)
        assert report.verdict is Verdict.PENDING, report.reason
        assert doc["product"]["record"] == row
        assert doc == export_proof(cfg, gtin=row["gtin"], serial=row["serial"])


def test_a_proof_is_a_few_kilobytes(proof_doc) -> None:
    size = len(proof_to_json(proof_doc).encode())
    assert size < 8 * 1024 < MAX_PROOF_BYTES


# --------------------------------------------------------------------------- tampering

Mutation = Callable[[dict[str, Any]], None]


def _set(*keys: str, value: Any) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        target = doc
        for k in keys[:-1]:
            target = target[k]
        target[keys[-1]] = value

    return mutate


def _flip_hex(h: str, pos: int = 0) -> str:
    return h[:pos] + ("1" if h[pos] == "0" else "0") + h[pos + 1 :]


@pytest.mark.parametrize(
    "field", ["gtin", "serial", "lot", "expiry", "product_name", "production_date"]
)
def test_changed_record_value_is_invalid(proof_doc, field: str) -> None:
    original = proof_doc["product"]["record"][field]
    # a same-length change at either end, an appended space, an empty value
    for value in (
        original[:-1] + ("X" if original[-1] != "X" else "Y"),
        ("1" if original[0] != "1" else "2") + original[1:],
        original + " ",
        "",
    ):
        doc = copy.deepcopy(proof_doc)
        doc["product"]["record"][field] = value
        assert value != original
        if field == "gtin" and not (len(value) == 14 and value.isdigit()):
            _reject_bad_gtin(doc)
        else:
            assert_rejected(doc, check="inclusion")


def _reject_bad_gtin(doc: dict[str, Any]) -> None:
    """A gtin that is not 14 digits can never verify: it is either refused as malformed
    (naming the gtin) or fails the inclusion check."""
    try:
        report = verify_proof(json.dumps(doc))
    except ProofError as exc:
        assert "gtin" in str(exc), str(exc)
        return
    assert report.verdict is Verdict.INVALID
    assert report.reason.startswith("inclusion: ")


def test_equivalent_gtin_forms_are_not_interchangeable(proof_doc) -> None:
    for spelling in (GTIN[1:], GTIN[6:], " " + GTIN):  # GTIN-13, GTIN-8 lengths, padded
        doc = copy.deepcopy(proof_doc)
        doc["product"]["record"]["gtin"] = spelling
        _reject_bad_gtin(doc)


def test_added_record_field_is_invalid(proof_doc) -> None:
    doc = copy.deepcopy(proof_doc)
    doc["product"]["record"]["color"] = "red"
    assert_rejected(doc, check="inclusion")
    report = verify_proof(doc)
    assert not {c.name: c.ok for c in report.checks}["record fields"]


def test_added_empty_record_field_is_invalid(proof_doc) -> None:
    doc = copy.deepcopy(proof_doc)
    doc["product"]["record"]["note"] = ""
    assert_rejected(doc, check="inclusion")


@pytest.mark.parametrize("field", ["lot", "expiry", "product_name", "production_date"])
def test_removed_record_field_is_invalid(proof_doc, field: str) -> None:
    doc = copy.deepcopy(proof_doc)
    del doc["product"]["record"][field]
    assert_rejected(doc, check="inclusion")
    report = verify_proof(doc)
    assert not {c.name: c.ok for c in report.checks}["record fields"]


@pytest.mark.parametrize("field", ["gtin", "serial"])
def test_removed_required_record_field_is_malformed(proof_doc, field: str) -> None:
    doc = copy.deepcopy(proof_doc)
    del doc["product"]["record"][field]
    assert_rejected(doc, field=f"product.record.{field} is missing")


def test_record_with_only_columns_shuffled_still_verifies(proof_doc) -> None:
    """Key order inside the record is not significant (fields are sorted when encoded)."""
    doc = copy.deepcopy(proof_doc)
    doc["product"]["record"] = dict(reversed(list(doc["product"]["record"].items())))
    assert verify_proof(doc).verdict is Verdict.PENDING


def test_changed_token_commitment_is_invalid(proof_doc) -> None:
    for pos in (0, 31, 63):
        doc = copy.deepcopy(proof_doc)
        doc["product"]["token_commitment"] = _flip_hex(doc["product"]["token_commitment"], pos)
        assert_rejected(doc, check="inclusion")


@pytest.mark.parametrize("index", range(4))
def test_flipped_byte_in_each_path_element_is_invalid(proof_doc, index: int) -> None:
    for pos in (0, 33, 63):
        doc = copy.deepcopy(proof_doc)
        doc["tree"]["path"][index] = _flip_hex(doc["tree"]["path"][index], pos)
        assert_rejected(doc, check="inclusion")


def test_swapped_path_elements_are_invalid(proof_doc) -> None:
    doc = copy.deepcopy(proof_doc)
    path = doc["tree"]["path"]
    path[0], path[1] = path[1], path[0]
    assert_rejected(doc, check="inclusion")


@pytest.mark.parametrize("where", [0, 1, -1])
def test_dropped_path_element_is_invalid(proof_doc, where: int) -> None:
    doc = copy.deepcopy(proof_doc)
    del doc["tree"]["path"][where]
    assert_rejected(doc, check="inclusion")
    assert "shorter" in verify_proof(doc).reason


def test_empty_path_is_invalid(proof_doc) -> None:
    doc = copy.deepcopy(proof_doc)
    doc["tree"]["path"] = []
    assert_rejected(doc, check="inclusion")


@pytest.mark.parametrize("where", ["start", "end", "duplicate"])
def test_added_path_element_is_invalid(proof_doc, where: int) -> None:
    doc = copy.deepcopy(proof_doc)
    path = doc["tree"]["path"]
    if where == "start":
        path.insert(0, "ab" * 32)
    elif where == "end":
        path.append(doc["tree"]["root"])
    else:
        path.append(path[-1])
    assert_rejected(doc, check="inclusion")
    assert "longer" in verify_proof(doc).reason


@pytest.mark.parametrize("delta", [1, -1])
def test_changed_leaf_index_is_invalid(example, delta: int) -> None:
    doc = _proof_of(example, GTIN, MIDDLE_SERIAL)
    assert doc["tree"]["leaf_index"] == 4
    doc["tree"]["leaf_index"] += delta
    assert_rejected(doc, check="inclusion")


def test_leaf_index_plus_one_from_first_leaf_is_invalid(proof_doc) -> None:
    doc = copy.deepcopy(proof_doc)
    doc["tree"]["leaf_index"] = 1
    assert_rejected(doc, check="inclusion")


def test_leaf_index_outside_the_tree_is_malformed(example, proof_doc) -> None:
    doc = copy.deepcopy(proof_doc)
    doc["tree"]["leaf_index"] = -1
    assert_rejected(doc, field="tree.leaf_index")
    last = _proof_of(example, *LAST)
    assert last["tree"]["leaf_index"] == 8
    last["tree"]["leaf_index"] = 9
    assert_rejected(last, field="tree.leaf_index")


@pytest.mark.parametrize(
    ("new_size", "check"),
    [
        (lambda n: n + 1, "manifest binds tree"),  # the RFC path alone fits size n+1 too
        (lambda n: n * 2, "inclusion"),
        (lambda n: n - 1, "inclusion"),
    ],
)
def test_changed_tree_size_is_invalid(proof_doc, new_size, check: str) -> None:
    doc = copy.deepcopy(proof_doc)
    doc["tree"]["size"] = new_size(doc["tree"]["size"])
    assert_rejected(doc, check=check)


@pytest.mark.parametrize("new_size", [lambda n: n + 1, lambda n: n * 2, lambda n: n - 1])
def test_changed_tree_size_of_last_leaf_is_invalid(example, new_size) -> None:
    doc = _proof_of(example, *LAST)
    doc["tree"]["size"] = new_size(9)
    try:
        report = verify_proof(doc)
    except ProofError as exc:  # size 8 puts leaf 8 outside the tree
        assert "tree.leaf_index" in str(exc)
        return
    assert report.verdict is Verdict.INVALID, report.reason


def test_size_plus_one_with_consistent_manifest_fails_the_commitment(proof_doc) -> None:
    """Rewriting the manifest and its digest for size n+1 is caught by the commitment."""
    doc = copy.deepcopy(proof_doc)
    doc["tree"]["size"] = 10
    doc["batch"]["manifest"]["tree"]["size"] = 10
    doc["batch"]["manifest"]["products"] = 10
    doc["batch"]["manifest_digest"] = manifest_digest(doc["batch"]["manifest"]).hex()
    report = verify_proof(doc)
    assert report.checks[0].ok  # the inclusion path alone does not pin the size
    assert_rejected(doc, check="batch commitment")


def test_changed_root_is_invalid(proof_doc) -> None:
    for pos in (0, 63):
        doc = copy.deepcopy(proof_doc)
        doc["tree"]["root"] = _flip_hex(doc["tree"]["root"], pos)
        assert_rejected(doc, check="inclusion")


def test_changed_root_in_proof_and_manifest_is_invalid(proof_doc) -> None:
    doc = copy.deepcopy(proof_doc)
    doc["tree"]["root"] = doc["batch"]["manifest"]["tree"]["root"] = "00" * 32
    assert_rejected(doc, check="inclusion")


@pytest.mark.parametrize(
    "new_id",
    [
        lambda old: "20991231-00000000",
        lambda old: "x",
        lambda old: old + "0",
        lambda old: old[:-1],
        # An id is lower-case hex, so an upper-case letter always changes it
        # (upper() alone would not when every hex digit is a number).
        lambda old: old[:-1] + "A",
    ],
)
def test_changed_batch_id_is_invalid(proof_doc, new_id: Callable[[str], str]) -> None:
    doc = copy.deepcopy(proof_doc)
    old = doc["batch"]["id"]
    doc["batch"]["id"] = new_id(old)
    assert doc["batch"]["id"] != old
    assert_rejected(doc, check="manifest binds batch")


def test_changed_batch_id_in_proof_and_manifest_is_invalid(proof_doc) -> None:
    doc = copy.deepcopy(proof_doc)
    doc["batch"]["id"] = doc["batch"]["manifest"]["batch_id"] = "20991231-00000000"
    assert_rejected(doc, check="manifest")


MANIFEST_CHANGES: list[tuple[str, Mutation]] = [
    ("created_at", _set("created_at", value="2030-01-01T00:00:00Z")),
    ("columns", lambda m: m["columns"].append("zzz")),
    ("columns order", lambda m: m["columns"].reverse()),
    ("label", _set("label", value="forged")),
    ("key_id", _set("key_id", value="k-00000000")),
    ("url_base", _set("url_base", value="https://evil.example.net")),
    ("source.sha256", lambda m: m["source"].__setitem__("sha256", "0" * 64)),
    ("source.rows", lambda m: m["source"].__setitem__("rows", 10)),
    ("products", _set("products", value=8)),
    ("rejected", _set("rejected", value=1)),
    ("format", _set("format", value="provmint-manifest/2")),
    ("provmint_version", _set("provmint_version", value="9.9.9")),
    ("tree.size", lambda m: m["tree"].__setitem__("size", 10)),
    ("tree.root", lambda m: m["tree"].__setitem__("root", "0" * 64)),
    ("batch_id", _set("batch_id", value="20991231-00000000")),
    ("record_version", _set("record_version", value="provmint-record/2")),
    ("token_version", _set("token_version", value="provmint-token/2")),
    ("extra field", _set("extra", value=1)),
    ("removed field", lambda m: m.pop("created_at")),
    ("int as string", _set("products", value="9")),
    ("null label to empty", _set("label", value="")),
]


@pytest.mark.parametrize(("name", "change"), MANIFEST_CHANGES, ids=[n for n, _ in MANIFEST_CHANGES])
def test_changed_manifest_is_invalid(proof_doc, name: str, change: Mutation) -> None:
    doc = copy.deepcopy(proof_doc)
    before = copy.deepcopy(doc["batch"]["manifest"])
    change(doc["batch"]["manifest"])
    assert doc["batch"]["manifest"] != before
    assert_rejected(doc, check="manifest")
    assert verify_proof(doc).reason == (
        "manifest: the manifest does not hash to batch.manifest_digest"
    )


@pytest.mark.parametrize(
    ("name", "change", "check"),
    [
        ("created_at", _set("created_at", value="2030-01-01T00:00:00Z"), "batch commitment"),
        ("columns", lambda m: m["columns"].append("zzz"), "record fields"),
        ("tree.size", lambda m: m["tree"].__setitem__("size", 10), "manifest binds tree"),
        ("batch_id", _set("batch_id", value="20991231-00000000"), "manifest binds batch"),
        ("record_version", _set("record_version", value="x"), "record version"),
    ],
)
def test_changed_manifest_with_recomputed_digest_is_invalid(
    proof_doc, name, change, check: str
) -> None:
    """Even with a matching manifest digest, each manifest fact is cross-checked and the
    batch commitment binds the digest."""
    doc = copy.deepcopy(proof_doc)
    change(doc["batch"]["manifest"])
    doc["batch"]["manifest_digest"] = manifest_digest(doc["batch"]["manifest"]).hex()
    assert_rejected(doc, check=check)
    report = verify_proof(doc)
    assert not {c.name: c.ok for c in report.checks}["batch commitment"]


def test_changed_manifest_digest_is_invalid(proof_doc) -> None:
    for pos in (0, 63):
        doc = copy.deepcopy(proof_doc)
        doc["batch"]["manifest_digest"] = _flip_hex(doc["batch"]["manifest_digest"], pos)
        assert_rejected(doc, check="manifest")
        failed = {c.name for c in verify_proof(doc).checks if not c.ok}
        assert failed == {"manifest", "batch commitment"}


def test_changed_commitment_is_invalid(proof_doc) -> None:
    for pos in (0, 40, 63):
        doc = copy.deepcopy(proof_doc)
        doc["batch"]["commitment"] = _flip_hex(doc["batch"]["commitment"], pos)
        assert_rejected(doc, check="batch commitment")
        failed = {c.name for c in verify_proof(doc).checks if not c.ok}
        assert failed == {"batch commitment"}


def test_proof_of_another_batch_does_not_mix(minted, write_csv) -> None:
    """The record and path of one batch grafted onto another batch's section fail."""
    cfg, _ = minted
    proof_doc = export_proof(cfg, gtin=GTIN, serial=SERIAL)
    csv_path = write_csv("other.csv", "gtin,serial\n09520123450014,OTHER1\n09520123450014,OTHER2\n")
    mint_batch(csv_path, settings=cfg)
    other = export_proof(cfg, gtin=GTIN, serial="OTHER1")
    doc = copy.deepcopy(proof_doc)
    doc["batch"] = other["batch"]
    assert_rejected(doc, check="manifest binds tree")
    doc = copy.deepcopy(other)
    doc["product"] = proof_doc["product"]
    assert_rejected(doc, check="inclusion")


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (_set("product", "record_version", value="provmint-record/2"), "record version"),
        (_set("tree", "profile", value="rfc6962-sha1"), "tree profile"),
        (_set("format", value="provmint-proof/2"), "unsupported proof format"),
    ],
)
def test_changed_version_tags_are_refused(proof_doc, mutate: Mutation, field: str) -> None:
    doc = copy.deepcopy(proof_doc)
    mutate(doc)
    assert_rejected(doc, field=field)


# --------------------------------------------------------------------------- properties


def _hex_locations(doc: Any, where: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in the document holding a 64-hex-digit string."""
    found: list[tuple[Any, ...]] = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            found += _hex_locations(v, (*where, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            found += _hex_locations(v, (*where, i))
    elif isinstance(doc, str) and HEX64.fullmatch(doc):
        found.append(where)
    return found


def _get(doc: Any, where: tuple[Any, ...]) -> Any:
    for k in where:
        doc = doc[k]
    return doc


def _put(doc: Any, where: tuple[Any, ...], value: Any) -> None:
    _get(doc, where[:-1])[where[-1]] = value


def _never_verifies(doc: dict[str, Any], token: str | None = None) -> None:
    try:
        report = verify_proof(json.dumps(doc), token=token)
    except ProofError:
        return
    assert report.verdict is Verdict.INVALID, (report.verdict, report.reason)
    assert report.verdict not in (Verdict.PENDING, Verdict.VALID)


def test_hypothesis_one_flipped_hex_char_never_verifies(proof_doc) -> None:
    locations = _hex_locations(proof_doc)
    # token commitment, 4 path hashes, root, manifest digest, commitment, plus the
    # manifest's tree root and source sha256
    assert len(locations) == 10
    assert ("tree", "path", 3) in locations and ("batch", "commitment") in locations

    @settings(max_examples=300, deadline=None)
    @given(
        where=st.sampled_from(locations),
        pos=st.integers(0, 63),
        char=st.sampled_from("0123456789abcdefABCDEF"),
    )
    def run(where: tuple[Any, ...], pos: int, char: str) -> None:
        old = _get(proof_doc, where)
        if old[pos] == char:
            char = "0" if old[pos] != "0" else "1"
        doc = copy.deepcopy(proof_doc)
        _put(doc, where, old[:pos] + char + old[pos + 1 :])
        _never_verifies(doc)

    run()


def test_hypothesis_changed_record_value_never_verifies(proof_doc) -> None:
    fields = sorted(proof_doc["product"]["record"])

    @settings(max_examples=300, deadline=None)
    @given(field=st.sampled_from(fields), value=st.text(max_size=40))
    def run(field: str, value: str) -> None:
        if value == proof_doc["product"]["record"][field]:
            return
        doc = copy.deepcopy(proof_doc)
        doc["product"]["record"][field] = value
        _never_verifies(doc)

    run()


def test_hypothesis_extra_record_field_never_verifies(proof_doc) -> None:
    @settings(max_examples=150, deadline=None)
    @given(name=st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True), value=st.text(max_size=20))
    def run(name: str, value: str) -> None:
        if name in proof_doc["product"]["record"]:
            return
        doc = copy.deepcopy(proof_doc)
        doc["product"]["record"][name] = value
        _never_verifies(doc)

    run()


def test_hypothesis_changed_tree_numbers_never_verify(example) -> None:
    docs = [
        _proof_of(example, GTIN, SERIAL),
        _proof_of(example, GTIN, MIDDLE_SERIAL),
        _proof_of(example, *LAST),
    ]

    @settings(max_examples=200, deadline=None)
    @given(which=st.integers(0, 2), size=st.integers(1, 2**63 - 1), index=st.integers(0, 64))
    def run(which: int, size: int, index: int) -> None:
        doc = copy.deepcopy(docs[which])
        if (size, index) == (9, doc["tree"]["leaf_index"]):
            return
        doc["tree"]["size"], doc["tree"]["leaf_index"] = size, index
        _never_verifies(doc)

    run()


def test_deep_nesting_is_refused_even_with_a_high_recursion_limit() -> None:
    """The depth is checked before parsing: with a raised recursion limit the C JSON
    parser would otherwise overflow the C stack (a segfault, not an exception)."""
    import subprocess
    import sys

    code = (
        "import sys; sys.setrecursionlimit(1_000_000)\n"
        "from provmint.proofs import parse_proof\n"
        "from provmint.errors import ProofError\n"
        "for doc in ('[' * 500_000, '{\"a\":' * 200_000, '[' * 17 + ']' * 17):\n"
        "    try:\n"
        "        parse_proof(doc)\n"
        "    except ProofError as exc:\n"
        "        print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-500:]
    lines = out.stdout.splitlines()
    assert lines[:2] == ["proof is nested too deeply"] * 2
    assert len(lines) == 3 and "nested" in lines[2]


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    from provmint.proofs import _nested_deeper_than

    assert not _nested_deeper_than('{"a": "' + "[" * 50 + '"}', 16)
    assert not _nested_deeper_than('{"a": "\\\\", "b": ' + "[" * 10 + "]" * 10 + "}", 16)
    assert _nested_deeper_than('{"a": "\\"", "b": ' + "[" * 20 + "]" * 20 + "}", 16)
    assert not _nested_deeper_than("[" * 16 + "]" * 16 + "[" * 16 + "]" * 16, 16)
