"""The input document encoded once: the hash of the whole document, the same JSON to OPA."""

from __future__ import annotations

import contextlib
import hashlib
import json
from typing import Any

import pytest
import rfc8785

from gateway.decisionlog import canonical_json, input_sha256
from gateway.policy.encoded import EncodedInput

CHAT = {
    "api": "chat.completions",
    "model": "demo-small",
    "stream": False,
    "body": {"model": "demo-small", "messages": [{"role": "user", "content": "héllo 🚀"}]},
    "texts": ["hello"],
    "request": {"method": "POST", "path": "/v1/chat/completions", "query": {}, "headers": {}},
    "caller": {"authenticated": True, "sub": "u", "iss": None, "claims": {"groups": ["a"]}},
    "upstream": "default",
    "policy": {"version": 3, "digest": "sha256:" + "ab" * 32},
    "time": "2026-01-01T00:00:00.000000Z",
    "usage": {"caller": {"minute": {"requests": 1}}},
}
DOCUMENTS: list[dict[str, Any]] = [
    {},
    CHAT,
    {**CHAT, "body": {"temperature": 1.0, "top_p": 0.25, "seed": 2**60, "tiny": 1e-7}},
    {**CHAT, "body": {"\U0001f680": 1, "\ufb01": 2, "nested": {"\U0001f680b": [1e21, -0.0]}}},
    {**CHAT, "body": {"deep": json.loads("[" * 250 + "]" * 250)}},
]
ANSWER = {"text": "Hello, 世界", "texts": ["hello"], "final": True, "usage": {"total_tokens": 9}}


def reference(document: object) -> bytes:
    """The document's canonical JSON as the log encodes it (and rfc8785, where it can)."""
    whole = canonical_json(document)
    # JCS writes integers beyond 2**53 as the doubles they parse to; rfc8785 refuses them.
    with contextlib.suppress(rfc8785.IntegerDomainError):
        assert rfc8785.dumps(document) == whole
    return whole


@pytest.mark.parametrize("document", DOCUMENTS, ids=["empty", "chat", "numbers", "astral", "deep"])
def test_the_canonical_json_and_hash_are_those_of_the_whole_document(
    document: dict[str, Any],
) -> None:
    encoded = EncodedInput.of(document)
    assert encoded.canonical == reference(document)
    assert encoded.sha256() == input_sha256(document)
    assert encoded.sha256() == "sha256:" + hashlib.sha256(reference(document)).hexdigest()
    assert json.loads(encoded.payload()) == {"input": document}


@pytest.mark.parametrize("document", DOCUMENTS, ids=["empty", "chat", "numbers", "astral", "deep"])
def test_an_added_member_hashes_like_the_merged_document(document: dict[str, Any]) -> None:
    for answer in (ANSWER, {**ANSWER, "usage": {"cost": 3.0, "big": 2**70}}):
        merged = {**document, "response": answer}
        extended = EncodedInput.of(document).with_response(answer)
        assert extended.document == merged
        assert extended.canonical == reference(merged)
        assert extended.sha256() == input_sha256(merged)
        assert json.loads(extended.payload()) == {"input": merged}
    again = EncodedInput.of({"a": 1, "response": 1, "z": 0})
    assert again.canonical == b'{"a":1,"response":1,"z":0}'
    replaced = again.with_response(2)  # not spliced twice: left to the whole-document path
    assert replaced.canonical is None and replaced.document == {"a": 1, "response": 2, "z": 0}
    for only in ({"a": 1}, {"z": 1}):
        assert EncodedInput.of(only).with_response(2).canonical == canonical_json(
            {**only, "response": 2}
        )


def test_opa_gets_the_canonical_bytes_only_where_json_dumps_writes_the_same_values() -> None:
    plain = EncodedInput.of(CHAT)
    assert plain.payload() == b'{"input":' + rfc8785.dumps(CHAT) + b"}"
    # JCS writes 2**60 as the double it parses to; OPA must read the integer that was sent.
    large = {**CHAT, "body": {"seed": 2**60, "temperature": 1.0}}
    encoded = EncodedInput.of(large)
    assert encoded.payload() == json.dumps({"input": large}, separators=(",", ":")).encode()
    assert json.loads(encoded.payload())["input"]["body"]["seed"] == 2**60
    answer = EncodedInput.of(CHAT).with_response({"n": 2**60})
    assert json.loads(answer.payload())["input"]["response"]["n"] == 2**60


@pytest.mark.parametrize(
    "document",
    [{**CHAT, "body": {"x": "\ud800"}}, {"clé": 1}, {**CHAT, "body": {"x": float("nan")}}],
    ids=["lone surrogate", "non-ASCII key", "nan"],
)
def test_what_is_not_encoded_is_sent_as_json_dumps_writes_it(document: dict[str, Any]) -> None:
    encoded = EncodedInput.of(document)
    assert encoded.canonical is None and encoded.sha256() is None
    assert encoded.payload() == json.dumps({"input": document}, separators=(",", ":")).encode()
    assert encoded.with_response(ANSWER).canonical is None


def test_a_document_not_encoded_inline_is_left_to_its_users() -> None:
    encoded = EncodedInput.of(CHAT, inline=False)
    assert encoded.canonical is None and encoded.sha256() is None
    assert encoded.payload() == json.dumps({"input": CHAT}, separators=(",", ":")).encode()
    extended = encoded.with_response(ANSWER)
    assert extended.canonical is None and extended.document == {**CHAT, "response": ANSWER}
    bad_answer = EncodedInput.of(CHAT).with_response({"x": "\udfff"})
    assert bad_answer.canonical is None
