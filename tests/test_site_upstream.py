"""The gateway's upstream HTTP/1.1 client (hetplace/site/upstream.py) against a raw server on
127.0.0.1 that answers with exactly the bytes each case needs: every framing HTTP/1.1 has,
keep-alive reuse, a server closing an idle connection, and answers that are not HTTP."""

from __future__ import annotations

import asyncio

import pytest

from hetplace.site.upstream import (
    UpstreamConnectError,
    UpstreamPool,
    UpstreamProtocolError,
)

pytestmark = pytest.mark.unit


class RawServer:
    """Reads each request (head and Content-Length body) and writes the next canned answer; a
    `None` answer closes the connection without a word."""

    def __init__(self, answers: list[bytes | None], close_after_each: bool = False) -> None:
        self.answers = list(answers)
        self.close_after_each = close_after_each
        self.requests: list[bytes] = []
        self.connections = 0

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while self.answers:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                self.requests.append(head + await reader.readexactly(length))
                answer = self.answers.pop(0)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                if self.close_after_each:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def ask(url: str, pool: UpstreamPool, body: bytes = b'{"inputs": []}'):
    return pool.request(url, "POST", "/v2/models/m/infer", {"Content-Type": "application/json"}, body)


def two_requests(answers: list[bytes | None], close_after_each: bool = False):
    """Two requests in turn through one pool against a server giving `answers`: (first, second, server)."""
    async def run():
        server = RawServer(answers, close_after_each)
        async with server as url:
            pool = UpstreamPool(connect_timeout_s=2)
            first, second = await ask(url, pool), await ask(url, pool)
            pool.close()
        return first, second, server
    return asyncio.run(run())


@pytest.mark.parametrize("answer, body", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", b"hello"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2;ext=1\r\nlo\r\n0\r\nX-T: 1\r\n\r\n",
     b"hello"),
    (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", b"ok"),
    (b"HTTP/1.1 204 No Content\r\n\r\n", b""),
], ids=["content-length", "chunked with an extension and a trailer", "an interim 100 first", "no content"])
def test_each_framing_gives_the_whole_body_and_the_connection_is_reused(answer, body):
    first, second, server = two_requests([answer, answer])
    assert (first.status in (200, 204), first.body, second.body) == (True, body, body)
    assert first.connect_s is not None and second.connect_s is None, "the second request reused the connection"
    assert server.connections == 1
    assert server.requests[0].startswith(b"POST /v2/models/m/infer HTTP/1.1\r\n")
    assert server.requests[0].endswith(b'\r\n\r\n{"inputs": []}')


def test_a_body_framed_by_the_end_of_the_connection_ends_there_and_is_not_reused():
    first, second, server = two_requests(
        [b"HTTP/1.1 200 OK\r\n\r\nuntil the end", b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx"],
        close_after_each=True)
    assert (first.body, second.body, server.connections) == (b"until the end", b"x", 2)


def test_a_request_on_a_connection_the_server_closed_while_idle_goes_once_more_on_a_new_one():
    first, second, server = two_requests([b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na", None,
                                          b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb"])
    assert (first.body, second.body) == (b"a", b"b")
    assert server.connections == 2 and second.connect_s is not None


@pytest.mark.parametrize("answer", [
    b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
    b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
], ids=["not HTTP", "cut short", "a negative length", "a bad chunk size"])
def test_an_answer_that_is_not_well_formed_http_is_a_protocol_error(answer):
    async def run():
        async with RawServer([answer], close_after_each=True) as url:
            pool = UpstreamPool(connect_timeout_s=2)
            try:
                await ask(url, pool)
            finally:
                pool.close()
    with pytest.raises(UpstreamProtocolError):
        asyncio.run(run())


def test_a_refused_connection_and_a_header_with_a_line_break_are_refused_before_anything_is_sent():
    async def refused():
        pool = UpstreamPool(connect_timeout_s=2)
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        await ask(f"http://127.0.0.1:{port}", pool)
    with pytest.raises(UpstreamConnectError):
        asyncio.run(refused())

    async def injected():
        async with RawServer([]) as url:
            await UpstreamPool(connect_timeout_s=2).request(url, "POST", "/x", {"X-A": "1\r\nX-B: 2"}, b"")
    with pytest.raises(ValueError, match="cannot send"):
        asyncio.run(injected())
