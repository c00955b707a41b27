"""Tamper-evident decision log: hash-chained JSON Lines, written off the request path.

See docs/decision-log.md for the record format, durability, rotation and
``agora log verify/stats``.
"""

from gateway.decisionlog.errors import (
    DecisionLogError,
    DecisionLogFull,
    DecisionLogUnavailable,
    RecordError,
    UnrecordableDecision,
)
from gateway.decisionlog.jcs import canonical_json
from gateway.decisionlog.record import (
    EVENTS,
    OUTCOMES,
    RECORD_VERSION,
    DecisionEntry,
    Event,
    OutcomeLabel,
    build_record,
    input_sha256,
    outcome,
    seal,
    version_key,
)
from gateway.decisionlog.tally import LogStats, Tally
from gateway.decisionlog.verify import BadRecord, ChainBroken, VerifyResult, stats, verify
from gateway.decisionlog.writer import DecisionLogWriter

__all__ = [
    "EVENTS",
    "OUTCOMES",
    "RECORD_VERSION",
    "BadRecord",
    "ChainBroken",
    "DecisionEntry",
    "DecisionLogError",
    "DecisionLogFull",
    "DecisionLogUnavailable",
    "DecisionLogWriter",
    "Event",
    "LogStats",
    "OutcomeLabel",
    "RecordError",
    "Tally",
    "UnrecordableDecision",
    "VerifyResult",
    "build_record",
    "canonical_json",
    "input_sha256",
    "outcome",
    "seal",
    "stats",
    "verify",
    "version_key",
]
