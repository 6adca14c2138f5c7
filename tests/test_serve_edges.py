"""The public service's edges (``[serve]`` settings, :mod:`provmint.edge`): the client's
address behind trusted proxies, the per-client rate limit, header limits, the deadline
for slow clients, and the security headers and ``Cache-Control`` on every answer.

The rules are checked on their own (the address parser with generated headers, the
limiter with a fake clock), through the ASGI application, and over real HTTP against
``provmint serve`` with a ``[serve]`` table in its config file (raw sockets where a
client must misbehave: a head that never ends, too many bytes of it).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import ipaddress
import json
import socket
import sqlite3
import time
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from conftest import EXAMPLE_CSV
from hypothesis import given, settings
from hypothesis import strategies as st
from test_serve import GTIN, JSON, SERIAL, _ok, _path, _product

from provmint.config import ServeSettings, resolve_settings
from provmint.edge import (
    CONTENT_SECURITY_POLICY,
    MAX_FORWARDED_HOPS,
    RateLimiter,
    TrustedProxies,
    parse_address,
    retry_after,
)
from provmint.errors import ConfigError
from provmint.server import create_app

SECURITY = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


# --------------------------------------------------------------------------- helpers


def _configure(tmp_path: Path, **serve: Any) -> None:
    """Write a ``[serve]`` table into the test's config file (read by ``provmint serve``
    and by ``resolve_settings``)."""

    def toml(value: Any) -> str:
        if isinstance(value, list):
            return "[" + ", ".join(f'"{item}"' for item in value) + "]"
        return str(value)

    lines = ["[serve]", *(f"{key} = {toml(value)}" for key, value in serve.items())]
    (tmp_path / "no-config.toml").write_text("\n".join(lines) + "\n")


def _minted(cli: Any) -> dict[str, Any]:
    _ok(cli("batch", "create", EXAMPLE_CSV, "--json"))
    product = _product(cli)
    product["path"] = _path(product["url"])
    return product


def _hardened(headers: Any, what: str) -> None:
    """The security headers, and ``Cache-Control: no-store``."""
    for name, value in SECURITY.items():
        assert headers.get(name) == value, (what, name, dict(headers))
    assert headers.get("cache-control") == "no-store", (what, dict(headers))


def _address(server: Any) -> tuple[str, int]:
    parts = urlsplit(server.url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def _exchange(server: Any, data: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data`` on a new connection and read until the server closes it."""
    with socket.create_connection(_address(server), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def _parse_raw(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def _get(server: Any, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.get(server.url + path, headers=headers or {}, timeout=15)


# --------------------------------------------------------------------------- the client's address


TRUSTED = ["127.0.0.0/8", "10.0.0.0/8", "::1/128", "fd00::/8"]


def test_addresses_are_parsed_strictly() -> None:
    good = {
        "192.0.2.7": "192.0.2.7",
        "192.0.2.7:443": "192.0.2.7",
        "2001:db8::7": "2001:db8::7",
        "2001:DB8:0:0:0:0:0:7": "2001:db8::7",
        "[2001:db8::7]": "2001:db8::7",
        "[2001:db8::7]:8443": "2001:db8::7",
        "::ffff:192.0.2.7": "192.0.2.7",
    }
    for text, expected in good.items():
        assert str(parse_address(text)) == expected, text
    for bad in (
        "",
        "unknown",
        "_hidden",
        "example.com",
        "192.0.2",
        "192.0.2.7.1",
        "192.0.2.256",
        "01.2.3.4",
        "192.0.2.7:",
        "192.0.2.7:123456",
        "192.0.2.7:port",
        "[192.0.2.7]",
        "[2001:db8::7",
        "[2001:db8::7]x",
        "fe80::1%eth0",
        "１９２.0.2.7",
        " 192.0.2.7",
        "1" * 100,
    ):
        assert parse_address(bad) is None, bad


def test_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    proxies = TrustedProxies(TRUSTED)
    # From a trusted proxy: the right-most address that is not a proxy.
    assert proxies.client("127.0.0.1", b"203.0.113.9") == "203.0.113.9"
    assert proxies.client("127.0.0.1", b"198.51.100.1, 203.0.113.9") == "203.0.113.9"
    assert proxies.client("127.0.0.1", b"198.51.100.1, 203.0.113.9, 10.0.0.2") == "203.0.113.9"
    assert proxies.client("::1", b"[2001:db8::5]:1234") == "2001:db8::5"
    assert proxies.client("::ffff:127.0.0.1", b"203.0.113.9") == "203.0.113.9"
    # Whatever the client wrote to the left is never reached...
    assert proxies.client("127.0.0.1", b"garbage, 203.0.113.9") == "203.0.113.9"
    # ...and garbage where a proxy's address should be stops the walk at the last proxy.
    assert proxies.client("127.0.0.1", b"203.0.113.9, garbage, 10.0.0.2") == "10.0.0.2"
    assert proxies.client("127.0.0.1", b"garbage") == "127.0.0.1"
    assert proxies.client("127.0.0.1", b"") == "127.0.0.1"
    assert proxies.client("127.0.0.1", b"10.0.0.3, 10.0.0.2") == "10.0.0.3"
    # From anyone else the header is ignored.
    assert proxies.client("203.0.113.50", b"198.51.100.1") == "203.0.113.50"
    assert proxies.client("", b"198.51.100.1") == ""
    assert TrustedProxies([]).client("127.0.0.1", b"198.51.100.1") == "127.0.0.1"
    # A header of any length is read from the right, a bounded number of elements.
    many = b", ".join([b"198.51.100.1"] + [b"10.0.0.1"] * 100_000)
    started = time.perf_counter()
    assert proxies.client("127.0.0.1", many) == "10.0.0.1"
    assert time.perf_counter() - started < 0.05


ELEMENTS = st.one_of(
    st.sampled_from(
        [
            "203.0.113.7",
            "10.1.2.3",
            "127.0.0.1",
            "2001:db8::1",
            "[2001:db8::1]:443",
            "[fd00::1]",
            "10.0.0.1:80",
            "::ffff:10.0.0.5",
            "unknown",
            "",
            " ",
            "1.2.3.4.5",
            "fe80::1%eth0",
            "_hidden",
            "300.1.1.1",
            "01.2.3.4",
            "\t203.0.113.8 ",
        ]
    ),
    st.ip_addresses().map(str),
    st.binary(max_size=20).map(lambda raw: raw.decode("latin-1")),
    st.text(max_size=12),
)
HEADERS = st.one_of(
    st.binary(max_size=400),
    st.lists(ELEMENTS, max_size=40).map(lambda xs: ",".join(xs).encode("utf-8", "surrogatepass")),
)
PEERS = st.sampled_from(
    ["127.0.0.1", "10.9.9.9", "::1", "::ffff:127.0.0.1", "203.0.113.50", "", "garbage"]
)


@settings(max_examples=3000, deadline=None)
@given(peer=PEERS, header=HEADERS)
def test_the_client_is_the_peer_or_an_address_a_proxy_vouched_for(peer: str, header: bytes) -> None:
    proxies = TrustedProxies(TRUSTED)
    client = proxies.client(peer, header)
    peer_address = parse_address(peer)
    if client == peer:
        return
    # Only a trusted proxy's header is read...
    assert peer_address is not None and proxies.trusts(peer_address)
    # ...and the client is a valid address, canonical, written in it...
    address = ipaddress.ip_address(client)
    assert str(address) == client
    elements = [parse_address(e.strip(b" \t").decode("latin-1")) for e in header.split(b",")]
    found = [i for i, e in enumerate(elements) if e is not None and str(e) == client]
    assert found
    # ...with only trusted proxies' addresses to its right (what the client itself
    # wrote, to the left of its own address, is never believed).
    right = elements[found[-1] + 1 :]
    assert len(right) < MAX_FORWARDED_HOPS
    assert all(e is not None and proxies.trusts(e) for e in right)


# --------------------------------------------------------------------------- the rate limiter


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_limiter_allows_a_burst_then_the_rate() -> None:
    clock = _Clock()
    limiter = RateLimiter(3, 3.0, clock=clock)  # 3 per 3 s: one a second, 3 at once
    assert [limiter.hit("192.0.2.1") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.hit("192.0.2.1")
    assert wait == pytest.approx(1.0, abs=1e-6) and retry_after(wait) == 1
    assert limiter.hit("192.0.2.2") == 0.0  # another client has its own bucket
    for _ in range(50):  # refused requests do not count
        assert limiter.hit("192.0.2.1") > 0
    clock.now += 1.0
    assert limiter.hit("192.0.2.1") == 0.0
    assert limiter.hit("192.0.2.1") > 0
    clock.now += 3.0  # after the window the whole burst again
    assert [limiter.hit("192.0.2.1") for _ in range(4)][:3] == [0.0, 0.0, 0.0]

    small_burst = RateLimiter(60, 60.0, 2, clock=clock)
    assert [small_burst.hit("x") == 0.0 for _ in range(3)] == [True, True, False]


def test_the_limiter_counts_an_ipv6_subscriber_once_and_stays_bounded() -> None:
    clock = _Clock()
    limiter = RateLimiter(2, 60.0, clock=clock, max_clients=100)
    assert limiter.hit("2001:db8:1:2::1") == 0.0
    assert limiter.hit("2001:db8:1:2:ffff::9") == 0.0  # the same /64
    assert limiter.hit("2001:db8:1:2::77") > 0
    assert limiter.hit("2001:db8:1:3::1") == 0.0  # another /64
    assert limiter.hit("::ffff:192.0.2.9") == 0.0
    assert limiter.hit("192.0.2.9") == 0.0
    assert limiter.hit("192.0.2.9") > 0  # the mapped form is the same client
    for i in range(10_000):
        limiter.hit(f"198.51.{i // 256}.{i % 256}")
    assert len(limiter) == 100
    with pytest.raises(ValueError):
        RateLimiter(0, 60.0)


def test_the_limiter_is_cheap() -> None:
    limiter = RateLimiter(60, 60.0)
    proxies = TrustedProxies(["127.0.0.1/32", "10.0.0.0/8"])
    started = time.perf_counter()
    for i in range(20_000):
        client = proxies.client("127.0.0.1", b"203.0.%d.%d" % (i // 256 % 256, i % 256))
        limiter.hit(client)
    per_request = (time.perf_counter() - started) / 20_000
    assert per_request < 100e-6, per_request  # a few microseconds; generous for slow CI


# --------------------------------------------------------------------------- settings


def test_serve_settings_are_read_and_checked(tmp_path: Path) -> None:
    _configure(
        tmp_path,
        trusted_proxies=["127.0.0.1", "10.0.0.0/8", "::1"],
        rate_limit=10,
        rate_window=2.5,
        rate_burst=4,
        max_header_bytes=4096,
        max_headers=32,
        header_timeout=3,
        keep_alive_timeout=7,
        limit_concurrency=0,
    )
    serve = resolve_settings().serve
    assert serve == ServeSettings(
        trusted_proxies=("127.0.0.1/32", "10.0.0.0/8", "::1/128"),
        rate_limit=10,
        rate_window=2.5,
        rate_burst=4,
        max_header_bytes=4096,
        max_headers=32,
        header_timeout=3.0,
        keep_alive_timeout=7,
        limit_concurrency=0,
    )
    (tmp_path / "no-config.toml").write_text("")
    assert resolve_settings().serve == ServeSettings()
    assert ServeSettings().rate_limit == 60 and ServeSettings().trusted_proxies == ()
    for bad, needle in (
        ({"trusted_proxies": ["10.0.0.1/8"]}, "not a network"),
        ({"trusted_proxies": ["proxy.example.com"]}, "not a network"),
        ({"trusted_proxies": "[1, 2]"}, "list of networks"),
        ({"rate_limit": -1}, "between 0 and 1000000"),
        ({"rate_limit": 1.5}, "whole number"),
        ({"rate_limit": "true"}, "whole number"),
        ({"rate_window": 0}, "between"),
        ({"header_timeout": '"10"'}, "number of seconds"),
        ({"max_header_bytes": 100}, "between"),
        ({"rate_limt": 5}, "unknown setting 'rate_limt'"),
    ):
        _configure(tmp_path, **bad)
        with pytest.raises(ConfigError, match=needle):
            resolve_settings()


@pytest.mark.parametrize(
    "key",
    [
        "trusted_proxies",
        "rate_limit",
        "rate_window",
        "rate_burst",
        "max_header_bytes",
        "max_headers",
        "header_timeout",
        "keep_alive_timeout",
        "limit_concurrency",
    ],
)
def test_a_serve_setting_of_any_wrong_type_is_one_config_error(key: str, tmp_path: Path) -> None:
    for value in (
        "true",
        "nan",
        "inf",
        "-inf",
        "1e300",
        '"ten"',
        "[1, 2]",
        '["10.0.0.0/8", 3]',
        "{ a = 1 }",
        "1979-05-27T07:32:00Z",
        "[[1], [2]]",
    ):
        (tmp_path / "no-config.toml").write_text(f"[serve]\n{key} = {value}\n")
        try:
            resolve_settings()
        except ConfigError as exc:
            assert f"[serve] {key}" in str(exc), (value, str(exc))
        else:
            raise AssertionError(f"{key} = {value} was accepted")


# --------------------------------------------------------------------------- through ASGI


def _asgi(
    app: Any,
    path: str,
    *,
    headers: list[tuple[bytes, bytes]] | None = None,
    client: str = "192.0.2.1",
    method: str = "GET",
) -> tuple[int, dict[str, str], bytes]:
    raw_path, _, query = path.encode().partition(b"?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": raw_path.decode(),
        "raw_path": raw_path,
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"id.example.com"), *(headers or [])],
        "client": (client, 50000),
        "server": ("127.0.0.1", 80),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    names = [name for name, _ in sent[0]["headers"]]
    assert len(names) == len(set(names)), names  # no header twice
    return (
        sent[0]["status"],
        {k.decode(): v.decode() for k, v in sent[0]["headers"]},
        sent[1]["body"],
    )


@pytest.fixture
def edge_app(cli: Any, keyed: Any) -> Any:
    """An application factory over the example: ``edge_app(**serve settings)``."""
    example = _minted(cli)
    apps: list[Any] = []

    def make(**serve: Any) -> Any:
        app = create_app(replace(keyed, serve=ServeSettings(**serve)))
        app.example = example
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.service.writer.close()


def test_asgi_rate_limit_header_limits_and_busy(edge_app: Any) -> None:
    app = edge_app(rate_limit=2, rate_window=60, max_headers=10, max_header_bytes=1024)
    path = app.example["path"]
    accept_json = [(b"accept", b"application/json")]
    assert _asgi(app, path, headers=accept_json)[0] == 200
    assert _asgi(app, path)[0] == 200
    status, headers, body = _asgi(app, path, headers=accept_json)
    assert status == 429 and headers["retry-after"] == "30"
    assert json.loads(body) == {
        "error": {
            "code": "too_many_requests",
            "status": 429,
            "message": "too many requests; try again in 30 s",
            "hint": None,
        }
    }
    _hardened(headers, "429 json")
    status, headers, body = _asgi(app, path)
    assert status == 429 and headers["content-type"].startswith("text/html")
    assert b"Too many requests" in body
    _hardened(headers, "429 html")
    # /healthz is not limited: monitoring polls it from one place.
    for _ in range(10):
        assert _asgi(app, "/healthz")[0] == 200
    assert _asgi(app, path, client="192.0.2.2")[0] == 200

    many = [(b"x-%d" % i, b"1") for i in range(10)]
    status, headers, body = _asgi(app, "/healthz", headers=accept_json + many, client="192.0.2.3")
    assert status == 431 and b"too large" in body
    _hardened(headers, "431 count")
    big = [(b"cookie", b"a" * 1024)]
    status, headers, body = _asgi(app, "/healthz", headers=big, client="192.0.2.4")
    assert status == 431 and b"Request too large" in body
    _hardened(headers, "431 size")

    busy = edge_app(rate_limit=0, limit_concurrency=1)
    release = asyncio.Event()
    answered: list[int] = []

    async def both() -> None:
        original = busy.answer

        async def slow(request: Any) -> Any:
            await release.wait()
            return await original(request)

        busy.answer = slow

        async def one() -> None:
            sent: list[dict[str, Any]] = []

            async def send(message: dict[str, Any]) -> None:
                sent.append(message)

            scope = {
                "type": "http",
                "method": "GET",
                "path": "/healthz",
                "raw_path": b"/healthz",
                "query_string": b"",
                "headers": [(b"accept", b"application/json")],
                "client": ("192.0.2.5", 1),
            }
            await busy(scope, None, send)
            answered.append(sent[0]["status"])
            if sent[0]["status"] == 503:
                headers = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
                assert headers["retry-after"] == "1"
                _hardened(headers, "503 busy")

        first = asyncio.create_task(one())
        await asyncio.sleep(0.01)
        await one()  # answered at once: one request is already in progress
        release.set()
        await first

    asyncio.run(both())
    assert answered == [503, 200]


# --------------------------------------------------------------------------- over HTTP


def test_rate_limit_over_http_then_allowed_again(cli, keyed, serve_store, tmp_path: Path) -> None:
    example = _minted(cli)
    # One request earned back every 2 s: slow answers on a loaded machine earn none
    # back before the burst is spent.
    _configure(tmp_path, rate_limit=3, rate_window=6)
    server = serve_store()
    path = example["path"]
    assert [_get(server, path, JSON).status_code for _ in range(3)] == [200, 200, 200]
    refused = _get(server, path, JSON)
    assert refused.status_code == 429
    wait = refused.headers["retry-after"]
    assert wait in ("1", "2")
    assert refused.json()["error"]["message"] == f"too many requests; try again in {wait} s"
    _hardened(refused.headers, "429")
    page = _get(server, path)
    assert page.status_code == 429 and "Too many requests" in page.text
    # Monitoring is never limited.
    assert all(_get(server, "/healthz").status_code == 200 for _ in range(10))
    # Once the window has passed, the client may ask again (the whole burst).
    time.sleep(6.2)
    assert [_get(server, path, JSON).status_code for _ in range(3)] == [200, 200, 200]
    assert _get(server, path, JSON).status_code == 429


def test_forwarded_for_keys_the_limit_only_from_trusted_proxies(
    cli, keyed, serve_store, tmp_path: Path
) -> None:
    example = _minted(cli)
    path = example["path"]

    def xff(value: str) -> dict[str, str]:
        return {**JSON, "X-Forwarded-For": value}

    # Behind a trusted proxy (this test is on 127.0.0.1): each forwarded client is counted
    # on its own, by the right-most address the proxy appended.
    _configure(tmp_path, rate_limit=2, rate_window=60, trusted_proxies=["127.0.0.1/32"])
    server = serve_store()
    for _ in range(2):
        assert _get(server, path, xff("203.0.113.1")).status_code == 200
    assert _get(server, path, xff("203.0.113.1")).status_code == 429
    # What the client wrote to the left of its own address changes nothing.
    assert _get(server, path, xff("198.51.100.7, 203.0.113.1")).status_code == 429
    assert _get(server, path, xff("203.0.113.2")).status_code == 200
    assert _get(server, path, xff("203.0.113.1, 203.0.113.3")).status_code == 200
    # Several headers are one list, in order.
    raw = (
        f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\n"
        "X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-For: 203.0.113.1\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    assert _parse_raw(_exchange(server, raw))[0] == 429
    # The proxy's own requests (no header) are its own client.
    assert _get(server, path, JSON).status_code == 200
    server.stop()

    # Not behind a trusted proxy: the header is anyone's text, and ignored.
    _configure(tmp_path, rate_limit=2, rate_window=60, trusted_proxies=["10.0.0.0/8"])
    server = serve_store()
    statuses = [_get(server, path, xff(f"203.0.113.{i}")).status_code for i in range(4)]
    assert statuses == [200, 200, 429, 429]
    # A local peer forwarding for others without being trusted is a misconfiguration
    # the operator is told of, once.
    warnings = [line for line in server.stop().splitlines() if "X-Forwarded-For" in line]
    assert len(warnings) == 1, warnings
    assert "127.0.0.1 is not in [serve] trusted_proxies" in warnings[0]


def test_healthz_stays_fast_under_a_flood(cli, keyed, serve_store, tmp_path: Path) -> None:
    """16 connections asking for one code as fast as they can are refused with 429 past
    their allowance, cheaply: /healthz (never limited) keeps answering at once."""
    example = _minted(cli)
    _configure(tmp_path, rate_limit=60, rate_window=60)
    server = serve_store()

    async def run() -> tuple[list[int], list[float]]:
        stop = asyncio.Event()
        statuses: list[int] = []
        took: list[float] = []
        limits = httpx.Limits(max_connections=16)
        async with (
            httpx.AsyncClient(base_url=server.url, timeout=30, limits=limits) as flood,
            httpx.AsyncClient(base_url=server.url, timeout=30) as monitor,
        ):

            async def flooder() -> None:
                while not stop.is_set():
                    r = await flood.get(example["path"], headers=JSON)
                    statuses.append(r.status_code)

            tasks = [asyncio.create_task(flooder()) for _ in range(16)]
            await asyncio.sleep(0.5)
            for _ in range(10):
                started = time.perf_counter()
                r = await monitor.get("/healthz")
                took.append(time.perf_counter() - started)
                assert r.status_code == 200
                await asyncio.sleep(0.1)
            stop.set()
            await asyncio.gather(*tasks)
        return statuses, took

    statuses, took = asyncio.run(run())
    assert set(statuses) == {200, 429}
    assert statuses.count(200) <= 60 + 3  # the burst, and what refilled meanwhile
    assert statuses.count(429) > 100
    # Generous bounds (this process runs the flood too, on a shared machine).
    took.sort()
    assert took[len(took) // 2] < 0.25 and took[-1] < 1.0, took


def test_too_many_or_too_large_headers_are_431(cli, keyed, serve_store, tmp_path: Path) -> None:
    example = _minted(cli)
    server = serve_store()
    host, port = _address(server)

    def request(headers: list[tuple[str, str]]) -> tuple[int, dict[str, str], bytes]:
        con = http.client.HTTPConnection(host, port, timeout=15)
        try:
            con.putrequest("GET", "/healthz")
            for name, value in headers:
                con.putheader(name, value)
            con.endheaders()
            response = con.getresponse()
            return (
                response.status,
                {k.lower(): v for k, v in response.getheaders()},
                response.read(),
            )
        finally:
            con.close()

    assert request([(f"X-Field-{i}", "1") for i in range(60)])[0] == 200
    status, headers, _ = request([(f"X-Field-{i}", "1") for i in range(70)])
    assert status == 431
    _hardened(headers, "431 count")
    status, headers, _ = request([("Accept", "application/json"), ("Cookie", "a" * 9000)])
    assert status == 431
    _hardened(headers, "431 size")
    assert request([("Cookie", "a" * 7000)])[0] == 200
    assert _get(server, example["path"], JSON).status_code == 200

    # A head that keeps coming, a piece at a time, is refused once it is too large
    # (not buffered without end), and its connection closed.
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        answer = b""
        try:
            for _ in range(100):
                sock.sendall(b"X-Padding: " + b"p" * 500 + b"\r\n")
                time.sleep(0.005)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
    if answer:  # the answer may be lost to the reset of a connection still sending
        status, headers, _ = _parse_raw(answer)
        assert status == 431 and headers["connection"] == "close"
        _hardened(headers, "431 protocol")


def _read_response(sock: socket.socket) -> bytes:
    """One whole answer (head and its content-length body) from a blocking socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    _, headers, body = _parse_raw(data)
    while len(body) < int(headers["content-length"]):
        body += sock.recv(65536)
    return data


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes ``sock`` within ``seconds`` (sending nothing more)."""
    sock.settimeout(seconds)
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_slow_clients_are_closed_and_others_served(cli, keyed, serve_store, tmp_path: Path) -> None:
    """Slowloris: 200 connections that send a request's head a line at a time, never
    finishing, are closed after ``header_timeout``; a normal request is answered
    meanwhile. So is a connection that sends nothing, and a kept-alive one whose next
    request never ends."""
    example = _minted(cli)
    _configure(tmp_path, header_timeout=2, keep_alive_timeout=30)
    server = serve_store()
    address = _address(server)
    with contextlib.ExitStack() as stack:
        slow = []
        for _ in range(200):
            sock = stack.enter_context(socket.create_connection(address, timeout=10))
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            sock.setblocking(False)
            slow.append(sock)
        silent = stack.enter_context(socket.create_connection(address, timeout=10))
        kept = stack.enter_context(socket.create_connection(address, timeout=10))
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"200 OK" in _read_response(kept)
        kept.sendall(b"GET /healthz HTTP/1.1\r\n")  # the next request, never finished
        started = time.monotonic()

        closed: set[int] = set()
        answered_meanwhile = False
        while time.monotonic() - started < 6 and len(closed) < len(slow):
            for i, sock in enumerate(slow):
                if i in closed:
                    continue
                try:
                    sock.send(b"X-Slow: 1\r\n")  # a line now and then: never idle
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    closed.add(i)
                    continue
                assert data == b"", data  # closed, never answered
                closed.add(i)
            if not answered_meanwhile:
                r = _get(server, example["path"], JSON)
                assert r.status_code == 200
                answered_meanwhile = True
            time.sleep(0.25)
        took = time.monotonic() - started
        assert answered_meanwhile
        assert len(closed) == len(slow), f"{len(slow) - len(closed)} slow connections still open"
        assert 1.5 < took < 6, took
        assert _closed_within(silent, 3.0)
        assert _closed_within(kept, 3.0)
    assert _get(server, "/healthz").status_code == 200


def test_every_answer_carries_the_security_headers(cli, keyed, serve_store, tmp_path: Path) -> None:
    example = _minted(cli)
    _configure(tmp_path, rate_limit=1000, rate_window=60, limit_concurrency=1)
    server = serve_store()
    path = example["path"]
    unknown = path.replace(SERIAL, "NOSUCHSERIAL1")
    requests: list[tuple[str, str, dict[str, str], int]] = [
        ("GET", path, {}, 200),
        ("GET", path, JSON, 200),
        ("HEAD", path, {}, 200),
        ("GET", "/proof" + path, {}, 200),
        ("GET", "/healthz", {}, 200),
        ("GET", unknown, {}, 404),
        ("GET", unknown, JSON, 404),
        ("GET", "/proof" + unknown, {}, 404),
        ("GET", "/favicon.ico", {}, 404),
        ("GET", f"/01/{GTIN}/21/A/B", {}, 400),
        ("GET", f"/01/{GTIN}/21/A/B", JSON, 400),
        ("POST", path, {}, 405),
        ("DELETE", "/healthz", {}, 405),
        ("GET", "/" + "x" * 600, {}, 414),
        ("GET", "/healthz", {f"X-{i}": "1" for i in range(70)}, 431),
    ]
    for method, target, headers, expected in requests:
        r = httpx.request(method, server.url + target, headers=headers, timeout=15)
        assert r.status_code == expected, (method, target, r.status_code)
        _hardened(r.headers, f"{method} {target[:40]}")
    # uvicorn's own answer to a request it cannot parse.
    status, headers, body = _parse_raw(_exchange(server, b"get / HTTP/1.1\r\n\r\n"))
    assert status == 400 and body == b"Invalid HTTP request received."
    _hardened(headers, "uvicorn 400")

    # 503: a scan that cannot be logged (the log is locked), and, while it waits, any
    # request beyond limit_concurrency (1 here).
    holder = sqlite3.connect(tmp_path / "store" / "scans.sqlite", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")

    async def meanwhile() -> tuple[httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            waiting = asyncio.create_task(client.get(path, headers=JSON))
            await asyncio.sleep(0.5)
            busy = await client.get("/healthz", headers=JSON)
            return await waiting, busy

    try:
        unlogged, busy = asyncio.run(meanwhile())
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert unlogged.status_code == 503 and unlogged.json()["logged"] is False
    _hardened(unlogged.headers, "503 not logged")
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
    assert busy.json()["error"] == {
        "code": "service_unavailable",
        "status": 503,
        "message": "the service is busy; try again in a moment",
        "hint": None,
    }
    _hardened(busy.headers, "503 busy")

    _configure(tmp_path, rate_limit=1, rate_window=60)
    server.stop()
    server = serve_store()
    assert _get(server, path).status_code == 200
    r = _get(server, path)
    assert r.status_code == 429
    _hardened(r.headers, "429")
