"""A stand-in model server that speaks the OpenAI protocol, for the quickstart.

No model weights run here, so answers are deterministic echoes; the protocol
is real: chat and text completions (with Server-Sent Events streaming, a word
at a time), embeddings, responses and the model list. The integration tests
wrap it with fault injection of their own (``tests/stand_in_model.py``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import struct
import time
import uuid
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

MODELS = ("demo-small", "demo-large", "demo-embed")
"""Listed models; any other ``demo-*`` name is also served."""
EMBEDDING_DIMENSIONS = 16
TOKEN_DELAY_S = 0.02
"""Pause between streamed words: slow enough to see an answer arrive word by word."""


def _error(status: int, message: str, code: str) -> JSONResponse:
    return JSONResponse(
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "code": code,
                "param": None,
            }
        },
        status_code=status,
    )


def _text_of(value: Any) -> str:
    """The caller's text from a string, a list of strings, or a list of content parts."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return " ".join(_text_of(item) for item in value)
    if isinstance(value, dict):
        return _text_of(value.get("text") or value.get("content") or "")
    return ""


def _reply(model: str, prompt: str) -> str:
    words = prompt.split()
    echo = " ".join(words[-12:]) if words else "(nothing)"
    return f"This is {model}, a stand-in model. You said: {echo}"


def _usage(prompt: str, answer: str) -> dict[str, int]:
    prompt_tokens, completion_tokens = len(prompt.split()), len(answer.split())
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


async def _body(request: Request) -> dict[str, Any] | JSONResponse:
    try:
        body = json.loads(await request.body())
    except ValueError:
        return _error(400, "invalid JSON body", "invalid_json")
    if not isinstance(body, dict):
        return _error(400, "the body must be a JSON object", "invalid_json")
    model = body.get("model")
    if not isinstance(model, str) or not model.startswith("demo-"):
        return _error(404, f"The model `{model}` does not exist", "model_not_found")
    return body


def _include_usage(body: dict[str, Any]) -> bool:
    """Whether a stream asks for its usage (``stream_options.include_usage``)."""
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


async def _sse(
    chunks: AsyncIterator[dict[str, Any]], usage: dict[str, Any] | None = None
) -> AsyncIterator[bytes]:
    """The events; with ``usage`` (as OpenAI does for ``include_usage``), every chunk carries
    ``"usage": null`` and a last chunk with no choices carries the usage."""
    last: dict[str, Any] = {}
    async for chunk in chunks:
        last = chunk
        if usage is not None:
            chunk = {**chunk, "usage": None}
        yield f"data: {json.dumps(chunk)}\n\n".encode()
    if usage is not None:
        yield f"data: {json.dumps({**last, 'choices': [], 'usage': usage})}\n\n".encode()
    yield b"data: [DONE]\n\n"


async def _tokens(answer: str, delay_s: float) -> AsyncIterator[tuple[int, str]]:
    for index, word in enumerate(answer.split(" ")):
        yield index, word if index == 0 else " " + word
        await asyncio.sleep(delay_s)


async def chat_completions(request: Request, token_delay_s: float) -> Response:
    body = await _body(request)
    if isinstance(body, JSONResponse):
        return body
    prompt = _text_of([m.get("content") for m in body.get("messages", []) if isinstance(m, dict)])
    answer = _reply(body["model"], prompt)
    ident, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    if body.get("stream"):

        async def chunks() -> AsyncIterator[dict[str, Any]]:
            async for index, piece in _tokens(answer, token_delay_s):
                delta = (
                    {"role": "assistant", "content": piece} if index == 0 else {"content": piece}
                )
                yield {
                    "id": ident, "object": "chat.completion.chunk", "created": created,
                    "model": body["model"],
                    "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
                }  # fmt: skip
            yield {
                "id": ident, "object": "chat.completion.chunk", "created": created,
                "model": body["model"],
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            }  # fmt: skip

        usage = _usage(prompt, answer) if _include_usage(body) else None
        return StreamingResponse(_sse(chunks(), usage), media_type="text/event-stream")
    return JSONResponse(
        {
            "id": ident,
            "object": "chat.completion",
            "created": created,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer},
                    "finish_reason": "stop",
                }
            ],
            "usage": _usage(prompt, answer),
        }
    )


async def completions(request: Request, token_delay_s: float) -> Response:
    body = await _body(request)
    if isinstance(body, JSONResponse):
        return body
    prompt = _text_of(body.get("prompt", ""))
    answer = _reply(body["model"], prompt)
    ident, created = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time())

    def choice(text: str, finish: str | None) -> dict[str, Any]:
        return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}

    base = {"id": ident, "object": "text_completion", "created": created, "model": body["model"]}
    if body.get("stream"):

        async def chunks() -> AsyncIterator[dict[str, Any]]:
            async for _, piece in _tokens(answer, token_delay_s):
                yield {**base, "choices": [choice(piece, None)]}
            yield {**base, "choices": [choice("", "stop")]}

        usage = _usage(prompt, answer) if _include_usage(body) else None
        return StreamingResponse(_sse(chunks(), usage), media_type="text/event-stream")
    return JSONResponse(
        {**base, "choices": [choice(answer, "stop")], "usage": _usage(prompt, answer)}
    )


def embedding_of(text: str) -> list[float]:
    """A deterministic unit-scale vector derived from the text's SHA-512."""
    digest = hashlib.sha512(text.encode()).digest()
    raw = struct.unpack(f">{EMBEDDING_DIMENSIONS}H", digest[: 2 * EMBEDDING_DIMENSIONS])
    return [round(v / 65535 * 2 - 1, 6) for v in raw]


async def embeddings(request: Request) -> Response:
    body = await _body(request)
    if isinstance(body, JSONResponse):
        return body
    raw = body.get("input", "")
    inputs = raw if isinstance(raw, list) else [raw]
    data = [
        {"object": "embedding", "index": i, "embedding": embedding_of(_text_of(item))}
        for i, item in enumerate(inputs)
    ]
    tokens = sum(len(_text_of(item).split()) for item in inputs)
    return JSONResponse(
        {
            "object": "list",
            "data": data,
            "model": body["model"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


async def responses(request: Request) -> Response:
    body = await _body(request)
    if isinstance(body, JSONResponse):
        return body
    prompt = _text_of(body.get("input", ""))
    answer = _reply(body["model"], prompt)
    usage = _usage(prompt, answer)
    return JSONResponse(
        {
            "id": f"resp_{uuid.uuid4().hex[:24]}",
            "object": "response",
            "created_at": int(time.time()),
            "status": "completed",
            "model": body["model"],
            "output": [
                {
                    "type": "message",
                    "id": f"msg_{uuid.uuid4().hex[:24]}",
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": answer, "annotations": []}],
                }
            ],
            "usage": {
                "input_tokens": usage["prompt_tokens"],
                "output_tokens": usage["completion_tokens"],
                "total_tokens": usage["total_tokens"],
            },
        }
    )


async def list_models(request: Request) -> Response:
    return JSONResponse(
        {
            "object": "list",
            "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": "agora-demo"} for m in MODELS
            ],
        }
    )


def create_demo_app(token_delay_s: float = TOKEN_DELAY_S) -> Starlette:
    """The stand-in model; streamed answers pause ``token_delay_s`` after each word."""
    return Starlette(
        routes=[
            Route("/v1/models", list_models),
            Route(
                "/v1/chat/completions",
                partial(chat_completions, token_delay_s=token_delay_s),
                methods=["POST"],
            ),
            Route(
                "/v1/completions",
                partial(completions, token_delay_s=token_delay_s),
                methods=["POST"],
            ),
            Route("/v1/embeddings", embeddings, methods=["POST"]),
            Route("/v1/responses", responses, methods=["POST"]),
        ]
    )
