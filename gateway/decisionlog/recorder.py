"""Recording each decision: one place that feeds the decision log, the metrics and the counts.

The request path records a decision before it acts on it:

- a refused request (403 by policy, 503 failing closed, ...) gets one record,
  ``refused()``, before the refusal is sent;
- an allowed request gets its decision record, ``admit()``, before anything is
  forwarded; if that record cannot be queued (or, with ``durability: record``,
  fsynced), ``admit`` raises and the request must be refused instead; when the
  response is over, ``finished()`` adds an outcome record naming the same
  ``decision_id`` (status, latencies, how it ended);
- an answer that response policy judged gets one record, ``answered()``,
  when its judging is over (allowed whole, or cut), before the outcome record.

So a crash never leaves a forwarded request out of the log: at worst its
outcome record is missing, and ``agora log stats`` counts it as incomplete.

A request never waits on a failing disk: with ``durability: record``, if the
log starts failing while a record waits for its fsync, ``admit`` gives up at
once (503, nothing forwarded; the queued decision is followed by an outcome
record with that 503) and ``refused`` returns (the refusal is written once the
disk recovers).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway.answers.judge import Verdict
from gateway.auth import Caller
from gateway.config import DecisionLog, Transparency
from gateway.decisionlog.counts import DecisionCounts
from gateway.decisionlog.errors import (
    DecisionLogError,
    DecisionLogUnavailable,
    UnrecordableDecision,
)
from gateway.decisionlog.jcs import costly_to_encode
from gateway.decisionlog.record import (
    DecisionEntry,
    Event,
    canonical_sha256,
    group_of,
    input_sha256,
)
from gateway.decisionlog.record import outcome as outcome_label
from gateway.decisionlog.writer import DecisionLogWriter
from gateway.lifecycle import State
from gateway.metrics import DecisionLogCollector, GatewayMetrics
from gateway.policy.encoded import EncodedInput
from gateway.policy.engine import Decision
from gateway.policy.input import RequestFacts

logger = logging.getLogger("agora.decisions")

MAX_MODEL_LABELS = 100
ADMISSION_FAILURE_SHOWN_S = 60.0
"""How long /readyz shows that an allowed request was refused because it could not be logged."""
FAILING_CHECK_S = 0.05
"""How often a request waiting for its record's fsync checks whether the log started failing."""
_HASH_INLINE_BYTES = 64 * 1024
"""Canonical JSON up to this size is hashed on the event loop (a few tens of µs at most)."""


@dataclass
class Outcome:
    """What happened to one request, filled in along the request path."""

    decision_id: str
    facts: RequestFacts
    caller: Caller
    started_ns: int
    time: datetime = field(default_factory=lambda: datetime.now(UTC))
    auth_ns: int = 0
    policy_ns: int = 0
    upstream_ns: int = 0
    decision: Decision | None = None
    input_document: dict[str, Any] | None = None
    input_sha256: str | None = None
    """Hash of ``input_document``, computed once for the request's records."""
    admitted: bool = False
    """Its allow decision is in the log (``admit`` returned); ``finished`` is still due."""


async def _hash_encoded(encoded: EncodedInput) -> str:
    """``input_sha256`` of an input document: its canonical JSON hashed if it was encoded
    (in a worker thread when large), else the document encoded and hashed (:func:`_hash_input`).
    """
    canonical = encoded.canonical
    if canonical is None:
        return await _hash_input(encoded.document)
    if len(canonical) > _HASH_INLINE_BYTES:
        return await asyncio.to_thread(canonical_sha256, canonical)
    return canonical_sha256(canonical)


async def _hash_input(document: object) -> str:
    """``input_sha256`` of ``document``; in a worker thread when it is large.

    A large body hashed on the event loop would stall every other request
    (long enough for their policy queries to time out).
    """
    if costly_to_encode(document):
        return await asyncio.to_thread(input_sha256, document)
    return input_sha256(document)


def _retrieve(task: asyncio.Future[None]) -> None:
    """Retrieve the outcome of a submission nobody waits for any more (no warning at exit)."""
    if not task.cancelled():
        task.exception()


class DecisionRecorder:
    """Hands each decision to the decision-log writer, and counts it in metrics and counts."""

    name = "decision_log"
    gates_readiness = True  # nothing is forwarded that cannot be logged

    def __init__(
        self,
        config: DecisionLog,
        metrics: GatewayMetrics,
        transparency: Transparency | None = None,
    ):
        self._config = config
        self._writer = DecisionLogWriter(config, transparency=transparency)
        self._metrics = metrics
        self._model_labels: set[str] = set()
        self._last_admission_failure: tuple[float, str] | None = None
        self.counts = DecisionCounts()
        metrics.registry.register(DecisionLogCollector(self._writer))

    @property
    def state(self) -> State:
        """The writer's state; WARN for a while after a request was refused for want of a record."""
        state = self._writer.state
        if state is State.OK and self._recent_admission_failure() is not None:
            return State.WARN
        return state

    @property
    def detail(self) -> str:
        failure = self._recent_admission_failure()
        if failure is None:
            return self._writer.detail
        return f"{self._writer.detail}; {failure}"

    def _recent_admission_failure(self) -> str | None:
        if self._last_admission_failure is None:
            return None
        at, message = self._last_admission_failure
        since = time.monotonic() - at
        if since > ADMISSION_FAILURE_SHOWN_S:
            return None
        return f"an allowed request was refused {since:.0f} s ago: {message}"

    @property
    def writer(self) -> DecisionLogWriter:
        return self._writer

    async def start(self) -> None:
        await self._writer.start()
        await self.counts.load(self._config.path)

    async def stop(self) -> None:
        await self._writer.stop()

    async def refused(self, outcome: Outcome, status: int, reasons: list[str]) -> None:
        """Record a refusal (``allow: false``, its status) before it is sent. Never raises.

        Use it for every refused decision, including an allowed one that could
        not be admitted. With ``durability: record`` it returns once the record
        is fsynced, unless the log is failing (then once it is queued, so that
        refusals are not held up by the disk). A record that cannot be queued is
        counted (``agora_decision_log_submit_errors_total``) and logged.
        """
        if outcome.admitted:  # allowed and logged, then not forwarded: its outcome says why
            await self.finished(outcome, status, reasons)
            return
        self._count_decision(outcome, outcome_label(False, status))
        durable = self._config.durability == "record" and self._writer.state is not State.ERROR
        try:
            entry = self._entry(
                outcome, await self._input_hash(outcome), allow=False, status=status,
                reasons=reasons, upstream_ns=outcome.upstream_ns,
            )  # fmt: skip
            await self._submit(entry, durable=durable)
        except DecisionLogError as exc:
            self._metrics.log_submit_errors.inc()
            logger.error("refusal %s could not be logged: %s", outcome.decision_id, exc)
            return
        self.counts.add(entry)

    async def admit(
        self, outcome: Outcome, obligations: Mapping[str, object] | None = None
    ) -> None:
        """Record an allowed decision before anything is forwarded; raise if it cannot be.

        ``obligations`` are the constraints applied to what is forwarded (for
        example ``{"max_tokens": 256}``), stored with the decision. With
        ``durability: record`` this returns once the record is fsynced (sharing
        the fsync with concurrent admissions); otherwise once it is queued.

        Raise DecisionLogError when the request must not be forwarded: the log
        is failing or not running (DecisionLogUnavailable), its queue is full
        with ``on_full: fail_closed`` (DecisionLogFull), or the record cannot be
        built (UnrecordableDecision). The caller then answers 503 and records
        that with :meth:`refused`. A failed admission is counted in
        ``agora_decision_log_admission_failures_total``.

        If the log starts failing while the record waits for its fsync, the
        record stays queued (it is written once the disk recovers) and this
        raises DecisionLogUnavailable at once; ``refused`` then adds the
        outcome record (503) that says the request was not forwarded.
        """
        decision = outcome.decision
        if decision is None or not decision.allow:
            raise ValueError("admit() takes a request whose policy decision allows it")
        try:
            if self._writer.state is State.ERROR:
                raise DecisionLogUnavailable(f"the decision log is failing: {self._writer.detail}")
            entry = self._entry(
                outcome, await self._input_hash(outcome), allow=True, status=None,
                reasons=decision.reasons, upstream_ns=0, obligations=obligations,
            )  # fmt: skip
            durable = await self._submit(entry, durable=self._config.durability == "record")
            if not durable:
                outcome.admitted = True  # its decision is queued: refused() adds the outcome
                self._count_decision(outcome, "allowed")
                self.counts.add(entry)
                raise DecisionLogUnavailable(
                    f"the decision log failed before this decision was on disk: "
                    f"{self._writer.detail}"
                )
        except DecisionLogError as exc:
            self._metrics.log_admission_failures.inc()
            self._last_admission_failure = (time.monotonic(), str(exc))
            logger.warning("request %s not forwarded: %s", outcome.decision_id, exc)
            raise
        outcome.admitted = True
        self._count_decision(outcome, "allowed")
        self.counts.add(entry)

    async def _submit(self, entry: DecisionEntry, *, durable: bool) -> bool:
        """Queue ``entry``; with ``durable``, wait for its fsync unless the log starts failing.

        True once durable (or queued, without ``durable``); False if the log
        failed first (the record stays queued). Raises what ``submit`` raises.
        """
        if not durable:
            await self._writer.submit(entry)
            return True
        waiting = asyncio.ensure_future(self._writer.submit(entry, durable=True))
        waiting.add_done_callback(_retrieve)
        while True:
            done, _ = await asyncio.wait({waiting}, timeout=FAILING_CHECK_S)
            if done:
                waiting.result()
                return True
            if self._writer.state is State.ERROR:
                return False

    async def finished(self, outcome: Outcome, status: int, reasons: list[str]) -> None:
        """Record how an admitted request ended: the outcome record. Never raises.

        ``status`` is what the caller got (502/504 when the upstream failed);
        ``reasons`` say what went wrong, if anything (``upstream: ...``,
        ``client_disconnected``, ``upstream_cut``). Returns once queued. A record
        that cannot be queued is counted and logged; the decision then stays
        incomplete in the log's counts.
        """
        if not outcome.admitted:
            logger.error("request %s finished without an admitted decision", outcome.decision_id)
            return
        outcome.admitted = False  # one outcome per decision
        if outcome.upstream_ns:
            self._metrics.upstream_latency.labels(
                outcome.facts.upstream or "", str(status)
            ).observe(outcome.upstream_ns / 1e9)
        assert outcome.input_sha256 is not None  # computed by admit()
        entry = self._entry(
            outcome, outcome.input_sha256, allow=None, status=status, reasons=reasons,
            upstream_ns=outcome.upstream_ns, event="outcome", at=datetime.now(UTC),
        )  # fmt: skip
        try:
            await self._writer.submit(entry)
        except DecisionLogError as exc:
            self._metrics.log_submit_errors.inc()
            logger.error("outcome of %s could not be logged: %s", outcome.decision_id, exc)
            return
        self.counts.add(entry)

    async def answered(self, outcome: Outcome, verdict: Verdict, status: int) -> None:
        """Record response policy's decision on an admitted request's answer. Never raises.

        ``verdict`` says what was judged and what reached the caller; ``status``
        is the status the caller got. Nothing is recorded for an answer no
        checkpoint judged (the caller left first), unless it failed closed
        before one could (an answer too large, or not JSON): then the record's
        ``input_sha256`` is the request's.
        """
        if verdict.checkpoints == 0 and verdict.failed is None:
            return
        label = verdict.outcome
        version = verdict.version or (outcome.decision.version if outcome.decision else None)
        self._metrics.answer_decisions.labels(
            label, outcome.facts.api, str(version.version) if version else "none"
        ).inc()
        if verdict.chars_sent > verdict.chars_judged:
            self._metrics.answer_chars_unjudged.inc(verdict.chars_sent - verdict.chars_judged)
        reasons = [verdict.failed] if verdict.failed is not None else verdict.reasons
        try:
            document = verdict.document
            if document is None:
                digest = await self._input_hash(outcome)
            else:
                digest = await _hash_encoded(document)
            entry = DecisionEntry(
                decision_id=outcome.decision_id,
                time=datetime.now(UTC),
                policy_version=version.version if version else None,
                policy_digest=version.digest if version else None,
                caller_sub=outcome.caller.sub,
                api=outcome.facts.api,
                model=outcome.facts.model,
                upstream=outcome.facts.upstream,
                allow=verdict.allow and verdict.failed is None,
                reasons=list(reasons),
                status=status,
                latency_us={
                    "auth": 0,
                    "policy": verdict.policy_ns // 1000,
                    "upstream": 0,
                    "total": (time.perf_counter_ns() - outcome.started_ns) // 1000,
                },
                input_sha256=digest,
                event="response",
                response=verdict.as_record(),
            )
            await self._writer.submit(entry)
        except (DecisionLogError, ValueError, TypeError) as exc:
            self._metrics.log_submit_errors.inc()
            logger.error("answer to %s could not be logged: %s", outcome.decision_id, exc)
            return
        self.counts.add(entry)

    def _entry(
        self,
        outcome: Outcome,
        digest: str,
        *,
        allow: bool | None,
        status: int | None,
        reasons: list[str],
        upstream_ns: int,
        obligations: Mapping[str, object] | None = None,
        event: Event = "decision",
        at: datetime | None = None,
    ) -> DecisionEntry:
        version = outcome.decision.version if outcome.decision is not None else None
        return DecisionEntry(
            decision_id=outcome.decision_id,
            time=at or outcome.time,
            policy_version=version.version if version else None,
            policy_digest=version.digest if version else None,
            caller_sub=outcome.caller.sub,
            api=outcome.facts.api,
            model=outcome.facts.model,
            upstream=outcome.facts.upstream,
            allow=allow,
            reasons=list(reasons),
            status=status,
            latency_us={
                "auth": outcome.auth_ns // 1000,
                "policy": outcome.policy_ns // 1000,
                "upstream": upstream_ns // 1000,
                "total": (time.perf_counter_ns() - outcome.started_ns) // 1000,
            },
            input_sha256=digest,
            event=event,
            obligations=obligations,
            body=outcome.facts.body,
            group=group_of(outcome.caller.claims, self._config.group_claim),
        )

    async def _input_hash(self, outcome: Outcome) -> str:
        """The request's ``input_sha256``, hashed once (see :func:`_hash_input`)."""
        if outcome.input_sha256 is None:
            document = outcome.input_document or {}
            try:
                outcome.input_sha256 = await _hash_input(document)
            except (ValueError, TypeError) as exc:
                raise UnrecordableDecision(f"the policy input cannot be hashed: {exc}") from exc
        return outcome.input_sha256

    def _count_decision(self, outcome: Outcome, label: str) -> None:
        """One decision, counted once: by outcome, API, model and policy version."""
        version = outcome.decision.version if outcome.decision is not None else None
        self._metrics.decisions.labels(
            label,
            outcome.facts.api,
            self._model_label(outcome.facts.model),
            str(version.version) if version else "none",
        ).inc()
        self._metrics.decision_latency.observe(outcome.policy_ns / 1e9)

    def _model_label(self, model: str | None) -> str:
        """The model's own label for the first models seen, then ``other`` (bounded cardinality)."""
        if model is None:
            return "none"
        if model in self._model_labels:
            return model
        if len(self._model_labels) < MAX_MODEL_LABELS:
            self._model_labels.add(model)
            return model
        return "other"
