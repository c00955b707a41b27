"""Fetching the bundle a ratification points at: a local bundle directory, ``file:`` or ``https:``.

Nothing fetched is trusted: the caller recomputes the digest and activates the
bundle only if it equals the ratified one.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import unquote, urlsplit

import aiohttp

from gateway.bundle import MAX_BUNDLE_BYTES, Bundle, load_bundle, load_bundle_bytes
from gateway.exceptions import BundleError

_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


class BundleSource:
    """Finds bundles by digest in ``bundle_dir`` first, else at the ratified URI."""

    def __init__(
        self, session: aiohttp.ClientSession, bundle_dir: Path | None, timeout_s: float = 30
    ):
        self._session = session
        self._bundle_dir = bundle_dir
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def fetch(self, digest: str, uri: str) -> Bundle:
        local = self._in_bundle_dir(digest)
        if local is not None:
            return await asyncio.to_thread(load_bundle, local)
        parts = urlsplit(uri)
        if parts.scheme == "file":
            return await asyncio.to_thread(load_bundle, Path(unquote(parts.path)))
        if parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in _LOOPBACK):
            return load_bundle_bytes(await self._download(uri), uri)
        raise BundleError(
            f"cannot fetch bundle {uri!r}: use https, file, or put it in governance.bundle_dir"
        )

    def _in_bundle_dir(self, digest: str) -> Path | None:
        """``<bundle_dir>/<hex>.tar.gz`` or ``<bundle_dir>/<hex>/``, where hex is the digest's."""
        if self._bundle_dir is None:
            return None
        hex_digest = digest.removeprefix("sha256:")
        for candidate in (self._bundle_dir / f"{hex_digest}.tar.gz", self._bundle_dir / hex_digest):
            if candidate.exists():
                return candidate
        return None

    async def _download(self, uri: str) -> bytes:
        try:
            async with self._session.get(uri, timeout=self._timeout) as response:
                if response.status != 200:
                    raise BundleError(f"bundle {uri} answered HTTP {response.status}")
                data = await response.content.read(MAX_BUNDLE_BYTES + 1)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BundleError(f"bundle {uri} is unreachable: {exc or type(exc).__name__}") from exc
        if len(data) > MAX_BUNDLE_BYTES:
            raise BundleError(f"bundle {uri} is larger than {MAX_BUNDLE_BYTES} bytes")
        return data
