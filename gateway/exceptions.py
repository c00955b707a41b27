"""Agora's own exceptions; library errors (aiohttp, OPA, pyjwt, web3) are mapped here.

How each one answers a caller (status, OpenAI-style type and code) is one
table, in gateway/responses.py.

AgoraError
├── ConfigError            bad configuration; names the key
├── RequestRefused         a request refused before policy is asked
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
│   ├── DigestMismatch     a bundle's digest differs from the pinned/ratified one
│   └── BundleUnavailable  a bundle could not be fetched (not invalid)
├── PolicyUnavailable      no decision: OPA down, slow, or no active policy (503)
├── ObligationRefused      an obligation of the decision cannot be met (403)
├── RateLimited            policy refuses with status 429: a budget is spent (429)
├── UsageUnavailable       the usage counters (Redis) cannot be reached (503)
├── UpstreamError          the model upstream failed (502)
│   ├── UpstreamTimeout    the model upstream did not answer in time (504)
│   └── AnswerUnjudgeable  an answer to judge could not be read whole (502, fail closed)
├── ChainError             the governance chain cannot be read or written
│   ├── ChainConflict      nodes disagree, or one contradicts itself
│   └── InconsistentRegistry  a node's registry answers contradict each other
├── JwksError              the JWKS URL gave no usable key set (callers get an AuthError)
├── DataApiError           OPA's Data API failed (callers get a PolicyUnavailable)
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


class InvalidTarget(RequestRefused):
    """A request target that another server could read differently."""


class InvalidBody(RequestRefused):
    """A body that is malformed, ambiguous, or beyond a limit."""


class MissingModel(RequestRefused):
    """A request to a model API that names no model."""


class BodyTooLarge(RequestRefused):
    """A body over ``limits.max_body_bytes``."""


class BodyTimeout(RequestRefused):
    """The request body did not arrive in time."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"the request body did not arrive within {timeout_s:g} s")
        self.timeout_s = timeout_s


class UnsupportedBody(RequestRefused):
    """A body encoding the gateway cannot judge (a compressed body)."""


class ModelNotFound(RequestRefused):
    """No upstream route serves the model."""


class Overloaded(RequestRefused):
    """The gateway sheds the request before doing its work; the caller may retry."""


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


class RateLimited(AgoraError):
    """Policy refuses the request with status 429: a budget is spent until ``retry_after_s``."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class UsageUnavailable(AgoraError):
    """The usage counters cannot be read or written; with ``fail_closed`` nothing is forwarded."""


class UpstreamError(AgoraError):
    """The upstream model server could not be reached or broke the response."""


class UpstreamTimeout(UpstreamError):
    """The upstream model server did not answer within its timeout."""


class AnswerUnjudgeable(UpstreamError):
    """An answer that response policy must judge cannot be read whole (too large, not JSON)."""


class ChainError(AgoraError):
    """A governance chain node (JSON-RPC) failed or returned something unexpected."""


class DecisionLogError(AgoraError):
    """The decision log cannot accept, write or read records: the request fails closed."""


class JwksError(AgoraError):
    """The JWKS URL did not answer with a usable key set."""


class DataApiError(AgoraError):
    """OPA could not be reached, closed the connection, or sent a malformed answer."""


class BundleUnavailable(BundleError):
    """The bundle could not be fetched (unreachable, an HTTP error, a redirect): not invalid."""


class ChainConflict(ChainError):
    """The nodes' answers cannot be believed: they disagree, or one contradicts itself."""


class InconsistentRegistry(ChainError):
    """The node's answers contradict each other: it lies, or it is broken."""
