"""A decision-log record as an OPA decision-log event, for receivers built for OPA's uploads.

OPA uploads each decision as a JSON object (``decision_id``, ``path``,
``input``, ``result``, ``bundles``, ``timestamp``, ``labels``, ``metrics``,
``erased``...); collectors, SIEM pipelines and OPA control planes read that
shape. Agora maps its record onto it and adds its own members, so that a
receiver can also check the chain: ``seq``, ``prev``, ``hash``, the whole
``record`` (whose RFC 8785 canonical JSON without ``hash`` hashes to ``hash``)
and, when the log has one, the latest signed ``checkpoint``.

The log keeps no policy input (only its hash, ``input_sha256``), so ``input``
is erased as an OPA mask policy would erase it (``"erased": ["/input"]``),
unless the log stores request bodies (``decision_log.include_body``): then
``input`` carries the parts of the input document the record holds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from gateway.policy.opa import BUNDLE_NAME


def opa_event(
    record: Mapping[str, Any],
    *,
    path: str,
    labels: Mapping[str, str],
    checkpoint: str | None = None,
) -> dict[str, Any]:
    """The OPA decision-log event of one record (``path``: the policy's decision path)."""
    return {
        **_members(record, path=path, labels=labels, checkpoint=checkpoint),
        "record": dict(record),
    }


def event_json(
    record: Mapping[str, Any],
    line: bytes,
    *,
    path: str,
    labels: Mapping[str, str],
    checkpoint: str | None = None,
) -> bytes:
    """:func:`opa_event` as JSON, with the record's log ``line`` (without its newline) as
    ``record``: the line is already its JSON, so it is not encoded a second time."""
    members = _members(record, path=path, labels=labels, checkpoint=checkpoint)
    head = json.dumps(members, separators=(",", ":"), ensure_ascii=False).encode()
    return head[:-1] + b',"record":' + line + b"}"


def _members(
    record: Mapping[str, Any],
    *,
    path: str,
    labels: Mapping[str, str],
    checkpoint: str | None,
) -> dict[str, Any]:
    """Every member of the event but ``record``."""
    policy = record["policy"]
    result: dict[str, Any] = {
        "event": record.get("event", "decision"),
        "allow": record["allow"],
        "reasons": record["reasons"],
        "status": record["status"],
    }
    if "obligations" in record:
        result["obligations"] = record["obligations"]
    event: dict[str, Any] = {
        "decision_id": record["decision_id"],
        "path": path,
        "result": result,
        "bundles": {}
        if policy["version"] is None
        else {BUNDLE_NAME: {"revision": f"v{policy['version']}+{policy['digest']}"}},
        "timestamp": record["time"],
        "labels": dict(labels),
        "metrics": {f"timer_{k}_ns": v * 1000 for k, v in record["latency_us"].items()},
        "requested_by": record["caller_sub_hash"],
        "input_sha256": record["input_sha256"],
        "seq": record["seq"],
        "prev": record["prev"],
        "hash": record["hash"],
    }
    if "body" in record:
        event["input"] = {
            "api": record["api"],
            "model": record["model"],
            "upstream": record["upstream"],
            "body": record["body"],
        }
    else:
        event["erased"] = ["/input"]
    if checkpoint is not None:
        event["checkpoint"] = checkpoint
    return event
