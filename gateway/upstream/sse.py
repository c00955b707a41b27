"""Server-Sent Events split incrementally from an upstream's body, each event with its raw bytes.

Stages that read a streamed answer (response policy, usage metering) need its
events parsed, but what the caller receives must stay the upstream's bytes:
an event that no stage drops is sent exactly as it arrived. So the splitter
keeps each event's raw bytes (its lines and the blank line that ends it) beside
what it means (``event`` name and ``data``).

Lines end with LF or CRLF (every OpenAI-compatible server sends LF); a lone CR
as a line ending is not recognised, so such a stream is read as one unfinished
event and passed on at its end as it is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One event: its exact bytes, its ``event:`` name and its ``data:`` lines joined by LF."""

    raw: bytes
    name: str | None
    data: str | None
    """None when the event has no data line (a comment such as ``: keep-alive``)."""


class SseSplitter:
    """Feed it the body chunk by chunk; it returns the events each chunk completes."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[SseEvent]:
        """The events completed by ``chunk``, in order; an unfinished event waits for more."""
        buffer = self._buffer + chunk if self._buffer else chunk
        events: list[SseEvent] = []
        start = 0
        search = 0
        while True:
            newline = buffer.find(b"\n", search)
            if newline < 0:
                break
            line_start = search
            search = newline + 1
            if newline == line_start or (newline == line_start + 1 and buffer[line_start] == 13):
                if line_start > start:  # a blank line ends a non-empty event
                    events.append(parse_event(buffer[start:search]))
                else:  # blank lines between events belong to no event: pass them on
                    events.append(SseEvent(buffer[start:search], None, None))
                start = search
        self._buffer = buffer[start:]
        return events

    def rest(self) -> bytes:
        """What is left at the end of the body: an unfinished event, sent as it is."""
        rest, self._buffer = self._buffer, b""
        return rest


def parse_event(raw: bytes) -> SseEvent:
    """The name and data of one complete event (the SSE field rules: ``field: value``)."""
    name: str | None = None
    data: list[str] = []
    # Only LF (and CRLF) end lines: str.splitlines would also split at U+2028 and
    # other separators that a JSON string may hold as they are.
    for line in raw.decode("utf-8", errors="replace").split("\n"):
        line = line.removesuffix("\r")
        if not line or line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "data":
            data.append(value)
        elif field == "event":
            name = value
    return SseEvent(raw, name, "\n".join(data) if data else None)


def json_object(data: str | bytes) -> dict[str, Any] | None:
    """An event's data (or a whole JSON answer) as a JSON object; None when it is not one."""
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None
