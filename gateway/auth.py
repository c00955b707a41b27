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

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt

from gateway.config import Auth
from gateway.exceptions import AuthError, ConfigError
from gateway.request.jsondepth import nested_deeper_than

logger = logging.getLogger(__name__)

MAX_TOKEN_CHARS = 16 * 1024
"""Longer tokens are refused before they are parsed (real ones are a few KiB at most)."""
MAX_KID_CHARS = 256
"""A ``kid`` is a lookup key, never a path or a query; longer ones are refused."""
MAX_JWKS_BYTES = 256 * 1024
"""A JWKS document larger than this is refused (real ones hold a few keys)."""
MAX_JWKS_KEYS = 100
MAX_JSON_DEPTH = 32
"""Deepest nesting of a token's header or claims, or of a JWKS document."""
"""A JWKS document with more keys than this is refused."""

MAX_CACHED_TOKENS = 10_000
"""Verified tokens remembered at most; the oldest is forgotten first."""

KEY_HEADERS = frozenset({"jku", "x5u", "jwk", "x5c"})
"""Header parameters by which a token names or carries its own key: such tokens are refused.

Ignoring them would be as safe today, but a token that asks to be verified with a
key of its choosing is an attack or a misconfigured issuer, and refusing it keeps
any later code from ever trusting them."""

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


@dataclass(frozen=True)
class SigningKey:
    """One verification key of a JWKS document."""

    kid: str | None
    algorithm: str | None
    """The ``alg`` the JWK declares, if any: then it verifies only tokens of that algorithm."""
    key_type: str
    key: Any

    def verifies(self, algorithm: str) -> bool:
        expected = _KEY_TYPES_BY_ALGORITHM_PREFIX.get(algorithm[:2])
        return self.key_type == expected and self.algorithm in (None, algorithm)


class JwksError(Exception):
    """The JWKS URL did not answer with a usable key set."""


def parse_jwks(body: bytes) -> tuple[SigningKey, ...]:
    """The signature keys of a JWKS document; encryption keys and unusable entries are skipped.

    Symmetric (``oct``) entries are skipped too: a key published in a JWKS is public,
    and a public HMAC key would let anyone sign.
    """
    if len(body) > MAX_JWKS_BYTES:
        raise JwksError(f"document larger than {MAX_JWKS_BYTES} bytes")
    try:
        text = body.decode("utf-8")
        if nested_deeper_than(text, MAX_JSON_DEPTH):
            raise JwksError(f"document nested deeper than {MAX_JSON_DEPTH} levels")
        document = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise JwksError("not JSON") from exc
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise JwksError("not a JWKS document (no 'keys' list)")
    if len(entries) > MAX_JWKS_KEYS:
        raise JwksError(f"more than {MAX_JWKS_KEYS} keys")
    keys = []
    for entry in entries:
        if not _verifies_signatures(entry):
            continue
        try:
            jwk = jwt.PyJWK(entry)
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            logger.warning("JWKS entry %r skipped: %s", str(entry.get("kid"))[:MAX_KID_CHARS], exc)
            continue
        if jwk.key_type == "oct":
            continue
        kid, algorithm = entry.get("kid"), entry.get("alg")
        keys.append(
            SigningKey(
                kid=kid if isinstance(kid, str) else None,
                algorithm=algorithm if isinstance(algorithm, str) else None,
                key_type=str(jwk.key_type),
                key=jwk.key,
            )
        )
    return tuple(keys)


def _verifies_signatures(entry: object) -> bool:
    """Whether a JWKS entry is meant for signatures (``use``/``key_ops`` say so, or are absent)."""
    if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
        return False
    operations = entry.get("key_ops")
    return operations is None or (isinstance(operations, list) and "verify" in operations)


class JwksCache:
    """Signing keys from a JWKS URL, refreshed when stale or when a token names an unknown kid.

    Fetches are rate-limited (``jwks_min_refresh_s``) so that tokens with random
    kids cannot turn the gateway into a load generator against the identity
    provider; requests that arrive during a fetch wait for that one instead of
    queueing fetches of their own, so none waits longer than one ``jwks_timeout_s``.
    A failed fetch keeps the last good keys.
    """

    def __init__(self, url: str, session: aiohttp.ClientSession, config: Auth):
        self._url = url
        self._session = session
        self._ttl_s = config.jwks_cache_s
        self._min_refresh_s = config.jwks_min_refresh_s
        self._timeout = aiohttp.ClientTimeout(total=config.jwks_timeout_s)
        self._keys: tuple[SigningKey, ...] = ()
        self._fetched_at = float("-inf")
        """When the keys were last fetched successfully."""
        self._attempted_at = float("-inf")
        """When the last fetch, successful or not, ended."""
        self._fetch: asyncio.Task[None] | None = None

    async def key_for(self, kid: str | None, algorithm: str) -> Any:
        """The key that verifies a token with this ``kid`` and ``alg``; at most one fetch."""
        stale = time.monotonic() - self._fetched_at > self._ttl_s
        if stale:
            await self._refresh()
        key = self._lookup(kid, algorithm)
        if key is None and kid is not None and not stale:
            await self._refresh()  # the identity provider may have rotated its keys
            key = self._lookup(kid, algorithm)
        if key is not None:
            return key
        if not self._keys:
            raise AuthError("signing keys are unavailable")
        if kid is None:
            raise AuthError(f"token has no key id, and no single key verifies {algorithm}")
        raise AuthError(f"token signed with unknown key id {kid!r} for {algorithm}")

    def _lookup(self, kid: str | None, algorithm: str) -> Any:
        usable = [k for k in self._keys if k.verifies(algorithm)]
        if kid is None:
            return usable[0].key if len(usable) == 1 else None
        return next((k.key for k in usable if k.kid == kid), None)

    async def _refresh(self) -> None:
        """Fetch the keys, or wait for the fetch already running; at most once per min_refresh.

        The fetch runs in a task of its own, shielded from the requests that wait
        for it: a caller that disconnects cannot cut a fetch others depend on.
        """
        if self._fetch is None:
            if time.monotonic() - self._attempted_at < self._min_refresh_s:
                return
            self._fetch = asyncio.create_task(self._update())
        await asyncio.shield(self._fetch)

    async def _update(self) -> None:
        try:
            keys = await self._download()
        except JwksError as exc:
            logger.warning("JWKS %s: %s; keeping %d known key(s)", self._url, exc, len(self._keys))
        else:
            self._keys = keys
            self._fetched_at = time.monotonic()
        finally:
            self._attempted_at = time.monotonic()
            self._fetch = None

    async def _download(self) -> tuple[SigningKey, ...]:
        try:
            async with self._session.get(
                self._url, allow_redirects=False, timeout=self._timeout
            ) as response:
                if response.status != 200:
                    raise JwksError(f"answered HTTP {response.status}")
                body = bytearray()
                async for chunk in response.content.iter_any():
                    body += chunk
                    if len(body) > MAX_JWKS_BYTES:
                        raise JwksError(f"document larger than {MAX_JWKS_BYTES} bytes")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise JwksError(f"fetch failed: {exc!r}") from exc
        return parse_jwks(bytes(body))


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
