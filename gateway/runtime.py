"""The components of one gateway process, started together and stopped together.

Components start in order through one AsyncExitStack, so that when one fails
to start, the ones already started are stopped again (in reverse order) and
nothing leaks; at shutdown they stop in reverse order too.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp

from gateway.auth import Authenticator
from gateway.config import Settings
from gateway.decisionlog.recorder import DecisionRecorder
from gateway.exceptions import AgoraError
from gateway.governance import EmbeddedGovernance, start_watcher
from gateway.metrics import GatewayMetrics
from gateway.pinning.bundle import load_bundle
from gateway.pinning.store import PolicyStore
from gateway.policy.engine import PolicyEngine
from gateway.policy.opa import ManagedOpa
from gateway.serving.admission import LargeBodyGate
from gateway.upstream.pool import UpstreamPool
from gateway.upstream.routing import RouteTable

if TYPE_CHECKING:
    from gateway.pinning.watcher import RatificationWatcher

logger = logging.getLogger("agora.gateway")


@dataclass
class Gateway:
    """The runtime components of one gateway process."""

    settings: Settings
    store: PolicyStore
    engine: PolicyEngine
    authenticator: Authenticator
    pool: UpstreamPool
    routes: RouteTable
    metrics: GatewayMetrics
    recorder: DecisionRecorder
    opa: ManagedOpa | None
    http: aiohttp.ClientSession
    large_bodies: LargeBodyGate
    watcher: RatificationWatcher | None = None
    embedded: EmbeddedGovernance | None = None


async def start(settings: Settings, metrics_: GatewayMetrics) -> Gateway:
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
    store = PolicyStore()
    opa: ManagedOpa | None = None
    opa_url = str(settings.policy.opa_url)
    if settings.policy.opa == "managed":
        opa = ManagedOpa(settings.policy.opa_binary, settings.bundle_service_url)
        opa_url = opa.url
    gateway = Gateway(
        settings=settings,
        store=store,
        engine=PolicyEngine(
            opa_url,
            settings.policy.decision_path,
            settings.policy.timeout_ms,
            store,
            settings.policy.switch_overlap_ms,
            settings.policy.timeout_ms_per_mib,
        ),
        authenticator=Authenticator(settings.auth, http),
        pool=UpstreamPool(settings.upstreams, os.environ),
        routes=RouteTable(tuple(settings.upstreams)),
        metrics=metrics_,
        recorder=DecisionRecorder(settings.decision_log, metrics_),
        opa=opa,
        http=http,
        large_bodies=LargeBodyGate(
            settings.limits.max_concurrent_large,
            settings.limits.large_body_bytes,
            settings.limits.queue_timeout_ms / 1000,
        ),
    )
    await gateway.pool.start()
    await gateway.engine.start()
    await gateway.recorder.start()
    if settings.governance is None:
        _activate_local_bundle(gateway)
    else:
        gateway.watcher, gateway.embedded = await start_watcher(settings, store, http, metrics_)
    if opa is not None:
        await opa.start()
    return gateway


def _activate_local_bundle(gateway: Gateway) -> None:
    """Pinning without a chain: the configured bundle, if its digest matches the pin."""
    policy = gateway.settings.policy
    try:
        version = gateway.store.activate(
            load_bundle(policy.bundle), policy.version, policy.pinned_digest
        )
    except AgoraError as exc:
        logger.error("policy bundle not activated: %s", exc)
        return
    gateway.metrics.policy_version.set(version.version)
    gateway.metrics.policy_info.info({"digest": version.digest, "source": version.source})
    logger.info(
        "policy version %s active: %s (%s)", version.version, version.digest, version.source
    )


async def stop(gateway: Gateway) -> None:
    if gateway.watcher is not None:
        await gateway.watcher.stop()
    if gateway.opa is not None:
        await gateway.opa.stop()
    await gateway.recorder.stop()
    await gateway.engine.stop()
    await gateway.pool.stop()
    await gateway.http.close()
