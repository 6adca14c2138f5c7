"""The dashboard's ASGI application and its server.

A plain ASGI application, as :mod:`provmint.server` is, behind the same edges
(:mod:`provmint.edge`): the security headers on every answer, ``Cache-Control:
no-store``, the bounds on a request's head (431) and uvicorn's protocol with a deadline
for the head. Every request shows the token first (:mod:`.auth`); then ``GET`` or
``HEAD`` of a page, ``/stats.json`` (what ``provmint stats --json`` prints) or
``/metrics`` (Prometheus, :mod:`.scrape`). Nothing is written: the catalog is read
under the shared store lock, the scan log through its reading methods.

The statistics behind the pages are computed in a worker thread (the catalog and the
scan log block) and kept for :data:`CACHE_SECONDS`, so a reloading browser or several
operators cost one computation.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote

from provmint.config import Settings, checked_age
from provmint.dashboard.auth import COOKIE, DashboardToken
from provmint.dashboard.render import PAGES, View, render, render_error, render_login
from provmint.dashboard.scrape import DashboardMetrics
from provmint.edge import (
    NO_STORE,
    SECURITY_HEADERS,
    RateLimiter,
    retry_after,
    sigterm_returns,
    uvicorn_config,
)
from provmint.errors import ConfigError, ProvmintError, StoreBusyError
from provmint.stats import StoreStats, store_stats
from provmint.store import Store
from provmint.store.scanlog import ScanLog, open_scan_log

__all__ = ["CACHE_SECONDS", "DEFAULT_SINCE", "Dashboard", "create_app", "serve"]

DEFAULT_SINCE = "30d"
"""The window of scans the pages show unless ``?since=`` says otherwise."""
CACHE_SECONDS = 5.0
"""How long computed statistics are shown before they are computed again."""
LOCK_SECONDS = 2.0
"""How long a page waits for the store lock (a batch being committed) before it fails."""
MAX_QUERY_BYTES = 1024
FAILURES_PER_MINUTE = 10
"""Wrong tokens a client may send per minute before it is refused (429) for a while."""
LOCKOUT_SECONDS = 30.0
"""How long a client that sent too many wrong tokens is refused, whatever it sends."""
SESSION_SECONDS = 12 * 3600
"""How long the session cookie lasts."""
_PATHS = {path for path, _ in PAGES}
_OTHER_PATHS = ("/stats.json", "/metrics")
_Receive = Callable[[], Awaitable[dict[str, Any]]]
_Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class _Request:
    """What the dashboard reads of a request."""

    method: str
    path: str
    query: bytes
    peer: str
    authorization: bytes = b""
    accept: bytes = b""
    cookies: tuple[bytes, ...] = ()
    https: bool = False
    """The TLS proxy in front said the browser used https (the cookie gets ``Secure``)."""
    header_count: int = 0
    header_bytes: int = 0

    @classmethod
    def of(cls, scope: dict[str, Any]) -> _Request:
        """The request of an ASGI ``http`` scope."""
        authorization = accept = b""
        cookies: list[bytes] = []
        https = False
        size = 0
        headers = scope["headers"]
        for name, value in headers:
            size += len(name) + len(value)
            if name == b"authorization":
                authorization = value
            elif name == b"accept":
                accept = value
            elif name == b"cookie":
                cookies.append(value)
            elif name == b"x-forwarded-proto":
                https = value.strip().lower() == b"https"
        client = scope.get("client")
        return cls(
            method=scope["method"],
            path=scope["path"],
            query=scope.get("query_string", b""),
            peer=str(client[0]) if client else "",
            authorization=authorization,
            accept=accept,
            cookies=tuple(cookies),
            https=https,
            header_count=len(headers),
            header_bytes=size + 4 * len(headers),
        )

    def cookie(self, name: str) -> bytes | None:
        """The value of cookie ``name``, if sent."""
        wanted = name.encode()
        for header in self.cookies:
            for pair in header.split(b";"):
                key, _, value = pair.strip().partition(b"=")
                if key == wanted:
                    return value
        return None

    def bearer(self) -> bytes | None:
        """The token of an ``Authorization: Bearer`` header, if sent."""
        scheme, _, value = self.authorization.strip().partition(b" ")
        return value.strip() if scheme.lower() == b"bearer" and value.strip() else None


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    body: bytes
    media_type: str = "text/html; charset=utf-8"
    headers: tuple[tuple[bytes, bytes], ...] = ()

    def all_headers(self) -> list[tuple[bytes, bytes]]:
        """Its headers, the edge's security headers and ``no-store`` included."""
        return [
            (b"content-type", self.media_type.encode()),
            (b"content-length", str(len(self.body)).encode()),
            *SECURITY_HEADERS,
            NO_STORE,
            *self.headers,
        ]


def _page(status: int, text: str, *headers: tuple[bytes, bytes]) -> _Response:
    return _Response(status, text.encode(), headers=headers)


_CHALLENGE = (b"www-authenticate", b'Bearer realm="provmint dashboard"')


@dataclass
class _Failures:
    """Wrong tokens per client: past :data:`FAILURES_PER_MINUTE`, a client is refused
    for :data:`LOCKOUT_SECONDS` whatever it sends (so it learns nothing from trying)."""

    limiter: RateLimiter = field(
        default_factory=lambda: RateLimiter(FAILURES_PER_MINUTE, 60.0, max_clients=10_000)
    )
    blocked: OrderedDict[str, float] = field(default_factory=OrderedDict)

    def wait(self, peer: str) -> float:
        """Seconds ``peer`` must wait before its token is looked at (0: none)."""
        until = self.blocked.get(peer)
        if until is None:
            return 0.0
        left = until - time.monotonic()
        if left <= 0:
            del self.blocked[peer]
            return 0.0
        return left

    def count(self, peer: str) -> None:
        """One wrong token from ``peer``."""
        wait = self.limiter.hit(peer)
        if wait:
            self.blocked[peer] = time.monotonic() + max(wait, LOCKOUT_SECONDS)
            self.blocked.move_to_end(peer)
            if len(self.blocked) > 10_000:
                self.blocked.popitem(last=False)


class Dashboard:
    """The ASGI application (see the module's docstring)."""

    def __init__(
        self,
        settings: Settings,
        token: DashboardToken,
        *,
        since: str = DEFAULT_SINCE,
        log: ScanLog | None = None,
    ) -> None:
        Store.open(settings.store)  # a dashboard of nothing is a mistake: say so at start
        checked_age(since, "--since")
        self.settings = settings
        self.token = token
        self.since = since
        self.log = log or open_scan_log(settings, pool_size=1)
        self.failures = _Failures()
        self._cache: dict[str, tuple[float, StoreStats]] = {}
        self._computing = asyncio.Lock()
        self._latest: StoreStats | None = None
        """The statistics of the default window last computed (for /metrics)."""
        self.metrics = DashboardMetrics((*_PATHS, *_OTHER_PATHS), lambda: self._latest)

    async def __call__(self, scope: dict[str, Any], receive: _Receive, send: _Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # no websockets: uvicorn closes the connection
        started = time.monotonic()
        request = _Request.of(scope)
        try:
            answer = await self.answer(request)
        except Exception:
            logging.getLogger("uvicorn.error").exception("error answering %s", scope["path"])
            answer = _page(500, render_error(500, "internal error"))
        self.metrics.count(request.path, answer.status, time.monotonic() - started)
        await send(
            {
                "type": "http.response.start",
                "status": answer.status,
                "headers": answer.all_headers(),
            }
        )
        body = b"" if scope["method"] == "HEAD" else answer.body
        await send({"type": "http.response.body", "body": body})

    async def _lifespan(self, receive: _Receive, send: _Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.to_thread(self.log.close)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def answer(self, request: _Request) -> _Response:
        """The answer to one request: the edges' limits, the token, then the page."""
        edges = self.settings.serve
        if (
            request.header_count > edges.max_headers
            or request.header_bytes > edges.max_header_bytes
        ):
            return _page(431, render_error(431, "the request's headers are too large"))
        if len(request.query) > MAX_QUERY_BYTES:
            return _page(414, render_error(414, "the address is too long"))
        query = dict(parse_qsl(request.query.decode("latin-1"), keep_blank_values=True))
        refused = self._authorize(request, query)
        if refused is not None:
            return refused
        if request.method not in ("GET", "HEAD"):
            return _page(
                405, render_error(405, "the dashboard only reads"), (b"allow", b"GET, HEAD")
            )
        since = query.get("since") or self.since
        try:
            checked_age(since, "since")
        except ConfigError as exc:
            return _page(400, render_error(400, f"{exc} ({exc.hint})"))
        if request.path not in _OTHER_PATHS and request.path not in _PATHS:
            return _page(404, render_error(404, "no such page"))
        try:
            stats, notice = await self._stats(self.since if request.path == "/metrics" else since)
        except ProvmintError as exc:
            return _page(503, render_error(503, str(exc)))
        if request.path == "/metrics":
            body, media_type = self.metrics.scrape(request.accept.decode("latin-1"))
            return _Response(200, body, media_type)
        if request.path == "/stats.json":
            body = json.dumps(stats.to_json(), ensure_ascii=False).encode()
            return _Response(200, body, "application/json")
        view = View(stats, since, self.settings.brand.explorer, notice)
        page = render(view, request.path)
        if page is None:
            return _page(404, render_error(404, "no such page"))
        return _page(200, page.body)

    def _authorize(self, request: _Request, query: dict[str, str]) -> _Response | None:
        """None when the request shows the token; else the answer: a login (303 with the
        session cookie), 401 (nothing shown, or a stale cookie), 403 (a wrong token),
        429 (too many wrong tokens lately)."""
        wait = self.failures.wait(request.peer)
        if wait:
            message = f"too many wrong tokens; try again in {retry_after(wait)} s"
            return _page(
                429, render_error(429, message), (b"retry-after", str(retry_after(wait)).encode())
            )
        given = query.get("token")
        if given is not None:
            if not self.token.matches(given):
                return self._wrong(request)
            return self._login(request, query)
        bearer = request.bearer()
        if bearer is not None:
            return None if self.token.matches(bearer) else self._wrong(request)
        session = request.cookie(COOKIE)
        if session is not None and self.token.matches_session(session):
            return None
        expired = (b"set-cookie", f"{COOKIE}=; Path=/; Max-Age=0".encode())
        message = (
            "Your session has ended: sign in again."
            if session is not None
            else "This dashboard needs its token."
        )
        headers = (_CHALLENGE, expired) if session is not None else (_CHALLENGE,)
        return _page(401, render_login(message), *headers)

    def _wrong(self, request: _Request) -> _Response:
        self.failures.count(request.peer)
        return _page(403, render_login("That token is not this dashboard's."), _CHALLENGE)

    def _login(self, request: _Request, query: dict[str, str]) -> _Response:
        """The session cookie, and the page asked for without the token in its address."""
        path = request.path if request.path in _PATHS or request.path in _OTHER_PATHS else "/"
        kept = {k: v for k, v in query.items() if k == "since"}
        location = path + ("?since=" + quote(kept["since"], safe="") if kept else "")
        cookie = (
            f"{COOKIE}={self.token.session}; Path=/; HttpOnly; SameSite=Strict; "
            f"Max-Age={SESSION_SECONDS}" + ("; Secure" if request.https else "")
        )
        return _Response(
            303,
            b"",
            "text/plain; charset=utf-8",
            ((b"location", location.encode()), (b"set-cookie", cookie.encode())),
        )

    async def _stats(self, since: str) -> tuple[StoreStats, str | None]:
        """The statistics for a window, from the cache while fresh, and a notice for the
        page when they are older: a batch being written holds the store's lock for as
        long as it takes, and the figures read before are shown meanwhile."""
        async with self._computing:
            found = self._cache.get(since)
            if found is not None and time.monotonic() - found[0] < CACHE_SECONDS:
                return found[1], None
            try:
                stats = await asyncio.to_thread(self._compute, since)
            except StoreBusyError as exc:
                if found is None:
                    raise
                at = found[1].to_json()["at"][11:16]
                return found[1], f"{exc}: these figures are from {at} UTC."
            if len(self._cache) > 16:
                self._cache.clear()
            self._cache[since] = (time.monotonic(), stats)
            if since == self.since:
                self._latest = stats
            return stats, None

    def _compute(self, since: str) -> StoreStats:
        now = datetime.now(UTC)
        first = (now - checked_age(since, "since")).date()
        return store_stats(
            self.settings, since=first, at=now, log=self.log, lock_timeout=LOCK_SECONDS
        )


def create_app(
    settings: Settings, token: DashboardToken, *, since: str = DEFAULT_SINCE
) -> Dashboard:
    """The dashboard's ASGI application for a store (and the scan log its settings
    name), showing the scans of ``since`` (an age: ``30d``) unless a page asks for
    another window."""
    return Dashboard(settings, token, since=since)


def serve(
    settings: Settings,
    token: DashboardToken,
    *,
    host: str = "127.0.0.1",
    port: int = 8090,
    since: str = DEFAULT_SINCE,
    access_log: bool = False,
    on_ready: Callable[[tuple[str, int]], None] | None = None,
) -> None:
    """Serve the dashboard in this process until interrupted (Ctrl-C or SIGTERM).
    ``port`` 0 picks a free port; ``on_ready`` gets the bound ``(host, port)``."""
    import uvicorn

    from provmint.supervisor import bind

    app = create_app(settings, token, since=since)
    sock = bind(host, port)
    bound = sock.getsockname()[:2]
    config = uvicorn_config(app, settings.serve, access_log=access_log, graceful_seconds=5)
    try:
        sock.listen(128)
        if on_ready is not None:
            on_ready(bound)
        with sigterm_returns():
            uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
