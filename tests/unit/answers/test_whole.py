"""A whole answer: read within its bound and deadline, parsed once, refused when it cannot be."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from gateway.answers.whole import parse_answer, read_answer
from gateway.exceptions import AnswerUnjudgeable, UpstreamTimeout


async def answer(request: web.Request) -> web.StreamResponse:
    kind = request.match_info["kind"]
    if kind == "gzip":
        return web.Response(body=b"\x1f\x8b...", headers={"Content-Encoding": "gzip"})
    if kind == "slow":
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b'{"a": ')
        await asyncio.sleep(0.5)
        return response
    if kind == "chunked":
        response = web.StreamResponse()  # no Content-Length: the bound is checked while reading
        await response.prepare(request)
        for _ in range(10):
            await response.write(b"x" * 100)
        return response
    return web.Response(body=b'{"choices": []}', content_type="application/json")


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/{kind}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def read(url: str, max_bytes: int = 1000, timeout_s: float = 5) -> bytes:
    async with (
        aiohttp.ClientSession(auto_decompress=False) as session,
        session.get(url) as response,
    ):
        return await read_answer(response, max_bytes, timeout_s)


async def test_a_whole_answer_is_read_and_parsed(upstream: str) -> None:
    assert parse_answer(await read(upstream + "/json")) == {"choices": []}


async def test_over_the_bound_it_is_not_judged(upstream: str) -> None:
    with pytest.raises(AnswerUnjudgeable, match="max_body_bytes"):
        await read(upstream + "/chunked", max_bytes=999)
    assert len(await read(upstream + "/chunked", max_bytes=1000)) == 1000
    with pytest.raises(AnswerUnjudgeable, match="max_body_bytes"):
        await read(upstream + "/json", max_bytes=5)  # Content-Length says so at once


async def test_a_compressed_answer_is_not_judged(upstream: str) -> None:
    with pytest.raises(AnswerUnjudgeable, match="compressed"):
        await read(upstream + "/gzip")


async def test_the_deadline_bounds_the_whole_read(upstream: str) -> None:
    with pytest.raises(UpstreamTimeout):
        await read(upstream + "/slow", timeout_s=0.1)


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b"\xff\xfe", b""])
def test_what_is_not_a_json_object_is_not_judged(raw: bytes) -> None:
    with pytest.raises(AnswerUnjudgeable):
        parse_answer(raw)
