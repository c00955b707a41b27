"""The components of one gateway process, started together and stopped together.

Components start in order through one AsyncExitStack, so that when one fails
to start, the ones already started are stopped again (in reverse order) and
nothing leaks; at shutdown they stop in reverse order too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp

from gateway.answers.forward import ResponsePolicy
from gateway.auth import Authenticator
from gateway.community.service import CommunityService
from gateway.config import Settings
from gateway.decisionlog.recorder import DecisionRecorder
from gateway.decisionlog.ship import LogShipper
from gateway.exceptions import AgoraError
from gateway.lifecycle import Worker
from gateway.metrics import GatewayMetrics, LogShipCollector
from gateway.pinning.activation import activate
from gateway.pinning.bundle import load_bundle
from gateway.pinning.nodes import start_watcher
from gateway.pinning.store import PolicyStore
from gateway.policy.engine import PolicyEngine
from gateway.policy.opa import ManagedOpa
from gateway.serving.admission import LargeBodyGate
from gateway.upstream.pool import UpstreamPool
from gateway.upstream.routing import RouteTable
from gateway.usage.ledger import UsageLedger

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
    http: aiohttp.ClientSession
    large_bodies: LargeBodyGate
    answers: ResponsePolicy
    """Response policy: which answers are judged, and how they reach the caller."""
    usage: UsageLedger
    watcher: RatificationWatcher | None = None
    community: CommunityService | None = None
    """The community page's worker (chain reading, bundles, shadow); None when switched off."""
    workers: tuple[Worker, ...] = ()
    """The background workers, in start order (their states make /readyz)."""


@contextlib.asynccontextmanager
async def running(settings: Settings, metrics: GatewayMetrics) -> AsyncIterator[Gateway]:
    """The gateway's components, started in order and stopped in reverse order.

    Every start is paired with its stop on one AsyncExitStack: if a component
    fails to start, the ones already started are stopped before the error
    propagates, so nothing leaks (sessions, threads, the OPA process).
    """
    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        )
        store = PolicyStore()
        opa: ManagedOpa | None = None
        opa_url = str(settings.policy.opa_url)
        if settings.policy.opa == "managed":
            opa = ManagedOpa(settings.policy.opa_binary, settings.bundle_service_url)
            opa_url = opa.url
        engine = PolicyEngine(
            opa_url,
            settings.policy.decision_path,
            settings.policy.timeout_ms,
            store,
            settings.policy.switch_overlap_ms,
            settings.policy.timeout_ms_per_mib,
            settings.policy.queue_allowance_ms,
            settings.policy.response_path,
        )
        gateway = Gateway(
            settings=settings,
            store=store,
            engine=engine,
            authenticator=Authenticator(settings.auth, http),
            pool=UpstreamPool(settings.upstreams, os.environ),
            routes=RouteTable(tuple(settings.upstreams)),
            metrics=metrics,
            recorder=DecisionRecorder(settings.decision_log, metrics, settings.transparency),
            http=http,
            large_bodies=LargeBodyGate(
                settings.limits.max_concurrent_large,
                settings.limits.large_body_bytes,
                settings.limits.queue_timeout_ms / 1000,
            ),
            answers=ResponsePolicy(engine, settings.response, metrics),
            usage=UsageLedger(settings.usage, metrics),
        )
        await gateway.pool.start()
        stack.push_async_callback(gateway.pool.stop)
        await gateway.engine.start()
        stack.push_async_callback(gateway.engine.stop)
        workers: list[Worker] = []
        shipper = None
        if settings.decision_log.ship is not None:
            shipper = _shipper(settings, gateway.recorder, metrics)
            # Stopped after the writer, so that what it flushes at shutdown is shipped too.
            stack.push_async_callback(shipper.stop)
        await _start_worker(stack, workers, gateway.recorder)
        if settings.transparency.anchor is not None:
            await _start_worker(stack, workers, _anchorer(settings, gateway.recorder))
        if shipper is not None:
            await shipper.start()  # after the writer set aside a torn tail, if any
            workers.append(shipper)
        await _start_worker(stack, workers, gateway.usage)
        if settings.governance is None:
            await _activate_local_bundle(gateway)
        else:
            gateway.watcher = await start_watcher(settings, store, http, metrics)
            stack.push_async_callback(gateway.watcher.stop)
            workers.append(gateway.watcher)
        if opa is not None:
            await _start_worker(stack, workers, opa)
        if settings.community.enabled:
            gateway.community = CommunityService(settings, store, http)
            await _start_worker(stack, workers, gateway.community)
        gateway.workers = tuple(workers)
        metrics.components.workers = gateway.workers
        yield gateway


async def _start_worker(
    stack: contextlib.AsyncExitStack, workers: list[Worker], worker: Worker
) -> None:
    await worker.start()
    stack.push_async_callback(worker.stop)
    workers.append(worker)


def _shipper(settings: Settings, recorder: DecisionRecorder, metrics: GatewayMetrics) -> LogShipper:
    """The decision log's sink to ``decision_log.ship.url``, its figures in the metrics."""
    assert settings.decision_log.ship is not None
    writer = recorder.writer
    tlog = writer.transparency

    def checkpoint() -> str | None:
        latest = tlog.latest
        return None if latest is None else str(latest)

    shipper = LogShipper(
        settings.decision_log.ship,
        settings.decision_log.path,
        decision_path=settings.policy.decision_path,
        head=lambda: writer.count,
        checkpoint=checkpoint,
    )
    metrics.registry.register(LogShipCollector(shipper))
    return shipper


def _anchorer(settings: Settings, recorder: DecisionRecorder) -> Worker:
    """The worker that anchors the log's latest signed checkpoint on chain."""
    from gateway.chain.anchoring import anchoring_worker  # web3 and a sender: only when asked

    anchor = settings.transparency.anchor
    assert anchor is not None
    return anchoring_worker(
        recorder.writer.transparency.tree_head,
        rpc_url=anchor.rpc_url,
        contract=anchor.contract,
        interval_s=settings.transparency.anchor_every_s,
        key_env=anchor.key_env,
        chain_id=anchor.chain_id,
    )


async def _activate_local_bundle(gateway: Gateway) -> None:
    """Pinning without a chain: the configured bundle, if its digest matches the pin.

    A refused bundle leaves no version in force: the gateway runs, unready, and
    fails closed, so that the operator sees why in ``/readyz`` and the log.
    """
    policy = gateway.settings.policy
    try:
        bundle = await asyncio.to_thread(load_bundle, policy.bundle)
        await activate(gateway.store, gateway.metrics, bundle, policy.version, policy.pinned_digest)
    except AgoraError as exc:
        logger.error("policy bundle not activated: %s", exc)
