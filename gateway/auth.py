"""Caller authentication: ``Authorization: Bearer <JWT>`` verified with pyjwt.

Keys come from one source only: a JWKS URL (cached, refreshed on an unknown
``kid`` at a bounded rate), a PEM public key file, or a shared secret in an
environment variable. A token never chooses its own key: headers that name or
carry a key (``jku``, ``x5u``, ``jwk``, ``x5c``) make it invalid, and ``kid`` is
only looked up among the configured keys. The algorithm allow-list never
contains ``none``, and HMAC is only allowed with a shared secret, so a public
key can never be used as an HMAC key. Anything wrong with a token, or with the
identity provider, is an AuthError (401), never a crash or an unbounded wait.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt

from gateway.config import Auth
from gateway.exceptions import AuthError, ConfigError
from gateway.jwks import MAX_JSON_DEPTH, MAX_KID_CHARS, JwksCache
from gateway.request.jsondepth import nested_deeper_than

MAX_TOKEN_CHARS = 16 * 1024
"""Longer tokens are refused before they are parsed (real ones are a few KiB at most)."""

MAX_CACHED_TOKENS = 10_000
"""Verified tokens remembered at most; the oldest is forgotten first."""

KEY_HEADERS = frozenset({"jku", "x5u", "jwk", "x5c"})
"""Header parameters by which a token names or carries its own key: such tokens are refused.

Ignoring them would be as safe today, but a token that asks to be verified with a
key of its choosing is an attack or a misconfigured issuer, and refusing it keeps
any later code from ever trusting them."""


@dataclass(frozen=True)
class Caller:
    """Who is calling, as policy sees it (``input.caller``)."""

    authenticated: bool
    sub: str | None = None
    iss: str | None = None
    claims: dict[str, Any] = field(default_factory=dict)

    def as_input(self) -> dict[str, Any]:
        return {
            "authenticated": self.authenticated,
            "sub": self.sub,
            "iss": self.iss,
            "claims": self.claims,
        }


ANONYMOUS = Caller(authenticated=False)


class VerifiedTokens:
    """Callers of tokens verified recently, keyed by the token's SHA-256, until they expire.

    An RS256 verification costs about 0.25 ms of CPU, and a client sends the same
    token with every request until it expires. A token is remembered only once
    it has passed every check, for at most ``ttl_s`` and never past its ``exp``
    (without the leeway: a token near its end is verified again, leeway
    included). The TTL bounds how long a key that left the JWKS still vouches
    for the tokens it signed. Only hashes are kept, never tokens.
    """

    def __init__(self, ttl_s: float, capacity: int = MAX_CACHED_TOKENS):
        self._ttl_s = ttl_s
        self._capacity = capacity
        self._entries: dict[bytes, tuple[float, Caller]] = {}

    @staticmethod
    def key(token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    def get(self, key: bytes) -> Caller | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if time.time() >= entry[0]:
            del self._entries[key]
            return None
        return entry[1]

    def put(self, key: bytes, caller: Caller) -> None:
        exp = caller.claims.get("exp")
        if self._ttl_s <= 0 or not isinstance(exp, int | float) or isinstance(exp, bool):
            return
        until = min(float(exp), time.time() + self._ttl_s)
        if len(self._entries) >= self._capacity:
            del self._entries[next(iter(self._entries))]
        self._entries[key] = (until, caller)


class Authenticator:
    """Turns an ``Authorization`` header into a Caller, or raises AuthError."""

    def __init__(self, config: Auth, session: aiohttp.ClientSession | None = None):
        self._config = config
        ttl_s = config.verified_cache_s
        if config.jwks_url is not None:  # never trusted longer than the keys that verified it
            ttl_s = min(ttl_s, config.jwks_cache_s)
        self._verified = VerifiedTokens(ttl_s)
        self._static_keys: dict[str, Any] = {}
        self._jwks: JwksCache | None = None
        if config.secret_env is not None:
            secret = os.environ.get(config.secret_env)
            if not secret:
                raise ConfigError(
                    f"auth.secret_env: environment variable {config.secret_env} is empty"
                )
            self._static_keys = dict.fromkeys(config.algorithms, secret.encode())
        elif config.public_key_file is not None:
            self._static_keys = _public_keys(config.public_key_file.read_bytes(), config)
        elif config.jwks_url is not None:
            if session is None:
                raise ConfigError("auth.jwks_url: an HTTP session is required")
            self._jwks = JwksCache(str(config.jwks_url), session, config)

    async def authenticate(self, authorization: str | None) -> Caller:
        if not authorization:
            if self._config.required:
                raise AuthError("missing bearer token")
            return ANONYMOUS
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthError("the Authorization header must be 'Bearer <token>'")
        return await self.verify(token)

    async def verify(self, token: str) -> Caller:
        if len(token) > MAX_TOKEN_CHARS:
            raise AuthError(f"token is longer than {MAX_TOKEN_CHARS} characters")
        digest = VerifiedTokens.key(token)
        caller = self._verified.get(digest)
        if caller is None:
            caller = await self._verify(token)
            self._verified.put(digest, caller)
        return caller

    async def _verify(self, token: str) -> Caller:
        if _nested_too_deep(token):
            raise AuthError(f"malformed token: JSON nested deeper than {MAX_JSON_DEPTH} levels")
        try:
            header = jwt.get_unverified_header(token)
        except (jwt.PyJWTError, RecursionError) as exc:
            raise AuthError(f"malformed token: {exc}") from exc
        algorithm = _checked_header(header, self._config.algorithms)
        key = await self._key_for(header.get("kid"), algorithm)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._config.audience,
                issuer=self._config.issuer,
                leeway=self._config.leeway_s,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("token has expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise AuthError("token is not valid yet") from exc
        except jwt.InvalidAudienceError as exc:
            raise AuthError("token audience is not accepted") from exc
        except jwt.InvalidIssuerError as exc:
            raise AuthError("token issuer is not accepted") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"token lacks the required claim {exc.claim!r}") from exc
        except jwt.InvalidSignatureError as exc:
            raise AuthError("token signature is invalid") from exc
        except (jwt.PyJWTError, RecursionError) as exc:
            raise AuthError(f"invalid token: {exc}") from exc
        sub = claims.get("sub")
        iss = claims.get("iss")
        return Caller(
            authenticated=True,
            sub=sub if isinstance(sub, str) else None,
            iss=iss if isinstance(iss, str) else None,
            claims=claims,
        )

    async def _key_for(self, kid: str | None, algorithm: str) -> Any:
        if self._jwks is not None:
            return await self._jwks.key_for(kid, algorithm)
        if not self._static_keys:
            raise AuthError("no token verification key is configured")
        key = self._static_keys.get(algorithm)
        if key is None:
            raise AuthError(f"the configured key cannot verify {algorithm}")
        return key


def _nested_too_deep(token: str) -> bool:
    """Whether the token's header or claims nest too deep to hand to a JSON parser."""
    for segment in token.split(".")[:2]:
        try:
            decoded = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        except (ValueError, binascii.Error):
            return False  # not base64: pyjwt reports the malformed token
        if nested_deeper_than(decoded.decode("utf-8", "replace"), MAX_JSON_DEPTH):
            return True
    return False


def _checked_header(header: dict[str, Any], algorithms: list[str]) -> str:
    """The token's algorithm, once the header is one this gateway fully understands."""
    algorithm = header.get("alg")
    if not isinstance(algorithm, str) or algorithm not in algorithms:
        shown = algorithm[:32] if isinstance(algorithm, str) else algorithm
        raise AuthError(f"token algorithm {shown!r} is not allowed")
    named = sorted(KEY_HEADERS & header.keys())
    if named:
        raise AuthError(
            f"token header names its own key ({', '.join(named)}); "
            "keys come only from the configured key source"
        )
    if "crit" in header:
        raise AuthError("token header has critical extensions (crit), which are not supported")
    kid = header.get("kid")
    if kid is not None and (not isinstance(kid, str) or len(kid) > MAX_KID_CHARS):
        raise AuthError(f"token key id must be a string of at most {MAX_KID_CHARS} characters")
    return algorithm


def _public_keys(pem: bytes, config: Auth) -> dict[str, Any]:
    """The PEM key, prepared once for each configured algorithm it can verify."""
    if b"PRIVATE KEY" in pem:
        raise ConfigError("auth.public_key_file: holds a private key; give the public key")
    keys = {}
    for name in config.algorithms:
        try:
            keys[name] = jwt.get_algorithm_by_name(name).prepare_key(pem)
        except (jwt.PyJWTError, ValueError, TypeError):
            continue
    if not keys:
        raise ConfigError(
            f"auth.public_key_file: {config.public_key_file} is not a public key "
            f"for any of auth.algorithms {config.algorithms}"
        )
    return keys
