"""A whole (non-streamed) answer: read within a bound, parsed once, then shown to the stages.

Response policy judges an answer before any byte of it is sent, so the body is
read whole first, up to ``response.max_body_bytes``. What cannot be read whole
and parsed (larger than the bound, compressed, not a JSON object) cannot be
judged, and is refused: fail closed.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from gateway.exceptions import AnswerUnjudgeable, UpstreamError, UpstreamTimeout


async def read_answer(upstream: aiohttp.ClientResponse, max_bytes: int, timeout_s: float) -> bytes:
    """The upstream's whole body within ``timeout_s`` (what is left of ``timeout.total``);
    AnswerUnjudgeable beyond ``max_bytes`` or if compressed.
    """
    encoding = upstream.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise AnswerUnjudgeable(f"the upstream's answer is compressed ({encoding}); not judged")
    declared = upstream.content_length
    too_large = AnswerUnjudgeable(
        f"the upstream's answer exceeds response.max_body_bytes ({max_bytes}); not judged"
    )
    if declared is not None and declared > max_bytes:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in upstream.content.iter_any():
                size += len(chunk)
                if size > max_bytes:
                    raise too_large
                chunks.append(chunk)
    except TimeoutError as exc:
        raise UpstreamTimeout("the upstream's answer did not arrive in time") from exc
    except aiohttp.ClientError as exc:
        raise UpstreamError(f"the upstream broke off its answer: {exc}") from exc
    return b"".join(chunks)


def parse_answer(raw: bytes) -> dict[str, Any]:
    """The answer as a JSON object; AnswerUnjudgeable if it is not one."""
    try:
        doc = json.loads(raw)
    except ValueError as exc:  # includes UnicodeDecodeError
        raise AnswerUnjudgeable("the upstream's answer is not JSON; it cannot be judged") from exc
    if not isinstance(doc, dict):
        raise AnswerUnjudgeable("the upstream's answer is not a JSON object; not judged")
    return doc
