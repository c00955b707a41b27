"""Fetching the bundle a ratification points at: a local bundle directory, ``file:`` or ``https:``.

Nothing fetched is trusted: the caller recomputes the digest and activates the
bundle only if it equals the ratified one. Fetching is bounded too, since the
URI is whatever a proposal named: redirects are not followed (a ratified
``https:`` URI must not lead to another host or to plain http), the download
stops at the size limit, and the archive is unpacked with running caps in a
worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import unquote, urlsplit

import aiohttp

from gateway.exceptions import BundleError, BundleUnavailable
from gateway.pinning.bundle import (
    DEFAULT_LIMITS,
    Bundle,
    BundleLimits,
    load_bundle,
    load_bundle_bytes,
)

_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


class BundleSource:
    """Finds bundles by digest in ``bundle_dir`` first, else at the ratified URI."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        bundle_dir: Path | None,
        timeout_s: float = 30,
        limits: BundleLimits = DEFAULT_LIMITS,
    ):
        self._session = session
        self._bundle_dir = bundle_dir
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._limits = limits

    async def fetch(self, digest: str, uri: str) -> Bundle:
        """The bundle, read and checked for shape (not yet for its digest)."""
        local = await asyncio.to_thread(self._in_bundle_dir, digest)
        if local is not None:
            return await asyncio.to_thread(self._load, local)
        parts = urlsplit(uri)
        if parts.scheme == "file" and parts.netloc in ("", "localhost"):
            return await asyncio.to_thread(self._load, Path(unquote(parts.path)))
        if parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in _LOOPBACK):
            data = await self._download(uri)
            return await asyncio.to_thread(load_bundle_bytes, data, uri, self._limits)
        raise BundleUnavailable(
            f"cannot fetch bundle {uri!r}: use https, file, or put it in governance.bundle_dir"
        )

    def _load(self, path: Path) -> Bundle:
        if not path.exists():
            raise BundleUnavailable(f"bundle {path} does not exist")
        return load_bundle(path, self._limits)

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
        """The body at ``uri``, at most ``max_bytes`` of it (after any content decoding)."""
        cap = self._limits.max_bytes
        chunks: list[bytes] = []
        size = 0
        try:
            async with self._session.get(
                uri, timeout=self._timeout, allow_redirects=False
            ) as response:
                if 300 <= response.status < 400:
                    raise BundleUnavailable(
                        f"bundle {uri} answered HTTP {response.status} (a redirect); "
                        "redirects are not followed: ratify the bundle's final URL"
                    )
                if response.status != 200:
                    raise BundleUnavailable(f"bundle {uri} answered HTTP {response.status}")
                if (response.content_length or 0) > cap:
                    raise BundleError(f"bundle {uri} is larger than {cap} bytes")
                async for chunk in response.content.iter_chunked(64 * 1024):
                    size += len(chunk)
                    if size > cap:
                        raise BundleError(f"bundle {uri} is larger than {cap} bytes")
                    chunks.append(chunk)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BundleUnavailable(
                f"bundle {uri} is unreachable: {exc or type(exc).__name__}"
            ) from exc
        return b"".join(chunks)
