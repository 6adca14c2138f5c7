"""The browser verifier (``verify.html``) agrees with ``provmint verify`` on every proof.

One real anvil chain (the world of tests/test_verify_chain.py: batches anchored by
calldata and through the registry, one pending, other transactions beside them) gives
valid proofs; a generator mutates every field path of each (every JSON value replaced
by values of each kind, hex altered, members added, removed and duplicated, numbers
written as floats, integers too long, the document broken as bytes) and re-hashes some
forgeries so that they fail further down. Every case is verified by provmint's own
verifier, in process, exactly as ``provmint verify`` does it (the same anchor checker,
the same node), and by the page in one headless Chromium session; verdicts, exit codes,
receipts (every check, the reason) and malformed-proof messages must be equal. Then the
page is used as a person would at 360 px: the written page (``provmint verifier-page``,
with the node baked in) with its file picker, and the served ``/verify?proof=`` link.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import random
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest
from conftest import ROOT, Anvil, Server, free_port, require_marker
from hypothesis import given, settings
from hypothesis import strategies as st
from test_browser import _browser_ready
from test_verify_chain import DEV0, DEV1, GTIN, _build_world

from provmint.canonical import batch_commitment, manifest_digest
from provmint.config import contrast_ratio
from provmint.errors import ProofError

SCRIPT = ROOT / "tests" / "browser" / "verify_proofs.mjs"


# --------------------------------------------------------------------------- the world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """The shared chain and its proofs, the store served by a real ``provmint serve``."""
    base = tmp_path_factory.mktemp("world")
    node = Anvil()
    env = {
        "PROVMINT_STORE": str(base / "store"),
        "PROVMINT_KEY_FILE": str(base / "keys" / "keys.json"),
        "PROVMINT_CONFIG": str(base / "none.toml"),
    }
    server = None
    try:
        with pytest.MonkeyPatch.context() as mp:
            for name, value in env.items():
                mp.setenv(name, value)
            for name in ("PROVMINT_RPC_URL", "PROVMINT_CHAIN_KEY", "PROVMINT_CHAIN"):
                mp.delenv(name, raising=False)
            built = _build_world(base, node)
            server = Server()
        built.base = base
        built.server = server
        built.config = base / "none.toml"
        yield built
    finally:
        if server is not None:
            server.stop()
        node.stop()


# --------------------------------------------------------------------------- the reference


def python_verdict(world: SimpleNamespace, data: bytes, options: dict[str, Any]) -> dict[str, Any]:
    """What ``provmint verify`` says: its verdict, exit code, and report or error."""
    from provmint.cli.verify import _checker
    from provmint.verify import verify_proof

    offline = bool(options.get("offline"))
    checker = None
    if options.get("rpcUrl") and not offline:
        checker = _checker(
            None,
            options["rpcUrl"],
            world.config,
            options.get("confirmations"),
            options.get("issuer"),
        )
    try:
        report = verify_proof(
            data, token=options.get("token"), anchor_checker=checker, offline=offline
        )
    except ProofError as exc:
        return {"verdict": "invalid", "exit_code": 3, "error": str(exc)}
    return {
        "verdict": report.verdict.value,
        "exit_code": report.verdict.exit_code,
        "report": report.to_json(),
    }


# --------------------------------------------------------------------------- the cases


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path to a value in a JSON document (the document itself excluded)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*path, key)
            yield from _paths(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield (*path, i)
            yield from _paths(item, (*path, i))


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def _set(doc: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    _get(out, path[:-1])[path[-1]] = value
    return out


def _drop(doc: dict[str, Any], path: tuple[Any, ...]) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    del _get(out, path[:-1])[path[-1]]
    return out


def _flip(text: str, at: int = -1) -> str:
    i = at % len(text)
    return text[:i] + ("0" if text[i] != "0" else "1") + text[i + 1 :]


def _replacements(value: Any) -> list[Any]:
    """Values of every class to put where ``value`` stood."""
    kinds: list[Any] = [None, True, "x", [], {}, 0]
    if isinstance(value, bool):
        return [*kinds[:1], not value, 1, "true"]
    if isinstance(value, int):
        return [value + 1, value - 1, -1, 2**63, 2**53 + 1, str(value), True, None, 10**19]
    if isinstance(value, str):
        out: list[Any] = [
            None,
            7,
            "",
            value + "é",
            value.upper() if value.upper() != value else value + "A",
        ]
        if re.fullmatch(r"(0x)?[0-9a-f]{64}", value):
            out += [_flip(value), _flip(value, len(value) // 2), value[:-1], "0x" + value[-64:]]
        elif re.fullmatch(r"0x[0-9a-fA-F]{40}", value):
            out += [value.lower(), _flip(value, 5), DEV1, value[:-1]]
        return out
    if isinstance(value, list):
        out = [None, {}, [*value, value[0] if value else "00" * 32], list(reversed(value)), "[]"]
        return [*out, value[:-1]] if value else out
    if isinstance(value, dict):
        return [None, [], {**value, "zz_extra": 1}, {}]
    return kinds


def _raw(text: str, name: str, data: bytes | None = None) -> dict[str, Any]:
    return {"name": name, "data": data if data is not None else text.encode("utf-8")}


def _document_cases(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The document broken as text or bytes: what a parser must refuse before anything."""
    text = json.dumps(doc, indent=2, ensure_ascii=False)
    size = f'"size": {doc["tree"]["size"]}'
    index = f'"leaf_index": {doc["tree"]["leaf_index"]}'
    cases = [
        _raw(text.replace(size, size + ".0", 1), "float size"),
        _raw(text.replace(size, size + "e0", 1), "exponent size"),
        _raw(text.replace(index, '"leaf_index": NaN', 1), "NaN"),
        _raw(text.replace(index, '"leaf_index": -Infinity', 1), "-Infinity"),
        _raw(text.replace(index, '"leaf_index": ' + "1" * 21, 1), "21 digits"),
        _raw(text.replace(index, '"leaf_index": ' + "1" * 500, 1), "500 digits"),
        _raw(text.replace(index, '"leaf_index": 01', 1), "leading zero"),
        _raw(text.replace('"format"', '"format": "x", "format"', 1), "duplicate format"),
        _raw(text.replace('"gtin"', '"serial": "1", "gtin"', 1), "duplicate in record"),
        _raw(text.replace('"batch_id"', '"batch_id": "z", "batch_id"', 1), "duplicate in manifest"),
        _raw(text.replace('"lot": "', '"lot": "\\ud800', 1), "lone surrogate value"),
        _raw(text.replace('"lot": "', '"l\\udc00t": "', 1), "lone surrogate key"),
        _raw(text.replace('"lot": "', '"lot": "\\ud83d\\ude00', 1), "escaped pair"),
        _raw(text.replace('"lot": "', '"lot": "\t', 1), "raw tab in string"),
        _raw(text.replace('"lot": "', '"lot": "\\x', 1), "bad escape"),
        _raw(text + " x", "trailing data"),
        _raw(text[:-5], "truncated"),
        _raw("", "empty"),
        _raw("[]", "top-level array"),
        _raw("\ufeff" + text, "byte-order mark"),
        _raw(text.rstrip()[:-1] + ', "extra": 1}', "unknown top-level member"),
        _raw(text.rstrip()[:-1] + ', "deep": ' + "[" * 20 + "]" * 20 + "}", "too deep"),
        _raw(text.rstrip()[:-1] + ', "deep": ' + "[" * 14 + "]" * 14 + "}", "deep but allowed"),
        _raw(text.rstrip()[:-1] + ', "[[[[[[[[[[[[[[[[[[": 1}', "brackets in a key"),
        _raw(text.rstrip()[:-1] + ', "pad": "' + "a" * (1 << 20) + '"}', "over 1 MiB"),
        _raw("", "bad UTF-8", text.encode()[:40] + b"\xe2\x82(" + text.encode()[40:]),
        _raw("", "surrogate as UTF-8", text.encode()[:40] + b"\xed\xa0\x80" + text.encode()[40:]),
        _raw("", "truncated UTF-8", '{"é'.encode()[:-1]),
    ]
    record = doc["product"]["record"]
    for n, (name, value) in enumerate(
        [("Bad Name", "1"), ("ok_name", "é" * 2049), ("ok_name", "é" * 2048), ("a" * 65, "1")]
    ):
        cases.append(
            _mutated(_set(doc, ("product", "record"), {**record, name: value}), f"record field {n}")
        )
    many = {**record, **{f"f{i:02d}": "" for i in range(70)}}
    cases.append(_mutated(_set(doc, ("product", "record"), many), "record of 76 fields"))
    big = {**doc["batch"]["manifest"], "note": "x" * 70000}
    cases.append(_mutated(_set(doc, ("batch", "manifest"), big), "manifest too large"))
    return cases


def _mutated(doc: Any, name: str) -> dict[str, Any]:
    return {"name": name, "data": json.dumps(doc, indent=2, ensure_ascii=False).encode("utf-8")}


def _rehashed(doc: dict[str, Any]) -> dict[str, Any]:
    """The document with its manifest digest and commitment recomputed (a forger's move:
    the failure then shows further down, at the commitment's anchor)."""
    out = copy.deepcopy(doc)
    batch = out["batch"]
    digest = manifest_digest(batch["manifest"])
    batch["manifest_digest"] = digest.hex()
    tree = out["tree"]
    batch["commitment"] = batch_commitment(
        batch["id"], tree["size"], bytes.fromhex(tree["root"]), digest
    ).hex()
    return out


_BOUND = {"tree", "columns", "batch_id", "record_version"}
"""The manifest members a verifier compares with the proof (the others only hash)."""


def _light(path: tuple[Any, ...], light: str) -> bool:
    """Two replacements, not every class, at this path? ``light`` is "no" (every class
    everywhere but in the manifest's members that only hash), "but anchor" (every class
    in the anchor section only) or "yes"."""
    if path[0] == "anchor" and light != "yes":
        return False
    if path[:2] == ("batch", "manifest") and len(path) > 2 and path[2] not in _BOUND:
        return True
    return light != "no"


def _field_cases(doc: dict[str, Any], name: str, *, light: str) -> list[dict[str, Any]]:
    """Every field path of the proof, each replaced by values of every class (or two:
    :func:`_light`), members removed and added."""
    cases = []
    for path in _paths(doc):
        where = name + ":" + ".".join(map(str, path))
        value = _get(doc, path)
        replacements = _replacements(value)
        if _light(path, light):
            replacements = replacements[:2]
        for n, new in enumerate(replacements):
            cases.append(_mutated(_set(doc, path, new), f"{where} #{n}"))
        if isinstance(path[-1], str) and light == "no":
            cases.append(_mutated(_drop(doc, path), f"{where} removed"))
    for path in (
        ("product",),
        ("tree",),
        ("batch",),
        ("batch", "manifest"),
        ("anchor",),
        ("anchor", "tree"),
    ):
        parent = (
            doc["anchor"]
            if path == ("anchor",)
            else _get(doc, path)
            if doc["anchor"] or path[0] != "anchor"
            else None
        )
        if isinstance(parent, dict):
            cases.append(
                _mutated(_set(doc, (*path, "Zz extra"), 1), f"{name}:{'.'.join(path)} extra")
            )
    for key in ("columns", "batch_id", "record_version", "label", "tree"):
        forged = _rehashed(_set(doc, ("batch", "manifest", key), "forged"))
        cases.append(_mutated(forged, f"{name}:manifest.{key} forged, rehashed"))
    cases.append(
        _mutated(
            _rehashed(_set(doc, ("batch", "manifest", "tree", "size"), True)),
            f"{name}:tree.size true, rehashed",
        )
    )
    return cases


def _chain_cases(world: SimpleNamespace, doc: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """The anchor's chain claims swapped for other transactions' and blocks'."""
    cases = []
    for label, tx in world.txs.items():
        anchor = {
            **doc["anchor"],
            **{
                k: v
                for k, v in tx.items()
                if k in ("tx_hash", "block_number", "block_hash", "block_time")
            },
        }
        cases.append(_mutated({**doc, "anchor": anchor}, f"{name}: tx {label}"))
    fake = world.txs["fake registry"]["contract"]
    registry = {**doc["anchor"], "method": "registry", "contract": fake}
    cases.append(_mutated({**doc, "anchor": registry}, f"{name}: fake registry"))
    return cases


def _fuzz_cases(doc: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """Random byte changes of the document's text (seeded: the same cases every run)."""
    rng = random.Random(20261201)
    data = json.dumps(doc, ensure_ascii=False).encode("utf-8")
    cases = []
    for n in range(count):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(mutated))
            mutated[at] = rng.choice(b'0123456789abcdef"{}[],:.-eE \\xf0\x80\xff')
        cases.append({"name": f"fuzz {n}", "data": bytes(mutated)})
    return cases


_ALPHABET = "aZ09_-. /\\\"'\t\n\x00\x1f\x7f\x85\xa0\xadéß€\u2028\ufeff\U0001f600\U000e0001"
"""Characters that escape differently in each quoting: JSON's, Python's repr, RFC 8785."""


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    """A random JSON value: strings of awkward characters, integers of every size,
    booleans, null, and nested lists and objects."""
    kind = rng.randrange(8 if depth < 3 else 5)
    if kind == 0:
        return "".join(rng.choice(_ALPHABET) for _ in range(rng.randrange(6)))
    if kind == 1:
        return rng.choice([0, -1, 1, 2**53, -(2**53) - 1, 2**63, 10**20 - 1, rng.randrange(10**6)])
    if kind == 2:
        return rng.choice([True, False])
    if kind in (3, 4):
        return (
            None if kind == 3 else "".join(rng.choice("0123456789abcdefABCDEF") for _ in range(64))
        )
    if kind == 5:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = ["tree", "size", "a b", "Ω", "gtin", "serial", "x" * 50, ""]
    return {rng.choice(keys): _random_value(rng, depth + 1) for _ in range(rng.randrange(4))}


def _structure_cases(doc: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """Random JSON values put at random paths of the document (seeded: the same cases
    every run), so that every error message quotes awkward values the same way."""
    rng = random.Random(12)
    paths = list(_paths(doc))
    cases = []
    for n in range(count):
        path = rng.choice(paths)
        cases.append(_mutated(_set(doc, path, _random_value(rng)), f"random {n}"))
    return cases


def _all_cases(world: SimpleNamespace) -> list[dict[str, Any]]:
    docs = world.docs
    rpc = {"rpcUrl": world.url}
    cases: list[dict[str, Any]] = []
    for name, options in [
        ("calldata", rpc),
        ("registry", rpc),
        ("sibling", rpc),
        ("pending", rpc),
        ("calldata", {}),
        ("calldata", {"offline": True}),
        ("pending", {"offline": True}),
        ("calldata", {**rpc, "issuer": docs["calldata"]["anchor"]["sender"].lower()}),
        ("calldata", {**rpc, "issuer": DEV1}),
        ("registry", {**rpc, "confirmations": 10_000}),
        ("calldata", {**rpc, "token": world.token}),
        ("calldata", {**rpc, "token": "AAAAAAAAAAAAAAAAAAAAAA"}),
        ("calldata", {**rpc, "token": "AAAAAAAAAAAAAAAAAAAAAB"}),
        ("calldata", {**rpc, "token": "short"}),
        ("calldata", {"rpcUrl": f"http://127.0.0.1:{free_port()}"}),
    ]:
        cases.append({**_mutated(docs[name], f"{name} {sorted(options)}"), "options": options})
    other_chain = _set(docs["calldata"], ("anchor", "chain_id"), 5)
    cases.append({**_mutated(other_chain, "other chain"), "options": rpc})
    for name, light in [("calldata", "no"), ("registry", "but anchor"), ("pending", "yes")]:
        cases += [{**c, "options": rpc} for c in _field_cases(docs[name], name, light=light)]
    cases += [{**c, "options": rpc} for c in _document_cases(docs["calldata"])]
    for name in ("calldata", "registry"):
        cases += [{**c, "options": rpc} for c in _chain_cases(world, docs[name], name)]
    cases += [{**c, "options": rpc} for c in _fuzz_cases(docs["registry"], 40)]
    cases += [{**c, "options": rpc} for c in _structure_cases(docs["calldata"], 80)]
    return cases


# --------------------------------------------------------------------------- the browser


def run_page(spec: dict[str, Any], tmp_path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run verify_proofs.mjs: each case's answer by name, and what each ui step showed."""
    require_marker("browser")
    node = _browser_ready()
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    done = subprocess.run(
        [node, str(SCRIPT), str(spec_file)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"verify_proofs.mjs failed:\n{done.stdout[-3000:]}\n{done.stderr}"
    answers: dict[str, Any] = {}
    shown: list[dict[str, Any]] = []
    for line in done.stdout.splitlines():
        item = json.loads(line)
        if "ui" in item:
            shown.append(item["ui"])
        elif "log" in item:
            # the one case of a node nobody listens at logs its refused connection
            refused = "Failed to load resource: net::ERR_CONNECTION_REFUSED"
            assert [m for m in item["log"] if refused not in m] == [], item["log"]
        else:
            answers[item["name"]] = json.loads(item["result"])
    return answers, shown


def _said(answer: dict[str, Any]) -> str:
    """An answer in a few words: its verdict and why."""
    return f"{answer['verdict']} ({answer.get('error') or answer['report']['reason']})"


def _agree(name: str, python: dict[str, Any], page: dict[str, Any]) -> str | None:
    """Why the page's answer differs from provmint's (None when they agree)."""
    if "crash" in page:
        return f"{name}: the page crashed: {page['crash']}"
    if (page["verdict"], page["exit_code"]) != (python["verdict"], python["exit_code"]):
        return f"{name}: page says {_said(page)}, provmint {_said(python)}"
    if "error" in python:
        same = page.get("error") == python["error"] or (
            # JSON syntax errors are worded by each parser
            python["error"].startswith("proof is not valid JSON")
            and str(page.get("error")).startswith("proof is not valid JSON")
        )
        return (
            None
            if same
            else f"{name}: page says {page.get('error')!r}, provmint {python['error']!r}"
        )
    if python["report"] != page.get("report"):
        if python["verdict"] == "unchecked" and "cannot reach" in page["report"]["reason"]:
            return None  # an unreachable node: each says it in its own HTTP client's words
        return f"{name}: reports differ:\n  provmint {python['report']}\n  page {page['report']}"
    return None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.browser
def test_page_agrees_with_provmint_verify_on_every_case(world, cli, tmp_path: Path) -> None:
    from provmint.products import find_product

    product = find_product(
        world.settings, gtin=GTIN, serial=world.docs["calldata"]["product"]["record"]["serial"]
    )
    world.token = product.token
    cases = _all_cases(world)
    names = [c["name"] + " " + json.dumps(c["options"], sort_keys=True) for c in cases]
    assert len(set(names)) == len(names)
    expected = {
        n: python_verdict(world, c["data"], c["options"]) for n, c in zip(names, cases, strict=True)
    }
    verdicts = {v["verdict"] for v in expected.values()}
    assert verdicts == {"valid", "invalid", "pending", "unchecked", "offline"}, verdicts
    assert sum(v["verdict"] != "invalid" for v in expected.values()) >= 15
    assert len(cases) >= 700

    page_file = tmp_path / "verify.html"
    r = cli("verifier-page", "-o", page_file, "--rpc", world.url)
    assert r.exit_code == 0, r.output
    proof_file = tmp_path / "proof.json"
    proof_file.write_bytes(json.dumps(world.docs["registry"], indent=2).encode())
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({**world.docs["pending"], "extra": 1}))
    served = urlsplit(product.url)
    link = f"/proof{served.path}?t={quote(product.token, safe='')}"
    spec = {
        "url": page_file.as_uri(),
        "cases": [
            {"name": n, "proof": _b64(c["data"]), "options": c["options"]}
            for n, c in zip(names, cases, strict=True)
        ],
        "ui": [
            {
                "name": "file",
                "url": page_file.as_uri(),
                "file": str(proof_file),
                "expect": "valid",
                "screenshot": str(tmp_path / "file.png"),
            },
            {"name": "drop", "url": page_file.as_uri(), "drop": str(broken), "expect": "invalid"},
            {
                "name": "link",
                "url": f"{world.server.url}/verify?proof={quote(link, safe='')}",
                "waitFirst": True,
                "rpc": world.url,
                "click": True,
                "expect": "valid",
                "screenshot": str(tmp_path / "link.png"),
            },
        ],
    }
    answers, shown = run_page(spec, tmp_path)

    problems = [p for n in names if (p := _agree(n, expected[n], answers[n])) is not None]
    assert not problems, f"{len(problems)} of {len(names)} cases differ:\n" + "\n".join(
        problems[:20]
    )

    by_name = {s["name"]: s for s in shown}
    _check_phone_page(by_name["file"], world.url)
    python = python_verdict(world, proof_file.read_bytes(), {"rpcUrl": world.url})
    assert by_name["file"]["receipt"].splitlines()[-1] == f"VALID: {python['report']['reason']}"
    dropped = by_name["drop"]
    _check_phone_page(dropped, world.url)
    said = python_verdict(world, broken.read_bytes(), {})["error"]
    assert dropped["receipt"] == f"error: {said}" and dropped["title"].startswith("Invalid")
    link_page = by_name["link"]
    _check_phone_page(link_page, world.url)
    assert link_page["status"] == 200
    assert link_page["token"] == product.token  # taken from the link: the label's token
    assert "ok   token: the token matches the committed token" in link_page["receipt"]
    assert link_page["policy"] is not None and "script-src 'sha256-" in link_page["policy"]
    assert "unsafe-inline" not in link_page["policy"]
    _check_served_page(world.server.url)


@pytest.mark.browser
@pytest.mark.chain
def test_product_page_links_to_the_verifier_with_the_brands_defaults(
    world, monkeypatch, tmp_path: Path
) -> None:
    """``[brand] verifier_rpc`` and ``issuer`` are the served verifier's defaults; the
    product page links to it with its own proof; a person following the link in a
    browser gets the proof checked on that node against that issuer, with nothing typed."""
    from provmint.products import find_product
    from provmint.verifier import verifier_page

    config = tmp_path / "brand.toml"
    config.write_text(f'[brand]\nverifier_rpc = "{world.url}"\nissuer = "{DEV0}"\n')
    monkeypatch.setenv("PROVMINT_STORE", str(world.base / "store"))
    monkeypatch.setenv("PROVMINT_KEY_FILE", str(world.base / "keys" / "keys.json"))
    server = Server("--config", str(config))
    try:
        page = verifier_page(rpc_url=world.url, issuer=DEV0)
        served = httpx.get(server.url + "/verify", timeout=15)
        assert served.status_code == 200 and served.text == page.html
        assert f'"rpc_url": "{world.url}"' in served.text and DEV0 in served.text

        product = find_product(
            world.settings, gtin=GTIN, serial=world.docs["calldata"]["product"]["record"]["serial"]
        )
        parts = urlsplit(product.url)
        html = httpx.get(f"{server.url}{parts.path}?{parts.query}", timeout=15).text
        proof = f"/proof{parts.path}?t={quote(product.token, safe='')}"
        found = re.search(r'<a id="verify" href="([^"]+)"', html)
        assert found, html
        href = found.group(1).replace("&amp;", "&")
        assert href == f"/verify?proof={quote(proof, safe='/')}"

        spec = {
            "url": "about:blank",
            "cases": [],
            "ui": [
                {
                    "name": "from the product page",
                    "url": server.url + href,
                    "waitFirst": True,
                    "click": True,
                    "expect": "valid",
                },
            ],
        }
        _, (shown,) = run_page(spec, tmp_path)
        assert shown["rpc"] == world.url and shown["token"] == product.token
        assert "not by the expected issuer" not in shown["receipt"]
        assert shown["receipt"].splitlines()[-1].startswith("VALID: ")
    finally:
        server.stop()

    # A node URL the public page cannot carry is refused where the file is read.
    config.write_text('[brand]\nverifier_rpc = "https://user:secret@node.example"\n')
    bad = subprocess.run(
        [sys.executable, "-m", "provmint", "serve", "--port", "0", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2, bad.stderr
    assert "[brand] verifier_rpc must not hold a user name or password" in bad.stderr
    assert "secret" not in bad.stderr and "Traceback" not in bad.stderr


def _check_served_page(url: str) -> None:
    """``GET /verify`` from the real service: the page with its own policy, the other
    security headers kept, never cached; HEAD too; other methods refused."""
    from provmint.verifier import verifier_page

    page = verifier_page()
    r = httpx.get(url + "/verify?proof=/proof/01/x", timeout=15)
    assert r.status_code == 200 and r.text == page.html
    assert r.headers.get_list("content-security-policy") == [page.policy]
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert httpx.head(url + "/verify", timeout=15).status_code == 200
    assert httpx.post(url + "/verify", timeout=15).status_code == 405
    other = httpx.get(url + "/healthz", timeout=15).headers["content-security-policy"]
    assert other != page.policy and "script-src" not in other  # the rest keeps its policy


def _check_phone_page(page: dict[str, Any], node_url: str) -> None:
    """At 360 px nothing overflows, every text is readable (WCAG AA), nothing is loaded
    from elsewhere but the node, and the page logged no error."""
    assert page["console"] == []
    assert page["viewport"] == 360 and page["documentWidth"] <= 360, page["overflowing"]
    assert page["overflowing"] == []
    assert page["rpc"] == node_url
    for text in page["texts"]:
        colour = "#" + "".join(f"{round(c):02x}" for c in text["color"][:3])
        ground = "#" + "".join(f"{round(c):02x}" for c in text["background"][:3])
        assert contrast_ratio(colour, ground) >= 4.5, text
    for url in page["requests"]:
        assert url.startswith(("file:", node_url, "http://127.0.0.1")), url


# --------------------------------------------------------------------------- the files


def test_shipped_page_is_the_page_provmint_writes() -> None:
    """verify.html in the package is exactly what ``verifier_page()`` builds: its meta
    policy names its own script and style, its registry code is the shipped artifact's,
    and its colours are the public page's palette."""
    from provmint.chain import registry_artifact
    from provmint.publicpage.palette import COLOURS, TONES
    from provmint.verifier import verifier_page

    shipped = (ROOT / "src" / "provmint" / "verifier" / "verify.html").read_text("utf-8")
    page = verifier_page()
    assert shipped == page.html, "run: provmint verifier-page -o src/provmint/verifier/verify.html"
    script = re.search(r"<script>(.*?)</script>", shipped, re.S)
    assert script is not None
    digest = base64.b64encode(hashlib.sha256(script.group(1).encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in page.policy
    assert "unsafe" not in page.policy and page.policy.endswith("frame-ancestors 'none'")
    registry = re.search(r'id="provmint-registry">(.*?)</script>', shipped)
    assert registry is not None
    assert json.loads(registry.group(1))["runtime"] == registry_artifact()["deployedBytecode"]
    for colour in (
        COLOURS["text"],
        COLOURS["muted"],
        COLOURS["link"],
        TONES["green"],
        TONES["red"],
    ):
        assert colour in shipped
    assert "http://" not in re.sub(r"http://(localhost|127\.0\.0\.1)", "", page.policy)


@pytest.mark.parametrize(
    ("url", "fault"),
    [
        ("http://node.example.com:8545", "plain http"),
        ("https://user:pw@node.example.com", "user name or password"),
        ("ftp://node.example.com", "https://"),
        ('https://x.example.com/"><script>', "a page can hold"),
        ("https://x.example.com:99999", "not a URL"),
        ("https://" + "a" * 3000, "a page can hold"),
        ("https://", "https://"),
    ],
)
def test_page_refuses_a_default_node_it_cannot_publish(url: str, fault: str) -> None:
    from provmint.errors import ConfigError
    from provmint.verifier import verifier_page

    with pytest.raises(ConfigError, match=re.escape(fault)):
        verifier_page(rpc_url=url)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200) | st.from_regex(r"https?://[^\s]{0,60}", fullmatch=True))
def test_any_default_node_text_is_refused_or_kept_inert(url: str) -> None:
    """Whatever text is given as the default node, the page is built with it as a plain
    JSON value that no HTML can break out of, or the text is refused with ConfigError."""
    from provmint.errors import ConfigError
    from provmint.verifier import verifier_page

    try:
        page = verifier_page(rpc_url=url)
    except ConfigError:
        return
    block = re.search(r'id="provmint-config">([^<]*)</script>', page.html)
    assert block is not None
    assert json.loads(block.group(1)) == ({"rpc_url": url} if url else {})  # "": no default
    if url:
        parts = urlsplit(url)
        assert parts.scheme == "https" or parts.hostname in ("localhost", "127.0.0.1")


def test_verifier_page_command(cli, tmp_path: Path) -> None:
    out = tmp_path / "v.html"
    r = cli(
        "verifier-page",
        "-o",
        out,
        "--rpc",
        "https://rpc.example.org",
        "--confirmations",
        "3",
        "--json",
    )
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    html = out.read_text("utf-8")
    assert summary["bytes"] == len(html.encode()) and summary["policy"].startswith(
        "default-src 'none'"
    )
    assert '{"rpc_url": "https://rpc.example.org", "confirmations": 3}' in html
    r = cli("verifier-page", "-o", "-")
    assert r.exit_code == 0 and r.stdout.startswith("<!doctype html>")
    r = cli("verifier-page", "-o", out, "--issuer", "0x12")
    assert r.exit_code == 2 and "is not an address" in r.stderr
    r = cli("verifier-page", "-o", "-", "--json")
    assert r.exit_code == 2 and "--json" in r.stderr
