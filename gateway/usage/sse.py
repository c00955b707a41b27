"""An incremental splitter of Server-Sent Events: bytes in as they arrive, whole events out.

Events end at a blank line (``\\n\\n``, ``\\r\\n\\r\\n`` or ``\\r\\r``); an event
split across chunks is kept until its end arrives. Each event keeps its raw
bytes, so that a relay can pass it on exactly as the upstream sent it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_LINE_END = re.compile(rb"\r\n|\n|\r")


@dataclass(frozen=True)
class SseEvent:
    raw: bytes
    """The event as sent, its terminating blank line included."""

    @property
    def data(self) -> str:
        """The event's ``data`` lines, joined by newlines (the SSE rules)."""
        lines = []
        for line in _LINE_END.split(self.raw):
            if line.startswith(b"data:"):
                value = line[5:]
                lines.append(value[1:] if value.startswith(b" ") else value)
        return b"\n".join(lines).decode("utf-8", "replace")


class SseSplitter:
    """Feed it chunks; it returns the events each chunk completes."""

    def __init__(self) -> None:
        self._pending = b""

    @property
    def pending(self) -> bytes:
        """Bytes of an event whose end has not arrived yet."""
        return self._pending

    def drain(self) -> bytes:
        """The unfinished event's bytes, handed back once the stream is over."""
        pending, self._pending = self._pending, b""
        return pending

    def feed(self, chunk: bytes) -> list[SseEvent]:
        buffer = self._pending + chunk if self._pending else chunk
        events = []
        start = 0
        for end in _EVENT_END.finditer(buffer):
            events.append(SseEvent(buffer[start : end.end()]))
            start = end.end()
        self._pending = buffer[start:]
        return events
