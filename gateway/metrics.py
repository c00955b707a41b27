"""Prometheus metrics. Names are constants here so that docs, dashboards and tests share them.

Each gateway process owns its registry; run one worker per pod and let
Prometheus aggregate pods (see docs/operations.md).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from gateway.lifecycle import State, Worker

DECISIONS = "agora_decisions"
DECISION_LATENCY = "agora_decision_duration_seconds"
UPSTREAM_LATENCY = "agora_upstream_duration_seconds"
REQUESTS_REJECTED = "agora_requests_rejected"
REQUESTS_SHED = "agora_requests_shed"
REQUESTS_IN_FLIGHT = "agora_requests_in_flight"
REQUESTS_QUEUED = "agora_requests_queued"
CONNECTIONS_TIMED_OUT = "agora_connections_timed_out"
POLICY_VERSION = "agora_policy_active_version"
POLICY_INFO = "agora_policy_active"
COMPONENT_STATE = "agora_component_state"
LOG_SUBMIT_ERRORS = "agora_decision_log_submit_errors"
CHAIN_LAST_SYNC = "agora_chain_last_sync_timestamp_seconds"
BUNDLE_VERIFICATIONS = "agora_bundle_verifications"
LOG_QUEUE_DEPTH = "agora_decision_log_queue_depth"
LOG_RECORDS = "agora_decision_log_records"
LOG_WRITE_ERRORS = "agora_decision_log_write_errors"
LOG_ADMISSION_FAILURES = "agora_decision_log_admission_failures"
LOG_SYNCS = "agora_decision_log_fsyncs"
ANSWER_DECISIONS = "agora_answer_decisions"
ANSWER_LATENCY = "agora_answer_decision_duration_seconds"
ANSWER_CHARS_UNJUDGED = "agora_answer_chars_sent_unjudged"
LOG_SHIPPED = "agora_decision_log_shipped_records"
LOG_SHIPPED_BATCHES = "agora_decision_log_shipped_batches"
LOG_SHIP_FAILURES = "agora_decision_log_ship_failures"
LOG_SHIP_LAG = "agora_decision_log_ship_lag_records"
LOG_SHIPPED_SEQ = "agora_decision_log_shipped_seq"
LOG_SHIP_LAST_SUCCESS = "agora_decision_log_ship_last_success_timestamp_seconds"
USAGE_TOKENS = "agora_usage_tokens"
USAGE_UNAVAILABLE = "agora_usage_unavailable"

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_UPSTREAM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class GatewayMetrics:
    """The gateway's metric families, registered in one registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.decisions = Counter(
            DECISIONS,
            "Policy decisions by outcome (allowed, denied, failed_closed), API, model, version.",
            ["outcome", "api", "model", "policy_version"],
            registry=self.registry,
        )
        self.decision_latency = Histogram(
            DECISION_LATENCY,
            "Time to obtain a policy decision from OPA.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.upstream_latency = Histogram(
            UPSTREAM_LATENCY,
            "Time from forwarding a request to the end of the upstream response.",
            ["upstream", "status"],
            buckets=_UPSTREAM_BUCKETS,
            registry=self.registry,
        )
        self.answer_decisions = Counter(
            ANSWER_DECISIONS,
            "Answers judged by response policy, by outcome (allowed, denied, failed_closed), "
            "API and version; one per answer, whatever its number of checkpoints.",
            ["outcome", "api", "policy_version"],
            registry=self.registry,
        )
        self.answer_latency = Histogram(
            ANSWER_LATENCY,
            "Time to obtain one response-policy decision (one checkpoint) from OPA.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.answer_chars_unjudged = Counter(
            ANSWER_CHARS_UNJUDGED,
            "Characters of answer sent before any checkpoint judged them (response.holdback off).",
            registry=self.registry,
        )
        self.rejected = Counter(
            REQUESTS_REJECTED,
            "Requests refused before policy (bad input, bad token, unknown model).",
            ["reason"],
            registry=self.registry,
        )
        self.shed = Counter(
            REQUESTS_SHED,
            "Requests refused with 503 because the gateway was at capacity, by reason "
            "(queue_full, queue_timeout, large_bodies).",
            ["reason"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            REQUESTS_IN_FLIGHT, "Requests under /v1/ being handled.", registry=self.registry
        )
        self.queued = Gauge(
            REQUESTS_QUEUED, "Requests under /v1/ waiting for a slot.", registry=self.registry
        )
        self.connections_timed_out = Counter(
            CONNECTIONS_TIMED_OUT,
            "Connections closed for being too slow, by reason (header_timeout, body_timeout, "
            "write_timeout).",
            ["reason"],
            registry=self.registry,
        )
        self.policy_version = Gauge(
            POLICY_VERSION,
            "The policy version in force (-1: none verified yet).",
            registry=self.registry,
        )
        self.policy_version.set(-1)
        self.policy_info = Info(
            POLICY_INFO, "Digest and source of the policy in force.", registry=self.registry
        )
        self.components = ComponentStateCollector()
        self.registry.register(self.components)

        self.log_submit_errors = Counter(
            LOG_SUBMIT_ERRORS,
            "Decisions refused by the decision log (queue full in fail_closed mode, writer down).",
            registry=self.registry,
        )
        self.log_admission_failures = Counter(
            LOG_ADMISSION_FAILURES,
            "Allowed requests not forwarded because their decision could not be logged first.",
            registry=self.registry,
        )

        self.chain_last_sync = Gauge(
            CHAIN_LAST_SYNC,
            "Unix time of the last successful read of the policy registry on chain.",
            registry=self.registry,
        )
        self.bundle_verifications = Counter(
            BUNDLE_VERIFICATIONS,
            "Ratified bundles checked, by result (ok, mismatch, unavailable, invalid, error).",
            ["result"],
            registry=self.registry,
        )

        self.usage_tokens = Counter(
            USAGE_TOKENS,
            "Tokens counted against callers' budgets, by kind (prompt, completion) and source "
            "(reported by the upstream, or estimated when it reported none).",
            ["kind", "source"],
            registry=self.registry,
        )
        self.usage_unavailable = Counter(
            USAGE_UNAVAILABLE,
            "Operations on the shared usage counters (Redis) that failed, by operation "
            "(charge, refund, tokens, ping) and what was done (refused, local, lost).",
            ["operation", "action"],
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _LogWriterView(Protocol):
    @property
    def queue_depth(self) -> int: ...

    @property
    def count(self) -> int: ...

    @property
    def write_errors(self) -> int: ...

    @property
    def syncs(self) -> int: ...


class DecisionLogCollector(Collector):
    """Decision-log figures read from the writer at scrape time: nothing on the hot path."""

    def __init__(self, writer: _LogWriterView):
        self._writer = writer

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        yield GaugeMetricFamily(
            LOG_QUEUE_DEPTH, "Decisions waiting to be written.", value=self._writer.queue_depth
        )
        yield GaugeMetricFamily(
            LOG_RECORDS,
            "Records in the decision log's hash chain (its head seq).",
            value=self._writer.count,
        )
        yield CounterMetricFamily(
            LOG_WRITE_ERRORS,
            "Failed write or fsync attempts (each is retried).",
            value=self._writer.write_errors,
        )
        yield CounterMetricFamily(
            LOG_SYNCS,
            "Successful fsyncs of the decision log (records per fsync: the group-commit size).",
            value=self._writer.syncs,
        )


class _ShipperView(Protocol):
    @property
    def shipped_records(self) -> int: ...

    @property
    def shipped_batches(self) -> int: ...

    @property
    def failures(self) -> int: ...

    @property
    def lag(self) -> int: ...

    @property
    def shipped_seq(self) -> int: ...

    @property
    def last_success(self) -> float | None: ...


class LogShipCollector(Collector):
    """Shipping figures read from the decision-log sink at scrape time."""

    def __init__(self, shipper: _ShipperView):
        self._shipper = shipper

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        shipper = self._shipper
        yield CounterMetricFamily(
            LOG_SHIPPED,
            "Decision-log records the receiver acknowledged.",
            value=shipper.shipped_records,
        )
        yield CounterMetricFamily(
            LOG_SHIPPED_BATCHES,
            "Batches (gzip'd POSTs) the receiver acknowledged.",
            value=shipper.shipped_batches,
        )
        yield CounterMetricFamily(
            LOG_SHIP_FAILURES,
            "Batches the receiver did not acknowledge (no answer, or not 2xx); each is retried.",
            value=shipper.failures,
        )
        yield GaugeMetricFamily(
            LOG_SHIP_LAG,
            "Records in the decision log not yet acknowledged by the receiver.",
            value=shipper.lag,
        )
        yield GaugeMetricFamily(
            LOG_SHIPPED_SEQ,
            "seq of the last record the receiver acknowledged.",
            value=shipper.shipped_seq,
        )
        if shipper.last_success is not None:
            yield GaugeMetricFamily(
                LOG_SHIP_LAST_SUCCESS,
                "Unix time of the last batch the receiver acknowledged.",
                value=shipper.last_success,
            )


class ComponentStateCollector(Collector):
    """``agora_component_state``: 1 for each worker's current state, 0 for the others.

    Read from the workers (gateway/lifecycle.py) at scrape time, like ``/readyz``.
    """

    def __init__(self) -> None:
        self.workers: Sequence[Worker] = ()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            COMPONENT_STATE,
            "1 for the current state of each background component, 0 otherwise.",
            labels=["component", "state"],
        )
        for worker in self.workers:
            current = worker.state
            for state in State:
                family.add_metric([worker.name, state.value], 1 if state is current else 0)
        yield family
