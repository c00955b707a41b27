"""The integration tests' upstream: the demo's stand-in model, with faults and counters.

The quickstart's model (:mod:`demo.model`) only answers (with ``usage``, and in
streams asked with ``stream_options.include_usage`` a last chunk with
``"choices": []`` and the usage, as OpenAI does); the tests also need it to
fail on demand and to say what reached it. Asked for per request, with headers:

    X-Demo-Fault: status-500   answer 500 without reaching the model
    X-Demo-Fault: slow         the answer starts after X-Demo-Delay-Ms
    X-Demo-Fault: cut          a streamed answer breaks off after its first events
    X-Demo-Delay-Ms: N         N ms between the events of a streamed answer (default 20)
    X-Demo-Answer: {JSON}      answer exactly this (chat, completions, responses; streamed
                               or whole), deterministic to the byte: {"chunks": [text, ...]}
                               (or {"text": ..., "chunk_chars": N}), optionally
                               "tool_arguments": [piece, ...] for a chat tool call

``GET /_demo/stats`` counts the requests that reached it, the streams open and
the streams that ended early (the caller went away, or a cut).

    python -m tests.stand_in_model --port 9000
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.datastructures import Headers
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from demo.model import TOKEN_DELAY_S, create_demo_app

CUT_AFTER_EVENTS = 3


class CutStream(Exception):
    """Raised while streaming, to break the connection mid-answer."""


@dataclass
class _Response:
    streamed: bool = False
    events: int = 0
    finished: bool = False


class FaultyModel:
    """ASGI middleware around the stand-in model: faults on request, and counters."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.requests = 0
        self.streams_open = 0
        self.streams_closed_early = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == "/_demo/stats":
            await JSONResponse(self.stats())(scope, receive, send)
            return
        headers = Headers(scope=scope)
        fault = headers.get("x-demo-fault", "")
        delay_s = int(headers.get("x-demo-delay-ms") or 0) / 1000
        if scope["method"] == "POST":
            self.requests += 1
        if fault == "slow":
            await asyncio.sleep(delay_s)
        if fault == "status-500":
            failure = {"error": {"message": "injected failure", "type": "server_error"}}
            await JSONResponse(failure, 500)(scope, receive, send)
            return
        script = headers.get("x-demo-answer")
        app: ASGIApp = self.app
        if script is not None and scope["method"] == "POST":
            app = scripted_answer(scope["path"], await _read_body(receive), json.loads(script))
        response = _Response()

        async def paced(message: Message) -> None:
            if message["type"] == "http.response.start":
                content_type = Headers(raw=message["headers"]).get("content-type", "")
                response.streamed = content_type.startswith("text/event-stream")
                if response.streamed:
                    self.streams_open += 1
            elif message["type"] == "http.response.body" and response.streamed:
                if not message.get("more_body", False):
                    response.finished = True
                else:
                    response.events += 1
                    if fault == "cut" and response.events > CUT_AFTER_EVENTS:
                        raise CutStream("injected cut")
                    if response.events > 1:
                        await asyncio.sleep(delay_s or TOKEN_DELAY_S)
            await send(message)

        try:
            await app(scope, receive, paced)
        finally:
            if response.streamed:
                self.streams_open -= 1
                if not response.finished:
                    self.streams_closed_early += 1

    def stats(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "streams_open": self.streams_open,
            "streams_closed_early": self.streams_closed_early,
        }


async def _read_body(receive: Receive) -> dict[str, Any]:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = json.loads(b"".join(chunks) or b"{}")
    return body if isinstance(body, dict) else {}


def _pieces(script: dict[str, Any]) -> list[str]:
    if "chunks" in script:
        return [str(piece) for piece in script["chunks"]]
    text, size = str(script.get("text", "")), int(script.get("chunk_chars", 8))
    return [text[i : i + size] for i in range(0, len(text), size)]


def _event(doc: dict[str, Any], name: str | None = None) -> bytes:
    head = f"event: {name}\n" if name else ""
    return f"{head}data: {json.dumps(doc)}\n\n".encode()


def scripted_answer(path: str, body: dict[str, Any], script: dict[str, Any]) -> Response:
    """The answer ``script`` describes, in ``path``'s API shape: the same bytes every time."""
    model, pieces = body.get("model", "demo-small"), _pieces(script)
    arguments = [str(piece) for piece in script.get("tool_arguments", [])]
    text = "".join(pieces)
    if path == "/v1/responses":
        return _scripted_responses(model, pieces, bool(body.get("stream")))
    if path == "/v1/completions":
        base = {"id": "cmpl-scripted", "object": "text_completion", "created": 0, "model": model}
        events = [
            {**base, "choices": [{"index": 0, "text": p, "logprobs": None, "finish_reason": None}]}
            for p in pieces
        ]
        events.append(
            {
                **base,
                "choices": [{"index": 0, "text": "", "logprobs": None, "finish_reason": "stop"}],
            }
        )
        whole = {**base, "choices": [{"index": 0, "text": text, "finish_reason": "stop"}]}
    else:
        base = {"id": "chatcmpl-scripted", "object": "chat.completion.chunk", "created": 0}
        base["model"] = model

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        events = [chunk({"role": "assistant", "content": ""})]
        events += [chunk({"content": p}) for p in pieces]
        call = {"index": 0, "id": "call_scripted", "type": "function"}
        for n, piece in enumerate(arguments):
            function = {"name": "save", "arguments": piece} if n == 0 else {"arguments": piece}
            events.append(chunk({"tool_calls": [{**call, "function": function} if n == 0 else
                                                {"index": 0, "function": function}]}))  # fmt: skip
        events.append(chunk({}, "tool_calls" if arguments else "stop"))
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if arguments:
            tool = {"name": "save", "arguments": "".join(arguments)}
            message["tool_calls"] = [{"id": "call_scripted", "type": "function", "function": tool}]
        whole = {
            "id": "chatcmpl-scripted", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        }  # fmt: skip
    if not body.get("stream"):
        return JSONResponse(whole)

    async def stream() -> AsyncIterator[bytes]:
        for doc in events:
            yield _event(doc)
        yield b"data: [DONE]\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream")


def _scripted_responses(model: str, pieces: list[str], streamed: bool) -> Response:
    text = "".join(pieces)
    item = {
        "type": "message", "id": "msg_scripted", "status": "completed", "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }  # fmt: skip
    whole = {
        "id": "resp_scripted", "object": "response", "created_at": 0, "status": "completed",
        "model": model, "output": [item],
        "usage": {"input_tokens": 1, "output_tokens": len(pieces), "total_tokens": 1 + len(pieces)},
    }  # fmt: skip
    if not streamed:
        return JSONResponse(whole)

    async def stream() -> AsyncIterator[bytes]:
        running = {**whole, "status": "in_progress", "output": [], "usage": None}
        yield _event({"type": "response.created", "response": running}, "response.created")
        for n, piece in enumerate(pieces):
            delta = {
                "type": "response.output_text.delta", "item_id": "msg_scripted",
                "output_index": 0, "content_index": 0, "delta": piece, "sequence_number": n + 1,
            }  # fmt: skip
            yield _event(delta, "response.output_text.delta")
        yield _event({"type": "response.completed", "response": whole}, "response.completed")

    return StreamingResponse(stream(), media_type="text/event-stream")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    app = FaultyModel(create_demo_app(token_delay_s=0))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
