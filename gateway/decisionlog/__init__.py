"""Tamper-evident decision log: hash-chained JSON Lines, written off the request path.

See docs/decision-log.md for the record format, durability, rotation and
``agora log verify/stats``.
"""

from gateway.decisionlog.errors import DecisionLogError, DecisionLogFull, RecordError
from gateway.decisionlog.record import (
    OUTCOMES,
    RECORD_VERSION,
    Decision,
    Outcome,
    build_record,
    canonical_json,
    outcome,
    seal,
    version_key,
)

__all__ = [
    "OUTCOMES",
    "RECORD_VERSION",
    "Decision",
    "DecisionLogError",
    "DecisionLogFull",
    "Outcome",
    "RecordError",
    "build_record",
    "canonical_json",
    "outcome",
    "seal",
    "version_key",
]
