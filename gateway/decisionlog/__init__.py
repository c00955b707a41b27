"""Tamper-evident decision log: hash-chained JSON Lines, written off the request path.

See docs/decision-log.md for the record format, durability, rotation and
``agora log verify/stats``.
"""

from gateway.decisionlog.errors import DecisionLogError, DecisionLogFull, RecordError
from gateway.decisionlog.jcs import canonical_json
from gateway.decisionlog.record import (
    OUTCOMES,
    RECORD_VERSION,
    Decision,
    Outcome,
    build_record,
    outcome,
    seal,
    version_key,
)
from gateway.decisionlog.verify import BadRecord, ChainBroken, LogStats, VerifyResult, stats, verify
from gateway.decisionlog.writer import DecisionLogWriter

__all__ = [
    "OUTCOMES",
    "RECORD_VERSION",
    "BadRecord",
    "ChainBroken",
    "Decision",
    "DecisionLogError",
    "DecisionLogFull",
    "DecisionLogWriter",
    "LogStats",
    "Outcome",
    "RecordError",
    "VerifyResult",
    "build_record",
    "canonical_json",
    "outcome",
    "seal",
    "stats",
    "verify",
    "version_key",
]
