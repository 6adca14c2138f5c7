"""The public service's edges: who the client is, how often it may ask, and how long and
how much it may send before it has asked anything.

- :class:`TrustedProxies`: the client's address. Behind a TLS proxy every connection
  comes from the proxy; the proxy says whom it serves in ``X-Forwarded-For``, which is
  believed only from the configured proxies, and only as far as they wrote it.
- :class:`HostCheck`: whether a request was made for the service's own host (the url
  base's), from ``Host``, or ``X-Forwarded-Host`` when a trusted proxy wrote it.
- :class:`RateLimiter`: a per-client rate limit (GCRA, the token bucket as one number per
  client), bounded in memory, for one process.
- :func:`http_protocol`: uvicorn's httptools protocol with the limits uvicorn does not
  enforce: a deadline for a request's head (slow clients that open a connection and
  trickle a header now and then are closed), and a bound on the head's size while it
  is still arriving (httptools itself buffers any amount).
- :func:`uvicorn_config` and :func:`sigterm_returns`: how every provmint service runs
  uvicorn (these limits, no proxy headers, no server header) and stops on SIGTERM.
- :data:`SECURITY_HEADERS`: the headers every answer carries.

Nothing here knows about products or pages: :mod:`provmint.server` applies these.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import signal
import socket
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import uvicorn
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from provmint.config import ServeSettings

__all__ = [
    "MAX_CLIENTS",
    "MAX_FORWARDED_HOPS",
    "SECURITY_HEADERS",
    "HostCheck",
    "RateLimiter",
    "TrustedProxies",
    "base_host",
    "http_protocol",
    "parse_address",
    "raw_response",
    "retry_after",
    "sigterm_returns",
    "uvicorn_config",
]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "base-uri 'none'; form-action 'self' https: mailto:; frame-ancestors 'none'"
)
"""No scripts, no frames, nothing from other sites: the page is HTML and CSS (inline or
the service's own), its images are the service's own (the brand's logo) or inline."""
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)
"""The headers of every answer (the pages, JSON, proofs, errors, /healthz). HSTS is the
TLS proxy's (this service speaks plain HTTP to it)."""
NO_STORE = (b"cache-control", b"no-store")

MAX_FORWARDED_HOPS = 16
"""At most this many ``X-Forwarded-For`` elements are read, from the right."""
MAX_CLIENTS = 100_000
"""Clients a rate limiter remembers; beyond, the least recently seen is forgotten."""
REQUEST_LINE_BYTES = 4096
"""What a head may hold besides its header fields (the request line: the service answers
a path or query longer than its own limits with 414 or 400, when it sees them)."""
_MAX_ADDRESS_TEXT = 64
"""Longer than any address an ``X-Forwarded-For`` element may hold (with brackets and port)."""


# --------------------------------------------------------------------------- client address


def parse_address(text: str) -> Address | None:
    """The address of one ``X-Forwarded-For`` element, strictly: ``192.0.2.7``,
    ``192.0.2.7:443``, ``2001:db8::7``, ``[2001:db8::7]`` or ``[2001:db8::7]:443``
    (IPv4-mapped IPv6 addresses become IPv4). None for anything else: names, zone
    indices, ``unknown``, obfuscated identifiers, garbage."""
    found = _parse(text)
    if found is None:
        return None
    return ipaddress.IPv4Address(found[1]) if found[0] == 4 else ipaddress.IPv6Address(found[1])


def _parse(text: str) -> tuple[int, int] | None:
    """:func:`parse_address` as (IP version, the address as an integer), without
    building an ``ipaddress`` object (the system's parser: a microsecond)."""
    if not text or len(text) > _MAX_ADDRESS_TEXT or not text.isascii() or "%" in text:
        return None
    if text[0] == "[":
        host, bracket, port = text[1:].partition("]")
        if not bracket or (port and not (port[0] == ":" and _is_port(port[1:]))):
            return None
        family = socket.AF_INET6
    elif ":" not in text:
        host, family = text, socket.AF_INET
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
        if not _is_port(port):
            return None
        family = socket.AF_INET
    else:
        host, family = text, socket.AF_INET6
    try:
        packed = socket.inet_pton(family, host)
    except (OSError, ValueError):
        return None
    if family == socket.AF_INET:
        # One spelling only (no leading zeros), whatever the system's parser allows.
        return (4, int.from_bytes(packed)) if socket.inet_ntop(family, packed) == host else None
    value = int.from_bytes(packed)
    if value >> 32 == 0xFFFF:  # ::ffff:a.b.c.d, an IPv4 client of a dual-stack socket
        return 4, value & 0xFFFFFFFF
    return 6, value


def _text(found: tuple[int, int]) -> str:
    """The canonical text of a parsed address."""
    version, value = found
    return str(ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value))


def _is_port(text: str) -> bool:
    return 0 < len(text) <= 5 and text.isdigit() and text.isascii()


class TrustedProxies:
    """The networks whose connections are proxies this service sits behind, and the rule
    that finds the client behind them: the right-most ``X-Forwarded-For`` address that
    is not one of theirs (each proxy appends the address it got the request from, so
    everything to the right of the client was written by trusted proxies, and anything
    to its left by the client itself). A connection from anywhere else is the client,
    whatever its ``X-Forwarded-For`` says.

    The header is read from the right, at most :data:`MAX_FORWARDED_HOPS` elements; an
    element that is not an address stops the walk, and the client is then the last
    trusted address read (or the connection's). The answer is always the connection's
    address or an address written in the header (canonical); it never raises."""

    def __init__(self, networks: Iterable[str]) -> None:
        self.networks = tuple(ipaddress.ip_network(n) for n in networks)
        self._ranges = tuple(
            (n.version, int(n.network_address), int(n.broadcast_address)) for n in self.networks
        )
        self._peers: dict[str, bool] = {}

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, address: Address) -> bool:
        """Whether ``address`` is one of the trusted proxies."""
        return self._trusts(address.version, int(address))

    def _trusts(self, version: int, value: int) -> bool:
        for net_version, low, high in self._ranges:
            if net_version == version and low <= value <= high:
                return True
        return False

    def _trusts_peer(self, peer: str) -> bool:
        known = self._peers.get(peer)
        if known is None:
            found = _parse(peer)
            known = found is not None and self._trusts(*found)
            if len(self._peers) >= 4096:  # peers are few (the proxies), unless they are not
                self._peers.clear()
            self._peers[peer] = known
        return known

    def client(self, peer: str, forwarded: bytes) -> str:
        """The client's address: ``peer`` (the connection's), or the address its trusted
        proxies forwarded in ``forwarded`` (the ``X-Forwarded-For`` values, comma-joined)."""
        if not forwarded or not self._ranges or not self._trusts_peer(peer):
            return peer
        client = peer
        hops = forwarded.rsplit(b",", MAX_FORWARDED_HOPS)
        if len(hops) > MAX_FORWARDED_HOPS:
            del hops[0]  # the unread rest, further left
        for raw in reversed(hops):
            text = raw.strip(b" \t").decode("latin-1")
            found = _parse(text)
            if found is None:
                break
            client = text if found[0] == 4 and ":" not in text else _text(found)
            if not self._trusts(*found):
                break
        return client

    def trusts_peer(self, peer: str) -> bool:
        """Whether the connection's address ``peer`` is one of the trusted proxies."""
        return bool(self._ranges) and self._trusts_peer(peer)


# --------------------------------------------------------------------------- host


_MAX_HOST_TEXT = 255
"""Longer than any host name (253 characters) with a port."""


class HostCheck:
    """Whether a request was made for one of the service's own hosts: the host of its url
    base and of ``also`` (url bases or host names), compared with the request's ``Host``
    (or, from a trusted proxy, the right-most ``X-Forwarded-Host`` element: the one the
    proxy wrote) without its port, in any letter case, a trailing dot ignored. The port
    is not compared: a proxy in front listens on its own. The check never raises;
    anything unreadable is another host."""

    def __init__(self, url_base: str, *, also: Iterable[str] = ()) -> None:
        self.host = base_host(url_base)
        self.hosts = frozenset(h for h in (self.host, *map(base_host, also)) if h)

    def allows(self, host: bytes, known: frozenset[str] = frozenset()) -> bool:
        """Whether ``host`` (a ``Host`` value as sent) names one of the service's hosts,
        or one of ``known`` (host names as :func:`base_host` gives them)."""
        if not host:
            return False
        name = _host_name(host)
        return bool(name) and (name in self.hosts or name in known)

    @staticmethod
    def forwarded(values: bytes) -> bytes:
        """The host a trusted proxy forwarded: the right-most element of the
        ``X-Forwarded-Host`` values (comma-joined)."""
        return values.rpartition(b",")[2].strip(b" \t")


def base_host(base: str) -> str:
    """The host name of a url base (``https://id.brand.com/x``) or of a host name, as
    :class:`HostCheck` compares them ("" for neither)."""
    from urllib.parse import urlsplit

    netloc = urlsplit(base).netloc if "://" in base else base
    try:
        return _host_name(netloc.rpartition("@")[2].encode("latin-1"))
    except UnicodeEncodeError:
        return ""


def _host_name(host: bytes) -> str:
    """The host of a ``Host`` value, lower case, without port, brackets or trailing dot
    ("" for anything that is not a host)."""
    if len(host) > _MAX_HOST_TEXT or not host.isascii():
        return ""
    text = host.decode("ascii").strip(" \t").lower()
    if text.startswith("["):  # an IPv6 literal, with or without a port
        name, bracket, port = text[1:].partition("]")
        if not bracket or (port and not (port[0] == ":" and _is_port(port[1:]))):
            return ""
        return name if ":" in name else ""  # a name in brackets is no host
    name, colon, port = text.partition(":")
    if colon and not _is_port(port):
        return ""
    return name.rstrip(".")


# --------------------------------------------------------------------------- rate limit


def _client_key(client: str) -> str:
    """What a client is counted as: its IPv4 address, or its IPv6 /64 (one subscriber's
    network: anyone holds a whole /64 and can take any address in it)."""
    if ":" not in client:
        return client
    found = _parse(client)
    if found is None:
        return client
    version, value = found
    return _text(found) if version == 4 else f"{value >> 64:x}::/64"


class RateLimiter:
    """At most ``limit`` requests per ``window`` seconds per client, ``burst`` of them at
    once (default ``limit``): the generic cell rate algorithm, a token bucket kept as one
    number per client (the time its bucket would be full again, pushed on by each
    request). Requests refused do not count. At most ``max_clients`` clients are
    remembered; beyond, the one seen least recently is forgotten (its next request
    starts a full bucket). Per process: each worker counts its own connections."""

    def __init__(
        self,
        limit: int,
        window: float,
        burst: int | None = None,
        *,
        max_clients: int = MAX_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1 or window <= 0 or (burst is not None and burst < 1) or max_clients < 1:
            raise ValueError("a rate limit needs a positive limit, window, burst and size")
        self.interval = window / limit
        """Seconds one request holds of the bucket."""
        self.tolerance = self.interval * (burst or limit) + 1e-9
        self.max_clients = max_clients
        self._clock = clock
        self._due: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._due)

    def hit(self, client: str) -> float:
        """Count a request of ``client``: 0.0 when it may go on, else the seconds until
        it may (more than 0)."""
        now = self._clock()
        key = _client_key(client)
        due = self._due
        full = due.get(key)
        after = (now if full is None or full < now else full) + self.interval
        wait = after - now - self.tolerance
        if wait > 0:
            due.move_to_end(key)  # an active client is not forgotten (a fresh bucket)
            return wait
        due[key] = after
        due.move_to_end(key)
        if len(due) > self.max_clients:
            due.popitem(last=False)
        return 0.0


def retry_after(wait: float) -> int:
    """A ``Retry-After`` value: whole seconds, at least 1."""
    return max(1, math.ceil(wait))


# --------------------------------------------------------------------------- HTTP protocol


def raw_response(status: int, reason: str, body: bytes) -> bytes:
    """A whole HTTP/1.1 answer that closes the connection, with the security headers,
    for what is refused before the application sees a request."""
    lines = [
        f"HTTP/1.1 {status} {reason}".encode(),
        b"content-type: text/plain; charset=utf-8",
        b"content-length: " + str(len(body)).encode(),
        b"connection: close",
        *(name + b": " + value for name, value in (*SECURITY_HEADERS, NO_STORE)),
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


HEAD_TOO_LARGE = raw_response(
    431, "Request Header Fields Too Large", b"the request's headers are too large"
)


def http_protocol(*, header_timeout: float, max_header_bytes: int) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with two limits it lacks (pass the class as
    ``uvicorn.Config(http=...)``):

    - a request's head must arrive within ``header_timeout`` seconds of the connection
      opening, or of its first byte on a kept-alive connection (and its body too: the
      deadline ends when the request is complete), or the connection is closed. uvicorn
      times out only idle kept-alive connections, and any byte resets that: a client
      sending a header line every few seconds would hold its connection forever.
    - a head still arriving after ``max_header_bytes`` (and :data:`REQUEST_LINE_BYTES`)
      bytes is answered 431 and closed (httptools holds any amount; a head complete in
      one read is left to the application, which answers it in its own format).

    uvicorn's own "Invalid HTTP request" 400 gets the security headers too."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    max_head_bytes = max_header_bytes + REQUEST_LINE_BYTES

    class EdgeProtocol(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._deadline: asyncio.TimerHandle | None = None
            self._waiting = True
            """Whether a request's head is awaited (not every byte of it has come)."""
            self._head_bytes = 0

        def _arm(self) -> None:
            self._deadline = self.loop.call_later(header_timeout, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            self._deadline = None
            if not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._waiting:
                if self._deadline is None:
                    self._arm()
                self._head_bytes += len(data)
            super().data_received(data)
            if (
                self._waiting
                and self._head_bytes > max_head_bytes
                and not self.transport.is_closing()
            ):
                self._waiting = False
                if self.cycle is None or self.cycle.response_complete:
                    self.transport.write(HEAD_TOO_LARGE)
                self.transport.close()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._deadline is None:  # a pipelined request begins
                self._arm()

        def on_headers_complete(self) -> None:
            self._waiting = False
            self._head_bytes = 0
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._disarm()
            self._waiting = True

        def _unsupported_upgrade_warning(self) -> None:
            # An Upgrade header (websocket, h2c) is answered as a plain request; two
            # warnings per request would let anyone fill the operator's log.
            pass

        def send_400_response(self, msg: str) -> None:
            body = msg.encode("ascii", "replace")
            self.transport.write(raw_response(400, "Bad Request", body))
            self.transport.close()

    return EdgeProtocol


def uvicorn_config(
    app: Any,
    edges: ServeSettings,
    *,
    access_log: bool,
    graceful_seconds: int,
) -> uvicorn.Config:
    """uvicorn's configuration for a provmint service (the public page and the
    dashboard alike), with the limits of ``[serve]``: every service gets the same edges."""
    import uvicorn

    return uvicorn.Config(
        app,
        # httptools, with a deadline for a request's head and a bound on its size while
        # it arrives (see http_protocol: uvicorn has neither).
        http=http_protocol(
            header_timeout=edges.header_timeout, max_header_bytes=edges.max_header_bytes
        ),
        ws="none",
        # X-Forwarded-For is read by the application, from [serve] trusted_proxies only
        # (uvicorn's would believe any local peer's).
        proxy_headers=False,
        timeout_keep_alive=edges.keep_alive_timeout,
        h11_max_incomplete_event_size=edges.max_header_bytes,
        # limit_concurrency is the application's (its 503 has the security headers).
        log_level="warning",
        access_log=access_log,
        server_header=False,
        date_header=False,
        timeout_graceful_shutdown=graceful_seconds,
    )


class _Stopped(Exception):
    """SIGTERM arrived: the service stopped as asked."""


def _stopped(signum: int, frame: object) -> None:
    raise _Stopped


@contextmanager
def sigterm_returns() -> Iterator[None]:
    """Inside, a SIGTERM that stops uvicorn ends the block normally.

    uvicorn shuts down on SIGTERM, then raises it again for the handler it found: this
    one ends the call as a stop that was asked for (as the supervisor does for several
    workers). The handler before is put back on the way out."""
    previous = signal.signal(signal.SIGTERM, _stopped)
    try:
        yield
    except _Stopped:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
