"""Response policy on the request path: whether an answer is judged, and how it reaches the caller.

Whether the bundle in force judges answers at all is asked of OPA once per
version (PolicyEngine.judges_answers); a bundle without the response path
costs a dictionary lookup per request and leaves the relay untouched.

A judged answer with status 200 is either streamed (``text/event-stream``:
:class:`AnswerStream` as the relay's body filter) or whole: read within
``response.max_body_bytes``, judged, then sent as it came or replaced by a
policy_denied error with ``response.deny_status``. Other statuses are the
upstream's errors, not answers, and are relayed as they are.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import aiohttp
from starlette.responses import Response

from gateway.answers.judge import AnswerJudge
from gateway.answers.shapes import JUDGED_APIS, answer_for
from gateway.answers.stream import AnswerStream, Stage
from gateway.answers.whole import parse_answer, read_answer
from gateway.config import Response as ResponseConfig
from gateway.exceptions import AgoraError, AnswerUnjudgeable, PolicyUnavailable
from gateway.metrics import GatewayMetrics
from gateway.policy.encoded import EncodedInput
from gateway.policy.engine import Decision, PolicyEngine
from gateway.responses import error_for, error_response
from gateway.upstream.pool import OnComplete, ProxyResponse, StreamOutcome, relayed_headers

_ANSWERS = frozenset(range(200, 300)) - {204, 205}
"""Statuses whose body is the model's answer, and is judged: every success that has a body."""


class ResponsePolicy:
    """Judges answers as ``response`` configures (checkpoints, holdback, bounds)."""

    def __init__(self, engine: PolicyEngine, config: ResponseConfig, metrics: GatewayMetrics):
        self._engine = engine
        self._config = config
        self._latency = metrics.answer_latency

    async def judge_for(
        self, api: str, decision: Decision, request_input: EncodedInput, request_bytes: int
    ) -> AnswerJudge | None:
        """A judge for this request's answer, or None when its answer is not judged.

        Raise PolicyUnavailable when OPA cannot say whether the version judges answers.
        """
        if api not in JUDGED_APIS or not await self._engine.judges_answers(decision.version):
            return None
        return AnswerJudge(
            self._engine, request_input, answer_for(api), self._config.holdback,
            request_bytes, self._latency,
        )  # fmt: skip

    async def respond(
        self,
        upstream: aiohttp.ClientResponse,
        judge: AnswerJudge,
        headers: dict[str, str],
        decision_id: str,
        started_ns: int,
        on_complete: OnComplete,
        total_s: float,
        stages: Sequence[Stage] = (),
    ) -> Response:
        """The caller's response to an answer that response policy (``judge``) reads on its way,
        and ``stages`` beside it (an answer only usage reads goes through gateway.usage.tap).
        """
        if upstream.status not in _ANSWERS:  # an error or redirect of the upstream: not an answer
            return ProxyResponse(upstream, headers, started_ns, on_complete, total_s)  # type: ignore[return-value]
        if upstream.content_type == "text/event-stream":
            encoding = upstream.headers.get("content-encoding", "identity").strip().lower()
            if encoding == "identity":
                body_filter = AnswerStream(
                    stages,
                    judge,
                    self._config.checkpoint_chars,
                    decision_id,
                    self._config.overlap_chars,
                )
                return ProxyResponse(  # type: ignore[return-value]
                    upstream, headers, started_ns, on_complete, total_s, body_filter
                )
        deadline_s = started_ns / 1e9 + total_s
        return await self._whole(
            upstream, judge, headers, decision_id, started_ns, deadline_s, on_complete, stages
        )

    async def _whole(
        self,
        upstream: aiohttp.ClientResponse,
        judge: AnswerJudge,
        headers: dict[str, str],
        decision_id: str,
        started_ns: int,
        deadline_s: float,
        on_complete: OnComplete,
        stages: Sequence[Stage],
    ) -> Response:
        """Read, judge, then answer: the upstream's bytes, or a policy_denied error."""
        response: Response
        try:
            try:
                remaining_s = max(deadline_s - time.perf_counter_ns() / 1e9, 0)
                raw = await read_answer(upstream, self._config.max_body_bytes, remaining_s)
            except BaseException:
                upstream.close()
                raise
            upstream.release()
            doc = parse_answer(raw)
            for stage in stages:
                stage.observe_body(doc)
            judge.answer.add_body(doc)
            judge.answer.ended = True
            decision = await judge.judge(judge.snapshot(final=True), judge.answer.chars)
        except AgoraError as exc:
            if isinstance(exc, (PolicyUnavailable, AnswerUnjudgeable)):
                judge.verdict.failed = str(exc)
            response = error_for(exc, headers, decision_id=decision_id)
            await on_complete(StreamOutcome.ended(started_ns, response.status_code, _reason(exc)))
            return response
        if decision.allow:
            judge.verdict.chars_sent = judge.verdict.chars_judged
            response = Response(raw, status_code=upstream.status)
            response.raw_headers = relayed_headers(upstream, headers)
            await on_complete(StreamOutcome.ended(started_ns, upstream.status, "complete"))
            return response
        status = self._config.deny_status
        response = error_response(
            status, "Answer denied by policy: " + "; ".join(decision.reasons),
            "policy_denied", "policy_denied", headers, decision_id=decision_id,
            policy_version=decision.version.version, reasons=decision.reasons,
        )  # fmt: skip
        await on_complete(StreamOutcome.ended(started_ns, status, "policy_denied"))
        return response


def _reason(exc: AgoraError) -> str:
    if isinstance(exc, PolicyUnavailable):
        return "policy_unavailable"
    if isinstance(exc, AnswerUnjudgeable):
        return "answer_unjudgeable"
    return "upstream_failed"
