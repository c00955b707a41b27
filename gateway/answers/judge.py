"""Asking response policy about one answer, and keeping what the decision log records of it.

The input is the request's input document plus ``response``
(gateway.answers.shapes); the decision document has the request's shape. One
:class:`AnswerJudge` serves one answer: every checkpoint of a stream asks
again with the whole text so far, and :class:`Verdict` gathers what the log
records once the answer is over (one ``response`` record per answer).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from prometheus_client import Histogram

from gateway.answers.shapes import Answer
from gateway.pinning.store import PolicyVersion
from gateway.policy.encoded import EncodedInput
from gateway.policy.engine import Decision, PolicyEngine


@dataclass
class Verdict:
    """Response policy's word on one answer so far, and what reached the caller."""

    holdback: bool
    checkpoints: int = 0
    """Decisions asked of response policy for this answer."""
    allow: bool = True
    reasons: list[str] = field(default_factory=list)
    version: PolicyVersion | None = None
    """The version that judged last."""
    final: bool = False
    """The whole answer was judged."""
    failed: str | None = None
    """Why no decision could be had (OPA down...), when that ended the answer: fail closed."""
    chars_judged: int = 0
    """Characters of text (and tool-call arguments) that the last allow covered."""
    chars_sent: int = 0
    """Characters of text (and tool-call arguments) that reached the caller."""
    document: EncodedInput | None = None
    """The last input judged (its hash goes to the log)."""
    policy_ns: int = 0
    """Time spent asking response policy, all checkpoints together."""

    @property
    def outcome(self) -> str:
        """``allowed``, ``denied`` or ``failed_closed`` (no decision could be had)."""
        if self.failed is not None:
            return "failed_closed"
        return "allowed" if self.allow else "denied"

    def as_record(self) -> dict[str, object]:
        """The record's ``response`` member (docs/decision-log.md)."""
        unjudged = (
            {"from": self.chars_judged, "to": self.chars_sent}
            if self.chars_sent > self.chars_judged
            else None
        )
        return {
            "outcome": self.outcome,
            "checkpoints": self.checkpoints,
            "final": self.final,
            "holdback": self.holdback,
            "chars_sent": self.chars_sent,
            "sent_unjudged": unjudged,
        }


class AnswerJudge:
    """Judges one answer at ``policy.response_path``; raises PolicyUnavailable (fail closed)."""

    def __init__(
        self,
        engine: PolicyEngine,
        request_input: EncodedInput,
        answer: Answer,
        holdback: bool,
        request_bytes: int = 0,
        latency: Histogram | None = None,
    ):
        self._engine = engine
        self._latency = latency
        self._request_input = request_input
        self._request_bytes = request_bytes
        self.answer = answer
        self.verdict = Verdict(holdback=holdback)

    def snapshot(self, final: bool) -> EncodedInput:
        """The input document for the answer as it stands now (the request's, encoded once,
        with ``response``)."""
        return self._request_input.with_response(self.answer.document(final))

    async def judge(self, document: EncodedInput, chars: int) -> Decision:
        """Ask about ``document`` (a snapshot holding ``chars`` characters of answer)."""
        verdict = self.verdict
        verdict.checkpoints += 1
        asked = time.perf_counter_ns()
        try:
            decision = await self._engine.decide_answer(document, self._request_bytes + chars)
        finally:
            took_ns = time.perf_counter_ns() - asked
            verdict.policy_ns += took_ns
            if self._latency is not None:
                self._latency.observe(took_ns / 1e9)
        verdict.document = document
        verdict.version = decision.version
        if decision.allow:
            verdict.chars_judged = chars
            verdict.final = document.document["response"]["final"]
        else:
            verdict.allow = False
            verdict.reasons = decision.reasons
        return decision
