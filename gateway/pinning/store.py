"""Verified policy versions: the one in force, and the revisions OPA reports for them.

Only a bundle whose digest was checked (against ``policy.pinned_digest`` or the
digest ratified on chain) ever enters the store. OPA receives the active
version through the bundle service (service.py) and activates it in one
transaction; every query names the revision that judged it, which maps back
here to the version and digest that were verified. Only the active version's
answers count, and the superseded one's for a short overlap while OPA switches.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace

from gateway.exceptions import BundleError, DigestMismatch
from gateway.pinning.bundle import MANIFEST, Bundle, build_archive


@dataclass(frozen=True)
class PolicyVersion:
    """One verified policy version as it is enforced and reported."""

    version: int
    digest: str
    source: str
    archive: bytes
    ratified_block: int | None = None
    activated_at: float = 0.0

    @property
    def revision(self) -> str:
        """The bundle revision OPA reports for this version (set in the served ``.manifest``)."""
        return f"v{self.version}+{self.digest}"


def verify_bundle(bundle: Bundle, expected_digest: str | None) -> str:
    """The bundle's digest; raise DigestMismatch when an expected digest is given and differs."""
    digest = bundle.digest
    if expected_digest is not None and digest != expected_digest:
        raise DigestMismatch(expected_digest, digest, bundle.source)
    return digest


def prepare_version(
    bundle: Bundle, version: int, expected_digest: str | None, ratified_block: int | None = None
) -> PolicyVersion:
    """Verify ``bundle`` and build the archive OPA will download: the slow part of an activation.

    Pure (no shared state), so it can run in a worker thread, off the event loop.
    """
    digest = verify_bundle(bundle, expected_digest)
    if MANIFEST not in bundle.files:
        raise BundleError(f"{bundle.source}: a policy bundle needs a .manifest with its roots")
    provisional = PolicyVersion(version, digest, bundle.source, b"")
    return PolicyVersion(
        version=version,
        digest=digest,
        source=bundle.source,
        archive=build_archive(bundle.files, revision=provisional.revision),
        ratified_block=ratified_block,
    )


class PolicyStore:
    """The verified versions, the one in force, the one it superseded, and waiters for a change."""

    def __init__(self) -> None:
        self._by_revision: dict[str, PolicyVersion] = {}
        self._active: PolicyVersion | None = None
        self._superseded: PolicyVersion | None = None
        self._switched_at = time.monotonic()
        self._changed = asyncio.Event()
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def active(self) -> PolicyVersion | None:
        return self._active

    @property
    def seconds_since_switch(self) -> float:
        """Time since the active version replaced the one before it."""
        return time.monotonic() - self._switched_at

    def lookup(self, revision: str | None) -> PolicyVersion | None:
        """The verified version that OPA reports by revision, if it is one of ours."""
        return self._by_revision.get(revision) if revision else None

    def judge(self, revision: str | None, overlap_s: float) -> PolicyVersion | None:
        """The version whose answers count now: the active one, or the one it superseded
        during the first ``overlap_s`` seconds after the switch (OPA activates a new
        bundle a moment after the gateway does). Any other revision: None.
        """
        active = self._active
        if active is None or revision is None:
            return None
        if revision == active.revision:
            return active
        superseded = self._superseded
        if (
            superseded is not None
            and revision == superseded.revision
            and self.seconds_since_switch <= overlap_s
        ):
            return superseded
        return None

    def activate(
        self,
        bundle: Bundle,
        version: int,
        expected_digest: str | None,
        ratified_block: int | None = None,
    ) -> PolicyVersion:
        """Verify ``bundle`` and make it the version served to OPA (see :meth:`install`)."""
        return self.install(prepare_version(bundle, version, expected_digest, ratified_block))

    def install(self, prepared: PolicyVersion) -> PolicyVersion:
        """Make a prepared version the one served to OPA; the version in force afterwards.

        A version older than the one in force is refused, so that a lagging source
        can never roll the policy back; the same version again changes nothing.
        """
        current = self._active
        if current is not None and prepared.version < current.version:
            raise BundleError(
                f"refusing version {prepared.version}: "
                f"version {current.version} is already in force"
            )
        if current is not None and prepared.version == current.version:
            if prepared.digest != current.digest:
                raise DigestMismatch(current.digest, prepared.digest, prepared.source)
            return current
        entry = replace(prepared, activated_at=time.time())
        self._by_revision[entry.revision] = entry
        self._superseded, self._active = current, entry
        self._switched_at = time.monotonic()
        self._changed.set()
        self._changed = asyncio.Event()
        return entry

    def close(self) -> None:
        """Release long-polling waiters now, so that shutdown is not held up by them.

        Safe to call from a signal handler or another thread.
        """
        self._closing = True
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._changed.set)

    async def wait_for_change(self, known_revision: str | None, timeout_s: float) -> None:
        """Return when the active revision differs from ``known_revision``, or at the timeout."""
        if self._closing or (self._active is not None and self._active.revision != known_revision):
            return
        self._loop = asyncio.get_running_loop()
        changed = self._changed
        try:
            await asyncio.wait_for(changed.wait(), timeout_s)
        except TimeoutError:
            return
