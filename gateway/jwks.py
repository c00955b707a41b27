"""Signing keys from the identity provider's JWKS URL: fetched safely, cached, refreshed rarely.

A key set is fetched over https (loopback excepted) without redirects, within
a timeout, and bounded in size, key count and nesting; encryption keys,
symmetric keys and keys for another algorithm are never used to verify.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt

from gateway.config import Auth
from gateway.exceptions import AuthError, JwksError
from gateway.request.jsondepth import nested_deeper_than

logger = logging.getLogger(__name__)

MAX_KID_CHARS = 256
"""A ``kid`` is a lookup key, never a path or a query; longer ones are refused."""
MAX_JSON_DEPTH = 32
"""Deepest nesting of a token's header or claims, or of a JWKS document."""
MAX_JWKS_BYTES = 256 * 1024
"""A JWKS document larger than this is refused (real ones hold a few keys)."""
MAX_JWKS_KEYS = 100
"""A JWKS document with more keys than this is refused."""

_KEY_TYPES_BY_ALGORITHM_PREFIX = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP", "HS": "oct"}


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
