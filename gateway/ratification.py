"""Following the chain: activate each newly ratified policy version, and nothing else.

Every ``poll_s`` the watcher reads ``PolicyRegistry.current()`` at ``head -
confirmations``. A newer version is fetched, its digest recomputed, and only on
a match handed to the PolicyStore (which OPA then activates atomically). A
mismatched digest, an unreachable RPC node or bundle never activates anything:
the last verified version stays in force, reported stale after ``stale_after_s``.
An older version than the one in force is never activated (no rollback through
a lagging node).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from gateway.bundle_source import BundleSource
from gateway.chain.registry import Ratification, RegistryClient
from gateway.config import Governance
from gateway.exceptions import AgoraError, BundleError, ChainError, DigestMismatch
from gateway.lifecycle import State
from gateway.metrics import GatewayMetrics
from gateway.pinning import PolicyStore, PolicyVersion

logger = logging.getLogger("agora.ratification")

T = TypeVar("T")


class RatificationWatcher:
    """The background worker that keeps the active policy equal to the ratified one."""

    name = "chain"

    def __init__(
        self,
        config: Governance,
        registries: Sequence[RegistryClient],
        store: PolicyStore,
        source: BundleSource,
        metrics: GatewayMetrics,
        executor: ThreadPoolExecutor | None = None,
    ):
        if not registries:
            raise ChainError("no chain to read: set governance.rpc_urls or governance.chain")
        self._config = config
        self._registries = list(registries)
        self._store = store
        self._source = source
        self._metrics = metrics
        self._executor = executor or ThreadPoolExecutor(1, thread_name_prefix="agora-chain")
        self._task: asyncio.Task[None] | None = None
        self._state = State.NOT_READY
        self._detail = "not started"
        self._last_sync: float | None = None
        self._wake = asyncio.Event()

    @property
    def state(self) -> State:
        if self._state is State.OK and self.stale:
            return State.WARN
        return self._state

    @property
    def detail(self) -> str:
        since = self.seconds_since_sync
        if self.stale and since is not None:
            return f"stale: chain not read for {since:.0f} s; {self._detail}"
        return self._detail

    @property
    def seconds_since_sync(self) -> float | None:
        return None if self._last_sync is None else time.monotonic() - self._last_sync

    @property
    def stale(self) -> bool:
        since = self.seconds_since_sync
        return since is None or since > self._config.stale_after_s

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ratification-watcher")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._state, self._detail = State.STOPPED, "stopped"

    def poke(self) -> None:
        """Check the chain now rather than at the next poll (a new block or event was seen)."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self.sync_once()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._config.poll_s)

    async def sync_once(self) -> PolicyVersion | None:
        """One check of the chain; the newly activated version, if any. Never raises."""
        try:
            ratified = await self._read_ratified()
        except ChainError as exc:
            self._report_chain_failure(exc)
            return None
        self._last_sync = time.monotonic()
        self._metrics.chain_last_sync.set_to_current_time()
        active = self._store.active
        if ratified is None:
            self._set(State.NOT_READY if active is None else State.OK, "no version ratified yet")
            return None
        if active is not None and ratified.version <= active.version:
            if ratified.version < active.version:
                logger.warning(
                    "the chain reports version %s but %s is in force; keeping it (lagging node?)",
                    ratified.version,
                    active.version,
                )
            self._set(State.OK, f"enforcing ratified version {active.version}")
            return None
        return await self._activate(ratified)

    async def _activate(self, ratified: Ratification) -> PolicyVersion | None:
        try:
            bundle = await self._source.fetch(ratified.digest, ratified.uri)
            version = self._store.activate(
                bundle, ratified.version, ratified.digest, ratified.block_number
            )
        except DigestMismatch as exc:
            self._metrics.bundle_verifications.labels("mismatch").inc()
            self._refuse(ratified, f"digest mismatch: {exc}")
            return None
        except BundleError as exc:
            self._metrics.bundle_verifications.labels("unavailable").inc()
            self._refuse(ratified, str(exc))
            return None
        self._metrics.bundle_verifications.labels("ok").inc()
        self._metrics.policy_version.set(version.version)
        self._metrics.policy_info.info(
            {
                "digest": version.digest,
                "source": version.source,
                "block": str(ratified.block_number),
            }
        )
        logger.info(
            "activated ratified policy version %s (%s, block %s)",
            version.version,
            version.digest,
            ratified.block_number,
        )
        self._set(State.OK, f"enforcing ratified version {version.version}")
        return version

    def _refuse(self, ratified: Ratification, reason: str) -> None:
        active = self._store.active
        keeping = f"keeping version {active.version}" if active else "no version is active"
        logger.error(
            "ratified version %s not activated (%s); %s", ratified.version, reason, keeping
        )
        self._set(
            State.WARN if active else State.ERROR,
            f"ratified version {ratified.version} refused: {reason}; {keeping}",
        )

    def _report_chain_failure(self, exc: AgoraError) -> None:
        active = self._store.active
        keeping = f"keeping version {active.version}" if active else "no version is active"
        logger.warning("cannot read the chain: %s; %s", exc, keeping)
        self._set(State.WARN if active else State.ERROR, f"chain unreachable: {exc}; {keeping}")

    async def _read_ratified(self) -> Ratification | None:
        """The confirmed ratification, from the first node that answers."""
        failure: ChainError | None = None
        for index, registry in enumerate(self._registries):
            try:
                result = await self._call(registry.latest_confirmed, self._config.confirmations)
            except ChainError as exc:
                failure = exc
                continue
            if index:  # prefer the node that answered next time
                self._registries.insert(0, self._registries.pop(index))
            return result
        assert failure is not None
        raise failure

    async def _call(self, function: Callable[[int], T], argument: int) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, function, argument)

    def _set(self, state: State, detail: str) -> None:
        self._state, self._detail = state, detail
