"""Recording each decision: one place that feeds both the decision log and the metrics.

A decision is recorded once its request is over (for a stream, when the stream
ends), so the record holds the final status and the upstream time.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway.auth import Caller
from gateway.config import DecisionLog
from gateway.decisionlog.errors import DecisionLogError
from gateway.decisionlog.record import Decision as LogEntry
from gateway.decisionlog.record import outcome as outcome_label
from gateway.decisionlog.writer import DecisionLogWriter
from gateway.lifecycle import State
from gateway.metrics import DecisionLogCollector, GatewayMetrics
from gateway.policy import Decision, RequestFacts
from gateway.transparency import DecisionCounts

logger = logging.getLogger("agora.decisions")

MAX_MODEL_LABELS = 100


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
    obligations: dict[str, int] = field(default_factory=dict)


class DecisionRecorder:
    """Hands each decision to the decision-log writer and counts it in the metrics."""

    name = "decision_log"

    def __init__(self, config: DecisionLog, metrics: GatewayMetrics):
        self._config = config
        self._writer = DecisionLogWriter(config)
        self._metrics = metrics
        self._model_labels: set[str] = set()
        self.counts = DecisionCounts()
        metrics.registry.register(DecisionLogCollector(self._writer))

    @property
    def state(self) -> State:
        return self._writer.state

    def ensure_capacity(self) -> None:
        """Raise DecisionLogFull before forwarding when a full queue must fail closed.

        Records are submitted when a response ends; checking first means an allowed
        request is never forwarded when its record could not be queued.
        """
        self._writer.ensure_room()

    @property
    def detail(self) -> str:
        return self._writer.detail

    @property
    def writer(self) -> DecisionLogWriter:
        return self._writer

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

    async def start(self) -> None:
        await self._writer.start()
        await self.counts.load(self._config.path)

    async def stop(self) -> None:
        await self._writer.stop()

    async def record(
        self,
        outcome: Outcome,
        status: int,
        reasons: list[str],
        upstream_error: str | None = None,
        allow: bool | None = None,
    ) -> None:
        """Record the decision; ``allow=False`` when an allowed request was not forwarded."""
        total_ns = time.perf_counter_ns() - outcome.started_ns
        decision = outcome.decision
        if allow is None:
            allow = decision.allow if decision is not None else False
        version = decision.version if decision is not None else None
        label = outcome_label(allow, status)
        model = outcome.facts.model
        self._metrics.decisions.labels(
            label,
            outcome.facts.api,
            self._model_label(model),
            str(version.version) if version else "none",
        ).inc()
        self._metrics.decision_latency.observe(outcome.policy_ns / 1e9)
        if outcome.upstream_ns:
            self._metrics.upstream_latency.labels(
                outcome.facts.upstream or "", str(status)
            ).observe(outcome.upstream_ns / 1e9)
        entry = LogEntry(
            decision_id=outcome.decision_id,
            time=outcome.time,
            policy_version=version.version if version else None,
            policy_digest=version.digest if version else None,
            caller_sub=outcome.caller.sub,
            api=outcome.facts.api,
            model=model,
            upstream=outcome.facts.upstream,
            allow=allow,
            reasons=reasons + ([f"upstream: {upstream_error}"] if upstream_error else []),
            status=status,
            latency_us={
                "auth": outcome.auth_ns // 1000,
                "policy": outcome.policy_ns // 1000,
                "upstream": outcome.upstream_ns // 1000,
                "total": total_ns // 1000,
            },
            input_document=outcome.input_document or {},
            body=outcome.facts.body,
        )
        try:
            await self._writer.submit(entry)
        except (DecisionLogError, ValueError, TypeError) as exc:
            self._metrics.log_submit_errors.inc()
            logger.error("decision %s could not be logged: %s", outcome.decision_id, exc)
            return
        self.counts.add(entry.policy_version, entry.policy_digest, entry.allow, entry.status)
