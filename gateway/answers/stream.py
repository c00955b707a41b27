"""A streamed answer between upstream and caller: its events read by stages, judged at checkpoints.

:class:`AnswerStream` is the relay's body filter (gateway.upstream.pool) for
an answer streamed as Server-Sent Events. Each upstream chunk is split into
events (gateway.upstream.sse); every stage sees every event's parsed data, in
order, and any stage may drop an event from what the caller receives; then
response policy counts the new text. An event no stage drops goes out as the
upstream's own bytes, and each upstream chunk stays one write: pieces are
held back and released, never merged.

Checkpoints: response policy judges the whole answer so far each time
``checkpoint_chars`` characters of new text have arrived, and at the end
(before ``[DONE]``, or the Responses API's closing event, reaches the caller).

- holdback on: a chunk bringing text is held until a checkpoint allows it, so
  the caller never receives text that no checkpoint has judged (at most about
  ``checkpoint_chars`` characters wait). A checkpoint before the end also keeps
  back the chunks holding its last ``overlap_chars`` characters, judged again
  at the next one: a term of at most that length that straddles a checkpoint
  (``-----BEGIN PRIV`` | ``ATE KEY-----``) is never partly sent;
- holdback off: text goes out at once and each checkpoint's judgment runs
  before the next chunk is sent, so its cost falls between tokens, not before
  the first one; a deny then comes after the text it judged, and the log
  says which characters went out unjudged. The end marker still waits for the
  final judgment.

A deny ends the stream with one SSE ``error`` event (type ``policy_denied``,
no ``[DONE]``); response policy not answering ends it with one of type
``policy_unavailable``: fail closed. Either way the upstream is closed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from gateway.answers.judge import AnswerJudge
from gateway.exceptions import PolicyUnavailable
from gateway.policy.encoded import EncodedInput
from gateway.upstream.pool import StreamCut
from gateway.upstream.sse import SseEvent, SseSplitter, json_object, parse_event

DONE = "[DONE]"

logger = logging.getLogger("agora.answers")


class Stage(Protocol):
    """Something that reads the upstream's answer on its way (usage metering, for example)."""

    def observe_body(self, doc: dict[str, Any]) -> None:
        """A whole (non-streamed) JSON answer."""

    def observe_event(self, doc: dict[str, Any]) -> bool:
        """One streamed event's data; True drops the event from what the caller receives."""


def error_event(error: dict[str, Any]) -> bytes:
    """One SSE event carrying an OpenAI-style error (the SDKs raise on it)."""
    return b"data: " + json.dumps({"error": error}, separators=(",", ":")).encode() + b"\n\n"


class AnswerStream:
    """The body filter of one streamed answer: stages in order, then response policy."""

    def __init__(
        self,
        stages: Sequence[Stage],
        judge: AnswerJudge,
        checkpoint_chars: int,
        decision_id: str,
        overlap_chars: int = 0,
    ):
        self._splitter = SseSplitter()
        self._stages = tuple(stages)
        self._judge = judge
        self._every = checkpoint_chars
        self._overlap = overlap_chars
        self._decision_id = decision_id
        self._held: list[tuple[bytes, int]] = []
        """Pieces not yet released, with the characters of answer each carries."""
        self._chars = 0
        """Characters of answer read so far."""
        self._asked_at = 0
        """``_chars`` when response policy was last asked (or a judgment was set due)."""
        self._due: tuple[EncodedInput, int] | None = None
        """Holdback off: a judgment to make before the next piece goes out."""

    async def feed(self, chunk: bytes) -> Sequence[bytes]:
        piece, chars = self._read(self._splitter.feed(chunk))
        return await self._checkpoint(self._judge, piece, chars)

    async def end(self) -> Sequence[bytes]:
        rest = self._splitter.rest()
        judge = self._judge
        if rest.strip():
            # An event the upstream never ended is read like the others, so that no text of
            # it reaches the caller unjudged (an SSE client may act on it): text that cannot
            # be read as an event (lone CR line ends, say) cuts the stream as unjudgeable.
            piece, chars = self._read([parse_event(rest)])
            return [*await self._checkpoint(judge, piece, chars), *await self._final(judge)]
        return await self._final(judge)

    async def _final(self, judge: AnswerJudge) -> Sequence[bytes]:
        """The end of the body: the whole answer judged once more, if it was not yet."""
        if judge.verdict.final:
            return []
        await self._settle(judge)
        await self._ask(judge, judge.snapshot(final=True), self._chars)
        return self._release(judge)

    def _read(self, events: list[SseEvent]) -> tuple[bytes, int]:
        """What of these events the caller may receive, and the characters of answer they add."""
        kept: list[bytes] = []
        chars = 0
        answer = self._judge.answer
        for event in events:
            data = event.data
            doc = json_object(data) if data is not None and data != DONE else None
            dropped = False
            if doc is not None:
                for stage in self._stages:
                    dropped = stage.observe_event(doc) or dropped
                chars += answer.add_event(event.name, doc)
            elif data == DONE:
                answer.ended = True
            elif data is not None:
                self._judge.verdict.failed = "the upstream sent an event that is not JSON"
                raise StreamCut("answer_unjudgeable", error_event(self._unjudgeable()))
            if not dropped:
                kept.append(event.raw)
        self._chars += chars
        return b"".join(kept), chars

    async def _checkpoint(self, judge: AnswerJudge, piece: bytes, chars: int) -> Sequence[bytes]:
        verdict = judge.verdict
        if verdict.final:  # judged whole already: what follows must not be answer text
            if chars:
                verdict.failed = "the upstream sent answer text after the end of the answer"
                raise StreamCut(
                    "answer_unjudgeable", error_event(self._unjudgeable(verdict.failed))
                )
            return [piece]
        ended = judge.answer.ended
        if not verdict.holdback:
            await self._settle(judge)
            if not ended:
                verdict.chars_sent += chars
                if self._chars - self._asked_at >= self._every:
                    self._due = (judge.snapshot(final=False), self._chars)
                    self._asked_at = self._chars
                return [piece]
        elif not ended and not self._held and chars == 0:
            return [piece]  # nothing new to judge and nothing waiting before it
        self._held.append((piece, chars))
        if ended or self._chars - self._asked_at >= self._every:
            await self._ask(judge, judge.snapshot(final=ended), self._chars)
            return self._release(judge, keep_chars=0 if ended else self._overlap)
        return []

    async def _settle(self, judge: AnswerJudge) -> None:
        """Holdback off: make the judgment that fell due after the last piece went out."""
        if self._due is not None:
            document, chars = self._due
            self._due = None
            await self._ask(judge, document, chars)

    async def _ask(self, judge: AnswerJudge, document: EncodedInput, chars: int) -> None:
        """Judge ``document``; a deny or no decision cuts the stream (StreamCut)."""
        self._asked_at = max(self._asked_at, chars)
        try:
            decision = await judge.judge(document, chars)
        except PolicyUnavailable as exc:
            logger.warning("stream %s cut, failing closed: %s", self._decision_id, exc)
            judge.verdict.failed = str(exc)
            raise StreamCut(
                "policy_unavailable",
                error_event(
                    {
                        "message": "response policy could not judge the answer; it was stopped",
                        "type": "policy_unavailable",
                        "code": "policy_unavailable",
                        "param": None,
                        "decision_id": self._decision_id,
                    }
                ),
            ) from exc
        if not decision.allow:
            raise StreamCut(
                "policy_denied",
                error_event(
                    {
                        "message": "Answer stopped by policy: " + "; ".join(decision.reasons),
                        "type": "policy_denied",
                        "code": "policy_denied",
                        "param": None,
                        "decision_id": self._decision_id,
                        "policy_version": decision.version.version,
                        "reasons": decision.reasons,
                    }
                ),
            )

    def _unjudgeable(
        self, why: str = "the upstream sent an event that is not JSON"
    ) -> dict[str, Any]:
        return {
            "message": f"{why}; the answer cannot be judged",
            "type": "upstream_error",
            "code": "answer_unjudgeable",
            "param": None,
            "decision_id": self._decision_id,
        }

    def _release(self, judge: AnswerJudge, keep_chars: int = 0) -> Sequence[bytes]:
        """The held pieces a checkpoint allowed, but the last ones holding ``keep_chars``
        characters of text (whole pieces: an upstream chunk is never split)."""
        held = self._held
        cut, kept = len(held), 0
        while cut > 0 and kept < keep_chars:
            cut -= 1
            kept += held[cut][1]
        released, self._held = held[:cut], held[cut:]
        judge.verdict.chars_sent += sum(chars for _, chars in released)
        return [piece for piece, _ in released]
