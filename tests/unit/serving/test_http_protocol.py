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
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.config import Limits
from gateway.serving.http_protocol import (
    BODY_TIMEOUT,
    HEADER_TIMEOUT,
    WRITE_TIMEOUT,
    bounded_protocol,
)

DEADLINE_S = 0.3
GET = b"GET /hello HTTP/1.1\r\nHost: test\r\n\r\n"
GET_LARGE = b"GET /large HTTP/1.1\r\nHost: test\r\n\r\n"
CHUNK = b"x" * 65536
LARGE_CHUNKS = 128
"""An 8 MiB answer: far beyond what the socket buffers and the transport hold."""


def make_app(ended: list[str]) -> ASGIApp:
    """``/large``: an 8 MiB answer sent over about a second (noting how it ended in ``ended``);
    anything else: ``hello`` at once, without reading any request body."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/large":
            size = str(len(CHUNK) * LARGE_CHUNKS).encode()
            await send(
                {"type": "http.response.start", "status": 200,
                 "headers": [(b"content-length", size)]}
            )  # fmt: skip
            for _ in range(LARGE_CHUNKS):
                await send({"type": "http.response.body", "body": CHUNK, "more_body": True})
                await asyncio.sleep(0.008)
            await send({"type": "http.response.body", "body": b""})
            message = await receive()
            ended.append("disconnected" if message["type"] == "http.disconnect" else "complete")
            return
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]}
        )
        await send({"type": "http.response.body", "body": b"hello"})

    return app


class Server:
    def __init__(self, port: int, timeouts: list[str], ended: list[str]):
        self.port = port
        self.timeouts = timeouts
        self.ended = ended

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
    ended: list[str] = []
    limits = Limits(
        header_timeout_s=DEADLINE_S,
        body_timeout_s=DEADLINE_S,
        write_timeout_s=DEADLINE_S,
        max_header_bytes=2048,
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        make_app(ended),
        http=bounded_protocol(limits, timeouts.append),
        lifespan="off",
        log_level="error",
    )
    uv = uvicorn.Server(config)
    task = asyncio.create_task(uv.serve(sockets=[sock]))
    while not uv.started:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    yield Server(sock.getsockname()[1], timeouts, ended)
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


async def test_a_client_that_stops_reading_its_answer_is_cut_and_the_answer_ends(
    server: Server,
) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", server.port))
    await loop.sock_sendall(sock, GET_LARGE)
    started = time.monotonic()
    while not server.ended and time.monotonic() - started < 5:  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    elapsed = time.monotonic() - started
    sock.close()
    assert server.ended == ["disconnected"], "the application saw its client go"
    assert elapsed < DEADLINE_S + 2.0
    assert server.timeouts == [WRITE_TIMEOUT]
    assert b"200 OK" in await server.get(), "the server serves on"


async def test_a_client_that_reads_its_large_answer_is_never_cut(server: Server) -> None:
    reader, writer = await server.connect()
    writer.write(GET_LARGE)
    received = 0
    while chunk := await asyncio.wait_for(reader.read(65536), 5):
        received += len(chunk)
        if received >= len(CHUNK) * LARGE_CHUNKS:
            break
    writer.close()
    assert received > len(CHUNK) * LARGE_CHUNKS
    assert server.timeouts == []
