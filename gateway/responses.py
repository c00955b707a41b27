"""OpenAI-style error responses, so that SDKs surface the gateway's errors as API errors.

``ANSWERS`` is the one table from Agora's errors to what a caller receives:
HTTP status, OpenAI error ``type`` and ``code``. An error's most specific
class in the table wins (``UpstreamTimeout`` before ``UpstreamError``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from starlette.responses import JSONResponse

from gateway.exceptions import (
    AgoraError,
    AnswerUnjudgeable,
    AuthError,
    BodyTimeout,
    BodyTooLarge,
    DecisionLogError,
    InvalidBody,
    InvalidTarget,
    MissingModel,
    ModelNotFound,
    ObligationRefused,
    Overloaded,
    PolicyUnavailable,
    RateLimited,
    RequestRefused,
    UnsupportedBody,
    UpstreamError,
    UpstreamTimeout,
    UsageUnavailable,
)

DECISION_ID = "X-Agora-Decision-Id"
POLICY_VERSION = "X-Agora-Policy-Version"
POLICY_DIGEST = "X-Agora-Policy-Digest"


def decision_headers(decision_id: str, version: int | None, digest: str | None) -> dict[str, str]:
    """The headers every response of the gateway carries: which decision, under which policy."""
    return {
        DECISION_ID: decision_id,
        POLICY_VERSION: "none" if version is None else str(version),
        POLICY_DIGEST: digest or "none",
    }


class Answer(NamedTuple):
    status: int
    error_type: str
    code: str


ANSWERS: dict[type[AgoraError], Answer] = {
    RequestRefused: Answer(400, "invalid_request_error", "invalid_request"),
    InvalidTarget: Answer(400, "invalid_request_error", "invalid_target"),
    InvalidBody: Answer(400, "invalid_request_error", "invalid_json"),
    MissingModel: Answer(400, "invalid_request_error", "missing_model"),
    BodyTooLarge: Answer(413, "invalid_request_error", "request_too_large"),
    BodyTimeout: Answer(408, "invalid_request_error", "request_timeout"),
    UnsupportedBody: Answer(415, "invalid_request_error", "unsupported_media_type"),
    ModelNotFound: Answer(404, "invalid_request_error", "model_not_found"),
    Overloaded: Answer(503, "overloaded", "overloaded"),
    AuthError: Answer(401, "authentication_error", "invalid_token"),
    PolicyUnavailable: Answer(503, "policy_unavailable", "policy_unavailable"),
    ObligationRefused: Answer(403, "policy_denied", "policy_denied"),
    RateLimited: Answer(429, "rate_limit_exceeded", "rate_limit_exceeded"),
    UsageUnavailable: Answer(503, "usage_unavailable", "usage_unavailable"),
    DecisionLogError: Answer(503, "decision_log_unavailable", "decision_log_unavailable"),
    UpstreamError: Answer(502, "upstream_error", "upstream_unavailable"),
    UpstreamTimeout: Answer(504, "upstream_error", "upstream_timeout"),
    AnswerUnjudgeable: Answer(502, "upstream_error", "answer_unjudgeable"),
}
_INTERNAL = Answer(500, "internal_error", "internal_error")


def answer_for(error: AgoraError) -> Answer:
    """What ``error`` answers a caller: its most specific class in ``ANSWERS``."""
    for cls in type(error).__mro__:
        if cls in ANSWERS:
            return ANSWERS[cls]
    return _INTERNAL


def error_for(
    error: AgoraError, headers: dict[str, str], message: str | None = None, **extra: Any
) -> JSONResponse:
    """The OpenAI-style response to ``error``; ``message`` replaces its text for the caller."""
    status, error_type, code = answer_for(error)
    return error_response(status, message or str(error), error_type, code, headers, **extra)


def error_response(
    status: int,
    message: str,
    error_type: str,
    code: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """``{"error": {"message", "type", "code", ...}}`` with the given HTTP status."""
    body: dict[str, Any] = {"message": message, "type": error_type, "code": code, "param": None}
    body.update(extra)
    return JSONResponse({"error": body}, status_code=status, headers=headers)
