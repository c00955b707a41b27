"""Caller authentication: ``Authorization: Bearer <JWT>`` verified with pyjwt.

Keys come from one source: a JWKS URL (cached, refreshed on an unknown ``kid``
at a bounded rate), a PEM public key file, or a shared secret in an environment
variable. The algorithm allow-list never contains ``none``, and HMAC is only
allowed with a shared secret, so a public key can never be used as an HMAC key.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt

from gateway.config import Auth
from gateway.exceptions import AuthError, ConfigError

_KEY_TYPES_BY_ALGORITHM_PREFIX = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP", "HS": "oct"}


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


class JwksCache:
    """Signing keys from a JWKS URL, refreshed when stale or when a token names an unknown kid.

    Refreshes are rate-limited (``jwks_min_refresh_s``) so that tokens with random
    kids cannot turn the gateway into a load generator against the identity provider.
    """

    def __init__(
        self, url: str, session: aiohttp.ClientSession, ttl_s: float, min_refresh_s: float
    ):
        self._url = url
        self._session = session
        self._ttl_s = ttl_s
        self._min_refresh_s = min_refresh_s
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    async def key_for(self, kid: str | None) -> jwt.PyJWK:
        now = time.monotonic()
        if now - self._fetched_at > self._ttl_s:
            await self._refresh(force=True)
        key = self._lookup(kid)
        if key is None:
            await self._refresh(force=False)
            key = self._lookup(kid)
        if key is None:
            raise AuthError(f"token signed with unknown key id {kid!r}")
        return key

    def _lookup(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is None:
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    async def _refresh(self, force: bool) -> None:
        async with self._lock:
            since = time.monotonic() - self._fetched_at
            if since < self._min_refresh_s or (force and since <= self._ttl_s):
                return  # another task refreshed meanwhile, or refreshed too recently
            try:
                async with self._session.get(self._url) as response:
                    response.raise_for_status()
                    document = await response.json(content_type=None)
                keys = jwt.PyJWKSet.from_dict(document).keys
            except (aiohttp.ClientError, TimeoutError, ValueError, jwt.PyJWKSetError) as exc:
                self._fetched_at = time.monotonic()  # back off before trying again
                if self._keys:
                    return  # keep serving the keys we had
                raise AuthError("signing keys are unavailable (JWKS fetch failed)") from exc
            self._keys = {k.key_id or f"#{i}": k for i, k in enumerate(keys)}
            self._fetched_at = time.monotonic()


class Authenticator:
    """Turns an ``Authorization`` header into a Caller, or raises AuthError."""

    def __init__(self, config: Auth, session: aiohttp.ClientSession | None = None):
        self._config = config
        self._static_key: Any = None
        self._jwks: JwksCache | None = None
        if config.secret_env is not None:
            secret = os.environ.get(config.secret_env)
            if not secret:
                raise ConfigError(
                    f"auth.secret_env: environment variable {config.secret_env} is empty"
                )
            self._static_key = secret.encode()
        elif config.public_key_file is not None:
            pem = config.public_key_file.read_bytes()
            if b"PRIVATE KEY" in pem:
                raise ConfigError("auth.public_key_file: holds a private key; give the public key")
            self._static_key = pem
        elif config.jwks_url is not None:
            if session is None:
                raise ConfigError("auth.jwks_url: an HTTP session is required")
            self._jwks = JwksCache(
                str(config.jwks_url), session, config.jwks_cache_s, config.jwks_min_refresh_s
            )

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
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError as exc:
            raise AuthError("malformed token") from exc
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in self._config.algorithms:
            raise AuthError(f"token algorithm {algorithm!r} is not allowed")
        key = await self._key_for(header, algorithm)
        required = ["exp"] + [
            claim
            for claim, configured in (("iss", self._config.issuer), ("aud", self._config.audience))
            if configured
        ]
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._config.audience,
                issuer=self._config.issuer,
                leeway=self._config.leeway_s,
                options={"require": required, "verify_aud": self._config.audience is not None},
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
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"invalid token: {exc}") from exc
        sub = claims.get("sub")
        iss = claims.get("iss")
        return Caller(
            authenticated=True,
            sub=sub if isinstance(sub, str) else None,
            iss=iss if isinstance(iss, str) else None,
            claims=claims,
        )

    async def _key_for(self, header: dict[str, Any], algorithm: str) -> Any:
        if self._jwks is not None:
            jwk = await self._jwks.key_for(header.get("kid"))
            expected = _KEY_TYPES_BY_ALGORITHM_PREFIX.get(algorithm[:2])
            if jwk.key_type != expected:
                raise AuthError(f"key {header.get('kid')!r} cannot verify {algorithm}")
            return jwk.key
        if self._static_key is None:
            raise AuthError("no token verification key is configured")
        return self._static_key
