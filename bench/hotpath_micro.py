"""The gateway's own per-request work, piece by piece: the way it is done, beside the way it was.

    .venv/bin/python bench/hotpath_micro.py [--number N] [--repeat R]

Each row times one piece of an allowed request's path in this process (best of
``--repeat`` rounds of ``--number`` calls), on the bench's own request (the
chat body of ``proxy_overhead.py``, an RS256 caller with a group, usage
counting on) and the stand-in model's answer: the earlier way (still
expressible with today's functions) and the current one. These are CPU costs
without contention; under load each costs more (``proxy_overhead.py`` reports
the whole process's CPU per request). Prints markdown; never a pass/fail test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import timeit
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import uvloop
from starlette.routing import Match, Route

from gateway.answers.shapes import ChatAnswer
from gateway.app import create_app
from gateway.auth import Caller
from gateway.config import Settings
from gateway.decisionlog import input_sha256
from gateway.decisionlog.jcs import costly_to_encode
from gateway.decisionlog.record import DecisionEntry, _malformed, format_time, prepare_record
from gateway.pinning.bundle import Bundle
from gateway.pinning.store import PolicyStore
from gateway.policy.encoded import EncodedInput
from gateway.policy.input import RequestFacts, build_input
from gateway.request.body import parse_json_body
from gateway.request.deadlines import read_within
from gateway.request.ids import DecisionIds

BODY = {
    "model": "demo-small",
    "messages": [
        {"role": "system", "content": "You are a concise assistant."},
        {"role": "user", "content": "Say hello to the community, briefly."},
    ],
    "max_tokens": 128,
    "temperature": 0.2,
}
ANSWER = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": "demo-small",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello community! A short greeting."},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21},
}
USAGE = {
    "caller": {"minute": {"requests": 3, "tokens": 120}, "day": {"requests": 50, "tokens": 5000}},
    "groups": {"members": {"minute": {"requests": 9, "tokens": 400}}},
}


def request_input() -> dict[str, Any]:
    """The bench request's policy input document, as the gateway builds it."""
    raw = json.dumps(BODY).encode()
    parsed = parse_json_body(raw, 64)
    facts = RequestFacts(
        api="chat.completions", model="demo-small", stream=False, body=parsed.value,
        method="POST", path="/v1/chat/completions", query={},
        headers={"content-type": "application/json", "user-agent": "hey/0.0.1"},
        upstream="default", texts=parsed.texts, usage=USAGE,
    )  # fmt: skip
    caller = Caller(
        authenticated=True, sub="bench-user", iss="https://issuer.bench",
        claims={"sub": "bench-user", "iss": "https://issuer.bench", "aud": "agora",
                "iat": 1795864800, "exp": 1795951200, "groups": ["members"]},
    )  # fmt: skip
    store = PolicyStore()
    version = store.activate(Bundle({".manifest": b"{}"}, "bench"), 1, None)
    return build_input(facts, caller, version)


def answer_document() -> dict[str, Any]:
    answer = ChatAnswer()
    answer.add_body(ANSWER)
    return answer.document(final=True)


def entry(document: dict[str, Any]) -> DecisionEntry:
    return DecisionEntry(
        decision_id=str(uuid.uuid4()), time=datetime.now(UTC), policy_version=1,
        policy_digest="sha256:" + "0" * 64, caller_sub="bench-user", api="chat.completions",
        model="demo-small", upstream="default", allow=True, reasons=[], status=None,
        latency_us={"auth": 1, "policy": 900, "upstream": 0, "total": 1200},
        input_sha256=input_sha256(document), obligations={"max_tokens": 128}, group="members",
    )  # fmt: skip


def route_lookup(routes: list[Route]) -> Callable[[], object]:
    scope = {"type": "http", "path": "/v1/chat/completions", "method": "POST", "root_path": ""}

    def find() -> object:
        for route in routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return route
        return None

    return find


async def _stream() -> AsyncIterator[bytes]:
    """A request body as Starlette streams a small one: the body, then an empty chunk."""
    yield json.dumps(BODY).encode()
    yield b""


async def _read_with_wait_for(timeout_s: float) -> None:
    """The body read as ``read_within`` did before: ``asyncio.wait_for`` on each read."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    chunks = aiter(_stream())
    while True:
        try:
            await asyncio.wait_for(anext(chunks), deadline - loop.time())
        except StopAsyncIteration:
            return


async def _read_now(timeout_s: float) -> None:
    async for _ in read_within(_stream(), timeout_s):
        pass


def body_read_us(read: Callable[[float], Awaitable[None]], number: int, repeat: int) -> float:
    """CPU per body read on uvloop (the server's loop), best of ``repeat``."""

    async def rounds() -> float:
        best = float("inf")
        for _ in range(repeat):
            started = time.process_time()
            for _ in range(number):
                await read(30.0)
            best = min(best, (time.process_time() - started) / number * 1e6)
        return best

    return uvloop.run(rounds())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--number", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    def us(work: Callable[[], object]) -> float:
        return min(timeit.repeat(work, number=args.number, repeat=args.repeat)) / args.number * 1e6

    document, response = request_input(), answer_document()
    encoded = EncodedInput.of(document)

    def old_request() -> object:
        payload = json.dumps({"input": document}, separators=(",", ":")).encode()
        return payload, costly_to_encode(document), input_sha256(document)

    def new_request() -> object:
        fresh = EncodedInput.of(document)
        return fresh.payload(), fresh.sha256()

    def old_response() -> object:
        merged = {**document, "response": response}
        payload = json.dumps({"input": merged}, separators=(",", ":")).encode()
        return payload, costly_to_encode(merged), input_sha256(merged)

    def new_response() -> object:
        judged = encoded.with_response(response)
        return judged.payload(), judged.sha256()

    record = entry(document)
    fields, _ = prepare_record(record, caller_key=b"k" * 32, include_body=False)
    chained = {**fields, "seq": 1, "prev": None, "hash": ""}
    moment = datetime.now(UTC)
    ids = DecisionIds()
    public = create_app(Settings.model_validate({"auth": {"required": False}})).public
    routes = [r for r in public.routes if isinstance(r, Route)]
    v1_last = routes[1:] + routes[:1]  # the order before: /v1/ behind every other route

    rows = [
        ("policy input, request: OPA's question + input_sha256", old_request, new_request),
        ("policy input, response: the same with `response`", old_response, new_response),
        ("a record's second check (`_malformed`), per record", lambda: _malformed(chained), None),
        (
            "`prepare_record` of a decision, per record (today, without the second check)",
            None,
            lambda: prepare_record(record, caller_key=b"k" * 32, include_body=False),
        ),
        (
            "record time text, per record",
            lambda: moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            lambda: format_time(moment),
        ),
        ("decision id", lambda: str(uuid.uuid4()), ids.next),
        (
            "input time text (`build_input`)",
            lambda: moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            lambda: moment.isoformat(timespec="microseconds")[:26] + "Z",
        ),
        ("finding the /v1/ route", route_lookup(v1_last), route_lookup(routes)),
    ]
    print(
        f"| per-request piece ({args.number} calls, best of {args.repeat}) | before µs | now µs |"
    )
    print("|---|--:|--:|")
    for name, before, now in rows:
        shown = [f"{us(work):.1f}" if work is not None else "-" for work in (before, now)]
        print(f"| {name} | {shown[0]} | {shown[1]} |")
    reads = [
        body_read_us(read, args.number, args.repeat) for read in (_read_with_wait_for, _read_now)
    ]
    print(f"| reading a small body within its deadline | {reads[0]:.1f} | {reads[1]:.1f} |")


if __name__ == "__main__":
    main()
