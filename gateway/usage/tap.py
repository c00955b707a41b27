"""The usage meter on the relay: the body filter of an answer that only usage reads.

When response policy judges an answer, the meter is one of its stages
(gateway.answers); otherwise this filter feeds it. Chunks are passed on as
they arrive, one send per chunk, never batched. Only when the gateway itself
asked for a stream's usage chunk (the caller did not) does the filter cut that
event out; then an event that a chunk leaves unfinished is held until its end
arrives, so that it is passed on whole or not at all. A whole JSON answer is
kept aside (up to MAX_JSON_BYTES) and read once it is over, off the answer's
path.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.upstream.sse import SseEvent, SseSplitter, json_object
from gateway.usage.counters import Tokens
from gateway.usage.meter import UsageMeter

MAX_JSON_BYTES = 8 * 2**20
"""A JSON answer larger than this is not read for usage (its tokens are estimated)."""


class UsageTap:
    """Feeds one answer to its meter; what ``feed`` returns is what the caller receives
    (gateway.upstream.pool.BodyFilter)."""

    def __init__(self, meter: UsageMeter, content_type: str | None, drop_usage_event: bool):
        media = (content_type or "").split(";")[0].strip().lower()
        self._meter = meter
        self._splitter = SseSplitter() if media == "text/event-stream" else None
        self._cutting = drop_usage_event and self._splitter is not None
        self._json: list[bytes] | None = [] if media == "application/json" else None
        self._json_size = 0

    async def feed(self, chunk: bytes) -> Sequence[bytes]:
        """The bytes of ``chunk`` the caller receives (all of them unless an event is cut)."""
        if self._splitter is not None:
            events = self._splitter.feed(chunk)
            if not self._cutting:
                for event in events:
                    self._observe(event)
                return [chunk]
            kept = b"".join(event.raw for event in events if not self._observe(event))
            return [kept] if kept else []
        if self._json is not None:
            self._json_size += len(chunk)
            if self._json_size <= MAX_JSON_BYTES:
                self._json.append(chunk)
        return [chunk]

    async def end(self) -> Sequence[bytes]:
        """At the end of the answer: an unfinished event that was held back, as it came."""
        if not self._cutting or self._splitter is None:
            return []
        rest = self._splitter.rest()
        return [rest] if rest else []

    def result(self) -> Tokens:
        """What the answer used, once it is over."""
        if self._json is not None and 0 < self._json_size <= MAX_JSON_BYTES:
            doc = json_object(b"".join(self._json))
            if doc is not None:
                self._meter.observe_body(doc)
        return self._meter.result()

    def _observe(self, event: SseEvent) -> bool:
        data = event.data
        if data is None or not data.startswith("{"):
            return False
        doc = json_object(data)
        return doc is not None and self._meter.observe_event(doc)
