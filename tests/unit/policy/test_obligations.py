"""The decision's max_tokens is applied to what is forwarded, or the request is refused."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.exceptions import ObligationRefused
from gateway.policy.obligations import apply_obligations


def forwarded(api: str, body: dict[str, Any], cap: int | None, field: str = "max_tokens") -> Any:
    raw = json.dumps(body).encode()
    result = apply_obligations(api, body, raw, cap, field)
    return json.loads(result.body), result.applied, result.body == raw


def test_no_cap_forwards_the_bytes_received() -> None:
    assert forwarded("chat.completions", {"model": "m"}, None) == ({"model": "m"}, {}, True)


def test_a_missing_cap_is_set() -> None:
    body, applied, same = forwarded("chat.completions", {"model": "m"}, 256)
    assert body == {"model": "m", "max_tokens": 256}
    assert applied == {"max_tokens": 256}
    assert not same


def test_the_configured_chat_field_is_used() -> None:
    body, _, _ = forwarded("chat.completions", {"model": "m"}, 256, "max_completion_tokens")
    assert body == {"model": "m", "max_completion_tokens": 256}


def test_every_cap_field_present_is_lowered() -> None:
    body, _, _ = forwarded(
        "chat.completions", {"max_tokens": 9000, "max_completion_tokens": 9000}, 256
    )
    assert body == {"max_tokens": 256, "max_completion_tokens": 256}


def test_a_lower_cap_of_the_caller_is_kept_byte_for_byte() -> None:
    assert forwarded("completions", {"max_tokens": 10}, 256)[2]


def test_choices_share_the_cap() -> None:
    body, applied, _ = forwarded("completions", {"n": 4, "best_of": 8}, 256)
    assert body["max_tokens"] == 32
    assert applied == {"max_tokens": 32}


@pytest.mark.parametrize(
    ("prompt", "cap"),
    [("one", 256), ([1, 2, 3], 256), (["a", "b", "c", "d"], 64), ([[1, 2], [3]], 128)],
)
def test_a_completions_batch_shares_the_cap(prompt: object, cap: int) -> None:
    body, applied, _ = forwarded("completions", {"prompt": prompt, "max_tokens": 256}, 256)
    assert body["max_tokens"] == cap
    assert applied == {"max_tokens": cap}


def test_more_choices_than_tokens_are_refused() -> None:
    with pytest.raises(ObligationRefused):
        forwarded("chat.completions", {"n": 64}, 32)


def test_responses_use_max_output_tokens() -> None:
    body, _, _ = forwarded("responses", {"input": "x"}, 100)
    assert body == {"input": "x", "max_output_tokens": 100}


def test_apis_without_output_are_untouched() -> None:
    assert forwarded("embeddings", {"input": "x"}, 100)[2]


def test_a_stream_is_made_to_report_its_usage() -> None:
    body = {"model": "m", "stream": True, "stream_options": {"other": 1}}
    result = apply_obligations(
        "chat.completions", body, b"{}", 256, "max_tokens", stream_usage=True
    )
    assert json.loads(result.body)["stream_options"] == {"other": 1, "include_usage": True}
    assert result.usage_requested
    assert result.applied == {"max_tokens": 256}
    assert body["stream_options"] == {"other": 1}  # the judged body is left as it was


@pytest.mark.parametrize(
    ("api", "body"),
    [
        ("chat.completions", {"stream": True, "stream_options": {"include_usage": True}}),
        ("chat.completions", {"stream": False}),
        ("chat.completions", {"stream": True, "stream_options": "odd"}),
        ("embeddings", {"stream": True}),
        ("responses", {"stream": True}),
    ],
)
def test_usage_is_asked_for_only_where_it_is_missing(api: str, body: dict[str, Any]) -> None:
    raw = json.dumps(body).encode()
    result = apply_obligations(api, body, raw, None, "max_tokens", stream_usage=True)
    assert (result.body, result.usage_requested) == (raw, False)


def test_completions_streams_report_usage_too() -> None:
    result = apply_obligations(
        "completions", {"stream": True}, b"", None, "max_tokens", stream_usage=True
    )
    assert json.loads(result.body) == {"stream": True, "stream_options": {"include_usage": True}}
