"""The dry-run form: questions become the input the request path would build; bounded in rate."""

from __future__ import annotations

import pytest

from gateway.community.dryrun import (
    InvalidQuestion,
    RateLimit,
    policy_input,
    question_from_form,
    question_from_json,
)
from gateway.config import Settings, load_settings
from gateway.exceptions import ConfigError
from gateway.pinning.store import PolicyVersion

WIDE_HELLO = "\uff28\uff45\uff4c\uff4c\uff4f  there"  # fullwidth "Hello"
VERSION = PolicyVersion(2, "sha256:" + "d" * 64, "test", b"")


def test_a_form_question_becomes_a_chat_request_input() -> None:
    question = question_from_form(
        {"model": "demo-large", "message": WIDE_HELLO, "claims": '{"groups": ["m"]}'}
    )
    document = policy_input(question, VERSION, "https://issuer", "demo")
    assert document["api"] == "chat.completions" and document["model"] == "demo-large"
    assert document["body"]["messages"] == [{"role": "user", "content": WIDE_HELLO}]
    assert "Hello there" in document["texts"]  # normalised as the request path does
    assert document["caller"] == {
        "authenticated": True, "sub": "dry-run", "iss": "https://issuer",
        "claims": {"groups": ["m"]},
    }  # fmt: skip
    assert document["policy"] == {"version": 2, "digest": VERSION.digest}
    assert document["upstream"] == "demo"


def test_without_claims_the_caller_is_anonymous() -> None:
    question = question_from_json({"model": "m", "messages": [{"role": "user", "content": "x"}]})
    assert policy_input(question, VERSION, None, None)["caller"]["authenticated"] is False


@pytest.mark.parametrize(
    "form",
    [{"model": ""}, {"model": "m", "claims": "not json"}, {"model": "m", "claims": "[1]"}],
)
def test_bad_questions_say_why(form: dict[str, str]) -> None:
    with pytest.raises(InvalidQuestion):
        question_from_form(form)


def test_the_rate_is_a_token_bucket() -> None:
    now = [0.0]
    limit = RateLimit(2, clock=lambda: now[0])
    assert [limit.take() for _ in range(3)] == [True, True, False]
    now[0] += 30  # one question's worth
    assert [limit.take(), limit.take()] == [True, False]


def test_a_governor_needs_a_chain() -> None:
    with pytest.raises(ConfigError, match=r"community\.governor"):
        load_settings(None, {"AGORA__COMMUNITY__GOVERNOR": "0x" + "1" * 40,
                             "AGORA__AUTH__REQUIRED": "false"})  # fmt: skip
    assert Settings.model_validate({"auth": {"required": False}}).community.enabled
