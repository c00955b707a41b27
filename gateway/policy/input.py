"""The policy input document: what Rego sees as ``input`` (docs/policy.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway.auth import Caller
from gateway.pinning.store import PolicyVersion


@dataclass(frozen=True)
class RequestFacts:
    """What the gateway knows of a request before asking policy."""

    api: str
    model: str | None
    stream: bool
    body: Any
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    upstream: str | None
    texts: list[str] = field(default_factory=list)
    """Every string of the body, normalised (body.normalise), for deny patterns."""
    usage: dict[str, Any] | None = None
    """What the caller and its groups used in each window before this request (gateway.usage)."""


def build_input(
    facts: RequestFacts, caller: Caller, version: PolicyVersion, now: datetime | None = None
) -> dict[str, Any]:
    """The ``input`` document of docs/policy.md, exactly as Rego sees it."""
    moment = now or datetime.now(UTC)
    document = {
        "api": facts.api,
        "model": facts.model,
        "stream": facts.stream,
        "body": facts.body if facts.body is not None else {},
        "texts": facts.texts,
        "request": {
            "method": facts.method,
            "path": facts.path,
            "query": facts.query,
            "headers": facts.headers,
        },
        "caller": caller.as_input(),
        "upstream": facts.upstream,
        "policy": {"version": version.version, "digest": version.digest},
        # strftime("%Y-%m-%dT%H:%M:%S.%fZ"), for a third of its cost.
        "time": moment.isoformat(timespec="microseconds")[:26] + "Z",
    }
    if facts.usage is not None:
        document["usage"] = facts.usage
    return document
