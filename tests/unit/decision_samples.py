"""Sample decisions for the decision-log tests: one shape, varied by index and overrides."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.decisionlog import Decision


def decision(i: int = 0, **changes: Any) -> Decision:
    """Decision number ``i``: an allowed chat completion, one second after the previous one."""
    base = Decision(
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
        status=200,
        latency_us={"auth": 10, "policy": 200, "upstream": 5000, "total": 5300},
        input_document={"request": {"model": "gpt-4o-mini", "temperature": 0.7}, "n": i},
    )
    return dataclasses.replace(base, **changes)
