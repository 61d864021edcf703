"""The gateway's HTTP/1.1 client to its upstreams: per origin a pool of keep-alive connections, one
request at a time on each, bodies as bytes both ways (never decoded, never decompressed).

Why not aiohttp's client session: on every request it builds request and response objects, a
timer, a cookie-jar pass and header multidicts — about 0.4 ms of CPU per request on two small cores,
a third of what the gateway spent in all (bench/README.md, "Gateway"). This does what the gateway
needs and no more: per connection an h11 state machine (a well-kept HTTP/1.1 implementation) writes
the request and reads the answer — status, headers and a body framed by Content-Length, chunked
transfer coding or the end of the connection — and says whether the connection may be reused.

It sets no deadline of its own but the connect's: the caller cancels an attempt that takes too long
(`Router.call`), and a connection whose exchange did not finish is closed, never reused. A request
that finds its reused connection closed by the server before any byte of an answer (the server's
keep-alive timer and ours raced) is sent once more on a new connection, as HTTP clients do.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import h11

MAX_HEAD_BYTES = 64 * 1024      # status line and headers of one answer
_LARGE_BODY_BYTES = 64 * 1024   # written after the head rather than joined to it (saves a copy)


class UpstreamConnectError(Exception):
    """No connection could be made (refused, unreachable, DNS, TLS handshake)."""


class UpstreamConnectTimeout(TimeoutError):
    """No connection within the connect timeout."""


class UpstreamProtocolError(Exception):
    """The connection broke before the answer was whole, or the answer was not HTTP/1.x."""


@dataclass(frozen=True)
class Origin:
    """Where a route's base URL points: scheme, host, port and the path its API sits under."""

    tls: bool
    host: str
    port: int
    base_path: str          # "" or "/some/prefix", without the trailing slash
    host_header: bytes

    @classmethod
    def parse(cls, url: str) -> Origin:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} is not an http:// or https:// URL")
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        host = parts.hostname
        shown = f"[{host}]" if ":" in host else host
        host_header = shown if port == (443 if tls else 80) else f"{shown}:{port}"
        return cls(tls, host, port, parts.path.rstrip("/"), host_header.encode("idna"))


@dataclass(frozen=True)
class UpstreamAnswer:
    status: int
    headers: dict[str, str]     # names in lower case
    body: bytes
    connect_s: float | None     # seconds to set up a new connection for it; None when one was reused


class _Answer:
    """One exchange on a connection: the answer read off the wire by the connection's h11 state
    machine (framing by Content-Length, chunked coding or the end of the connection, interim 1xx
    answers skipped, malformed ones refused)."""

    __slots__ = ("future", "status", "headers", "_chunks", "_started")

    def __init__(self, future: asyncio.Future) -> None:
        self.future = future
        self.status = 0
        self.headers: dict[str, str] = {}
        self._chunks: list[bytes] = []
        self._started = False

    @property
    def started(self) -> bool:
        return self._started

    def feed(self, machine: h11.Connection, data: bytes) -> None:
        """Bytes (b"" for the end of the connection) into the machine, and the events they complete."""
        self._started = self._started or bool(data)
        try:
            machine.receive_data(data)
            while not self.done:
                event = machine.next_event()
                if event is h11.NEED_DATA or event is h11.PAUSED:
                    return
                if isinstance(event, h11.Response):
                    self.status = event.status_code
                    self.headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in event.headers}
                elif isinstance(event, h11.Data):
                    self._chunks.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    self.future.set_result(b"".join(self._chunks) if len(self._chunks) != 1 else self._chunks[0])
                elif isinstance(event, h11.ConnectionClosed):
                    raise UpstreamProtocolError("the connection closed before the answer was whole")
                # h11.InformationalResponse (100 Continue, 103 Early Hints): the real answer follows
        except h11.RemoteProtocolError as e:
            raise UpstreamProtocolError(f"not a well-formed HTTP/1.1 answer: {e}") from None

    def fail(self, error: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(error)

    @property
    def done(self) -> bool:
        return self.future.done()


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.machine = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_BYTES)
        self.answer: _Answer | None = None
        self.closed = False
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport   # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        answer = self.answer
        if answer is None or answer.done:    # nothing asked: a server talking out of turn
            self.close()
            return
        try:
            answer.feed(self.machine, data)
        except UpstreamProtocolError as e:
            answer.fail(e)
            self.close()

    def eof_received(self) -> bool:
        if self.answer is not None and not self.answer.done:
            try:
                self.answer.feed(self.machine, b"")      # a body framed by the end of the connection ends
            except UpstreamProtocolError as e:
                self.answer.fail(e)
        return False     # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.answer is not None and not self.answer.done:
            self.answer.fail(UpstreamProtocolError(
                f"the connection was lost before the answer was whole{f': {exc}' if exc else ''}"))

    def reusable(self) -> bool:
        """After a whole exchange: can the next request go on this connection (both sides keep it)?"""
        if self.closed or self.machine.our_state is not h11.DONE or self.machine.their_state is not h11.DONE:
            return False
        self.machine.start_next_cycle()
        return True

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class UpstreamPool:
    """Keep-alive connections per origin. Not thread-safe: one event loop owns it."""

    def __init__(self, connect_timeout_s: float, keepalive_s: float = 30.0,
                 tls: ssl.SSLContext | None = None) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.keepalive_s = keepalive_s
        self.tls = tls or ssl.create_default_context()
        self._idle: dict[Origin, list[_Connection]] = {}
        self._origins: dict[str, Origin] = {}

    def origin(self, url: str) -> Origin:
        origin = self._origins.get(url)
        if origin is None:
            origin = self._origins[url] = Origin.parse(url)
        return origin

    async def request(self, base_url: str, method: str, path: str, headers: dict[str, str],
                      body: bytes) -> UpstreamAnswer:
        """`method` `path` (under the base URL's own path; already quoted) with these headers and body.
        Raises UpstreamConnectError, UpstreamConnectTimeout or UpstreamProtocolError."""
        origin = self.origin(base_url)
        fields = [(b"host", origin.host_header)]
        if body or method == "POST":
            fields.append((b"content-length", str(len(body)).encode()))
        fields += [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
        try:
            request = h11.Request(method=method, target=f"{origin.base_path}{path}".encode("latin-1"),
                                  headers=fields)
        except h11.LocalProtocolError as e:       # a line break in a header value, a bad name
            raise ValueError(f"a request hetplace cannot send: {e}") from None
        connection = self._reused(origin)
        if connection is not None:
            try:
                return await self._exchange(origin, connection, request, body, None)
            except _StaleConnection:
                pass     # the server had closed it before it saw our request: once more, on a new one
        connection, connect_s = await self._connect(origin)
        return await self._exchange(origin, connection, request, body, connect_s)

    def _reused(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if not connection.closed and now - connection.idle_since < self.keepalive_s:
                return connection
            connection.close()
        return None

    async def _connect(self, origin: Origin) -> tuple[_Connection, float]:
        """A new connection and the seconds its TCP set-up took (the name looked up first, untimed: one
        round trip to the upstream, a sample of the link's RTT; a TLS handshake comes on top)."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                addresses = await loop.getaddrinfo(origin.host, origin.port, type=socket.SOCK_STREAM)
                error: OSError | None = None
                for family, kind, proto, _, address in addresses:
                    sock = socket.socket(family, kind, proto)
                    try:
                        sock.setblocking(False)
                        began = time.monotonic()
                        await loop.sock_connect(sock, address)
                        connect_s = time.monotonic() - began
                    except OSError as e:
                        sock.close()
                        error = e
                        continue
                    except BaseException:
                        sock.close()
                        raise
                    _, connection = await loop.create_connection(
                        _Connection, sock=sock, ssl=self.tls if origin.tls else None,
                        server_hostname=origin.host if origin.tls else None)
                    return connection, connect_s
                raise error or OSError(f"{origin.host} has no address")
        except TimeoutError:
            raise UpstreamConnectTimeout(f"no connection within {self.connect_timeout_s:g} s") from None
        except OSError as e:      # refused, unreachable, DNS (gaierror), TLS (SSLError)
            raise UpstreamConnectError(e.strerror or str(e)) from None

    async def _exchange(self, origin: Origin, connection: _Connection, request: h11.Request, body: bytes,
                        connect_s: float | None) -> UpstreamAnswer:
        answer = connection.answer = _Answer(asyncio.get_running_loop().create_future())
        settled = False
        try:
            transport = connection.transport
            assert transport is not None
            if connection.closed or transport.is_closing():
                if connect_s is None:
                    raise _StaleConnection()
                raise UpstreamProtocolError("the connection closed as it was made")
            machine = connection.machine
            head = machine.send(request)
            # the body as it is, not copied into the framing (Content-Length framing adds nothing)
            pieces = machine.send_with_data_passthrough(h11.Data(data=body)) if body else []
            machine.send(h11.EndOfMessage())
            if pieces and len(body) >= _LARGE_BODY_BYTES:
                transport.write(head)
                transport.writelines(pieces)
            else:
                transport.write(head + b"".join(pieces))
            try:
                payload = await answer.future
            except UpstreamProtocolError:
                if connect_s is None and not answer.started:
                    raise _StaleConnection() from None
                raise
            settled = True
        finally:
            connection.answer = None
            if not settled or not connection.reusable():
                connection.close()
        if not connection.closed:
            connection.idle_since = time.monotonic()
            self._idle.setdefault(origin, []).append(connection)
        return UpstreamAnswer(answer.status, answer.headers, payload, connect_s)

    def close(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()


class _StaleConnection(Exception):
    pass


def quoted(segment: str) -> str:
    """A path segment as it goes on the wire (a model name or version)."""
    return quote(segment, safe="")
