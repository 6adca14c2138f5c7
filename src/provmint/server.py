"""``provmint serve``: the read-only verification service behind the printed URLs.

``GET /01/{gtin}[/10/{lot}]/21/{serial}?t={token}`` answers with a small mobile page
("Genuine product", "Not recognised", "Possible copy") or JSON (``Accept:
application/json``); ``GET /proof/01/...?t={token}`` returns the product's proof for
independent checking with ``provmint verify``; ``GET /healthz`` says the service is up.
Every code lookup is logged like ``provmint scan`` does, in the same scan log (SQLite in
the store, or PostgreSQL shared by replicas). A scan that cannot be logged (the store is
read-only, PostgreSQL is down) is never dropped silently: the answer keeps its verdict,
says the scan was not logged (so the copy check could not run) and has status 503, and
``/healthz`` fails until scans can be logged again.

``serve`` runs ``workers`` processes on one port (:mod:`provmint.supervisor`); each
builds its own application, index and scan-log connections.

The service never opens the catalog for longer than a refresh: it finds products
through the store's index (memory-mapped sorted runs, reloaded when the catalog changes)
and reads their records from the batches' record parts, so a lookup costs the same at
any store size. Paths are parsed from
the raw request bytes (a ``%2F`` inside a serial stays in the serial); anything that is
not a well-formed Digital Link gets 400 or 404 at once. Responses never carry other
products' tokens, keys or store paths, and a forged code gets exactly the answer an
unknown one gets (nobody learns which serials exist). Only page views count as scans
(not the proof download or HEAD requests).
"""

from __future__ import annotations

import asyncio
import html
import json
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from provmint import gs1
from provmint.config import Settings
from provmint.errors import KeyringError
from provmint.keys import Keyring, load_keyring
from provmint.products import (
    ProductRecord,
    anchor_section,
    catalog_view,
    product_record,
    proof_of,
)
from provmint.scan import DEFAULT_CLONE_SCANS, Verdict, judge, suspicious
from provmint.store import BatchInfo, Store
from provmint.store.lookup import ProductFinder
from provmint.store.scanlog import (
    GOOD_VERDICTS,
    ScanLogError,
    ScanRequest,
    clean_location,
    open_scan_log,
)
from provmint.store.scanlog.writer import ScanWriter

if TYPE_CHECKING:
    import socket

__all__ = ["ProductIndex", "create_app", "serve"]

MAX_PATH_BYTES = 512
MAX_QUERY_BYTES = 256
REFRESH_SECONDS = 2.0
SWITCH_INTERVAL = 0.0002
"""Seconds a serving process's thread keeps the GIL while another wants it."""
LOG_WAIT_SECONDS = 3.0
"""How long an answer waits for its scan to be logged before it is given without. Above
PostgreSQL's own bound on waiting for a connection (2 s), so that its error is the one
reported; far below SQLite's patience with a lock another process holds (30 s)."""
NOT_RECOGNISED_SECONDS = 0.005
"""The least time a "not recognised" answer takes. A forged code (a real serial with a
made-up token) costs a record read and an HMAC that an unknown serial does not: without
a floor above both, the answer's timing would tell which serials exist."""
NOT_LOGGED = (
    "this scan could not be recorded, so we could not check whether this label has "
    "been copied; please scan it again later"
)
"""What a page and a JSON answer say when the scan log cannot be written."""


class ProductIndex:
    """Everything the service reads, refreshed when the catalog changes: the batches, their
    anchors, and the store's product finder (memory-mapped index runs and record parts:
    every worker shares their pages through the page cache, nothing grows per product)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = Store.open(settings.store)
        self._lock = threading.Lock()
        self._stamp: tuple[float, int] | None = None
        self._checked = 0.0
        self.batches: dict[int, BatchInfo] = {}
        self.anchors: dict[int, dict[str, Any] | None] = {}
        self.finder: ProductFinder | None = None
        self._retired: list[ProductFinder] = []
        self.reload()

    def reload(self) -> None:
        """Load batches, anchors and the finder from the catalog (shared lock, brief)."""
        stamp = self.store.catalog_stamp()
        batches: list[BatchInfo] = []
        anchors: dict[int, dict[str, Any] | None] = {}
        finder = None
        if stamp != (0.0, 0):
            with catalog_view(self.settings) as (store, view):
                finder = ProductFinder.open(store, view)
            batches = list(view.batches)
            anchors = {b.seq: anchor_section(view.anchor_for_batch(b.seq), b) for b in batches}
        with self._lock:
            # The finder replaced may be in use by a request right now: it is closed at
            # the next reload, seconds later.
            for old in self._retired:
                old.close()
            self._retired = [self.finder] if self.finder is not None else []
            self.batches = {b.seq: b for b in batches}
            self.anchors = anchors
            self.finder = finder
            self._stamp = stamp

    def refresh(self) -> None:
        """Reload if the catalog changed (checked at most every REFRESH_SECONDS)."""
        now = time.monotonic()
        if now - self._checked < REFRESH_SECONDS:
            return
        self._checked = now
        if self.store.catalog_stamp() != self._stamp:
            self.reload()

    @property
    def products(self) -> int:
        """Number of products served."""
        return self.finder.products if self.finder is not None else 0

    def find(self, gtin14: str, serial: str) -> ProductRecord | None:
        """The stored product with this identity, if any (hash hit confirmed)."""
        finder = self.finder
        if finder is None:
            return None
        found = finder.by_key(gtin14, serial)
        return product_record(found) if found is not None else None


@dataclass(frozen=True, slots=True)
class _Outcome:
    verdict: str
    reason: str
    product: ProductRecord | None
    anchor: dict[str, Any] | None
    scans: int
    logged: bool | None = None
    """Whether this scan was logged (None: not a logged request, or not recognised)."""


PUBLIC_COPY_REASON = (
    "this code has been checked more often, or in more places, than one label would be: "
    "it may have been copied"
)
"""What the public answer says of a possible copy (the operator's tools say why)."""

_TITLES = {
    "genuine": ("Genuine product", "#1b7f3b"),
    "pending": ("Genuine record, not yet anchored", "#9a6700"),
    "suspect": ("Possible copy", "#b35900"),
    "forged": ("Not recognised", "#b42318"),
    "unknown": ("Not recognised", "#b42318"),
    "unavailable": ("Cannot check now", "#57606a"),
}
_STATUS = {
    "genuine": 200,
    "pending": 200,
    "suspect": 200,
    "forged": 404,
    "unknown": 404,
    "unavailable": 503,
}
_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body{{font-family:system-ui,-apple-system,sans-serif;margin:0;background:#f6f7f9;color:#1f2328}}
main{{max-width:32rem;margin:0 auto;padding:1rem}}
.verdict{{background:{color};color:#fff;border-radius:12px;padding:1.25rem;margin:1rem 0}}
.verdict h1{{margin:0;font-size:1.6rem}} .verdict p{{margin:.5rem 0 0}}
table{{width:100%;border-collapse:collapse;background:#fff;border-radius:12px}}
th,td{{text-align:left;padding:.55rem .75rem;border-bottom:1px solid #e6e8eb;font-size:.95rem;
word-break:break-all}} th{{color:#57606a;font-weight:500;width:40%}}
footer{{color:#57606a;font-size:.8rem;margin:1rem 0}} a{{color:#0969da}}
.notice{{background:#fff8c5;border:1px solid #d4a72c;border-radius:12px;padding:.75rem 1rem;
margin:1rem 0}}
</style></head>
<body><main>
<div class="verdict" id="verdict" data-verdict="{verdict}"><h1>{title}</h1><p>{reason}</p></div>
{details}
<footer>Checked {checked}. {proof}</footer>
</main></body></html>
"""


def _details(outcome: _Outcome) -> str:
    notice = ""
    if outcome.logged is False:
        text = NOT_LOGGED[0].upper() + NOT_LOGGED[1:] + "."
        notice = f'<p class="notice" id="not-logged">{html.escape(text)}</p>'
    rows = []
    if outcome.product is not None and outcome.verdict in GOOD_VERDICTS:
        for name, value in outcome.product.record.items():
            rows.append((name.replace("_", " "), value))
        rows.append(("batch", outcome.product.batch.batch_id))
        if outcome.anchor:
            when = datetime.fromtimestamp(outcome.anchor["block_time"], UTC)
            rows.append(
                (
                    "anchored",
                    f"block {outcome.anchor['block_number']} of chain "
                    f"{outcome.anchor['chain_id']}, {when:%Y-%m-%d %H:%M} UTC",
                )
            )
            rows.append(("transaction", outcome.anchor["tx_hash"]))
        if outcome.logged is not False:
            rows.append(("scans of this code", str(outcome.scans)))
    if not rows:
        return notice
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"{notice}<table>{body}</table>"


class _Service:
    def __init__(
        self,
        settings: Settings,
        clone_threshold: int,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.index = ProductIndex(settings)
        self.keyring: Keyring = load_keyring(settings.key_file)
        missing = self.missing_keys()
        if missing:
            raise KeyringError(
                f"{settings.key_file} lacks key {missing[0][1]} of batch {missing[0][0]}: "
                "its genuine labels would be rejected",
                hint="serve with the key file the batches were minted with",
            )
        self.log = open_scan_log(settings, service=True)
        self.writer = ScanWriter(self.log, wait=LOG_WAIT_SECONDS)
        self.clone_threshold = clone_threshold
        self.notify = notify or (lambda _: None)
        self._log_failing = False

    def log_state(self, error: ScanLogError | None) -> None:
        """Report the scan log failing, and working again, once each (not per scan)."""
        if error is not None and not self._log_failing:
            self.notify(f"scans are not being logged: {error}")
        elif error is None and self._log_failing:
            self.notify(f"scans are being logged again ({self.log.where})")
        self._log_failing = error is not None

    def missing_keys(self) -> list[tuple[str, str]]:
        """(batch, key id) of batches whose key the key file does not hold."""
        held = {k.id for k in self.keyring.keys}
        return [(b.batch_id, b.key_id) for b in self.index.batches.values() if b.key_id not in held]

    async def check(self, link: gs1.DigitalLink, location: str | None, *, log: bool) -> _Outcome:
        self.index.refresh()
        product = self.index.find(link.gtin14, link.serial)
        if product is not None and all(k.id != product.batch.key_id for k in self.keyring.keys):
            # Minted with a key this service lacks (a batch added since it started): an
            # operator problem, not a counterfeit.
            return _Outcome("unavailable", "this code cannot be checked right now", None, None, 0)
        anchor = self.index.anchors.get(product.batch.seq) if product else None
        verdict, reason = judge(
            product.record if product else None,
            product.batch.key_id if product else None,
            self.keyring,
            link.token,
            link.lot,
            anchor is not None,
        )
        scans, logged = 0, None
        if product is not None and log and not verdict.shows_real_token:
            # A forged code: logged for the operator, but its answer does not wait (that
            # would tell it from an unknown one, which is not logged).
            self.writer.send(ScanRequest(link.gtin14, link.serial, verdict, location, "serve"))
        elif product is not None and log:
            try:
                stats = await self.writer.record(
                    ScanRequest(link.gtin14, link.serial, verdict, location, "serve")
                )
            except ScanLogError as exc:
                self.log_state(exc)
                logged = False
            else:
                self.log_state(None)
                logged = True
                scans = stats.count
                if verdict.shows_real_token and suspicious(stats, self.clone_threshold):
                    # Never the places themselves: they are what earlier visitors typed
                    # into the link (``loc``), so repeating them would let anyone write
                    # on the brand's page. They are the operator's, in the scan log.
                    verdict, reason = Verdict.SUSPECT, PUBLIC_COPY_REASON
        if verdict in (Verdict.FORGED, Verdict.UNKNOWN):  # one answer for both, on purpose
            return _Outcome(
                "unknown", "this code does not match any product we made", None, None, 0
            )
        return _Outcome(verdict, reason, product, anchor, scans, logged)


def _status(outcome: _Outcome) -> int:
    """The HTTP status of an answer: the verdict's, or 503 when the scan was not logged."""
    return 503 if outcome.logged is False else _STATUS[outcome.verdict]


@dataclass(frozen=True, slots=True)
class _Response:
    """One answer: its status, body and media type (``Cache-Control: no-store`` unless
    ``cacheable``: a verdict holds only for the moment it was given)."""

    status: int
    body: bytes
    media_type: str
    cacheable: bool = False
    allow: str | None = None
    """The methods allowed, for a 405."""

    def headers(self) -> list[tuple[bytes, bytes]]:
        """The HTTP headers of this answer."""
        headers = [
            (b"content-type", self.media_type.encode()),
            (b"content-length", str(len(self.body)).encode()),
        ]
        if not self.cacheable:
            headers.append((b"cache-control", b"no-store"))
        if self.allow is not None:
            headers.append((b"allow", self.allow.encode()))
        return headers


def _json(value: Any, status: int = 200, *, cacheable: bool = False) -> _Response:
    body = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return _Response(status, body.encode(), "application/json", cacheable)


def _html(page: str, status: int) -> _Response:
    return _Response(status, page.encode(), "text/html; charset=utf-8")


_ERROR_TITLES = {404: "Not recognised", 405: "Not allowed"}
"""The heading of an error page, by status (400 otherwise: "Bad request")."""


def _bad(status: int, message: str, wants_json: bool, *, allow: str | None = None) -> _Response:
    if wants_json:
        answer = _json({"error": message}, status)
    else:
        title = _ERROR_TITLES.get(status, "Bad request")
        answer = _html(
            _PAGE.format(
                title=title,
                color="#b42318",
                verdict="error",
                reason=html.escape(message),
                details="",
                checked=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                proof="",
            ),
            status,
        )
    return answer if allow is None else replace(answer, allow=allow)


MAX_HEADER_TEXT = 512
"""Characters kept of a header the service reads (a stranger's text: bounded)."""


@dataclass(frozen=True, slots=True)
class _Request:
    """What the service reads of an HTTP request (ASGI scope): the raw path and query
    bytes as sent, the method, whether the client asked for JSON, and (each cut to
    :data:`MAX_HEADER_TEXT` characters) the peer's address, the user agent and the
    accepted languages."""

    method: str
    path: bytes
    query: bytes
    wants_json: bool
    peer: str = ""
    """The connection's remote address as uvicorn gives it ("" when unknown)."""
    user_agent: str = ""
    accept_language: str = ""

    @classmethod
    def of(cls, scope: dict[str, Any]) -> _Request:
        """The request of an ASGI ``http`` scope."""
        accept = agent = language = b""
        for name, value in scope["headers"]:
            if name == b"accept":
                accept = value
            elif name == b"user-agent":
                agent = value
            elif name == b"accept-language":
                language = value
        client = scope.get("client")
        return cls(
            method=scope["method"],
            path=scope.get("raw_path") or scope["path"].encode(),
            query=scope.get("query_string", b""),
            wants_json=b"application/json" in accept,
            peer=str(client[0])[:MAX_HEADER_TEXT] if client else "",
            user_agent=agent[:MAX_HEADER_TEXT].decode("latin-1"),
            accept_language=language[:MAX_HEADER_TEXT].decode("latin-1"),
        )


_READ_METHODS = ("GET", "HEAD")


class _App:
    """The ASGI application: ``/healthz`` and the product codes, with nothing between
    uvicorn and the service (the code path is the hot path; a framework's routing,
    request and response objects cost as much as the lookup)."""

    def __init__(self, service: _Service) -> None:
        self.service = service

    async def __call__(
        self,
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[dict[str, Any]]],
        send: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # no websockets here: uvicorn closes the connection
        answer = await self.answer(_Request.of(scope))
        await send(
            {"type": "http.response.start", "status": answer.status, "headers": answer.headers()}
        )
        await send({"type": "http.response.body", "body": answer.body})

    async def _lifespan(
        self,
        receive: Callable[[], Awaitable[dict[str, Any]]],
        send: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.get_running_loop().run_in_executor(None, self.service.writer.close)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def answer(self, request: _Request) -> _Response:
        """The answer to one request."""
        if request.path == b"/healthz":
            if request.method not in _READ_METHODS:
                return _bad(405, "method not allowed", True, allow="GET, HEAD")
            return await self.health()
        if request.method not in _READ_METHODS:
            return _bad(405, "method not allowed", request.wants_json, allow="GET, HEAD")
        return await self.code(request)

    async def health(self) -> _Response:
        """``/healthz``: 200 with the counts while scans can be logged, 503 otherwise
        (within :data:`LOG_WAIT_SECONDS`); both say how many scans went unlogged."""
        service = self.service
        service.index.refresh()
        try:
            await service.writer.check()
        except ScanLogError as exc:
            service.log_state(exc)
            return _json(
                {
                    "status": "unavailable",
                    "reason": "scans cannot be logged now",
                    "scans_not_logged": service.writer.failures,
                },
                503,
            )
        service.log_state(None)
        return _json(
            {
                "status": "ok",
                "batches": len(service.index.batches),
                "products": service.index.products,
                "scans_not_logged": service.writer.failures,
            },
        )

    async def code(self, request: _Request) -> _Response:
        """A product code's page or JSON answer, or its proof (``/proof/01/...``)."""
        wants_json = request.wants_json
        if len(request.path) > MAX_PATH_BYTES or len(request.query) > MAX_QUERY_BYTES:
            return _bad(
                414 if len(request.path) > MAX_PATH_BYTES else 400, "request too long", wants_json
            )
        try:
            path = request.path.decode("ascii")
            text = request.query.decode("ascii")
        except UnicodeDecodeError:
            return _bad(400, "the address is not valid", wants_json)
        proof = path.startswith("/proof/")
        link_path = path[len("/proof") :] if proof else path
        if not link_path.startswith("/01/"):
            return _bad(404, "no such page", wants_json)
        try:
            link = gs1.parse_digital_link(link_path + ("?" + text if text else ""))
        except gs1.DigitalLinkError as exc:
            return _bad(400, f"not a valid product code: {exc}", wants_json)
        # Parsing the query costs tens of microseconds: only when it may hold a loc.
        location = None
        if "loc" in text or "%" in text:
            location = dict(parse_qsl(text, keep_blank_values=True)).get("loc") or None
        started = time.monotonic()
        outcome = await self.service.check(
            link, clean_location(location), log=not proof and request.method == "GET"
        )
        if outcome.verdict == Verdict.UNKNOWN:
            await asyncio.sleep(max(0.0, started + NOT_RECOGNISED_SECONDS - time.monotonic()))
        genuine = outcome.product is not None and outcome.verdict in GOOD_VERDICTS
        if proof:
            if outcome.product is None or not genuine:
                return _bad(404, "no proof for this code", True)
            return _json(proof_of(self.service.index.store, outcome.product, outcome.anchor))
        if wants_json:
            return _json(_json_answer(outcome, genuine), _status(outcome))
        return _html(_page(outcome, link_path, link.token or ""), _status(outcome))


def _json_answer(outcome: _Outcome, genuine: bool) -> dict[str, Any]:
    """The JSON form of a code's answer."""
    product = outcome.product if genuine else None
    body: dict[str, Any] = {
        "verdict": outcome.verdict,
        "reason": outcome.reason,
        "product": product.record if product is not None else None,
        "batch_id": product.batch.batch_id if product is not None else None,
        "anchor": outcome.anchor if outcome.verdict in ("genuine", "suspect") else None,
        "scans": None if outcome.logged is False else outcome.scans,
        "logged": outcome.logged,
    }
    if outcome.logged is False:
        body["notice"] = NOT_LOGGED
    return body


def _page(outcome: _Outcome, link_path: str, token: str) -> str:
    """The HTML page of a code's answer."""
    title, color = _TITLES[outcome.verdict]
    proof_link = ""
    if outcome.verdict in GOOD_VERDICTS:
        proof_link = (
            f'<a id="proof" href="/proof{html.escape(link_path)}?t='
            f'{html.escape(token)}">Proof for independent checking</a>'
        )
    return _PAGE.format(
        title=html.escape(title),
        color=color,
        verdict=outcome.verdict,
        reason=html.escape(outcome.reason),
        details=_details(outcome),
        checked=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        proof=proof_link,
    )


def create_app(
    settings: Settings,
    *,
    clone_threshold: int = DEFAULT_CLONE_SCANS,
    notify: Callable[[str], None] | None = None,
) -> _App:
    """The ASGI application for a store. ``notify`` gets one-line reports for the
    operator (the scan log failing, and recovering)."""
    return _App(_Service(settings, clone_threshold, notify))


def _preflight(settings: Settings, notify: Callable[[str], None]) -> None:
    """Create or upgrade the scan log's tables once, before any worker starts (and before
    ``fork``: nothing stays open). A log that cannot be written is reported, not fatal:
    the service still answers, and says on every page that the scan was not logged."""
    log = open_scan_log(settings, pool_size=0)
    try:
        log.migrate()
    except ScanLogError as exc:
        notify(f"scans cannot be logged: {exc}; pages will say so and /healthz fails")
    finally:
        log.close()


def _worker(
    settings: Settings,
    clone_threshold: int,
    access_log: bool,
    notify: Callable[[str], None],
) -> Callable[[socket.socket, Callable[[], None]], None]:
    """What one serving process runs: build the app, listen, say ready, serve."""

    def start(sock: socket.socket, ready: Callable[[], None]) -> None:
        import uvicorn

        # The event loop shares this interpreter with the scan writer's thread. With the
        # default 5 ms turns, a request waits whole milliseconds for the GIL while the
        # writer runs (10M store, wrk, JSON: 1,906 requests/s, p99 50 ms); with 0.5 ms
        # turns 2,882-2,925 requests/s, p99 43-58 ms; with 0.2 ms 2,516-2,693, p99 33-38.
        # This process serves and nothing else.
        sys.setswitchinterval(SWITCH_INTERVAL)
        app = create_app(settings, clone_threshold=clone_threshold, notify=notify)
        sock.listen(2048)
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=access_log,
            server_header=False,
            date_header=False,
            timeout_graceful_shutdown=10,
        )
        ready()
        uvicorn.Server(config).run(sockets=[sock])

    return start


def serve(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    clone_threshold: int = DEFAULT_CLONE_SCANS,
    access_log: bool = False,
    workers: int | None = None,
    on_ready: Callable[[tuple[str, int]], None] | None = None,
    notify: Callable[[str], None] | None = None,
) -> None:
    """Run the service until interrupted, in ``workers`` processes (default: the
    settings' ``workers``, the CPU count) sharing the port; 1 serves in this process.
    ``port`` 0 picks a free port; ``on_ready`` gets the bound ``(host, port)`` once every
    worker listens; ``notify`` gets one-line operator reports (scan log down or back, a
    worker restarted)."""
    from provmint.supervisor import bind, supervise

    count = workers or settings.workers
    say = notify or (lambda _: None)
    _preflight(settings, say)
    start = _worker(settings, clone_threshold, access_log, say)
    if count > 1:
        supervise(count, host, port, start, on_ready=on_ready, notify=say)
        return
    sock = bind(host, port)
    bound = sock.getsockname()[:2]

    def stopped(signum: int, frame: object) -> None:
        raise _Stopped

    # uvicorn shuts down on SIGTERM, then raises it again for the handler it found:
    # this one ends the call normally, as the supervisor does for several workers.
    previous = signal.signal(signal.SIGTERM, stopped)
    try:
        start(sock, lambda: on_ready(bound) if on_ready is not None else None)
    except _Stopped:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        sock.close()


class _Stopped(Exception):
    """SIGTERM arrived: the service stopped as asked."""
