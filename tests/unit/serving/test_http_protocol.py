"""Connection deadlines and bounds, on a uvicorn server in this process, on loopback.

Clients are raw sockets (asyncio streams), so that a test can send a request
byte by byte, stop half-way, or never send anything at all.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from gateway.config import Limits
from gateway.serving.http_protocol import BODY_TIMEOUT, HEADER_TIMEOUT, bounded_protocol

DEADLINE_S = 0.3
GET = b"GET /hello HTTP/1.1\r\nHost: test\r\n\r\n"


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers at once, without reading any request body."""
    if scope["type"] != "http":
        return
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]}
    )
    await send({"type": "http.response.body", "body": b"hello"})


class Server:
    def __init__(self, port: int, timeouts: list[str]):
        self.port = port
        self.timeouts = timeouts

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)

    async def get(self) -> bytes:
        reader, writer = await self.connect()
        writer.write(GET)
        answer = await asyncio.wait_for(reader.readuntil(b"hello"), 5)
        writer.close()
        return answer


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    timeouts: list[str] = []
    limits = Limits(header_timeout_s=DEADLINE_S, body_timeout_s=DEADLINE_S, max_header_bytes=2048)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        hello, http=bounded_protocol(limits, timeouts.append), lifespan="off", log_level="error"
    )
    uv = uvicorn.Server(config)
    task = asyncio.create_task(uv.serve(sockets=[sock]))
    while not uv.started:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    yield Server(sock.getsockname()[1], timeouts)
    uv.should_exit = True
    await task


async def closed_after(reader: asyncio.StreamReader, limit_s: float = 5) -> float:
    """Seconds until the server closes the connection (reads until EOF)."""
    started = time.monotonic()
    while await asyncio.wait_for(reader.read(1024), limit_s):
        pass
    return time.monotonic() - started


async def test_a_slow_loris_is_cut_at_the_header_deadline_while_others_are_served(
    server: Server,
) -> None:
    reader, writer = await server.connect()
    started = time.monotonic()

    async def trickle() -> None:
        for byte in GET[:-2]:
            if writer.is_closing() or reader.at_eof():
                return
            writer.write(bytes([byte]))
            await asyncio.sleep(0.05)

    trickling = asyncio.create_task(trickle())
    assert b"200 OK" in await server.get(), "a normal request is served meanwhile"
    assert await reader.read() == b"", "closed without an answer"
    elapsed = time.monotonic() - started
    trickling.cancel()
    writer.close()
    assert DEADLINE_S * 0.9 <= elapsed < DEADLINE_S + 1.5
    assert server.timeouts == [HEADER_TIMEOUT]


async def test_a_connection_that_sends_nothing_is_closed(server: Server) -> None:
    reader, writer = await server.connect()
    assert DEADLINE_S * 0.9 <= await closed_after(reader) < DEADLINE_S + 1.5
    writer.close()
    assert server.timeouts == [HEADER_TIMEOUT]


async def test_keep_alive_requests_each_get_their_own_header_deadline(server: Server) -> None:
    reader, writer = await server.connect()
    for _ in range(3):  # together longer than one deadline, each well within it
        writer.write(GET)
        assert b"200 OK" in await asyncio.wait_for(reader.readuntil(b"hello"), 5)
        await asyncio.sleep(DEADLINE_S * 0.6)
    writer.write(GET[:10])  # a request that starts and stalls is cut
    assert await closed_after(reader) < DEADLINE_S + 1.5
    writer.close()
    assert server.timeouts == [HEADER_TIMEOUT]


async def test_an_oversized_request_head_gets_431(server: Server) -> None:
    reader, writer = await server.connect()
    writer.write(b"GET /hello HTTP/1.1\r\nHost: test\r\nX-Big: " + b"a" * 4096 + b"\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 431 ")


async def test_a_body_trickled_after_the_answer_is_cut_at_the_body_deadline(
    server: Server,
) -> None:
    reader, writer = await server.connect()
    writer.write(b"POST /hello HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\nx")
    assert b"200 OK" in await asyncio.wait_for(reader.readuntil(b"hello"), 5)
    started = time.monotonic()

    async def trickle() -> None:
        while not writer.is_closing():
            writer.write(b"x")
            await asyncio.sleep(0.05)

    trickling = asyncio.create_task(trickle())
    assert await asyncio.wait_for(reader.read(), 5) == b""
    trickling.cancel()
    writer.close()
    assert time.monotonic() - started < DEADLINE_S + 1.5
    assert server.timeouts == [BODY_TIMEOUT]


async def test_a_body_that_arrives_in_time_keeps_the_connection(server: Server) -> None:
    reader, writer = await server.connect()
    writer.write(b"POST /hello HTTP/1.1\r\nHost: test\r\nContent-Length: 3\r\n\r\nabc")
    assert b"200 OK" in await asyncio.wait_for(reader.readuntil(b"hello"), 5)
    await asyncio.sleep(DEADLINE_S * 1.5)  # idle, within keep-alive (5 s)
    writer.write(GET)
    assert b"200 OK" in await asyncio.wait_for(reader.readuntil(b"hello"), 5)
    writer.close()
    assert server.timeouts == []
