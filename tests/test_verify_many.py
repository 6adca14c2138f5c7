"""``provmint verify`` of many proofs at once: several files, JSON-lines files from
``proof export --all``, and hostile mixtures of them; ``verify_many`` underneath."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import EXAMPLE_CSV
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provmint.errors import EXIT_INVALID, EXIT_NOT_FOUND, EXIT_OK, EXIT_PENDING
from provmint.proofs import MAX_PROOF_BYTES
from provmint.verify import ManyReport, ProofOutcome, proof_documents, verify_many


@pytest.fixture
def exported(cli, keyed, tmp_path: Path) -> list[bytes]:
    """The example minted, and its nine proofs as JSON lines (pending: not anchored)."""
    assert cli("batch", "create", EXAMPLE_CSV).exit_code == 0
    out = tmp_path / "proofs.jsonl"
    r = cli("proof", "export", "--batch", "latest", "--all", "-o", out)
    assert r.exit_code == 0, r.output
    lines = out.read_bytes().splitlines(keepends=True)
    assert len(lines) == 9
    return lines


def test_a_jsonl_file_is_checked_proof_by_proof(cli, exported, tmp_path: Path) -> None:
    path = tmp_path / "proofs.jsonl"
    r = cli("verify", path)
    assert r.exit_code == EXIT_PENDING, r.output
    rows = [line.split("\t") for line in r.stdout.splitlines()]
    assert rows[0] == ["proof", "product", "verdict", "reason"]  # piped: every proof
    assert [row[0] for row in rows[1:]] == [f"{path}:{n}" for n in range(1, 10)]
    assert {row[2] for row in rows[1:]} == {"pending"}
    assert "9 proofs: 9 pending" in r.stderr
    report = json.loads(cli("verify", path, "--json").stdout)
    assert report["summary"] == {"proofs": 9, "pending": 9} and report["exit"] == EXIT_PENDING
    assert report["proofs"][0]["record"]["gtin"] == "09520123450014"
    # The same proofs as files of their own (pretty or on one line) read the same.
    pretty = tmp_path / "one.json"
    pretty.write_text(json.dumps(json.loads(exported[0]), indent=2))
    compact = tmp_path / "two.json"
    compact.write_bytes(exported[1].strip())
    both = json.loads(cli("verify", pretty, compact, "--json").stdout)
    assert [p["source"] for p in both["proofs"]] == [str(pretty), str(compact)]
    assert [p["leaf_index"] for p in both["proofs"]] == [0, 1]
    # One file alone is the receipt, as before.
    assert "PENDING" in cli("verify", compact).stdout


def test_the_worst_proof_sets_the_exit_code(cli, exported, tmp_path: Path) -> None:
    tampered = json.loads(exported[2])
    tampered["product"]["record"]["serial"] += "X"
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_bytes(
        exported[0] + b"\n   \n" + json.dumps(tampered).encode() + b"\n" + b"{not json\n"
    )
    r = cli("verify", mixed, "--json")
    report = json.loads(r.stdout)
    assert r.exit_code == EXIT_INVALID == report["exit"]
    assert [p["source"] for p in report["proofs"]] == [f"{mixed}:{n}" for n in (1, 4, 5)]
    assert [p["verdict"] for p in report["proofs"]] == ["pending", "invalid", "invalid"]
    assert "error" in report["proofs"][2] and f"{mixed}:5" in report["proofs"][2]["reason"]
    # A missing file among valid ones: not found (7) is worse than pending, better than
    # invalid.
    ok = tmp_path / "ok.jsonl"
    ok.write_bytes(b"".join(exported[:2]))
    r = cli("verify", ok, tmp_path / "nowhere.json")
    assert r.exit_code == EXIT_NOT_FOUND
    assert "3 proofs: 1 error, 2 pending" in r.stderr
    assert "nowhere.json" in r.stdout
    r = cli("verify", ok, "--token", "AAAAAAAAAAAAAAAAAAAAAA")
    assert r.exit_code == 2 and "--token checks one proof" in r.stderr


def test_the_exit_code_ranks_the_verdicts() -> None:
    def many(*codes: int) -> int:
        from provmint.errors import ProvmintError

        outcomes = []
        for code in codes:
            error = ProvmintError("x")
            error.exit_code = code
            outcomes.append(ProofOutcome("s", error=error))
        return ManyReport(tuple(outcomes)).exit_code

    assert many() == EXIT_OK
    assert many(0, 12, 4, 5, 7, 3) == 3
    assert many(0, 12, 4, 5, 7) == 7
    assert many(0, 12, 4, 5) == 5
    assert many(0, 12, 4) == 4
    assert many(0, 12) == 12


_LINE = st.one_of(
    st.sampled_from(["good", "tampered", "blank"]),
    st.binary(max_size=200),
    st.text(max_size=200).map(lambda t: t.replace("\n", " ")),
    st.just("long"),
    # An object's start, then brackets nested shallow or far too deep, closed or not.
    st.tuples(st.integers(1, 100_000), st.booleans()).map(
        lambda d: b'{"a": ' + b"[" * d[0] + (b"]" * d[0] + b"}" if d[1] else b"")
    ),
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lines=st.lists(_LINE, min_size=1, max_size=12), jsonl_name=st.booleans())
def test_hostile_jsonl_never_crashes(exported, tmp_path_factory, lines, jsonl_name) -> None:
    """Whatever a JSON-lines file holds, every non-blank line is one outcome, in order,
    each proof checked exactly as alone, and nothing raises."""
    good = exported[0].strip()
    bad = json.loads(good)
    bad["tree"]["leaf_index"] = 5
    pieces: list[bytes] = []
    for line in lines:
        if line == "good":
            pieces.append(good)
        elif line == "tampered":
            pieces.append(json.dumps(bad).encode())
        elif line == "blank":
            pieces.append(b"  ")
        elif line == "long":
            pieces.append(b"{" + b" " * (MAX_PROOF_BYTES + 10) + b"}")
        else:
            raw = line if isinstance(line, bytes) else line.encode("utf-8", "surrogatepass")
            pieces.append(raw.replace(b"\n", b" ").replace(b"\r", b" "))
    path = tmp_path_factory.mktemp("many") / ("p.jsonl" if jsonl_name else "p.json")
    path.write_bytes(b"\n".join(pieces) + b"\n")
    report = verify_many(proof_documents(path))
    kept = [p for p in pieces if p.strip()]
    first = pieces[0]
    lines_mode = jsonl_name or (
        len(kept) > 1 and len(first) < MAX_PROOF_BYTES and _is_object(first)
    )
    if lines_mode:
        assert len(report.outcomes) == len(kept)
        for piece, outcome in zip(kept, report.outcomes, strict=True):
            _same_as_alone(piece, outcome)
    else:
        assert len(report.outcomes) == 1  # one document (valid or not)
    assert report.exit_code in (EXIT_OK, EXIT_INVALID, EXIT_PENDING)


def _is_object(piece: bytes) -> bool:
    """One JSON object, nested at most 16 deep (a proof's limit)."""
    try:
        doc = json.loads(piece)
    except (ValueError, RecursionError):
        return False
    return isinstance(doc, dict) and _depth(doc) <= 16


def _depth(value: Any) -> int:
    """How deep containers nest in a decoded value (iteratively: json.loads accepts
    nesting deeper than a recursive walk here could follow)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth + 1)
            stack += [(v, depth + 1) for v in (item.values() if isinstance(item, dict) else item)]
    return deepest


def _same_as_alone(piece: bytes, outcome: ProofOutcome) -> None:
    from provmint.errors import ProofError
    from provmint.verify import verify_proof

    try:
        alone: Any = verify_proof(piece)
    except ProofError:
        assert outcome.report is None and outcome.verdict == "invalid"
        return
    assert outcome.report == alone


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=80),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)
_FIELDS = ("hash", "timestamp", "status", "blockNumber", "blockHash", "from", "to", "input")


@settings(max_examples=300, deadline=None)
@given(
    answer=st.one_of(
        _JSON,
        st.fixed_dictionaries(
            {}, optional={f: _JSON | st.text(alphabet="0x123abcdef") for f in _FIELDS}
        ),
    ),
    raw=st.one_of(st.none(), st.binary(max_size=100)),
    error=st.one_of(st.none(), _JSON),
)
def test_a_hostile_node_is_an_error_never_a_crash(answer: Any, raw: Any, error: Any) -> None:
    """Whatever a node answers (any JSON, any bytes, any error object), a read gives its
    typed result or a provmint error, never another exception."""
    from provmint.chainread import RpcReader
    from provmint.errors import AnchorError

    body = (
        raw
        if raw is not None
        else json.dumps(
            {"jsonrpc": "2.0", "id": 1, **({"error": error} if error else {"result": answer})}
        ).encode()
    )
    reader = RpcReader("http://127.0.0.1:9/secret/path")
    reader._request = lambda method, *params: reader._result(method, body)  # type: ignore[method-assign]
    reads = [
        reader.chain_id,
        reader.block_number,
        lambda: reader.block(1),
        lambda: reader.receipt("0x" + "11" * 32),
        lambda: reader.transaction("0x" + "11" * 32),
        lambda: reader.call("0x" + "22" * 20, "0x"),
        lambda: reader.code("0x" + "22" * 20),
    ]
    for read in reads:
        reader._chain_id = None
        try:
            read()
        except AnchorError as exc:
            assert "secret" not in str(exc)
