"""Record format v1: fields, events, hashes (canonical JSON checked against rfc8785)."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import rfc8785

from gateway.decisionlog import (
    DecisionEntry,
    RecordError,
    build_record,
    canonical_json,
    input_sha256,
    outcome,
    seal,
)
from gateway.decisionlog.record import format_time, parse_line, prepare_record, seal_canonical
from tests.unit.decisionlog.samples import (
    decision,
    input_document,
    legacy_fields,
    outcome_of,
    refusal,
    response_of,
)

KEY = b"test-key"
DESIGN_FIELDS = {
    "v", "seq", "time", "decision_id", "policy", "caller_sub_hash", "api", "model", "upstream",
    "allow", "reasons", "status", "latency_us", "input_sha256", "prev", "hash",
}  # fmt: skip
HASH = "sha256:" + "cd" * 32


def sealed(d: DecisionEntry, seq: int = 1, prev: str | None = None, **kw: Any) -> dict[str, Any]:
    fields = build_record(d, caller_key=kw.get("key", KEY), include_body=kw.get("body", False))
    _, line = seal(fields, seq, prev)
    return parse_line(line[:-1])


SAMPLES = [
    decision(1),
    decision(2, caller_sub=None, model=None, upstream=None, policy_version=None),
    decision(3, policy_digest=None, allow=False, status=503, reasons=["no active policy"]),
    decision(4, allow=False, status=403, reasons=["model not allowed", "quota: 0 left"]),
    decision(5, api="chat 🚀", reasons=["tab\there", 'quote " and \\', "\x01\x7f\u2028"]),
    decision(6, time=datetime(2025, 6, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))),
    decision(7, obligations={"max_tokens": 256, "note": "capped 🚀", "ratio": 0.25}),
    outcome_of(decision(8), status=502, reasons=["upstream: connection refused"]),
]


@pytest.mark.parametrize("d", SAMPLES, ids=lambda d: d.decision_id)
def test_record_hash_is_sha256_of_rfc8785_canonical_json(d: DecisionEntry) -> None:
    record = sealed(d, seq=7, prev="sha256:" + "cd" * 32)
    without_hash = {k: v for k, v in record.items() if k != "hash"}
    assert canonical_json(without_hash) == rfc8785.dumps(without_hash)
    assert record["hash"] == "sha256:" + hashlib.sha256(rfc8785.dumps(without_hash)).hexdigest()


def test_record_with_body_hashes_like_rfc8785_even_with_floats_and_astral_keys() -> None:
    body = {"temperature": 0.7, "top_p": 1.0, "n": 1e21, "\U0001f600": 1, "\ue000": 2, "x": -0.0}
    record = sealed(decision(1, body=body), body=True)
    assert record["body"] == body
    without_hash = {k: v for k, v in record.items() if k != "hash"}
    assert record["hash"] == "sha256:" + hashlib.sha256(rfc8785.dumps(without_hash)).hexdigest()


def test_record_has_exactly_the_design_fields_and_its_event() -> None:
    fields = DESIGN_FIELDS | {"event"}
    assert set(sealed(decision(1))) == fields
    assert set(sealed(decision(1, body={"messages": []}), body=True)) == fields | {"body"}
    assert set(sealed(decision(1, obligations={"max_tokens": 9}))) == fields | {"obligations"}
    record = sealed(decision(1))
    assert record["v"] == 1
    assert record["event"] == "decision"
    assert record["time"] == "2025-01-01T00:00:01.000000Z"
    assert record["policy"] == {"version": 3, "digest": "sha256:" + "ab" * 32}
    assert record["latency_us"] == {"auth": 10, "policy": 200, "upstream": 0, "total": 300}


def test_an_allowed_decision_has_no_status_yet_and_its_outcome_names_it() -> None:
    allowed = sealed(decision(1, obligations={"max_tokens": 256}))
    assert (allowed["allow"], allowed["status"]) == (True, None)
    assert allowed["obligations"] == {"max_tokens": 256}
    ended = sealed(outcome_of(decision(1), status=200), body=True)
    assert ended["event"] == "outcome"
    assert (ended["allow"], ended["status"]) == (None, 200)
    assert ended["decision_id"] == allowed["decision_id"]
    assert ended["input_sha256"] == allowed["input_sha256"]
    assert "body" not in ended  # the body belongs to the decision
    refused = sealed(refusal(2, status=503))
    assert (refused["event"], refused["allow"], refused["status"]) == ("decision", False, 503)


def test_a_response_record_names_the_request_and_says_what_was_sent() -> None:
    judged = sealed(response_of(decision(1), "denied"), body=True)
    assert (judged["event"], judged["allow"], judged["status"]) == ("response", False, 200)
    assert judged["decision_id"] == "d-000001"
    assert judged["response"]["outcome"] == "denied"
    assert judged["response"]["chars_sent"] == 420
    assert "body" not in judged


@pytest.mark.parametrize(
    "changes",
    [
        {"allow": None},
        {"status": None},
        {"obligations": {"max_tokens": 1}},
        {"response": {"outcome": "maybe"}},
        {"response": "denied"},
    ],
)
def test_parse_line_refuses_impossible_response_records(changes: dict[str, Any]) -> None:
    record = build_record(response_of(decision(1)), caller_key=KEY, include_body=False)
    _, line = seal({**record, **changes}, 1, None)
    with pytest.raises(RecordError, match="malformed record"):
        parse_line(line[:-1])


def test_only_a_response_record_carries_response() -> None:
    fields = {**build_record(decision(1), caller_key=KEY, include_body=False)}
    fields["response"] = {"outcome": "allowed"}
    _, line = seal(fields, 1, None)
    with pytest.raises(RecordError, match="malformed record"):
        parse_line(line[:-1])
    with pytest.raises(ValueError):
        build_record(response_of(decision(1), status=None), caller_key=KEY, include_body=False)
    with pytest.raises(ValueError):
        build_record(
            decision(1, response={"outcome": "allowed"}), caller_key=KEY, include_body=False
        )
    with pytest.raises(ValueError):
        build_record(
            response_of(decision(1), response={"outcome": "maybe"}),
            caller_key=KEY, include_body=False,
        )  # fmt: skip


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2025, 6, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))),
        datetime(2026, 12, 31, 23, 59, 59, 999_999, tzinfo=timezone(timedelta(hours=-5))),
        datetime(1999, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
    ],
)
def test_time_reads_as_strftime_wrote_it(moment: datetime) -> None:
    utc = moment.astimezone(UTC)
    assert format_time(moment) == utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_a_record_without_event_is_read_as_a_decision() -> None:
    _, line = seal(legacy_fields(decision(1, status=200)), 1, None)
    record = parse_line(line[:-1])
    assert "event" not in record
    assert (record["allow"], record["status"]) == (True, 200)


@pytest.mark.parametrize(
    "changes",
    [
        {"event": "outcome", "allow": True},  # an outcome is not a decision
        {"event": "outcome", "status": None},
        {"event": "outcome", "obligations": {"max_tokens": 1}},
        {"event": "outcome", "body": {"messages": []}},
        {"event": "decision", "allow": False, "status": None},  # a refusal has its status
        {"allow": False, "status": 403, "obligations": {}},  # obligations bind forwarding only
        {"allow": None},  # a decision says yes or no
        {"event": "response"},
        {"obligations": [256]},
    ],
)
def test_parse_line_refuses_impossible_event_combinations(changes: dict[str, Any]) -> None:
    fields = {**build_record(decision(1), caller_key=KEY, include_body=False), **changes}
    _, line = seal(fields, 1, None)
    with pytest.raises(RecordError, match="malformed record"):
        parse_line(line[:-1])


def test_body_is_left_out_unless_configured() -> None:
    record = sealed(decision(1, body={"messages": [{"content": "secret prompt"}]}))
    assert "body" not in record
    assert "secret prompt" not in json.dumps(record)


def test_time_is_utc() -> None:
    d = decision(1, time=datetime(2025, 6, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))))
    assert sealed(d)["time"] == "2025-06-01T12:00:00.000000Z"


def test_caller_hash_is_keyed_hmac_of_sub() -> None:
    expected = hmac.new(KEY, b"user-1", hashlib.sha256).hexdigest()
    assert sealed(decision(1))["caller_sub_hash"] == "hmac-sha256:" + expected
    assert sealed(decision(1), key=None)["caller_sub_hash"] == (
        "sha256:" + hashlib.sha256(b"user-1").hexdigest()
    )
    assert sealed(decision(1, caller_sub=None))["caller_sub_hash"] is None


def test_input_sha256_is_the_hash_of_the_canonical_input_document() -> None:
    document: Any = input_document(1)
    expected = "sha256:" + hashlib.sha256(rfc8785.dumps(document)).hexdigest()
    assert input_sha256(document) == expected
    assert sealed(decision(1))["input_sha256"] == expected


def test_line_is_canonical_json_with_hash_appended() -> None:
    fields = build_record(decision(1), caller_key=KEY, include_body=False)
    digest, line = seal(fields, 1, None)
    assert line.endswith(b',"hash":"' + digest.encode() + b'"}\n')
    hashed = line[: -len(b',"hash":"' + digest.encode() + b'"}\n')] + b"}"
    assert digest == "sha256:" + hashlib.sha256(hashed).hexdigest()
    assert json.loads(line)["prev"] is None


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"latency_us": {"auth": 1.5, "policy": 1, "upstream": 1, "total": 3}}, TypeError),
        ({"latency_us": {"auth": True, "policy": 1, "upstream": 1, "total": 3}}, TypeError),
        ({"latency_us": {"auth": 1, "policy": 1, "total": 3}}, ValueError),
        ({"latency_us": {"auth": -1, "policy": 1, "upstream": 1, "total": 3}}, TypeError),
        ({"time": datetime(2025, 1, 1)}, ValueError),
        ({"status": 42}, ValueError),
        ({"allow": 1}, TypeError),
        ({"reasons": "one reason"}, TypeError),
        ({"reasons": [1]}, TypeError),
        ({"decision_id": ""}, TypeError),
        ({"decision_id": None}, TypeError),
        ({"policy_digest": 7}, TypeError),
        ({"api": None}, TypeError),
        ({"model": 5}, TypeError),
        ({"upstream": ["a"]}, TypeError),
        ({"group": 1}, TypeError),
        ({"reasons": ["ok", None]}, TypeError),
        ({"input_sha256": "sha256:abc"}, ValueError),
        ({"model": "\ud800"}, ValueError),
        ({"event": "response"}, ValueError),
        ({"event": "outcome", "allow": True, "status": 200}, ValueError),
        ({"event": "outcome", "allow": None, "status": None}, ValueError),
        ({"allow": False, "status": None}, ValueError),
        ({"allow": False, "status": 403, "obligations": {"max_tokens": 1}}, ValueError),
        ({"obligations": [256]}, TypeError),
        ({"obligations": {"cap": {1, 2}}}, TypeError),
    ],
)
def test_build_record_refuses_what_cannot_be_recorded(
    changes: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        build_record(decision(1, **changes), caller_key=KEY, include_body=False)


def test_body_that_is_not_json_is_refused() -> None:
    with pytest.raises(ValueError):
        build_record(decision(1, body={"t": float("nan")}), caller_key=KEY, include_body=True)


def test_parse_line_refuses_rewritten_lines() -> None:
    _, line = seal(build_record(decision(1), caller_key=KEY, include_body=False), 1, None)
    record = json.loads(line)
    with pytest.raises(RecordError, match="canonical form"):
        parse_line(json.dumps(record).encode())  # same content, other spacing and order
    # A first "allow" that a first-wins parser would read; Python's json keeps the last.
    duplicated = b'{"allow":false,' + line[1:-1]
    with pytest.raises(RecordError, match="canonical form"):
        parse_line(duplicated)
    with pytest.raises(RecordError, match="version"):
        parse_line(json.dumps({**record, "v": 2}).encode())
    with pytest.raises(RecordError, match="bad JSON"):
        parse_line(b"[1, 2]")


@pytest.mark.parametrize(
    ("allow", "status", "expected"),
    [
        (True, None, "allowed"),
        (True, 200, "allowed"),
        (True, 502, "allowed"),
        (False, 403, "denied"),
        (False, 503, "failed_closed"),
        (False, 401, "failed_closed"),
    ],
)
def test_outcome(allow: bool, status: int | None, expected: str) -> None:
    assert outcome(allow, status) == expected


@pytest.mark.parametrize(
    "body",
    [
        None,
        {"reasons": ["x"], "status": 1, "seq": 2, "prev": None, "hash": "h"},
        {"a": [{',"reasons":': ',"status":'}], "z": 1.5e-7, "n": 2**60},
        {"messages": [{"content": 'say ,"status": and ,"reasons": \\'}], "\U0001f600": "k"},
    ],
)
def test_seal_from_canonical_json_equals_seal(body: object) -> None:
    entry = decision(4, body=body, obligations={"reasons": {"status": 1}, "max_tokens": 9})
    fields, canonical = prepare_record(entry, caller_key=b"k", include_body=body is not None)
    for seq, prev in ((1, None), (17, "sha256:" + "ab" * 32)):
        assert seal_canonical(canonical, seq, prev) == seal(fields, seq, prev)
    with pytest.raises(ValueError):
        seal_canonical(canonical, 2, "not a hash")
