"""A record as an OPA decision log event, for log pipelines built for OPA.

OPA's event fields are kept (``decision_id``, ``path``, ``result``, ``bundles``,
``timestamp``, ``labels``, ``metrics``, ``erased``). The policy input is not in
the record, only its hash, so the event marks ``/input`` as erased, as OPA does
for input removed by its mask policy. The whole record rides along under
``agora``, so a pipeline can still check the hash chain.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.decisionlog.record import version_key


def to_opa_event(record: Mapping[str, Any], *, path: str) -> dict[str, object]:
    """The OPA-style event of one record; ``path`` is the policy's decision path."""
    policy = record["policy"]
    latency = record["latency_us"]
    return {
        "labels": {"app": "agora", "policy_version": version_key(policy["version"])},
        "decision_id": record["decision_id"],
        "bundles": {"agora": {"revision": policy["digest"] or ""}},
        "path": path,
        "result": {"allow": record["allow"], "reasons": record["reasons"]},
        "erased": ["/input"],
        "timestamp": record["time"],
        "metrics": {
            "timer_rego_query_eval_ns": latency["policy"] * 1000,
            "timer_server_handler_ns": latency["total"] * 1000,
        },
        "agora": dict(record),
    }
