"""Record format v1 of the decision log: fields, events, canonical JSON and the hash chain.

A record is one JSON object per line. Its ``hash`` is ``sha256:<hex>`` of the
record without ``hash`` in RFC 8785 canonical JSON (JCS), and its ``prev`` is
the ``hash`` of the record before it (``null`` for the first record ever), so
that changing, removing or reordering any record breaks every later link.

A record is an event: ``decision`` (what the gateway decided, written before
anything is forwarded), ``response`` (what response policy decided about the
answer, with what reached the caller, naming the same ``decision_id``) or
``outcome`` (what happened to an allowed request afterwards, naming the same
``decision_id``). Records without ``event`` are
decisions (the first writers wrote one record per request, at its end).

A writer emits each line as the canonical JSON of the record with ``hash``
appended as the last member: deleting ``,"hash":"..."`` from a line gives back
exactly the bytes that were hashed (see docs/decision-log.md).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from gateway.config import DecisionLog
from gateway.decisionlog.errors import RecordError
from gateway.decisionlog.jcs import canonical_json
from gateway.exceptions import ConfigError

logger = logging.getLogger(__name__)

RECORD_VERSION = 1

LATENCY_KEYS = ("auth", "policy", "upstream", "total")
"""The members of ``latency_us``, integer microseconds each."""

Event = Literal["decision", "outcome", "response"]
EVENTS: tuple[Event, ...] = ("decision", "outcome", "response")

OutcomeLabel = Literal["allowed", "denied", "failed_closed"]
OUTCOMES: tuple[OutcomeLabel, ...] = ("allowed", "denied", "failed_closed")

Ending = Literal["forwarded_ok", "upstream_failed"]

_REQUIRED = frozenset(
    {
        "v", "seq", "time", "decision_id", "policy", "caller_sub_hash", "api", "model",
        "upstream", "allow", "reasons", "status", "latency_us", "input_sha256", "prev", "hash",
    }
)  # fmt: skip
_OPTIONAL = frozenset({"event", "obligations", "body", "group", "response"})
_CHAINED = ("seq", "prev", "hash")
_SHA256 = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class DecisionEntry:
    """One entry for the decision log, as handed to the writer.

    With ``event="decision"``, the gateway's decision: ``allow`` is a bool;
    ``status`` is the refusal's status, or None for an allowed request that is
    about to be forwarded; ``obligations`` (allowed requests only) are the
    constraints the gateway applied to what it forwards, such as an output cap.
    With ``event="outcome"``, what happened to an allowed request after its
    decision: ``allow`` is None, ``status`` the status the caller got.

    ``input_sha256`` is the hash of the policy input (:func:`input_sha256`).
    ``body`` (the request body) is stored, in decision records only, when the
    log is configured with ``include_body``. ``group`` is the configured,
    non-identifying caller attribute (``decision_log.group_claim``), in decision
    records only, so that deny rates can be published per group. The writer owns the object once
    submitted: do not mutate the mappings afterwards.
    """

    decision_id: str
    time: datetime
    policy_version: int | None
    policy_digest: str | None
    caller_sub: str | None
    api: str
    model: str | None
    upstream: str | None
    allow: bool | None
    reasons: Sequence[str]
    status: int | None
    latency_us: Mapping[str, int]
    input_sha256: str
    event: Event = "decision"
    obligations: Mapping[str, object] | None = None
    body: object = None
    group: str | None = None
    response: Mapping[str, object] | None = None


def outcome(allow: bool, status: int | None) -> OutcomeLabel:
    """Classify a decision the same way in stats, metrics and /transparency.

    ``denied`` is the policy saying no (403, or 429 for a spent budget); any other refusal means no
    trustworthy decision could be made, or it could not be logged, and the
    gateway failed closed.
    """
    if allow:
        return "allowed"
    return "denied" if status in (403, 429) else "failed_closed"


def ending(status: int) -> Ending:
    """Classify how a forwarded request ended: the upstream answered, or it failed (5xx)."""
    return "forwarded_ok" if status < 500 else "upstream_failed"


def version_key(version: int | None) -> str:
    """The key of a policy version in counts (JSON object keys are strings)."""
    return "none" if version is None else str(version)


@functools.lru_cache(maxsize=4096)
def caller_hash(sub: str | None, key: bytes | None) -> str | None:
    """Pseudonymise the caller: ``hmac-sha256:<hex>`` of ``sub``, ``null`` when anonymous.

    Without a key it falls back to ``sha256:<hex>``, which anyone can reverse
    by hashing candidate subjects (user ids, e-mail addresses). Remembered for
    the most recent callers: each request writes up to three records.
    """
    if sub is None:
        return None
    if key is None:
        return "sha256:" + hashlib.sha256(sub.encode()).hexdigest()
    return "hmac-sha256:" + hmac.new(key, sub.encode(), hashlib.sha256).hexdigest()


def input_sha256(document: object) -> str:
    """``sha256:<hex>`` of the RFC 8785 canonical JSON of a policy input document.

    Costs time in proportion to the document: see :func:`jcs.costly_to_encode`
    for when to call it off the event loop. Raise TypeError or ValueError.
    """
    return canonical_sha256(canonical_json(document))


def canonical_sha256(canonical: bytes) -> str:
    """``sha256:<hex>`` of a document's canonical JSON, encoded already (policy.encoded)."""
    return "sha256:" + hashlib.sha256(canonical).hexdigest()


def build_record(
    decision: DecisionEntry, *, caller_key: bytes | None, include_body: bool
) -> dict[str, object]:
    """The record of a decision without ``seq``, ``prev`` and ``hash`` (see :func:`seal`).

    Raise ValueError or TypeError (see :func:`prepare_record`).
    """
    record, _ = prepare_record(decision, caller_key=caller_key, include_body=include_body)
    return record


def prepare_record(
    decision: DecisionEntry, *, caller_key: bytes | None, include_body: bool
) -> tuple[dict[str, object], bytes]:
    """The record of a decision without ``seq``, ``prev`` and ``hash``, and its canonical JSON.

    The canonical JSON is what :func:`seal_canonical` chains without encoding
    the record a second time.

    Every value is checked here, on the submitting request's side of the queue,
    so that a decision that cannot be logged fails its own request instead of
    being lost in the writer. Raise ValueError or TypeError.
    """
    d = decision
    _check_event(d)
    _check_members(d)
    record: dict[str, object] = {
        "v": RECORD_VERSION,
        "event": d.event,
        "time": format_time(d.time),
        "decision_id": d.decision_id,
        "policy": {"version": d.policy_version, "digest": d.policy_digest},
        "caller_sub_hash": caller_hash(d.caller_sub, caller_key),
        "api": d.api,
        "model": d.model,
        "upstream": d.upstream,
        "allow": d.allow,
        "reasons": list(d.reasons),
        "status": d.status,
        "latency_us": _latencies(d.latency_us),
        "input_sha256": d.input_sha256,
    }
    if d.obligations is not None:
        record["obligations"] = dict(d.obligations)
    if d.response is not None:
        record["response"] = dict(d.response)
    if include_body and d.event == "decision":
        record["body"] = d.body
    if d.group is not None and d.event == "decision":
        record["group"] = d.group
    return record, canonical_json(record)  # rejects what the writer could not serialize


def _check_event(d: DecisionEntry) -> None:
    """The combinations of event, allow, status and obligations that the format allows."""
    if d.event not in EVENTS:
        raise ValueError(f"event must be one of {', '.join(EVENTS)}, not {d.event!r}")
    if d.status is not None and (not _is_int(d.status) or not 100 <= d.status <= 599):
        raise ValueError(f"status must be an HTTP status code, not {d.status!r}")
    if (d.event == "response") != (d.response is not None):
        raise ValueError("a response record, and only it, carries response")
    if d.event == "outcome":
        if d.allow is not None or d.status is None or d.obligations is not None:
            raise ValueError("an outcome record has allow null, a status and no obligations")
        return
    if d.event == "response":
        if not isinstance(d.allow, bool) or d.status is None or d.obligations is not None:
            raise ValueError("a response record has a bool allow, a status and no obligations")
        if not isinstance(d.response, Mapping) or d.response.get("outcome") not in OUTCOMES:
            raise ValueError(f"response.outcome must be one of {', '.join(OUTCOMES)}")
        return
    if not isinstance(d.allow, bool):
        raise TypeError("allow must be a bool")
    if not d.allow and (d.status is None or d.obligations is not None):
        raise ValueError("a refusal has a status and no obligations")
    if d.obligations is not None and not isinstance(d.obligations, Mapping):
        raise TypeError("obligations must be a JSON object")


def _check_members(d: DecisionEntry) -> None:
    """The type of every member that :func:`_malformed` checks when the record is read back.

    Checked on the entry, once: a record built from an entry that passes
    (and :func:`_check_event`) is one that :func:`parse_line` accepts.
    """
    if not isinstance(d.decision_id, str) or not d.decision_id:
        raise TypeError("decision_id must be a non-empty string")
    if d.policy_version is not None and (not _is_int(d.policy_version) or d.policy_version < 0):
        raise ValueError(f"policy_version must be a non-negative int, not {d.policy_version!r}")
    if d.policy_digest is not None and not isinstance(d.policy_digest, str):
        raise TypeError("policy_digest must be a string or None")
    if not isinstance(d.api, str):
        raise TypeError("api must be a string")
    if d.model is not None and not isinstance(d.model, str):
        raise TypeError("model must be a string or None")
    if d.upstream is not None and not isinstance(d.upstream, str):
        raise TypeError("upstream must be a string or None")
    if isinstance(d.reasons, str):
        raise TypeError("reasons must be a sequence of strings, not a string")
    if not all(isinstance(reason, str) for reason in d.reasons):
        raise TypeError("reasons must be a sequence of strings")
    if d.group is not None and not isinstance(d.group, str):
        raise TypeError("group must be a string or None")
    if not isinstance(d.input_sha256, str) or not _SHA256.fullmatch(d.input_sha256):
        raise ValueError("input_sha256 must be sha256:<64 hex digits>")


def seal(fields: Mapping[str, object], seq: int, prev: str | None) -> tuple[str, bytes]:
    """Chain a record at position ``seq`` after ``prev``: its hash and its log line.

    The line is the canonical JSON of the record with ``hash`` appended as the
    last member, and a newline.
    """
    canonical = canonical_json({**fields, "seq": seq, "prev": prev})
    digest = "sha256:" + hashlib.sha256(canonical).hexdigest()
    return digest, canonical[:-1] + b',"hash":"' + digest.encode() + b'"}\n'


def seal_canonical(canonical: bytes, seq: int, prev: str | None) -> tuple[str, bytes]:
    """:func:`seal`, from the canonical JSON of the record's other members.

    Members are sorted, so ``prev`` goes just before ``reasons`` and ``seq``
    just before ``status``. Both are found from the end: only scalars and a
    list of strings follow them, and a string cannot hold ``,"`` unescaped, so
    the last occurrences are the record's own members, never ones nested in
    ``body`` or ``obligations``.
    """
    reasons = canonical.rfind(b',"reasons":')
    status = canonical.rfind(b',"status":')
    if not 0 < reasons < status or type(seq) is not int:
        raise ValueError("not the canonical JSON of a record's members")
    if prev is not None and not _SHA256.fullmatch(prev):
        raise ValueError("prev must be sha256:<64 hex digits>")
    full = b"".join(
        (
            canonical[:reasons],
            b',"prev":',
            b"null" if prev is None else b'"' + prev.encode() + b'"',
            canonical[reasons:status],
            b',"seq":',
            str(seq).encode(),
            canonical[status:],
        )
    )
    digest = "sha256:" + hashlib.sha256(full).hexdigest()
    return digest, full[:-1] + b',"hash":"' + digest.encode() + b'"}\n'


def parse_line(line: bytes) -> dict[str, Any]:
    """Read one log line (without its newline) and check it is a record a writer wrote.

    Checks the hash, and that the line is byte for byte the canonical form: a
    reformatted line, or one with a duplicated key that a different JSON parser
    would read differently, is refused. Does not check the chain links.
    Raise RecordError saying what is wrong.
    """
    try:
        record = json.loads(line)
    except (ValueError, RecursionError) as exc:  # includes UnicodeDecodeError
        raise RecordError(f"bad JSON: {exc}") from None
    if not isinstance(record, dict):
        raise RecordError("bad JSON: not an object")
    problem = _malformed(record)
    if problem:
        raise RecordError(f"malformed record: {problem}")
    fields = {k: v for k, v in record.items() if k not in _CHAINED}
    try:
        digest, expected = seal(fields, record["seq"], record["prev"])
    except (TypeError, ValueError) as exc:
        raise RecordError(f"bad JSON value: {exc}") from None
    if digest != record["hash"]:
        raise RecordError("hash mismatch")
    if expected[:-1] != line:
        raise RecordError("not in canonical form (the line was rewritten)")
    return record


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC with microseconds, ``2025-01-31T12:00:00.123456Z``: sortable as text."""
    if moment.utcoffset() is None:
        raise ValueError("time must be timezone-aware")
    # isoformat is a fifth of strftime's cost; it ends in +00:00 for a UTC time.
    return moment.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def _latencies(latency: Mapping[str, int]) -> dict[str, int]:
    if set(latency) != set(LATENCY_KEYS):
        raise ValueError(f"latency_us must have exactly the keys {', '.join(LATENCY_KEYS)}")
    for key in LATENCY_KEYS:
        value = latency[key]
        if not _is_int(value) or value < 0:
            raise TypeError(f"latency_us.{key} must be non-negative integer microseconds")
    return {key: latency[key] for key in LATENCY_KEYS}


def _malformed(record: Mapping[str, Any]) -> str | None:
    """What is structurally wrong with a record, or None: the checks the chain relies on."""
    if record.get("v") != RECORD_VERSION:
        return f"unsupported format version {record.get('v')!r}"
    missing = _REQUIRED - record.keys()
    if missing:
        return f"missing {', '.join(sorted(missing))}"
    unknown = record.keys() - _REQUIRED - _OPTIONAL
    if unknown:
        return f"unknown member(s) {', '.join(sorted(unknown))}"
    policy = record["policy"]
    event = record.get("event", "decision")
    allow, status = record["allow"], record["status"]
    if event == "outcome":
        event_ok = allow is None and _is_int(status) and not record.keys() & {"obligations", "body"}
        event_ok = event_ok and "response" not in record
    elif event == "response":
        event_ok = isinstance(allow, bool) and _is_int(status)
        event_ok = event_ok and not record.keys() & {"obligations", "body"}
        event_ok = event_ok and isinstance(record.get("response"), dict)
        event_ok = event_ok and record["response"].get("outcome") in OUTCOMES
    else:
        event_ok = event == "decision" and isinstance(allow, bool)
        event_ok = event_ok and (_is_int(status) or (status is None and allow is True))
        event_ok = event_ok and ("obligations" not in record or allow is True)
        event_ok = event_ok and "response" not in record
    checks = {
        "seq": _is_int(record["seq"]) and record["seq"] >= 1,
        "prev": record["prev"] is None or isinstance(record["prev"], str),
        "hash": isinstance(record["hash"], str),
        "time": isinstance(record["time"], str),
        "decision_id": isinstance(record["decision_id"], str) and record["decision_id"] != "",
        "policy": isinstance(policy, dict)
        and policy.keys() == {"version", "digest"}
        and (policy["version"] is None or _is_int(policy["version"]))
        and (policy["digest"] is None or isinstance(policy["digest"], str)),
        "caller_sub_hash": record["caller_sub_hash"] is None
        or isinstance(record["caller_sub_hash"], str),
        "api": isinstance(record["api"], str),
        "model": record["model"] is None or isinstance(record["model"], str),
        "upstream": record["upstream"] is None or isinstance(record["upstream"], str),
        "event, allow, status": event_ok,
        "obligations": isinstance(record.get("obligations", {}), dict),
        "group": isinstance(record.get("group", ""), str)
        and not (event != "decision" and "group" in record),
        "reasons": isinstance(record["reasons"], list)
        and all(isinstance(r, str) for r in record["reasons"]),
        "latency_us": isinstance(record["latency_us"], dict)
        and record["latency_us"].keys() == set(LATENCY_KEYS)
        and all(_is_int(v) for v in record["latency_us"].values()),
        "input_sha256": isinstance(record["input_sha256"], str),
    }
    bad = [name for name, ok in checks.items() if not ok]
    return f"bad type or value of {', '.join(bad)}" if bad else None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


MAX_GROUP_CHARS = 64


def group_of(claims: Mapping[str, Any], claim: str | None) -> str | None:
    """The caller's group as recorded; None when not configured or not given.

    A string claim is recorded as it is, a list of strings sorted and joined by
    ``,``; at most ``MAX_GROUP_CHARS`` characters. It is meant to be a coarse
    attribute (a region, a membership tier), never one that names a caller.
    """
    if claim is None:
        return None
    value = claims.get(claim)
    if isinstance(value, str):
        text = value
    elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        text = ",".join(sorted(set(value)))
    else:
        return None
    return text[:MAX_GROUP_CHARS] or None


def caller_key(config: DecisionLog, environ: Mapping[str, str]) -> bytes | None:
    """The HMAC key of the caller hash; None only where the configuration says ``unkeyed``."""
    if config.caller_hash == "unkeyed":
        logger.warning(
            "decision_log.caller_hash is unkeyed: caller hashes are plain SHA-256 of sub, "
            "which anyone holding the log can reverse by hashing guessed subjects"
        )
        return None
    name = config.caller_hash_key_env
    key = environ.get(name, "") if name else ""
    if not key:
        raise ConfigError(
            f"decision_log.caller_hash_key_env: environment variable {name} is unset or empty; "
            "put the caller-hash key there (for example `openssl rand -hex 32`), "
            "or set decision_log.caller_hash: unkeyed"
        )
    return key.encode()
