"""Putting a verified version in force: the one step both sources (a pin, the chain) take.

Whether a version comes from ``policy.pinned_digest`` or from a ratification
read on chain, it is verified and prepared off the event loop, installed in the
store (which OPA then pulls), and announced the same way: one set of metrics,
one log line.
"""

from __future__ import annotations

import asyncio
import logging

from gateway.metrics import GatewayMetrics
from gateway.pinning.bundle import Bundle
from gateway.pinning.store import PolicyStore, PolicyVersion, prepare_version

logger = logging.getLogger("agora.pinning")


async def activate(
    store: PolicyStore,
    metrics: GatewayMetrics,
    bundle: Bundle,
    version: int,
    expected_digest: str | None,
    ratified_block: int | None = None,
) -> PolicyVersion:
    """Verify ``bundle`` against ``expected_digest`` and put it in force.

    Raise DigestMismatch or BundleError (nothing changes then): the caller
    reports the refusal in its own terms.
    """
    prepared = await asyncio.to_thread(
        prepare_version, bundle, version, expected_digest, ratified_block
    )
    active = store.install(prepared)
    metrics.bundle_verifications.labels("ok").inc()
    metrics.policy_version.set(active.version)
    info = {"digest": active.digest, "source": active.source}
    if ratified_block is not None:
        info["block"] = str(ratified_block)
    metrics.policy_info.info(info)
    logger.info(
        "policy version %s in force: %s (%s%s)",
        active.version,
        active.digest,
        active.source,
        "" if ratified_block is None else f", ratified in block {ratified_block}",
    )
    return active
