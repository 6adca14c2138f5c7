"""``provmint serve --metrics-port``: Prometheus metrics of the whole service.

Real ``provmint serve`` processes over HTTP. Checked: after genuine, unknown, 404 and
429 answers spread over two workers (found by process inspection), every scrape (each
answered by whichever worker accepts it) counts exactly the answers the client got, by
route template, status and verdict, and the latency histograms agree; the index and
store figures and the process tree are there; nothing a visitor sent (codes, tokens,
addresses) appears; the public port never answers ``/metrics``, with or without
metrics; the workers' private metric directory is gone after exit; scans the log could
not record are counted; a busy metrics port is one clear error. Route labels stay
bounded whatever the path (generated hostile paths).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil
import pytest
from conftest import EXAMPLE_CSV, Server, free_port, run_provmint
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.parser import text_string_to_metric_families

from provmint.metrics import (
    OPENMETRICS_TYPE,
    OTHER_ROUTE,
    TEXT_TYPE,
    MetricsApp,
    MetricsEndpoint,
    Routes,
)

GTIN = "09520123450014"
SERIAL = "546CAWQDCR56"
JSON = {"Accept": "application/json"}
CODE_ROUTE = "/01/{gtin}[/10/{lot}]/21/{serial}"


@pytest.fixture
def launch() -> Any:
    started: list[Server] = []

    def start(*args: str, env: dict[str, str] | None = None, metrics: bool = True) -> Server:
        service = Server(*args, env=env, one_worker=False, metrics=metrics)
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


@pytest.fixture
def minted(cli, keyed) -> dict[str, Any]:
    created = cli("batch", "create", EXAMPLE_CSV, "--json")
    assert created.exit_code == 0, created.output
    shown = cli("product", "show", "--gtin", GTIN, "--serial", SERIAL, "--json")
    product = json.loads(shown.stdout)
    parts = urlsplit(product["url"])
    product["path"] = f"{parts.path}?{parts.query}"
    product["token"] = dict(p.split("=", 1) for p in parts.query.split("&"))["t"]
    product["batch"] = json.loads(created.stdout)
    return product


def scrape(url: str) -> dict[str, Any]:
    """The samples of one scrape: {(name, sorted labels): value}, and the text."""
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[Any, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return {"samples": samples, "text": response.text}


def by_labels(samples: dict[Any, float], name: str, *keys: str) -> Counter[tuple[str, ...]]:
    """The samples named ``name``, keyed by the values of ``keys``."""
    found: Counter[tuple[str, ...]] = Counter()
    for (sample_name, labels), value in samples.items():
        if sample_name == name:
            found[tuple(dict(labels)[k] for k in keys)] += int(value)
    return found


def expected_label(path: str, response: http.client.HTTPResponse, body: bytes) -> tuple[str, ...]:
    """The (route, status, verdict) a response should be counted under, from what the
    client saw (the verdict is the JSON answer's, when it gives one)."""
    if path.startswith("/01/"):
        route = CODE_ROUTE
    elif path == "/healthz":
        route = "/healthz"
    else:
        route = OTHER_ROUTE
    verdict = "none"
    if route == CODE_ROUTE:
        verdict = json.loads(body).get("verdict", "none")
    return route, str(response.status), verdict


def test_a_scrape_counts_every_worker(minted, launch, tmp_path: Path) -> None:
    config = tmp_path / "metrics.toml"
    config.write_text("[serve]\nrate_limit = 4\nrate_window = 3600\n")  # per worker
    private = tmp_path / "tmp"
    private.mkdir()
    service = launch(
        "--workers",
        "2",
        "--metrics-port",
        str(free_port()),
        "--config",
        str(config),
        env={"TMPDIR": str(private)},
    )
    workers = psutil.Process(service.proc.pid).children()
    assert len(workers) == 2
    unknown = minted["path"].replace(SERIAL, "NOSUCHSERIAL1")
    # The first three are within any worker's rate limit; then 429s come.
    paths = [minted["path"], unknown, "/metrics", "/healthz"] * 2 + ["/nope"] * 14
    parts = urlsplit(service.url)
    connections, seen, public = [], Counter[tuple[str, ...]](), []
    for path in paths:  # a connection each: the kernel spreads them over the workers
        con = http.client.HTTPConnection(parts.hostname, parts.port, timeout=15)
        con.request("GET", path, headers=JSON)
        response = con.getresponse()
        body = response.read()
        seen[expected_label(path, response, body)] += 1
        if path == "/metrics":
            public.append((response.status, body))
        connections.append(con)
    ports = {con.sock.getsockname()[1] for con in connections}
    served = {
        w.pid
        for w in workers
        for c in w.net_connections(kind="tcp")
        if c.raddr and c.raddr.port in ports
    }
    for con in connections:
        con.close()
    assert len(served) == 2, "every connection went to one worker"
    statuses = {key[1:] for key in seen}
    assert {("200", "pending"), ("404", "unknown"), ("404", "none"), ("429", "none")} <= statuses

    # Each worker counted only its own answers; a scrape adds them all up.
    files = {p.name for p in next(private.glob("provmint-metrics-*")).iterdir()}
    assert {f"counter_{w.pid}.db" for w in workers} <= files, files
    for _ in range(4):  # whichever worker answers the scrape
        scraped = scrape(service.metrics_url)
        samples = scraped["samples"]
        counted = by_labels(samples, "provmint_http_requests_total", "route", "status", "verdict")
        assert counted == seen
        per_route = Counter[tuple[str, ...]]()
        for (route, _, _), n in seen.items():
            per_route[(route,)] += n
        timed = by_labels(samples, "provmint_http_request_duration_seconds_count", "route")
        assert timed == per_route
        assert samples[("provmint_index_products", ())] == minted["batch"]["products"]
        assert samples[("provmint_store_batches", ())] == 1
        assert samples[("provmint_processes", ())] == 3
        assert samples[("provmint_scans_not_logged_total", ())] == 0
        assert samples[("process_resident_memory_bytes", ())] > 0
    # Nothing a visitor sent: no code, token or address.
    text = scraped["text"]
    for secret in (SERIAL, "NOSUCHSERIAL1", minted["token"], GTIN, GTIN[1:], "127.0.0.1"):
        assert secret not in text
    # The public port never answers /metrics (a 404, or a 429 once rate limited).
    assert public[0][0] == 404 and all(b"provmint_" not in body for _, body in public)
    assert httpx.get(service.metrics_url.replace("/metrics", "/x"), timeout=10).status_code == 404
    assert "Traceback" not in service.stop()
    assert list(private.iterdir()) == []  # the workers' metric files went with the service


def test_metrics_are_off_by_default(minted, launch) -> None:
    service = launch("--workers", "1", metrics=False)
    assert httpx.get(service.url + minted["path"], headers=JSON, timeout=10).status_code == 200
    public = httpx.get(service.url + "/metrics", timeout=10)
    assert public.status_code == 404 and "provmint_" not in public.text


def test_scans_not_logged_are_counted(minted, launch, tmp_path: Path) -> None:
    broken = f"sqlite:{tmp_path / 'not-a-dir'}/scans.sqlite"
    (tmp_path / "not-a-dir").write_text("a file, so the log cannot be created under it")
    service = launch("--workers", "1", "--metrics-port", str(free_port()), "--scan-log", broken)
    answers = [httpx.get(service.url + minted["path"], headers=JSON, timeout=10) for _ in range(3)]
    assert all(a.status_code == 503 and a.json()["logged"] is False for a in answers)
    samples = scrape(service.metrics_url)["samples"]
    assert samples[("provmint_scans_not_logged_total", ())] == 3
    key = (("route", CODE_ROUTE), ("status", "503"), ("verdict", "pending"))
    assert samples[("provmint_http_requests_total", key)] == 3
    assert "Traceback" not in service.stop()  # one process: it served the metrics itself


def test_a_busy_metrics_port_is_one_clear_error(minted) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        done = run_provmint("serve", "--port", "0", "--workers", "1", "--metrics-port", port)
    assert done.returncode != 0
    assert "metrics: cannot listen on 127.0.0.1:" in done.stderr
    assert "--metrics-port" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("host", "local"),
    [("127.0.0.1", True), ("::1", True), ("localhost", True), ("0.0.0.0", False),
     ("10.0.0.5", False), ("metrics.example.com", False)],
)  # fmt: skip
def test_only_loopback_is_local(host: str, local: bool) -> None:
    assert MetricsEndpoint(9464, host).local is local


ROUTES = Routes(
    {b"/healthz": "/healthz", b"/logo": "/logo"}, ((b"/01/", CODE_ROUTE), (b"/proof/01/", "p"))
)


@given(st.binary(max_size=300) | st.sampled_from([b"/01/", b"/proof/01/x", b"/healthz", b""]))
def test_route_labels_are_bounded(path: bytes) -> None:
    route = ROUTES.of(path)
    assert route in ROUTES.names
    assert (
        route == OTHER_ROUTE
        or path.startswith((b"/01/", b"/proof/01/"))
        or path
        in (
            b"/healthz",
            b"/logo",
        )
    )


def _ask(
    app: MetricsApp, method: str, path: bytes, accept: bytes
) -> tuple[int, dict[bytes, bytes], bytes]:
    """One request to ``app`` (ASGI, in this process): status, headers, body."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path.decode("latin-1"),
        "raw_path": path,
        "headers": [(b"accept", accept)],
    }
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"]


REGISTRY = CollectorRegistry(auto_describe=False)
Gauge("provmint_probe", "A probe.", registry=REGISTRY).set(1)


@given(
    method=st.sampled_from(["GET", "HEAD", "POST", "DELETE"]),
    path=st.binary(max_size=64) | st.sampled_from([b"/metrics", b"/metrics?x=1", b"/Metrics"]),
    accept=st.binary(max_size=120)
    | st.sampled_from(
        [
            b"application/openmetrics-text; version=abc",
            b"text/plain; version=1.x",
            b"application/openmetrics-text;version=1.0.0;q=0.9,text/plain;q=0.5",
            b"application/openmetrics-text; version=\r\nx-injected: 1",
        ]
    ),
)
def test_scrapes_answer_any_request_plainly(method: str, path: bytes, accept: bytes) -> None:
    status, headers, body = _ask(MetricsApp(lambda: REGISTRY), method, path, accept)
    target = path.partition(b"?")[0] == b"/metrics"
    if not target:
        assert status == 404
    elif method not in ("GET", "HEAD"):
        assert status == 405 and headers[b"allow"] == b"GET, HEAD"
    else:
        assert status == 200
        assert headers[b"content-type"].decode() in (OPENMETRICS_TYPE, TEXT_TYPE)
        assert (body == b"") == (method == "HEAD")
        if body and headers[b"content-type"].decode() == TEXT_TYPE:
            names = {f.name for f in text_string_to_metric_families(body.decode())}
            assert names == {"provmint_probe"}
    assert int(headers[b"content-length"]) == len(body) or method == "HEAD"
