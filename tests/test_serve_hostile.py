"""Hostile requests to the verification service, generated (hypothesis): paths, queries,
methods and Accept headers built from what Digital Links are made of, mutated.

Each request goes through the service's ASGI interface in this process (thousands of
them) and, fewer, over real HTTP to ``provmint serve`` (uvicorn parses them first).
Every answer has a status from the documented set, a body of its declared length,
JSON when JSON was asked for, and never a traceback, the store's path, a key or the
token of a product the request did not name. The genuine code, whatever junk is added
to its query, is either found or refused as malformed, never an error.
"""

from __future__ import annotations

import asyncio
import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import EXAMPLE_CSV
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provmint.server import create_app

GTIN = "09520123450014"
SERIAL = "546CAWQDCR56"
OTHER_SERIAL = "X67Y29DHPXTS"
STATUSES = {200, 400, 404, 405, 414}

PIECES = st.sampled_from(
    [
        "/01/",
        GTIN,
        GTIN[1:],
        "0" * 14,
        "/10/",
        "L2406A",
        "/21/",
        SERIAL,
        OTHER_SERIAL,
        "/proof",
        "/healthz",
        "/",
        "//",
        "/..",
        "/.",
        "%2F",
        "%2f",
        "%00",
        "%",
        "%zz",
        "%41",
        "?",
        "#",
        ";",
        "&",
        "=",
        "t=",
        "loc=",
        "+",
        " ",
        "\t",
        "é",
        "\u202e",
        "\x7f",
        "A" * 300,
        "<script>",
        "'\"",
        "\\",
        "/01/" + GTIN + "/21/" + SERIAL,
    ]
)
PATHS = st.lists(st.one_of(PIECES, st.text(max_size=6)), max_size=12).map("".join)
QUERIES = st.lists(st.one_of(PIECES, st.text(max_size=6)), max_size=8).map("".join)
METHODS = st.one_of(
    st.just("GET"),
    st.just("HEAD"),
    st.sampled_from(["POST", "PUT", "DELETE", "OPTIONS", "PATCH", "get"]),
)
ACCEPTS = st.sampled_from(
    [
        "",
        "application/json",
        "text/html",
        "*/*",
        "text/html, application/json;q=0.9",
        "application/json" * 40,
    ]
)


def _product(cli: Any, serial: str) -> dict[str, Any]:
    r = cli("product", "show", "--gtin", GTIN, "--serial", serial, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


@pytest.fixture
def minted(cli: Any, keyed: Any) -> Iterator[dict[str, Any]]:
    """The example batch: its settings, a product's path and both products' tokens (and
    the application a test makes, shut down afterwards as uvicorn would)."""
    assert cli("batch", "create", EXAMPLE_CSV).exit_code == 0
    one, other = _product(cli, SERIAL), _product(cli, OTHER_SERIAL)
    parts = urlsplit(one["url"])
    found: dict[str, Any] = {
        "settings": keyed,
        "path": parts.path,
        "query": parts.query,
        "token": one["token"],
        "other_token": other["token"],
    }
    yield found
    if "app" in found:
        found["app"].service.writer.close()


def _secrets(settings: Any) -> list[str]:
    doc = json.loads(Path(settings.key_file).read_text())
    return [key["secret"] for key in doc["keys"]]


def _check(
    status: int,
    headers: dict[str, str],
    body: bytes,
    wants_json: bool,
    request: str,
    minted: dict[str, Any],
    method: str,
) -> None:
    text = body.decode("utf-8")
    assert status in STATUSES | {503}, (status, request, text[:300])
    assert "Traceback" not in text and "Internal Server Error" not in text, request
    assert str(minted["settings"].store) not in text
    for secret in _secrets(minted["settings"]):
        assert secret not in text
    if minted["other_token"] not in request:
        assert minted["other_token"] not in text, request
    if method != "HEAD":
        assert int(headers["content-length"]) == len(body)
        # uvicorn answers a request line it cannot parse (a lower-case method) itself.
        refused_by_uvicorn = status == 400 and text == "Invalid HTTP request received."
        if (wants_json and not refused_by_uvicorn) or "json" in headers["content-type"]:
            assert isinstance(json.loads(text), dict), (request, text[:300])


def _asgi(
    app: Any, method: str, path: bytes, query: bytes, accept: str
) -> tuple[int, dict[str, str], bytes]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path.decode("latin-1"),
        "raw_path": path,
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"id.example.com"), (b"accept", accept.encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    headers = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    return sent[0]["status"], headers, sent[1]["body"]


@settings(
    max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(path=PATHS, query=QUERIES, method=METHODS, accept=ACCEPTS)
def test_generated_requests_through_asgi(
    minted: dict[str, Any], path: str, query: str, method: str, accept: str
) -> None:
    app = minted.setdefault("app", create_app(minted["settings"]))
    raw = ("/" + path.lstrip("/")).encode("utf-8", "surrogatepass")
    status, headers, body = _asgi(app, method, raw, query.encode("utf-8", "surrogatepass"), accept)
    _check(status, headers, body, "application/json" in accept, f"{path}?{query}", minted, method)
    if method not in ("GET", "HEAD"):
        assert status == 405 and headers["allow"] == "GET, HEAD"


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(junk=QUERIES, accept=ACCEPTS)
def test_the_genuine_code_with_junk_is_found_or_refused(
    minted: dict[str, Any], junk: str, accept: str
) -> None:
    app = minted.setdefault("app", create_app(minted["settings"]))
    query = f"{minted['query']}&{junk}".encode("utf-8", "surrogatepass")
    status, headers, body = _asgi(app, "GET", minted["path"].encode(), query, accept)
    _check(status, headers, body, "application/json" in accept, junk, minted, "GET")
    assert status in (200, 400, 414), (status, junk)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(path=PATHS, query=QUERIES, method=METHODS, accept=ACCEPTS)
def test_generated_requests_over_http(
    minted: dict[str, Any], serve_store: Any, path: str, query: str, method: str, accept: str
) -> None:
    if "server" not in minted:
        minted["server"] = serve_store()
    parts = urlsplit(minted["server"].url)
    # What an HTTP client can put on the request line: no spaces, controls or non-ASCII.
    target = "/" + "".join(ch for ch in path if "!" <= ch <= "~").lstrip("/")
    q = "".join(ch for ch in query if "!" <= ch <= "~" and ch != "#")
    con = http.client.HTTPConnection(parts.hostname, parts.port, timeout=15)
    try:
        con.request(method, target + ("?" + q if q else ""), headers={"Accept": accept})
        response = con.getresponse()
        body = response.read()
        headers = {k.lower(): v for k, v in response.getheaders()}
    finally:
        con.close()
    _check(
        response.status,
        headers,
        body,
        "application/json" in accept,
        f"{target}?{q}",
        minted,
        method,
    )
