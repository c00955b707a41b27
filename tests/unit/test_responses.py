"""One table maps Agora's errors to what a caller receives."""

from __future__ import annotations

import json

import pytest

from gateway.decisionlog.errors import DecisionLogFull
from gateway.exceptions import (
    AgoraError,
    AuthError,
    BodyTimeout,
    ChainError,
    InvalidBody,
    ObligationRefused,
    Overloaded,
    PolicyUnavailable,
    UpstreamError,
    UpstreamTimeout,
)
from gateway.responses import answer_for, error_for


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (InvalidBody("x"), 400, "invalid_json"),
        (BodyTimeout(1.0), 408, "request_timeout"),
        (Overloaded("x"), 503, "overloaded"),
        (AuthError("x"), 401, "invalid_token"),
        (PolicyUnavailable("x"), 503, "policy_unavailable"),
        (ObligationRefused("x"), 403, "policy_denied"),
        (DecisionLogFull("x"), 503, "decision_log_unavailable"),
        (UpstreamError("x"), 502, "upstream_unavailable"),
        (UpstreamTimeout("x"), 504, "upstream_timeout"),
        (ChainError("x"), 500, "internal_error"),
        (AgoraError("x"), 500, "internal_error"),
    ],
)
def test_the_most_specific_class_answers(error: AgoraError, status: int, code: str) -> None:
    answer = answer_for(error)
    assert (answer.status, answer.code) == (status, code)


def test_an_error_response_is_openai_shaped_with_the_callers_message() -> None:
    response = error_for(PolicyUnavailable("OPA at 127.0.0.1:8181 timed out"), {}, "unavailable")
    assert response.status_code == 503
    assert json.loads(bytes(response.body)) == {
        "error": {
            "message": "unavailable", "type": "policy_unavailable",
            "code": "policy_unavailable", "param": None,
        }
    }  # fmt: skip
