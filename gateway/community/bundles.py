"""Bundles by digest for the page and the shadow: fetched as the watcher fetches them, verified.

A bundle is kept only if its files hash to the digest it was asked for (a
version ratified on chain, a proposal's, or the version in force), so the page
never shows, diffs or shadows anything but what the chain names.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from gateway.exceptions import AgoraError
from gateway.pinning.bundle import Bundle, load_bundle
from gateway.pinning.source import BundleSource

MAX_KEPT = 32
"""Bundles kept in memory; the oldest is forgotten (and fetched again if asked for)."""


class BundleCatalog:
    """Verified bundle files by digest, and why a digest could not be had."""

    def __init__(self, source: BundleSource | None):
        self._source = source
        self._files: dict[str, Mapping[str, bytes]] = {}
        self.errors: dict[str, str] = {}

    def get(self, digest: str) -> Mapping[str, bytes] | None:
        """The files of ``digest`` if they were fetched and verified."""
        return self._files.get(digest)

    async def fetch(self, digest: str, uri: str) -> Mapping[str, bytes] | None:
        """The files of the bundle ``digest`` at ``uri`` (or in ``bundle_dir``); None on failure."""
        if digest in self._files:
            return self._files[digest]
        if self._source is None:
            self.errors[digest] = "no chain is configured to fetch bundles from"
            return None
        try:
            bundle = await self._source.fetch(digest, uri)
        except (AgoraError, OSError) as exc:
            self.errors[digest] = str(exc)
            return None
        return self._keep(digest, bundle)

    def add_local(self, digest: str, path: Path) -> Mapping[str, bytes] | None:
        """The bundle at ``path`` (the pinned bundle), if it is ``digest``. Blocks: use a thread."""
        if digest in self._files:
            return self._files[digest]
        try:
            bundle = load_bundle(path)
        except (AgoraError, OSError) as exc:
            self.errors[digest] = str(exc)
            return None
        return self._keep(digest, bundle)

    def _keep(self, digest: str, bundle: Bundle) -> Mapping[str, bytes] | None:
        if bundle.digest != digest:
            self.errors[digest] = f"{bundle.source} has digest {bundle.digest}, not {digest}"
            return None
        self.errors.pop(digest, None)
        while len(self._files) >= MAX_KEPT:
            del self._files[next(iter(self._files))]
        self._files[digest] = bundle.files
        return bundle.files
