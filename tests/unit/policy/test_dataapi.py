"""The lean Data API client: connection reuse, and no answer ever reaching the wrong question."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from gateway.exceptions import DataApiError
from gateway.policy.dataapi import DataApiClient

Handler = Callable[[bytes, int], bytes | None]
"""(request body, connection number) -> the raw answer, or None to close the connection."""


class Server:
    """A loopback server answering each request by a handler; counts connections."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.delay_s = 0.0
        self.writers: list[asyncio.StreamWriter] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                body = await reader.readexactly(length)
                await asyncio.sleep(self.delay_s)
                answer = self.handler(body, number)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


Serve = Callable[[Handler], Awaitable[tuple["Server", str]]]


def ok(body: bytes, extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> tuple[Server, str]:
        fake = Server(handler)
        server = await asyncio.start_server(fake.serve, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return fake, f"http://127.0.0.1:{port}"

    yield start
    for server in servers:
        server.close()


async def test_reuses_one_connection_for_sequential_questions(serve: Serve) -> None:
    fake, url = await serve(lambda body, _n: ok(body))
    client = DataApiClient(url)
    for i in range(5):
        assert await client.post(client.request("/v1/data/x", str(i).encode())) == (200, b"%d" % i)
    assert fake.connections == 1
    await client.close()


async def test_concurrent_questions_get_their_own_answers(serve: Serve) -> None:
    fake, url = await serve(lambda body, _n: ok(body))
    client = DataApiClient(url)
    bodies = [str(i).encode() for i in range(20)]
    answers = await asyncio.gather(*(client.post(client.request("/", b)) for b in bodies))
    assert [body for _, body in answers] == bodies
    assert fake.connections <= 20
    await client.close()


async def test_a_connection_closed_while_idle_is_replaced(serve: Serve) -> None:
    fake, url = await serve(lambda body, _n: ok(body))
    client = DataApiClient(url)
    assert await client.post(client.request("/", b"1")) == (200, b"1")
    for writer in fake.writers:  # OPA drops its idle connections
        writer.close()
    await asyncio.sleep(0.05)
    assert await client.post(client.request("/", b"2")) == (200, b"2")
    assert fake.connections == 2
    await client.close()


async def test_a_stale_connection_is_retried_once_on_a_new_one(serve: Serve) -> None:
    # The first connection is closed by the server on its second request, before
    # any answer: the client cannot have seen it yet, and asks again.
    fake, url = await serve(lambda body, n: None if n == 1 and body == b"2" else ok(body))
    client = DataApiClient(url)
    assert await client.post(client.request("/", b"1")) == (200, b"1")
    assert await client.post(client.request("/", b"2")) == (200, b"2")
    assert fake.connections == 2
    await client.close()


async def test_a_question_cut_by_a_timeout_never_leaves_its_answer_behind(serve: Serve) -> None:
    fake, url = await serve(lambda body, _n: ok(body))
    client = DataApiClient(url)
    fake.delay_s = 0.2
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await client.post(client.request("/", b"late"))
    fake.delay_s = 0.0
    assert await client.post(client.request("/", b"next")) == (200, b"next")
    assert fake.connections == 2  # the cut connection was closed, not reused
    await client.close()


async def test_connection_close_and_chunked_answers(serve: Serve) -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    fake, url = await serve(
        lambda body, n: chunked if body == b"c" else ok(body, "Connection: close\r\n")
    )
    client = DataApiClient(url)
    assert await client.post(client.request("/", b"1")) == (200, b"1")
    assert await client.post(client.request("/", b"c")) == (200, b"abcde")
    assert fake.connections == 2  # "Connection: close" was honoured
    await client.close()


async def test_errors_are_data_api_errors(serve: Serve) -> None:
    _, url = await serve(lambda _body, _n: b"NOT HTTP\r\n\r\n")
    client = DataApiClient(url)
    with pytest.raises(DataApiError, match="malformed"):
        await client.post(client.request("/", b"1"))
    with pytest.raises(DataApiError, match="cannot connect"):
        await DataApiClient("http://127.0.0.1:9").post(b"")
    with pytest.raises(ValueError, match="http://host"):
        DataApiClient("https://opa.example")
