"""The meter and the relay's tap: usage read as the answer passes (the SSE splitter is
gateway.upstream.sse, tested in tests/unit/upstream/test_sse.py)."""

from __future__ import annotations

import json
from typing import Any

from gateway.usage.counters import Tokens
from gateway.usage.meter import UsageMeter, estimate_tokens
from gateway.usage.tap import UsageTap

USAGE = {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}


def event(doc: dict[str, Any] | str) -> bytes:
    data = doc if isinstance(doc, str) else json.dumps(doc)
    return f"data: {data}\n\n".encode()


def chunk(text: str) -> dict[str, Any]:
    return {"object": "chat.completion.chunk", "choices": [{"delta": {"content": text}}]}


USAGE_CHUNK = {"object": "chat.completion.chunk", "choices": [], "usage": USAGE}


def test_meter_reads_whole_answers_of_every_api() -> None:
    meter = UsageMeter(body_bytes=400)
    meter.observe_body({"usage": USAGE})
    assert meter.result() == Tokens(7, 5)
    responses = UsageMeter(400)
    responses.observe_body({"usage": {"input_tokens": 3, "output_tokens": 9, "total_tokens": 12}})
    assert responses.result() == Tokens(3, 9)
    embeddings = UsageMeter(400)
    embeddings.observe_body({"usage": {"prompt_tokens": 4, "total_tokens": 4}})
    assert embeddings.result() == Tokens(4, 0)


def test_no_usage_is_an_estimate_that_says_so() -> None:
    meter = UsageMeter(body_bytes=401)
    assert meter.observe_event(chunk("12345678")) is False
    meter.observe_body({"usage": "nonsense"})
    assert meter.result() == Tokens(estimate_tokens(401), 2, estimated=True)
    assert meter.result().estimated


def test_the_usage_event_is_dropped_only_when_the_gateway_asked_for_it() -> None:
    asked_by_gateway = UsageMeter(10, drop_usage_event=True)
    assert asked_by_gateway.observe_event(chunk("hi")) is False
    assert asked_by_gateway.observe_event(USAGE_CHUNK) is True
    assert asked_by_gateway.result() == Tokens(7, 5)
    asked_by_caller = UsageMeter(10, drop_usage_event=False)
    assert asked_by_caller.observe_event(USAGE_CHUNK) is False
    assert asked_by_caller.result() == Tokens(7, 5)


def test_responses_stream_usage_comes_with_response_completed() -> None:
    meter = UsageMeter(10, drop_usage_event=True)
    assert meter.observe_event({"type": "response.output_text.delta", "delta": "hey"}) is False
    done = {
        "type": "response.completed",
        "response": {"usage": {"input_tokens": 2, "output_tokens": 1}},
    }
    assert meter.observe_event(done) is False
    assert meter.result() == Tokens(2, 1)


async def test_tap_passes_chunks_unchanged_when_nothing_is_cut() -> None:
    tap = UsageTap(UsageMeter(10), "text/event-stream; charset=utf-8", drop_usage_event=False)
    chunks = [event(chunk("a"))[:5], event(chunk("a"))[5:] + event(USAGE_CHUNK), event("[DONE]")]
    assert [list(await tap.feed(c)) for c in chunks] == [[c] for c in chunks]
    assert await tap.end() == []
    assert tap.result() == Tokens(7, 5)


async def test_tap_cuts_the_usage_event_it_asked_for_and_nothing_else() -> None:
    tap = UsageTap(UsageMeter(10, True), "text/event-stream", drop_usage_event=True)
    first, usage, done = event(chunk("a")), event(USAGE_CHUNK), event("[DONE]")
    assert await tap.feed(first) == [first]
    assert await tap.feed(usage[:10]) == []  # held: it may be the usage event
    assert await tap.feed(usage[10:] + done) == [done]
    assert await tap.feed(b"data: unterminated") == []
    assert await tap.end() == [b"data: unterminated"]
    assert tap.result() == Tokens(7, 5)


async def test_tap_reads_a_json_answer_once_it_is_over() -> None:
    tap = UsageTap(UsageMeter(10), "application/json", drop_usage_event=False)
    body = json.dumps({"choices": [], "usage": USAGE}).encode()
    assert await tap.feed(body[:20]) == [body[:20]]
    assert await tap.feed(body[20:]) == [body[20:]]
    assert tap.result() == Tokens(7, 5)


async def test_tap_estimates_other_answers() -> None:
    tap = UsageTap(UsageMeter(8), "text/plain", drop_usage_event=False)
    assert await tap.feed(b"hello") == [b"hello"]
    assert tap.result() == Tokens(2, 0, estimated=True)
