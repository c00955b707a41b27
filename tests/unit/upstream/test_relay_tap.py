"""The relay with the usage tap: one send per chunk, only the gateway's own usage event cut."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from multidict import CIMultiDict

from gateway.upstream.pool import ProxyResponse, StreamOutcome
from gateway.usage.counters import Tokens
from gateway.usage.meter import UsageMeter
from gateway.usage.tap import UsageTap


class Content:
    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    async def iter_any(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk


class Upstream:
    """What ProxyResponse reads of an aiohttp response."""

    status = 200

    def __init__(self, chunks: list[bytes]) -> None:
        self.headers = CIMultiDict({"content-type": "text/event-stream"})
        self.content = Content(chunks)

    def release(self) -> None:
        pass

    def close(self) -> None:
        pass


def event(doc: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(doc).encode() + b"\n\n"


async def relay(chunks: list[bytes], tap: UsageTap) -> tuple[list[bytes], StreamOutcome]:
    sent: list[bytes] = []
    ended: list[StreamOutcome] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            sent.append(message["body"])

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()
        return {}

    async def on_complete(outcome: StreamOutcome) -> None:
        ended.append(outcome)

    response = ProxyResponse(Upstream(chunks), {}, 0, on_complete, 3600, tap)  # type: ignore[arg-type]
    await response({"type": "http"}, receive, send)
    return sent, ended[0]


async def test_the_gateways_usage_chunk_is_cut_and_every_other_chunk_sent_as_it_came() -> None:
    text = event({"choices": [{"delta": {"content": "hi"}}], "usage": None})
    usage = event({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}})
    done = b"data: [DONE]\n\n"
    tap = UsageTap(UsageMeter(10, True), "text/event-stream", drop_usage_event=True)
    sent, outcome = await relay([text, text, usage[:7], usage[7:] + done], tap)
    assert sent == [text, text, done, b""]
    assert outcome.completed
    assert tap.result() == Tokens(3, 1)


async def test_without_cutting_the_chunks_are_the_upstreams() -> None:
    chunks = [b'data: {"a"', b": 1}\n\ndata: [DONE]\n\n"]
    tap = UsageTap(UsageMeter(10), "text/event-stream", drop_usage_event=False)
    sent, _ = await relay(chunks, tap)
    assert sent == [*chunks, b""]
    assert tap.result().estimated
