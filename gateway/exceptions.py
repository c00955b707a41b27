"""Agora's own exceptions; library errors (aiohttp, OPA, pyjwt, web3) are mapped here.

AgoraError
├── ConfigError            bad configuration; names the key
├── RequestRefused         a request refused before policy; carries its HTTP answer
│   ├── InvalidTarget      a request target another server could read differently (400)
│   ├── InvalidBody        a body that is malformed, ambiguous or beyond a limit (400)
│   ├── MissingModel       a model API request without a model (400)
│   ├── BodyTooLarge       the body exceeds limits.max_body_bytes (413)
│   ├── BodyTimeout        the body did not arrive within limits.body_timeout_s (408)
│   ├── UnsupportedBody    a body encoding the gateway cannot judge (415)
│   ├── ModelNotFound      no upstream serves the model (404)
│   └── Overloaded         shed before policy was asked: no capacity now (503)
├── AuthError              the caller's token is invalid (401)
├── BundleError            a policy bundle cannot be read or built
│   └── DigestMismatch     a bundle's digest differs from the pinned/ratified one
├── PolicyUnavailable      no decision: OPA down, slow, or no active policy (503)
├── ObligationRefused      an obligation of the decision cannot be met (403)
├── UpstreamError          the model upstream failed (502)
│   └── UpstreamTimeout    the model upstream did not answer in time (504)
├── ChainError             the governance chain cannot be read or written
└── DecisionLogError       the decision log cannot take, write or read records (see
                           gateway/decisionlog/errors.py for its subclasses)
"""

from __future__ import annotations


class AgoraError(Exception):
    """Base of every error Agora raises on purpose."""


class ConfigError(AgoraError):
    """The configuration is invalid; the message names the key."""


class RequestRefused(AgoraError):
    """A request refused before policy; the message is safe to return to the caller."""

    status = 400
    error_type = "invalid_request_error"
    code = "invalid_request"


class InvalidTarget(RequestRefused):
    code = "invalid_target"


class InvalidBody(RequestRefused):
    code = "invalid_json"


class MissingModel(RequestRefused):
    code = "missing_model"


class BodyTooLarge(RequestRefused):
    status = 413
    code = "request_too_large"


class BodyTimeout(RequestRefused):
    """The request body did not arrive in time."""

    status = 408
    code = "request_timeout"

    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"the request body did not arrive within {timeout_s:g} s")
        self.timeout_s = timeout_s


class UnsupportedBody(RequestRefused):
    status = 415
    code = "unsupported_media_type"


class ModelNotFound(RequestRefused):
    status = 404
    code = "model_not_found"


class Overloaded(RequestRefused):
    """The gateway sheds the request before doing its work; the caller may retry."""

    status = 503
    error_type = "overloaded"
    code = "overloaded"


class AuthError(AgoraError):
    """The bearer token was rejected; the message is safe to return to the caller."""


class BundleError(AgoraError):
    """A policy bundle cannot be read, parsed or packaged."""


class DigestMismatch(BundleError):
    """A bundle's digest is not the one that was pinned or ratified."""

    def __init__(self, expected: str, actual: str, source: str) -> None:
        super().__init__(f"bundle {source} has digest {actual}, expected {expected}")
        self.expected = expected
        self.actual = actual
        self.source = source


class PolicyUnavailable(AgoraError):
    """No trustworthy decision can be had; the gateway fails closed."""


class ObligationRefused(AgoraError):
    """The decision allows the request only under an obligation it cannot meet (a deny)."""


class UpstreamError(AgoraError):
    """The upstream model server could not be reached or broke the response."""


class UpstreamTimeout(UpstreamError):
    """The upstream model server did not answer within its timeout."""


class ChainError(AgoraError):
    """The governance chain (JSON-RPC or embedded) failed or returned something unexpected."""


class DecisionLogError(AgoraError):
    """The decision log cannot accept, write or read records: the request fails closed."""
