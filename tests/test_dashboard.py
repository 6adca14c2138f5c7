"""``provmint dashboard``: the operator's pages over real uvicorn HTTP and in headless
Chromium; the token (required, compared in constant time, never beyond loopback
without one); scan places strangers typed shown as text, never as markup; both
scan-log backends."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import EXAMPLE_CSV, ROOT, require_marker
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_stats import COPIED, GTIN, HOSTILE, fill_log

from provmint.config import Settings, contrast_ratio, resolve_settings
from provmint.dashboard import DashboardToken, create_app, resolve_token
from provmint.dashboard import auth as auth_module
from provmint.dashboard.render import PAIRS
from provmint.store import Store

TOKEN = "dashboard-test-token-0123456789abcdef"
PAGES = ("/", "/batches", "/scans", "/suspects", "/anchors")
SECURITY = ("content-security-policy", "x-content-type-options", "x-frame-options")


class Dashboard:
    """A real ``provmint dashboard`` process on 127.0.0.1 and a free port."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "provmint", "dashboard", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        assert self.proc.stderr is not None
        self.lines: list[str] = []
        for line in self.proc.stderr:
            self.lines.append(line)
            found = re.search(r" on (http://127\.0\.0\.1:\d+)/", line)
            if found:
                self.url = found.group(1)
                break
        else:
            raise RuntimeError(f"provmint dashboard did not start: {self.proc.stderr.read()}")
        if "Sign in:" not in "".join(self.lines) and "token from" not in "".join(self.lines):
            self.lines.append(self.proc.stderr.readline())

    def stop(self) -> None:
        """Stop it (SIGTERM) and wait."""
        self.proc.terminate()
        try:
            self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()


@pytest.fixture
def dashboard() -> Iterator[Callable[..., Dashboard]]:
    """Start ``provmint dashboard`` over the test's store: ``dashboard(*args, env=...)``."""
    started: list[Dashboard] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Dashboard:
        server = Dashboard(*args, env=env)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.stop()


class _Markup(HTMLParser):
    """The elements, attributes and text of a page, as a browser's parser reads them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attributes: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes.extend(name for name, _ in attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def markup(page: str) -> _Markup:
    parsed = _Markup()
    parsed.feed(page)
    return parsed


def _safe(page: str) -> _Markup:
    """Check a page holds no script and no event handler; return what it holds."""
    parsed = markup(page)
    assert "script" not in parsed.tags and "iframe" not in parsed.tags
    assert "img" not in parsed.tags
    assert not [a for a in parsed.attributes if a.lower().startswith("on")]
    return parsed


def _get(server: Dashboard, path: str, **options: Any) -> httpx.Response:
    return httpx.get(server.url + path, timeout=20, follow_redirects=False, **options)


def _bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _check_auth(server: Dashboard) -> None:
    """401 without the token, 403 with a wrong one, the pages with it; a login by
    ?token= sets the session cookie and leads to the page without the token."""
    r = _get(server, "/")
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert all(h in r.headers for h in SECURITY) and r.headers["cache-control"] == "no-store"
    assert 'name="token"' in r.text  # the sign-in form
    assert _get(server, "/", headers=_bearer(TOKEN + "x")).status_code == 403
    assert _get(server, "/stats.json?token=" + TOKEN[:-1]).status_code == 403
    assert _get(server, "/", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
    assert _get(server, "/", cookies={"provmint_dashboard": "0" * 64}).status_code == 401

    login = _get(server, f"/suspects?since=7d&token={TOKEN}")
    assert login.status_code == 303 and login.headers["location"] == "/suspects?since=7d"
    cookie = login.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
    session = login.cookies["provmint_dashboard"]
    assert _get(server, "/suspects", cookies={"provmint_dashboard": session}).status_code == 200
    assert _get(server, "/nowhere", headers=_bearer()).status_code == 404
    assert _get(server, "/?since=forever", headers=_bearer()).status_code == 400
    post = httpx.post(server.url + "/", headers=_bearer(), timeout=20)
    assert post.status_code == 405 and post.headers["allow"] == "GET, HEAD"
    big = {**_bearer(), "X-Big": "a" * 9000}
    assert _get(server, "/", headers=big).status_code == 431


def _check_pages(server: Dashboard, cfg: Settings) -> None:
    """Every page answers, holds no markup from the log, and says what it should."""
    pages = {p: _get(server, p, headers=_bearer()) for p in PAGES}
    for path, r in pages.items():
        assert r.status_code == 200, (path, r.text[:500])
        assert all(h in r.headers for h in SECURITY)
        _safe(r.text)
    overview = "".join(markup(pages["/"].text).text)
    assert "Products9" in overview.replace(" ", "").replace("\n", "")
    assert pages["/"].text.count('<g class="day">') == 31  # a bar group per day of 30d
    suspects = markup(pages["/suspects"].text)
    text = "".join(suspects.text)
    assert f"01/{GTIN}/21/{COPIED}" in text
    for place in HOSTILE:
        assert place in text  # shown as the text it is
    assert "&lt;script&gt;" in pages["/suspects"].text
    batches = "".join(markup(pages["/batches"].text).text)
    assert "pending" in batches and "Aurora" not in batches
    stats = _get(server, "/stats.json", headers=_bearer()).json()
    assert stats["products"]["total"] == 9
    assert stats["suspect_codes"]["codes"][0]["reason"].count(HOSTILE[1]) == 1
    assert _get(server, "/", headers=_bearer()).headers["content-type"].startswith("text/html")
    metrics = _get(server, "/metrics", headers=_bearer())
    assert metrics.status_code == 200
    assert 'provmint_products{standing="pending"} 9.0' in metrics.text
    assert "provmint_suspect_codes 1.0" in metrics.text
    assert re.search(r'provmint_http_requests_total\{route="/suspects",status="200"', metrics.text)
    assert _get(server, "/metrics").status_code == 401


def _check_slow_head(server: Dashboard) -> None:
    """A request whose head trickles in is closed at [serve] header_timeout (the edge's
    protocol), before the token is even read."""
    import socket
    import time

    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        begun = time.monotonic()
        for _ in range(4):
            time.sleep(0.4)
            try:
                sock.sendall(b"X-Slow: 1\r\n")
            except OSError:
                break
        try:
            answer = sock.recv(100)
        except ConnectionResetError:  # closed while the last line was on its way
            answer = b""
        assert answer == b""  # closed, with no answer
        assert time.monotonic() - begun < 5


def _check_busy_store(cfg: Settings) -> None:
    """While a batch is being written (the store's lock held), a page shows the figures
    read before, saying so; with none read before, it answers 503."""
    from provmint.dashboard import app as app_module

    app = create_app(cfg, DashboardToken(TOKEN.encode(), "test"))
    bearer = [(b"authorization", f"Bearer {TOKEN}".encode())]
    assert _call(app, "/", b"", bearer, "192.0.2.9") == 200
    saved = app_module.CACHE_SECONDS, app_module.LOCK_SECONDS
    app_module.CACHE_SECONDS, app_module.LOCK_SECONDS = 0.0, 0.2
    try:
        with Store.open(cfg.store).lock(exclusive=True, timeout=5, purpose="test: mint"):
            page = _answer(app, "/", b"", bearer)
            assert page.status == 200 and "these figures are from" in page.body.decode()
            assert _call(app, "/scans", b"since=7d", bearer, "192.0.2.9") == 503
    finally:
        app_module.CACHE_SECONDS, app_module.LOCK_SECONDS = saved


def _answer(app: Any, path: str, query: bytes, headers: list[tuple[bytes, bytes]]) -> Any:
    """One request through the application's answer (status and body)."""
    from provmint.dashboard.app import _Request

    scope = {"method": "GET", "path": path, "query_string": query, "headers": headers,
             "client": ("192.0.2.9", 5000)}  # fmt: skip
    return asyncio.run(app.answer(_Request.of(scope)))


def test_the_dashboard_over_http(cli, keyed: Settings, dashboard) -> None:
    assert cli("batch", "create", "-j", "1", EXAMPLE_CSV).exit_code == 0
    fill_log(keyed)
    config = Path(os.environ["PROVMINT_CONFIG"])  # its last table is [serve]
    config.write_text(config.read_text() + "header_timeout = 1\n")
    server = dashboard(env={"PROVMINT_DASHBOARD_TOKEN": TOKEN})
    assert TOKEN not in "".join(server.lines)  # a token given is never printed
    _check_auth(server)
    _check_pages(server, keyed)
    _check_slow_head(server)
    _check_busy_store(keyed)
    head = httpx.head(server.url + "/scans", headers=_bearer(), timeout=20)
    assert head.status_code == 200 and head.content == b""
    # Wrong tokens, again and again: refused for a while, even the right one.
    codes = [_get(server, "/", headers=_bearer("wrong-" + TOKEN)).status_code for _ in range(12)]
    assert codes[0] == 403 and codes[-1] == 429
    assert _get(server, "/", headers=_bearer()).status_code == 429


def test_a_token_is_made_on_loopback_and_required_beyond(cli, keyed: Settings, dashboard) -> None:
    Store.open(keyed.store, create=True)
    r = cli("dashboard", "--host", "0.0.0.0")
    assert r.exit_code == 2 and "has no token" in r.stderr and "--token-file" in r.stderr
    short = keyed.store.parent / "short.token"
    short.write_text("tooshort\n")
    r = cli("dashboard", "--host", "0.0.0.0", "--token-file", short)
    assert r.exit_code == 2 and "16 to 512 characters" in r.stderr
    r = cli("dashboard", "--token-file", keyed.store.parent / "missing.token")
    assert r.exit_code == 2 and "cannot read the token file" in r.stderr

    server = dashboard()
    said = "".join(server.lines)
    found = re.search(r"Sign in: (http://127\.0\.0\.1:\d+)/\?token=(\S+)", said)
    assert found, said
    made = found.group(2)
    assert len(made) >= 43
    assert _get(server, "/").status_code == 401
    assert _get(server, "/", headers=_bearer(made)).status_code == 200
    token_file = keyed.store.parent / "dash.token"
    token_file.write_text(TOKEN + "\n")
    assert resolve_token("0.0.0.0", token_file, {}).matches(TOKEN)
    assert resolve_token("::1", None, {"PROVMINT_DASHBOARD_TOKEN": TOKEN}).origin.startswith("env")


def test_tokens_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every check compares two SHA-256 digests with hmac.compare_digest, so neither the
    token's content nor its length shows in the time taken."""
    seen: list[tuple[int, int]] = []
    real = auth_module.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        seen.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(auth_module.hmac, "compare_digest", spy)
    token = DashboardToken(TOKEN.encode(), "test")
    assert token.matches(TOKEN) and not token.matches("x") and not token.matches(TOKEN * 9)
    assert token.matches_session(token.session) and not token.matches_session(TOKEN)
    assert seen == [(32, 32)] * 5


def test_the_palette_is_readable() -> None:
    low = [(where, round(contrast_ratio(fg, bg), 2)) for where, fg, bg in PAIRS]
    assert [item for item in low if item[1] < 4.5] == []


@pytest.fixture
def bare_app(tmp_path: Path) -> Any:
    """The dashboard's application over an empty store (in this process)."""
    cfg = resolve_settings(store=tmp_path / "store", key_file=tmp_path / "k.json")
    Store.open(cfg.store, create=True)
    return create_app(cfg, DashboardToken(TOKEN.encode(), "test"))


def _call(
    app: Any, path: str, query: bytes, headers: list[tuple[bytes, bytes]], client: str
) -> int:
    """One request through the ASGI interface; its status."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "query_string": query,
        "headers": headers,
        "client": (client, 5000),
    }
    asyncio.run(app(scope, receive, send))
    start = sent[0]
    assert any(name == b"content-security-policy" for name, _ in start["headers"])
    body = sent[1]["body"].decode()
    if start["status"] != 303:
        _safe(body)
    return int(start["status"])


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.text(max_size=30).map(lambda s: "/" + s),
    query=st.binary(max_size=80),
    cookie=st.binary(max_size=80),
    authorization=st.binary(max_size=80),
    bearer=st.booleans(),
    client=st.integers(1, 254),
)
def test_hostile_requests_get_a_plain_answer(
    bare_app: Any,
    path: str,
    query: bytes,
    cookie: bytes,
    authorization: bytes,
    bearer: bool,
    client: int,
) -> None:
    headers = [(b"cookie", cookie), (b"authorization", authorization)]
    if bearer:
        headers.append((b"authorization", f"Bearer {TOKEN}".encode()))
    status = _call(bare_app, path, query, headers, f"192.0.2.{client}")
    assert status in (200, 303, 400, 401, 403, 404, 414, 429), status


@pytest.mark.postgres
def test_the_dashboard_on_postgresql(cli, keyed: Settings, pg_url: str, dashboard) -> None:
    Store.open(keyed.store, create=True)
    fill_log(resolve_settings(scan_log=pg_url))
    server = dashboard("--scan-log", pg_url, env={"PROVMINT_DASHBOARD_TOKEN": TOKEN})
    r = _get(server, "/suspects", headers=_bearer())
    assert r.status_code == 200
    text = "".join(_safe(r.text).text)
    assert f"01/{GTIN}/21/{COPIED}" in text and all(place in text for place in HOSTILE)
    assert "@127.0.0.1" in text  # the footer names the log, without a password
    assert not (keyed.store / "scans.sqlite").exists()


# --------------------------------------------------------------------------- Chromium


def _browse(url: str, token: str, shots: Path, *paths: str) -> list[dict[str, Any]]:
    """Sign in and open ``paths`` in headless Chromium (tests/browser/open_dashboard.mjs)."""
    from test_browser import _browser_ready

    require_marker("browser")
    node = _browser_ready()
    done = subprocess.run(
        [
            node,
            str(ROOT / "tests" / "browser" / "open_dashboard.mjs"),
            url,
            token,
            str(shots),
            *paths,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, f"open_dashboard.mjs failed:\n{done.stdout}\n{done.stderr}"
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


@pytest.mark.browser
def test_the_dashboard_in_chromium(cli, keyed: Settings, chain_env, dashboard, tmp_path) -> None:
    config = Path(os.environ["PROVMINT_CONFIG"])
    config.write_text(
        config.read_text() + '\n[brand]\nexplorer = "https://explorer.example/tx/{tx}"\n'
    )
    assert cli("batch", "create", "-j", "1", EXAMPLE_CSV).exit_code == 0
    anchor = json.loads(cli("anchor", "--json").stdout)["anchor"]
    fill_log(keyed)
    stats = json.loads(cli("stats", "--json").stdout)
    assert stats["products"]["anchored"] == 9 and stats["batches"]["anchored"] == 1
    assert stats["anchors"]["fee_wei"] == anchor["fee_wei"] and int(anchor["fee_wei"]) > 0

    server = dashboard(env={"PROVMINT_DASHBOARD_TOKEN": TOKEN})
    shots = tmp_path / "shots"
    shots.mkdir()
    login, *pages = _browse(server.url, TOKEN, shots, *PAGES)
    assert login["status"] == 200 and "token" not in login["url"]
    assert login["cookie"] == {"httpOnly": True, "sameSite": "Strict"}
    seen = {page["path"]: page for page in pages}
    for path, page in seen.items():
        assert page["status"] == 200, page
        assert page["scripts"] == 0 and page["handlers"] == 0 and page["pwned"] is False
        assert all(url.startswith(server.url) for url in page["requests"]), page["requests"]
        shot = shots / f"{path.strip('/') or 'overview'}.png"
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    assert seen["/"]["charts"] == 1 and seen["/"]["bars"] >= 2
    assert seen["/scans"]["charts"] == 1
    assert "anchored" in seen["/batches"]["text"] and anchor["tx_hash"] in seen["/batches"]["text"]
    tx_link = f"https://explorer.example/tx/{anchor['tx_hash']}"
    assert seen["/anchors"]["txLinks"] == [tx_link] and seen["/batches"]["txLinks"] == [tx_link]
    assert "confirmed" in seen["/anchors"]["text"]
    suspects = seen["/suspects"]["text"]
    assert f"01/{GTIN}/21/{COPIED}" in suspects
    assert all(place in suspects for place in HOSTILE)  # text on the page, never markup
    assert seen["/suspects"]["heading"] == "Suspect codes"


ALLOWED_TAGS = {
    "html", "head", "meta", "title", "style", "body", "header", "b", "nav", "a", "main",
    "h1", "h2", "div", "p", "table", "thead", "tbody", "tr", "th", "td", "span", "ul", "li",
    "svg", "g", "rect", "line", "text", "footer", "form", "label", "br", "input", "button",
}  # fmt: skip


@settings(max_examples=25, deadline=None)
@given(
    place=st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=64),
    label=st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=40),
)
def test_any_text_is_shown_as_text(place: str, label: str) -> None:
    """Whatever a visitor typed as a place, or the operator as a batch label, every page
    shows it as the very text it is, inside the page's own elements only."""
    from datetime import UTC, date, datetime

    from provmint.dashboard.render import View, render
    from provmint.stats import (
        AnchorCosts,
        BatchStanding,
        CatalogFacts,
        DayScans,
        DiskUsage,
        Standing,
        StoreStats,
        SuspectCode,
        Tally,
    )

    reason = f"seen from 2 places by 2 different clients within 7 days: {place}, Oslo"
    stats = StoreStats(
        at=datetime.now(UTC),
        since=date(2026, 11, 1),
        batches=Tally(pending=1),
        products=Tally(pending=9),
        anchors=AnchorCosts({"confirmed": 0}, 0, 0),
        days=(DayScans(date(2026, 11, 1), {"genuine": 1, "suspect": 1}),),
        suspects=(SuspectCode(GTIN, COPIED, "2026-11-01T10:00:00.000000Z", 1, True, reason, None),),
        suspects_complete=True,
        disk=DiskUsage(batches=10),
        scan_log=f"/srv/{label}/scans.sqlite",
        catalog=CatalogFacts(
            (
                BatchStanding(
                    1, "20261101-abcd", "2026-11-01T10:00:00Z", label, 9, Standing.PENDING, None
                ),
            ),
        ),
    )
    view = View(stats, "30d", "https://explorer.example/tx/{tx}")
    for path in PAGES:
        page = render(view, path)
        assert page is not None
        parsed = _safe(page.body)
        assert set(parsed.tags) <= ALLOWED_TAGS, set(parsed.tags) - ALLOWED_TAGS
        text = "".join(parsed.text)
        assert f"/srv/{label}/scans.sqlite" in text
        if path in ("/", "/suspects"):
            assert reason in text
        if path == "/batches":
            assert label in text
