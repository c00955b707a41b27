"""What the model said, per API: an answer accumulated from a whole body or from streamed events.

Each API family writes its answer differently (docs/policy.md, "Response
input"). An :class:`Answer` reads either form and gives policy one shape,
``input.response``:

    text           the assistant's text so far (choices in index order, joined
                   by a blank line when there are several)
    texts          each choice's text and each tool call's arguments, normalised
                   as request texts are (gateway.request.body.normalise)
    tool_calls     [{"id", "type", "function": {"name", "arguments"}}], in order
    finish_reason  why the answer ended (``stop``, ``length``, ``tool_calls``...;
                   for the Responses API its status), or null while it runs
    final          whether this is the whole answer
    usage          the upstream's token usage, once it has sent it, else null

``add_event`` returns how many characters of new text (text or tool-call
arguments) an event brought, which is what checkpoints count.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from gateway.request.body import normalise

JUDGED_APIS = frozenset({"chat.completions", "completions", "responses"})


class Answer(ABC):
    """An answer being accumulated; subclasses read their API's documents."""

    def __init__(self) -> None:
        self._texts: dict[int, list[str]] = {}
        self._calls: dict[tuple[int, int], dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.ended = False
        """The upstream said the answer is complete (``[DONE]``, ``response.completed``)."""

    @abstractmethod
    def add_event(self, name: str | None, doc: dict[str, Any]) -> int:
        """Read one streamed event (``doc``: its parsed data); the new characters it brought."""

    @abstractmethod
    def add_body(self, doc: dict[str, Any]) -> None:
        """Read a whole (non-streamed) answer."""

    @property
    def text(self) -> str:
        return "\n\n".join("".join(self._texts[i]) for i in sorted(self._texts))

    @property
    def chars(self) -> int:
        """Characters of answer: text, tool names and arguments (what checkpoints count)."""
        texts = sum(len(piece) for pieces in self._texts.values() for piece in pieces)
        calls = sum(
            len(c["function"]["name"] or "") + len(c["function"]["arguments"] or "")
            for c in self._calls.values()
        )
        return texts + calls

    @property
    def tool_calls(self) -> list[dict[str, Any]]:
        return [self._calls[key] for key in sorted(self._calls)]

    def document(self, final: bool) -> dict[str, Any]:
        """``input.response`` for policy."""
        calls = self.tool_calls
        choices = ["".join(self._texts[i]) for i in sorted(self._texts)]
        return {
            "text": "\n\n".join(choices),
            # One text per choice: a term is never found across two choices.
            "texts": [
                *map(normalise, choices),
                *(normalise(c["function"]["arguments"]) for c in calls),
            ],
            "tool_calls": calls,
            "finish_reason": self.finish_reason,
            "final": final,
            "usage": self.usage,
        }

    def _add_text(self, index: int, piece: Any) -> int:
        if not isinstance(piece, str) or not piece:
            return 0
        self._texts.setdefault(index, []).append(piece)
        return len(piece)

    def _call(self, key: tuple[int, int]) -> dict[str, Any]:
        call = self._calls.get(key)
        if call is None:
            call = {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
            self._calls[key] = call
        return call

    def _add_call(self, key: tuple[int, int], delta: Any) -> int:
        """Merge a tool call (whole, or a streamed delta of it); the argument characters added."""
        if not isinstance(delta, dict):
            return 0
        call = self._call(key)
        if isinstance(delta.get("id"), str):
            call["id"] = delta["id"]
        if isinstance(delta.get("type"), str):
            call["type"] = delta["type"]
        function = delta.get("function")
        if not isinstance(function, dict):
            return 0
        added = 0
        name = function.get("name")
        if isinstance(name, str):
            call["function"]["name"] += name
            added += len(name)
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            call["function"]["arguments"] += arguments
            added += len(arguments)
        return added

    def _set_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self.usage = usage


def _choices(doc: Any) -> list[tuple[int, dict[str, Any]]]:
    """The choices of a chat or completions document, each with its index."""
    choices = doc.get("choices") if isinstance(doc, dict) else None
    if not isinstance(choices, list):
        return []
    found = []
    for position, choice in enumerate(choices):
        if isinstance(choice, dict):
            index = choice.get("index")
            found.append((index if isinstance(index, int) else position, choice))
    return found


def _content_text(content: Any) -> str:
    """A chat message's content: a string, or a list of parts with ``text``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


class ChatAnswer(Answer):
    """``/v1/chat/completions``: ``choices[].message`` whole, ``choices[].delta`` streamed."""

    def add_event(self, name: str | None, doc: dict[str, Any]) -> int:
        added = 0
        for index, choice in _choices(doc):
            delta = choice.get("delta")
            if isinstance(delta, dict):
                added += self._add_text(index, delta.get("content"))
                added += self._add_text(index, delta.get("refusal"))
                calls = delta.get("tool_calls")
                for position, call in enumerate(calls if isinstance(calls, list) else []):
                    at = call.get("index") if isinstance(call, dict) else None
                    added += self._add_call((index, at if isinstance(at, int) else position), call)
            if isinstance(choice.get("finish_reason"), str):
                self.finish_reason = choice["finish_reason"]
        self._set_usage(doc.get("usage"))
        return added

    def add_body(self, doc: dict[str, Any]) -> None:
        for index, choice in _choices(doc):
            message = choice.get("message")
            if isinstance(message, dict):
                self._add_text(index, _content_text(message.get("content")))
                self._add_text(index, message.get("refusal"))
                calls = message.get("tool_calls")
                for position, call in enumerate(calls if isinstance(calls, list) else []):
                    self._add_call((index, position), call)
            if isinstance(choice.get("finish_reason"), str):
                self.finish_reason = choice["finish_reason"]
        self._set_usage(doc.get("usage"))


class CompletionAnswer(Answer):
    """``/v1/completions``: ``choices[].text``, whole or streamed piece by piece."""

    def add_event(self, name: str | None, doc: dict[str, Any]) -> int:
        added = 0
        for index, choice in _choices(doc):
            added += self._add_text(index, choice.get("text"))
            if isinstance(choice.get("finish_reason"), str):
                self.finish_reason = choice["finish_reason"]
        self._set_usage(doc.get("usage"))
        return added

    def add_body(self, doc: dict[str, Any]) -> None:
        self.add_event(None, doc)


_RESPONSE_ENDS = frozenset({"response.completed", "response.incomplete", "response.failed"})


class ResponsesAnswer(Answer):
    """``/v1/responses``: ``output[]`` items whole, typed events (``response.*``) streamed.

    Text comes from ``output_text`` and ``refusal`` content, tool calls from
    ``function_call`` items; ``finish_reason`` is the response's ``status``.
    """

    def add_event(self, name: str | None, doc: dict[str, Any]) -> int:
        kind = doc.get("type") if isinstance(doc.get("type"), str) else name
        index = doc.get("output_index")
        index = index if isinstance(index, int) else 0
        if kind in ("response.output_text.delta", "response.refusal.delta"):
            return self._add_text(index, doc.get("delta"))
        if kind == "response.output_item.added":
            item = doc.get("item")
            if isinstance(item, dict) and item.get("type") == "function_call":
                return self._add_call((index, 0), _as_call(item))
            return 0
        if kind == "response.function_call_arguments.delta":
            return self._add_call((index, 0), {"function": {"arguments": doc.get("delta")}})
        if kind in _RESPONSE_ENDS:
            response = doc.get("response")
            if isinstance(response, dict):
                self._read_status(response)
            self.ended = True
        return 0

    def add_body(self, doc: dict[str, Any]) -> None:
        output = doc.get("output")
        for index, item in enumerate(output if isinstance(output, list) else []):
            if not isinstance(item, dict):
                continue
            if item.get("type") == "function_call":
                self._add_call((index, 0), _as_call(item))
            content = item.get("content")
            for part in content if isinstance(content, list) else []:
                if isinstance(part, dict):
                    self._add_text(index, part.get("text") or part.get("refusal"))
        self._read_status(doc)

    def _read_status(self, response: dict[str, Any]) -> None:
        if isinstance(response.get("status"), str):
            self.finish_reason = response["status"]
        self._set_usage(response.get("usage"))


def _as_call(item: dict[str, Any]) -> dict[str, Any]:
    """A Responses API ``function_call`` item as a chat-style tool call."""
    return {
        "id": item.get("call_id") or item.get("id"),
        "type": "function",
        "function": {"name": item.get("name"), "arguments": item.get("arguments")},
    }


def answer_for(api: str) -> Answer:
    """An empty answer of ``api``'s shape (one of JUDGED_APIS)."""
    if api == "chat.completions":
        return ChatAnswer()
    if api == "completions":
        return CompletionAnswer()
    if api == "responses":
        return ResponsesAnswer()
    raise ValueError(f"answers of {api!r} are not judged")
