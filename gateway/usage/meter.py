"""The tokens one answer used, read from the upstream's ``usage`` as the answer passes.

A whole JSON answer carries ``usage`` at its top level (chat, completions,
embeddings: ``prompt_tokens``/``completion_tokens``; responses:
``input_tokens``/``output_tokens``). A stream carries it in one event: the
last chunk of a chat or completions stream asked with
``stream_options.include_usage`` (``"choices": []`` and ``usage``), or the
``response.completed`` event of a responses stream.

An answer that ends without usage (a cut stream, an upstream that reports
none) is counted by estimate, and says so: the prompt from the request body's
size, the completion from the text that was streamed, about four bytes a token.
"""

from __future__ import annotations

from typing import Any

from gateway.usage.counters import Tokens

BYTES_PER_TOKEN = 4
"""A rough size of a token in English text, for estimates."""


def estimate_tokens(size_bytes: int) -> int:
    return (size_bytes + BYTES_PER_TOKEN - 1) // BYTES_PER_TOKEN


class UsageMeter:
    """Watches one answer for its usage.

    ``drop_usage_event``: the gateway asked for the stream's usage chunk itself
    (the caller did not), so that chunk is kept from the caller.
    """

    def __init__(self, body_bytes: int, drop_usage_event: bool = False):
        self._body_bytes = body_bytes
        self._drop = drop_usage_event
        self._reported: Tokens | None = None
        self._streamed_text = 0

    def observe_body(self, doc: dict[str, Any]) -> None:
        """A whole JSON answer."""
        self._take(doc.get("usage"))

    def observe_event(self, doc: dict[str, Any]) -> bool:
        """One SSE event's JSON data; True when the caller must not receive it."""
        usage = doc.get("usage")
        if usage is not None:
            self._take(usage)
            return self._drop and doc.get("choices") == []
        if doc.get("type") == "response.completed":
            response = doc.get("response")
            if isinstance(response, dict):
                self._take(response.get("usage"))
            return False
        self._streamed_text += _text_size(doc)
        return False

    def result(self) -> Tokens:
        """What the answer used: as reported, else estimated."""
        if self._reported is not None:
            return self._reported
        return Tokens(
            estimate_tokens(self._body_bytes), estimate_tokens(self._streamed_text), estimated=True
        )

    def _take(self, usage: object) -> None:
        if not isinstance(usage, dict):
            return
        prompt = _count(usage, "prompt_tokens", "input_tokens")
        completion = _count(usage, "completion_tokens", "output_tokens")
        if prompt is None and completion is None:
            return
        self._reported = Tokens(prompt or 0, completion or 0)


def _count(usage: dict[str, Any], *names: str) -> int | None:
    for name in names:
        value = usage.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def _text_size(doc: dict[str, Any]) -> int:
    """Bytes of generated text in one stream event (chat, completions, responses deltas)."""
    if doc.get("type") == "response.output_text.delta":
        delta = doc.get("delta")
        return len(delta.encode()) if isinstance(delta, str) else 0
    size = 0
    choices = doc.get("choices")
    for choice in choices if isinstance(choices, list) else ():
        if not isinstance(choice, dict):
            continue
        delta = choice.get("delta")
        text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
        if isinstance(text, str):
            size += len(text.encode())
    return size
