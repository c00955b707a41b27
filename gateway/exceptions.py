"""Agora's own exceptions; library errors (aiohttp, OPA, pyjwt, web3) are mapped here.

AgoraError
├── ConfigError            bad configuration; names the key
├── AuthError              the caller's token is invalid (401)
├── BundleError            a policy bundle cannot be read or built
│   └── DigestMismatch     a bundle's digest differs from the pinned/ratified one
├── PolicyUnavailable      no decision: OPA down, slow, or no active policy (503)
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


class UpstreamError(AgoraError):
    """The upstream model server could not be reached or broke the response."""


class UpstreamTimeout(UpstreamError):
    """The upstream model server did not answer within its timeout."""


class ChainError(AgoraError):
    """The governance chain (JSON-RPC or embedded) failed or returned something unexpected."""


class DecisionLogError(AgoraError):
    """The decision log cannot accept, write or read records: the request fails closed."""
