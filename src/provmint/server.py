"""``provmint serve``: the read-only verification service behind the printed URLs.

``GET /01/{gtin}[/10/{lot}]/21/{serial}?t={token}`` answers with a small mobile page
("Genuine product", "Not recognised", "Possible copy") or JSON (``Accept:
application/json``); ``GET /proof/01/...?t={token}`` returns the product's proof for
independent checking with ``provmint verify``, or in the browser at ``GET /verify``
(:mod:`provmint.verifier`); ``GET /healthz`` says the service is up.
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
import json
import logging
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import lru_cache
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from provmint import gs1
from provmint.config import BrandSettings, ServeSettings, Settings, is_placeholder
from provmint.edge import (
    NO_STORE,
    SECURITY_HEADERS,
    HostCheck,
    RateLimiter,
    TrustedProxies,
    base_host,
    parse_address,
    retry_after,
    sigterm_returns,
    uvicorn_config,
)
from provmint.errors import KeyringError, ProvmintError
from provmint.keys import Keyring, load_keyring
from provmint.products import (
    ProductRecord,
    anchor_section,
    catalog_view,
    product_record,
    proof_of,
)
from provmint.publicpage import LOGO_PATH, PublicPages, VerdictView, choose_language
from provmint.scan import Verdict, judge, suspicious
from provmint.store import BatchInfo, Store
from provmint.store.lookup import ProductFinder
from provmint.store.prints import printed_url_bases
from provmint.store.scanlog import (
    ScanLogError,
    ScanRequest,
    clean_location,
    open_scan_log,
)
from provmint.store.scanlog.writer import ScanWriter

if TYPE_CHECKING:
    import socket

    from provmint.metrics import (
        MetricsApp,
        MetricsEndpoint,
        RequestMetrics,
        ServiceExporter,
        StoreFigures,
    )

__all__ = ["Answer", "ProductIndex", "create_app", "http_error", "serve"]

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
        self._reloading = threading.Lock()  # one reload at a time (each takes over runs)
        self._stamp: tuple[float, int] | None = None
        self._checked = 0.0
        self.batches: dict[int, BatchInfo] = {}
        self.anchors: dict[int, dict[str, Any] | None] = {}
        self.finder: ProductFinder | None = None
        self._retired: list[ProductFinder] = []
        self.hosts: frozenset[str] = frozenset()
        """The hosts of the url bases the batches were minted and printed with."""
        self._hosts_read = 0.0
        self.fenced = threading.Event()
        """Set once the finder searches with fences in memory (see :meth:`reload`)."""
        self.reload()

    def reload(self) -> None:
        """Load batches, anchors and the finder from the catalog (shared lock, brief).

        The first load answers at once: its finder searches the index runs through the
        map (:class:`~provmint.store.keyindex.PointIndex`, nothing read up front), while
        a thread reads the fences (every run's keys: 16 GB at a billion products) and
        then puts the fenced finder in its place. Later finders take over the runs the
        current one has open (runs never change), so a reload after a commit reads only
        the fences of the runs it wrote, and one after an anchor none."""
        with self._reloading:
            self._reload()

    def _reload(self) -> None:
        stamp = self.store.catalog_stamp()
        first = self.finder is None and not self.fenced.is_set()
        batches: list[BatchInfo] = []
        anchors: dict[int, dict[str, Any] | None] = {}
        finder = None
        if stamp != (0.0, 0):
            with catalog_view(self.settings) as (store, view):
                finder = ProductFinder.open(store, view, point=first, reuse=self.finder)
            batches = list(view.batches)
            anchors = {b.seq: anchor_section(view.anchor_for_batch(b.seq), b) for b in batches}
        self._install(stamp, batches, anchors, finder)
        if finder is None or not first:
            self.fenced.set()
        else:
            threading.Thread(target=self._load_fences, name="fences", daemon=True).start()

    def _load_fences(self) -> None:
        """Replace the first finder by one with fences (in a thread of its own)."""
        try:
            with self._reloading:
                self._reload()
        except ProvmintError as exc:  # lookups go on through the map; a change retries
            logging.getLogger("uvicorn.error").warning("cannot read the index's fences: %s", exc)
        finally:
            self.fenced.set()

    def _install(
        self,
        stamp: tuple[float, int],
        batches: list[BatchInfo],
        anchors: dict[int, dict[str, Any] | None],
        finder: ProductFinder | None,
    ) -> None:
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
        self.read_hosts()

    def read_hosts(self) -> bool:
        """Read the hosts of the batches' url bases again, from their manifests and print
        records (labels are printed without a change to the catalog): at most every
        :data:`REFRESH_SECONDS`. Whether it read them."""
        now = time.monotonic()
        if self._hosts_read and now - self._hosts_read < REFRESH_SECONDS:
            return False
        self._hosts_read = now
        bases = {str(b.manifest["url_base"]) for b in list(self.batches.values())}
        bases.update(printed_url_bases(self.store))
        self.hosts = frozenset(
            host for base in bases if not is_placeholder(base) and (host := base_host(base))
        )
        return True

    def refresh(self) -> None:
        """Reload if the catalog changed (checked at most every REFRESH_SECONDS)."""
        now = time.monotonic()
        if now - self._checked < REFRESH_SECONDS:
            return
        self._checked = now
        if self.store.catalog_stamp() != self._stamp and self._reloading.acquire(blocking=False):
            # (A reload already running, such as the first finder's fences being read,
            # is not waited for in a request: the next check tries again.)
            try:
                self._reload()
            finally:
                self._reloading.release()

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


class Answer(StrEnum):
    """What the public service answers for a code (its value is what JSON says): a
    scan's verdict as the public sees it, where forged and unknown are one answer on
    purpose, or that the code cannot be checked now (an operator's problem)."""

    GENUINE = "genuine"
    PENDING = "pending"
    SUSPECT = "suspect"
    UNKNOWN = "unknown"
    UNAVAILABLE = "unavailable"

    @classmethod
    def of(cls, verdict: Verdict) -> Answer:
        """The public answer for a scan's verdict."""
        return _PUBLIC[verdict]

    @property
    def status(self) -> int:
        """The HTTP status of this answer."""
        return _STATUS[self]

    @property
    def shows_product(self) -> bool:
        """Does this answer show the product (the code showed its real token)?"""
        return self in (Answer.GENUINE, Answer.PENDING, Answer.SUSPECT)


_PUBLIC = {
    Verdict.GENUINE: Answer.GENUINE,
    Verdict.PENDING: Answer.PENDING,
    Verdict.SUSPECT: Answer.SUSPECT,
    Verdict.FORGED: Answer.UNKNOWN,
    Verdict.UNKNOWN: Answer.UNKNOWN,
}
_STATUS = {
    Answer.GENUINE: 200,
    Answer.PENDING: 200,
    Answer.SUSPECT: 200,
    Answer.UNKNOWN: 404,
    Answer.UNAVAILABLE: 503,
}


@dataclass(frozen=True, slots=True)
class _Outcome:
    verdict: Answer
    reason: str
    product: ProductRecord | None
    anchor: dict[str, Any] | None
    scans: int
    logged: bool | None = None
    """Whether this scan was logged (None: not a logged request, or not recognised)."""


_NOT_RECOGNISED = _Outcome(
    Answer.UNKNOWN, "this code does not match any product we made", None, None, 0
)
"""The one answer for a forged code, an unknown one, and a code asked on another host."""


PUBLIC_COPY_REASON = (
    "this code has been checked more often, or in more places, than one label would be: "
    "it may have been copied"
)
"""What the public answer says of a possible copy (the operator's tools say why)."""


@dataclass(frozen=True, slots=True)
class _Look:
    """How an HTML answer looks: the brand's pages, and the visitor's language."""

    pages: PublicPages
    language: str


@lru_cache(maxsize=4)
def _public_pages(brand: BrandSettings) -> PublicPages:
    """The pages of ``brand``, built once per process (every language's fixed parts)."""
    return PublicPages(brand)


def _look(brand: BrandSettings, request: _Request, query: str = "") -> _Look:
    """The look of an answer to ``request``: ``?lang=`` (read from the query only when it
    may be there: parsing costs tens of microseconds), else ``Accept-Language``."""
    asked = None
    if "lang" in query:
        asked = dict(parse_qsl(query, keep_blank_values=True)).get("lang")
    return _Look(_public_pages(brand), choose_language(asked, request.accept_language))


class _Service:
    def __init__(
        self,
        settings: Settings,
        clone_threshold: int | None,
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
        # The copy signal's rule: [copy_signal], --clone-threshold (when given) its
        # max_clients. The log counts with it; its client salt is read once, by the
        # writer thread.
        self.rule = (
            settings.copy_signal
            if clone_threshold is None
            else replace(settings.copy_signal, max_clients=clone_threshold)
        )
        self.log = open_scan_log(replace(settings, copy_signal=self.rule), service=True)
        self.writer = ScanWriter(self.log, wait=LOG_WAIT_SECONDS)
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

    async def check(
        self,
        link: gs1.DigitalLink,
        location: str | None,
        *,
        log: bool,
        client: str = "",
        user_agent: str = "",
    ) -> _Outcome:
        """The answer for one code. A logged scan carries its client (the peer's address
        and user agent, hashed into a key by the writer thread, never stored) for the
        copy signal: :func:`provmint.scan.suspicious` under :attr:`rule`."""
        self.index.refresh()
        product = self.index.find(link.gtin14, link.serial)
        if product is not None and all(k.id != product.batch.key_id for k in self.keyring.keys):
            # Minted with a key this service lacks (a batch added since it started): an
            # operator problem, not a counterfeit.
            return _Outcome(
                Answer.UNAVAILABLE, "this code cannot be checked right now", None, None, 0
            )
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
        if product is not None and log:
            scan = ScanRequest(
                link.gtin14,
                link.serial,
                verdict,
                location,
                "serve",
                address=client,
                user_agent=user_agent,
            )
            if verdict.shows_real_token:
                scans, logged, copied = await self._log(scan)
                if copied:
                    # Never the places themselves: they are what earlier visitors typed
                    # into the link (``loc``), so repeating them would let anyone write
                    # on the brand's page. They are the operator's.
                    verdict, reason = Verdict.SUSPECT, PUBLIC_COPY_REASON
            else:
                # A forged code: logged for the operator, but its answer does not wait
                # (that would tell it from an unknown one, which is not logged).
                self.writer.send(scan)
        answer = Answer.of(verdict)
        if answer is Answer.UNKNOWN:  # one answer for forged and unknown, on purpose
            return _NOT_RECOGNISED
        return _Outcome(answer, reason, product, anchor, scans, logged)

    async def _log(self, scan: ScanRequest) -> tuple[int, bool, bool]:
        """Log a scan that showed the code's real token and wait for it (at most
        :data:`LOG_WAIT_SECONDS`): (scans of the code, logged, looks copied)."""
        try:
            stats = await self.writer.record(scan)
        except ScanLogError as exc:
            self.log_state(exc)
            return 0, False, False
        self.log_state(None)
        return stats.count, True, bool(suspicious(stats, self.rule))


def _status(outcome: _Outcome) -> int:
    """The HTTP status of an answer: the verdict's, or 503 when the scan was not logged."""
    return 503 if outcome.logged is False else outcome.verdict.status


CACHEABLE_SECONDS = 3600
"""How long a cacheable answer (the brand's logo) may be kept."""
_NOT_STORED = (*SECURITY_HEADERS, NO_STORE)
_CACHEABLE = (
    *SECURITY_HEADERS,
    (b"cache-control", f"public, max-age={CACHEABLE_SECONDS}".encode()),
)
"""The headers every answer ends with (:mod:`provmint.edge`), built once: the hot path."""


@dataclass(frozen=True, slots=True)
class _Response:
    """One answer: its status, body and media type, with the security headers and
    ``Cache-Control: no-store`` unless ``cacheable`` (a verdict holds only for the moment
    it was given; nor are errors, proofs or health kept)."""

    status: int
    body: bytes
    media_type: str
    cacheable: bool = False
    allow: str | None = None
    """The methods allowed, for a 405."""
    retry_after: int | None = None
    """Seconds to wait before asking again, for a 429 or a 503 when busy."""
    verdict: str = ""
    """The public verdict this answer gives ("" for none): a metrics label."""
    policy: bytes | None = None
    """A Content-Security-Policy in place of the service's (the verifier page's)."""

    def headers(self) -> list[tuple[bytes, bytes]]:
        """The HTTP headers of this answer."""
        headers = [
            (b"content-type", self.media_type.encode()),
            (b"content-length", str(len(self.body)).encode()),
            *(_CACHEABLE if self.cacheable else _NOT_STORED),
        ]
        if self.policy is not None:
            headers = [
                (name, self.policy if name == b"content-security-policy" else value)
                for name, value in headers
            ]
        if self.allow is not None:
            headers.append((b"allow", self.allow.encode()))
        if self.retry_after is not None:
            headers.append((b"retry-after", str(self.retry_after).encode()))
        return headers


def _json(
    value: Any, status: int = 200, *, cacheable: bool = False, verdict: str = ""
) -> _Response:
    body = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return _Response(status, body.encode(), "application/json", cacheable, verdict=verdict)


def _html(page: str, status: int, verdict: str = "") -> _Response:
    return _Response(status, page.encode(), "text/html; charset=utf-8", verdict=verdict)


def http_error(status: int, message: str) -> dict[str, Any]:
    """The body of a JSON error answer: the error object every ``--json`` command prints
    on failure (``docs/schemas/error.schema.json``), with the HTTP ``status`` in place of
    an exit code; ``code`` is the status's name (``not_found``, ``too_many_requests``)."""
    code = HTTPStatus(status).phrase.lower().replace("-", " ").replace(" ", "_")
    return {"error": {"code": code, "status": status, "message": message, "hint": None}}


def _bad(
    status: int,
    message: str,
    wants_json: bool,
    *,
    allow: str | None = None,
    look: _Look | None = None,
) -> _Response:
    """An error answer: :func:`http_error`, or the error page for ``status`` (its
    words: :data:`provmint.publicpage.texts.ERRORS`) in ``look``, the brand's look and the
    visitor's language; without one, the plain look in English."""
    if wants_json:
        answer = _json(http_error(status, message), status)
    else:
        if look is None:
            look = _Look(_public_pages(BrandSettings()), "en")
        answer = _html(look.pages.error(status, message, look.language), status)
    return answer if allow is None else replace(answer, allow=allow)


def _logo(brand: BrandSettings, wants_json: bool) -> _Response:
    """The brand's logo (``[brand] logo``, read at start): served here, so that the page
    loads nothing from another site."""
    if brand.logo_type is None:
        return _bad(404, "no such page", wants_json)
    return _Response(200, brand.logo_data, brand.logo_type, cacheable=True)


_LOGO_PATH = LOGO_PATH.encode()
_CODE_ROUTE = "/01/{gtin}[/10/{lot}]/21/{serial}"
"""The code pages' route template (a metrics label)."""


@lru_cache(maxsize=4)
def _verifier(rpc_url: str | None, issuer: str | None) -> _Response:
    """``/verify``: the browser verifier (:mod:`provmint.verifier`), with its own policy
    (its inline script and style by hash, requests to the node the user chooses). Its
    defaults are ``[brand] verifier_rpc`` and ``issuer``, never the service's own node,
    whose URL may carry a key."""
    from provmint.verifier import verifier_page

    page = verifier_page(rpc_url=rpc_url, issuer=issuer)
    return replace(_html(page.html, 200), policy=page.policy.encode())


MAX_HEADER_TEXT = 512
"""Characters kept of a header the service reads (a stranger's text: bounded)."""


@dataclass(frozen=True, slots=True)
class _Request:
    """What the service reads of an HTTP request (ASGI scope): the raw path and query
    bytes as sent, the method, whether the client asked for JSON, and (each cut to
    :data:`MAX_HEADER_TEXT` characters) the client's address, the user agent and the
    accepted languages; and what the edge checks read: the ``X-Forwarded-For`` values,
    the number of header fields and their size."""

    method: str
    path: bytes
    query: bytes
    wants_json: bool
    peer: str = ""
    """The client's address ("" when unknown): the connection's remote address as
    uvicorn gives it, replaced in :meth:`_App.answer` by the address the trusted proxies
    forwarded (``[serve] trusted_proxies``) when the connection is theirs."""
    user_agent: str = ""
    accept_language: str = ""
    forwarded_for: bytes = b""
    """The ``X-Forwarded-For`` values, comma-joined, as sent (bounded by the head's size)."""
    header_count: int = 0
    header_bytes: int = 0
    """The header fields' size as sent (each ``name: value`` and its line end)."""
    host: bytes = b""
    """The ``Host`` asked for, as sent; in :meth:`_App.answer`, the ``X-Forwarded-Host``
    a trusted proxy wrote, when there is one."""
    forwarded_host: bytes = b""
    """The ``X-Forwarded-Host`` values, comma-joined, as sent."""

    @classmethod
    def of(cls, scope: dict[str, Any]) -> _Request:
        """The request of an ASGI ``http`` scope."""
        accept = agent = language = b""
        forwarded: list[bytes] = []
        host = b""
        forwarded_hosts: list[bytes] = []
        size = 0
        headers = scope["headers"]
        for name, value in headers:
            size += len(name) + len(value)
            if name == b"accept":
                accept = value
            elif name == b"user-agent":
                agent = value
            elif name == b"accept-language":
                language = value
            elif name == b"x-forwarded-for":
                forwarded.append(value)
            elif name == b"host":
                host = value
            elif name == b"x-forwarded-host":
                forwarded_hosts.append(value)
        client = scope.get("client")
        return cls(
            method=scope["method"],
            path=scope.get("raw_path") or scope["path"].encode(),
            query=scope.get("query_string", b""),
            wants_json=b"application/json" in accept,
            peer=str(client[0])[:MAX_HEADER_TEXT] if client else "",
            user_agent=agent[:MAX_HEADER_TEXT].decode("latin-1"),
            accept_language=language[:MAX_HEADER_TEXT].decode("latin-1"),
            forwarded_for=b",".join(forwarded),
            header_count=len(headers),
            header_bytes=size + 4 * len(headers),
            host=host,
            forwarded_host=b",".join(forwarded_hosts),
        )


_READ_METHODS = ("GET", "HEAD")


class _App:
    """The ASGI application: ``/healthz`` and the product codes, with nothing between
    uvicorn and the service (the code path is the hot path; a framework's routing,
    request and response objects cost as much as the lookup)."""

    def __init__(self, service: _Service) -> None:
        self.service = service
        edges: ServeSettings = service.settings.serve
        self.proxies = TrustedProxies(edges.trusted_proxies)
        self.limiter = (
            RateLimiter(edges.rate_limit, edges.rate_window, edges.rate_burst)
            if edges.rate_limit
            else None
        )
        self.edges = edges
        base = service.settings.url_base
        self.hosts = (
            HostCheck(base, also=edges.hosts)
            if edges.check_host and not is_placeholder(base)
            else None
        )
        """The url base's host and ``[serve] hosts``, which codes must be asked on (or
        a host of the batches' url bases: :meth:`_own_host`). None: any host."""
        self._active = 0
        """Requests in progress in this process (``[serve] limit_concurrency``)."""
        self._told_untrusted = False
        self.metrics: RequestMetrics | None = None
        """This process's request counters, once :meth:`export` turned metrics on."""
        self._scrapes: MetricsApp | None = None
        self._metrics_port = -1

    def _own_host(self, check: HostCheck, host: bytes) -> bool:
        """Whether codes may be asked on ``host``: the service's own, or one a batch was
        minted or printed with (a print since the last look is found by looking again,
        at most every :data:`REFRESH_SECONDS`)."""
        index = self.service.index
        if check.allows(host, index.hosts):
            return True
        return index.read_hosts() and check.allows(host, index.hosts)

    def export(self, exporter: ServiceExporter) -> None:
        """Count requests, and answer scrapes that come to the metrics port (its socket
        is served alongside the public one; only this port answers ``/metrics``)."""
        from provmint.metrics import RequestMetrics, Routes

        exporter.start_worker()
        self.metrics = RequestMetrics(
            Routes(
                {b"/healthz": "/healthz", _LOGO_PATH: LOGO_PATH, b"/verify": "/verify"},
                ((b"/01/", _CODE_ROUTE), (b"/proof/01/", "/proof" + _CODE_ROUTE)),
            )
        )
        self._scrapes = exporter.app(self._figures)
        self._metrics_port = exporter.endpoint.port

    def _figures(self) -> StoreFigures:
        """What a scrape reads of this process: the index, and its unlogged scans."""
        from provmint.metrics import StoreFigures

        service = self.service
        service.index.refresh()
        if self.metrics is not None:
            self.metrics.scans_not_logged(service.writer.failures)
        return StoreFigures(service.index.products, len(service.index.batches))

    def _untrusted_proxy(self, peer: str) -> None:
        """Tell the operator, once, that a local or private peer forwards requests
        without being a trusted proxy: every client behind it is then one client (one
        rate limit for all, one client for the copy signal). A public peer's
        ``X-Forwarded-For`` is anyone's text, not a sign of a proxy."""
        address = parse_address(peer)
        if address is None or not (address.is_private or address.is_loopback):
            return
        if self.proxies and self.proxies.trusts(address):
            return  # trusted, but its header held no address to believe
        self._told_untrusted = True
        self.service.notify(
            f"requests from {peer} carry X-Forwarded-For, but {peer} is not in [serve] "
            "trusted_proxies: every client behind it counts as one (one rate limit for "
            "all, one visitor for the copy signal); see docs/DEPLOY.md"
        )

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
        if self._scrapes is not None and (scope.get("server") or ("", 0))[1] == self._metrics_port:
            await self._scrapes(scope, receive, send)
            return
        started = time.perf_counter()
        request = _Request.of(scope)
        limit = self.edges.limit_concurrency
        self._active += 1
        try:
            if limit and self._active > limit:
                # Shed at once, cheaply, instead of queueing (a stalled scan log, a flood).
                message = "the service is busy; try again in a moment"
                look = _look(self.service.settings.brand, request)
                answer = replace(_bad(503, message, request.wants_json, look=look), retry_after=1)
            else:
                answer = await self.answer(request)
        except Exception:
            # A bug: reported as uvicorn would, answered with the headers every answer has.
            logging.getLogger("uvicorn.error").exception("error answering %s", scope["method"])
            answer = _json(http_error(500, "internal error"), 500)
        finally:
            self._active -= 1
        metrics = self.metrics
        if metrics is not None:  # before the answer leaves: a scrape after it counts it
            elapsed = time.perf_counter() - started
            metrics.count(request.path, answer.status, answer.verdict, elapsed)
            metrics.scans_not_logged(self.service.writer.failures)
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
        # The edges first (provmint.edge): who the client is, whether it asks too often
        # (not /healthz: monitoring), whether its head is too large.
        if request.forwarded_host and self.proxies.trusts_peer(request.peer):
            request = replace(request, host=HostCheck.forwarded(request.forwarded_host))
        if request.forwarded_for:
            client = self.proxies.client(request.peer, request.forwarded_for)
            if client != request.peer:
                request = replace(request, peer=client)
            elif not self._told_untrusted:
                self._untrusted_proxy(request.peer)
        if self.limiter is not None and request.path != b"/healthz":
            wait = self.limiter.hit(request.peer)
            if wait:
                seconds = retry_after(wait)
                message = f"too many requests; try again in {seconds} s"
                look = _look(self.service.settings.brand, request)
                answer = _bad(429, message, request.wants_json, look=look)
                return replace(answer, retry_after=seconds)
        edges = self.edges
        if (
            request.header_count > edges.max_headers
            or request.header_bytes > edges.max_header_bytes
        ):
            message = "the request's headers are too large"
            look = _look(self.service.settings.brand, request)
            return _bad(431, message, request.wants_json, look=look)
        if request.path == b"/healthz":
            if request.method not in _READ_METHODS:
                return _bad(405, "method not allowed", True, allow="GET, HEAD")
            return await self.health()
        if request.method not in _READ_METHODS:
            return _bad(405, "method not allowed", request.wants_json, allow="GET, HEAD")
        if request.path == _LOGO_PATH:
            return _logo(self.service.settings.brand, request.wants_json)
        if request.path == b"/verify":
            brand = self.service.settings.brand
            return _verifier(brand.verifier_rpc, brand.issuer)
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
        brand = self.service.settings.brand
        if len(request.path) > MAX_PATH_BYTES or len(request.query) > MAX_QUERY_BYTES:
            status = 414 if len(request.path) > MAX_PATH_BYTES else 400
            return _bad(status, "request too long", wants_json, look=_look(brand, request))
        try:
            path = request.path.decode("ascii")
            text = request.query.decode("ascii")
        except UnicodeDecodeError:
            return _bad(400, "the address is not valid", wants_json, look=_look(brand, request))
        proof = path.startswith("/proof/")
        link_path = path[len("/proof") :] if proof else path
        if not link_path.startswith("/01/"):
            return _bad(404, "no such page", wants_json, look=_look(brand, request, text))
        try:
            link = gs1.parse_digital_link(link_path + ("?" + text if text else ""))
        except gs1.DigitalLinkError as exc:
            message = f"not a valid product code: {exc}"
            return _bad(400, message, wants_json, look=_look(brand, request, text))
        # Parsing the query costs tens of microseconds: only when it may hold a loc.
        location = None
        if "loc" in text or "%" in text:
            location = dict(parse_qsl(text, keep_blank_values=True)).get("loc") or None
        started = time.monotonic()
        if self.hosts is not None and not self._own_host(self.hosts, request.host):
            # A link on another domain is not one we printed, whatever its code: it gets
            # an unknown code's answer (its time too), unlogged and without a lookup.
            outcome = _NOT_RECOGNISED
        else:
            outcome = await self.service.check(
                link,
                clean_location(location),
                log=not proof and request.method == "GET",
                client=request.peer,
                user_agent=request.user_agent,
            )
        if outcome.verdict is Answer.UNKNOWN:
            await asyncio.sleep(max(0.0, started + NOT_RECOGNISED_SECONDS - time.monotonic()))
        genuine = outcome.product is not None and outcome.verdict.shows_product
        if proof:
            if outcome.product is None or not genuine:
                return _bad(404, "no proof for this code", True)
            return _json(proof_of(self.service.index.store, outcome.product, outcome.anchor))
        if wants_json:
            return _json(_json_answer(outcome, genuine), _status(outcome), verdict=outcome.verdict)
        page = _page(outcome, link_path, link.token or "", _look(brand, request, text))
        return _html(page, _status(outcome), outcome.verdict)


def _json_answer(outcome: _Outcome, genuine: bool) -> dict[str, Any]:
    """The JSON form of a code's answer: the verdict object of ``provmint scan --json``
    (``docs/schemas/verdict.schema.json``), whose ``scans`` holds only the count here
    (the rest is the operator's)."""
    product = outcome.product if genuine else None
    scans = None if outcome.logged is False or product is None else {"count": outcome.scans}
    body: dict[str, Any] = {
        "verdict": outcome.verdict,
        "reason": outcome.reason,
        "record": product.record if product is not None else None,
        "batch_id": product.batch.batch_id if product is not None else None,
        "anchor": outcome.anchor if outcome.verdict in (Answer.GENUINE, Answer.SUSPECT) else None,
        "scans": scans,
        "logged": outcome.logged,
    }
    if outcome.logged is False:
        body["notice"] = NOT_LOGGED
    return body


def _page(outcome: _Outcome, link_path: str, token: str, look: _Look) -> str:
    """The HTML page of a code's answer (:mod:`provmint.publicpage`). The product, its
    anchor and the proof link only for a code that showed its real token."""
    product = outcome.product if outcome.verdict.shows_product else None
    view = VerdictView(
        verdict=outcome.verdict,
        link_path=link_path,
        token=token,
        record=product.record if product is not None else None,
        batch_id=product.batch.batch_id if product is not None else None,
        anchor=outcome.anchor if product is not None else None,
        scans=None if outcome.logged is False else outcome.scans,
        logged=outcome.logged,
    )
    return look.pages.verdict(view, look.language)


def create_app(
    settings: Settings,
    *,
    clone_threshold: int | None = None,
    notify: Callable[[str], None] | None = None,
) -> _App:
    """The ASGI application for a store. ``clone_threshold``, when given, replaces the
    ``[copy_signal]`` setting ``max_clients``; ``notify`` gets one-line reports for the
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
    clone_threshold: int | None,
    access_log: bool,
    notify: Callable[[str], None],
    exporter: ServiceExporter | None = None,
) -> Callable[[socket.socket, Callable[[], None]], None]:
    """What one serving process runs: build the app, listen, say ready, serve (and, with
    an ``exporter``, count and answer scrapes on its socket too)."""

    def start(sock: socket.socket, ready: Callable[[], None]) -> None:
        import uvicorn

        # The event loop shares this interpreter with the scan writer's thread. With the
        # default 5 ms turns, a request waits whole milliseconds for the GIL while the
        # writer runs (10M store, wrk, JSON: 1,906 requests/s, p99 50 ms); with 0.5 ms
        # turns 2,882-2,925 requests/s, p99 43-58 ms; with 0.2 ms 2,516-2,693, p99 33-38.
        # This process serves and nothing else.
        sys.setswitchinterval(SWITCH_INTERVAL)
        app = create_app(settings, clone_threshold=clone_threshold, notify=notify)
        sockets = [sock]
        if exporter is not None:
            exporter.check_public(sock)
            app.export(exporter)
            sockets.append(exporter.sock)
        sock.listen(2048)
        config = uvicorn_config(app, settings.serve, access_log=access_log, graceful_seconds=10)
        ready()
        uvicorn.Server(config).run(sockets=sockets)

    return start


def serve(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    clone_threshold: int | None = None,
    access_log: bool = False,
    workers: int | None = None,
    on_ready: Callable[[tuple[str, int]], None] | None = None,
    notify: Callable[[str], None] | None = None,
    metrics: MetricsEndpoint | None = None,
) -> None:
    """Run the service until interrupted, in ``workers`` processes (default: the
    settings' ``workers``, the CPU count) sharing the port; 1 serves in this process.
    ``port`` 0 picks a free port; ``on_ready`` gets the bound ``(host, port)`` once every
    worker listens; ``notify`` gets one-line operator reports (scan log down or back, a
    worker restarted). ``metrics``: answer ``/metrics`` there, for the whole service
    (:mod:`provmint.metrics`); nowhere by default."""
    count = workers or settings.workers
    say = notify or (lambda _: None)
    _preflight(settings, say)
    if metrics is None:
        _run(count, host, port, _worker(settings, clone_threshold, access_log, say), on_ready, say)
        return
    from provmint.metrics import exporter

    with exporter(metrics) as exported:
        start = _worker(settings, clone_threshold, access_log, say, exported)
        _run(count, host, port, start, on_ready, say)


def _run(
    count: int,
    host: str,
    port: int,
    start: Callable[[socket.socket, Callable[[], None]], None],
    on_ready: Callable[[tuple[str, int]], None] | None,
    say: Callable[[str], None],
) -> None:
    """Serve with ``start`` in ``count`` forked workers, or in this process for 1."""
    from provmint.supervisor import bind, supervise

    if count > 1:
        supervise(count, host, port, start, on_ready=on_ready, notify=say)
        return
    sock = bind(host, port)
    bound = sock.getsockname()[:2]

    try:
        with sigterm_returns():
            start(sock, lambda: on_ready(bound) if on_ready is not None else None)
    finally:
        sock.close()
