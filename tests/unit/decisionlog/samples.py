"""Sample records for the decision-log tests: one shape, varied by index and overrides."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.decisionlog import DecisionEntry, build_record, input_sha256


def input_document(i: int) -> dict[str, Any]:
    return {"request": {"model": "gpt-4o-mini", "temperature": 0.7}, "n": i}


def decision(i: int = 0, **changes: Any) -> DecisionEntry:
    """Decision number ``i``: an allowed chat completion about to be forwarded, 1 s after i - 1."""
    base = DecisionEntry(
        decision_id=f"d-{i:06d}",
        time=datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=i),
        policy_version=3,
        policy_digest="sha256:" + "ab" * 32,
        caller_sub=f"user-{i % 5}",
        api="chat.completions",
        model="gpt-4o-mini",
        upstream="openai",
        allow=True,
        reasons=[],
        status=None,
        latency_us={"auth": 10, "policy": 200, "upstream": 0, "total": 300},
        input_sha256=input_sha256(input_document(i)),
    )
    return dataclasses.replace(base, **changes)


def refusal(i: int = 0, status: int = 403, **changes: Any) -> DecisionEntry:
    """Decision number ``i`` refused with ``status`` (403: denied by policy)."""
    reasons = ["denied by policy"] if status == 403 else ["no trustworthy decision"]
    return decision(i, **{"allow": False, "status": status, "reasons": reasons, **changes})


def outcome_of(allowed: DecisionEntry, status: int = 200, **changes: Any) -> DecisionEntry:
    """The outcome record of an allowed decision: its response ended with ``status``."""
    fields: dict[str, Any] = {
        "event": "outcome",
        "allow": None,
        "status": status,
        "time": allowed.time + timedelta(milliseconds=500),
        "latency_us": {"auth": 10, "policy": 200, "upstream": 5000, "total": 5300},
        **changes,
    }
    return dataclasses.replace(allowed, **fields)


def response_of(allowed: DecisionEntry, outcome: str = "allowed", **changes: Any) -> DecisionEntry:
    """The response record of an allowed decision: response policy's word on its answer."""
    fields: dict[str, Any] = {
        "event": "response",
        "allow": outcome == "allowed",
        "status": 200,
        "reasons": [] if outcome == "allowed" else ["answer matches deny term private-key"],
        "time": allowed.time + timedelta(milliseconds=400),
        "response": {
            "outcome": outcome, "checkpoints": 3, "final": outcome == "allowed",
            "holdback": True, "chars_sent": 420, "sent_unjudged": None,
        },
        **changes,
    }  # fmt: skip
    return dataclasses.replace(allowed, **fields)


def legacy_fields(d: DecisionEntry, *, caller_key: bytes | None = b"k") -> dict[str, object]:
    """A record as the first writers made it: no ``event``, one record per request at its end."""
    fields = build_record(d, caller_key=caller_key, include_body=False)
    del fields["event"]
    return fields
