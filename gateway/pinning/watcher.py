"""Following the chain: activate each newly ratified policy version, and nothing else.

Every ``poll_s`` the watcher asks every configured node where it stands (chain
id, head), then reads ``PolicyRegistry.current()`` on each at the same block,
the lowest ``head - confirmations`` among them, and checks the answer against
the registry's per-version getter. At least ``governance.quorum`` nodes (by
default all of them) must answer, and every node that answers must agree: same
chain id, same block hash, same version, digest and uri. A node that lies is
outvoted by nobody: any disagreement activates nothing and says which nodes
disagree. An agreed newer version is fetched, its digest recomputed, and only
on a match handed to the PolicyStore (which OPA then activates atomically).

A mismatched digest, a malformed bundle, an unreachable node or bundle never
activates anything: the last verified version stays in force, reported stale
after ``stale_after_s``. An older version than the one in force is never
activated (no rollback through a lagging node), and is reported (``warn``)
for as long as the chain reports it. Whatever goes wrong in one
round is reported and the next round runs: the watcher never dies.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from gateway.chain.registry import Ratification, RegistryClient
from gateway.config import Governance
from gateway.exceptions import (
    BundleError,
    BundleUnavailable,
    ChainConflict,
    ChainError,
    DigestMismatch,
    InconsistentRegistry,
)
from gateway.lifecycle import State, Status, cancel_task
from gateway.metrics import GatewayMetrics
from gateway.pinning.activation import activate
from gateway.pinning.source import BundleSource
from gateway.pinning.store import PolicyStore, PolicyVersion
from gateway.redaction import scrub

logger = logging.getLogger("agora.ratification")

T = TypeVar("T")


@dataclass(frozen=True)
class _View:
    """What one node reports at the block all nodes are read at."""

    chain_id: int
    block_hash: str
    ratification: Ratification | None

    def describe(self) -> str:
        ratified = self.ratification
        said = "no version" if ratified is None else f"version {ratified.version} {ratified.digest}"
        return f"{said} ({ratified.uri if ratified else '-'}), block {self.block_hash[:18]}..."


@dataclass(frozen=True)
class _Reading:
    """The agreed ratification at ``block``, and the nodes that did not answer."""

    ratification: Ratification | None
    block: int
    silent: tuple[str, ...]


class RatificationWatcher(Status):
    """The background worker that keeps the active policy equal to the ratified one."""

    name = "chain"
    gates_readiness = True  # ERROR only while no verified version is in force; stale is WARN

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
            raise ChainError("no chain to read: set governance.rpc_urls")
        self._config = config
        self._registries = list(registries)
        self._required = min(config.quorum or len(self._registries), len(self._registries))
        self._store = store
        self._source = source
        self._metrics = metrics
        self._executor = executor or ThreadPoolExecutor(
            len(self._registries), thread_name_prefix="agora-chain"
        )
        self._task: asyncio.Task[None] | None = None
        self._last_sync: float | None = None

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
        await cancel_task(task)
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._state, self._detail = State.STOPPED, "stopped"

    async def _run(self) -> None:
        while True:
            try:
                await self.sync_once()
            except Exception as exc:  # the watcher outlives any one bad round
                self._report_unexpected("checking the chain", exc)
            await asyncio.sleep(self._config.poll_s)

    async def sync_once(self) -> PolicyVersion | None:
        """One check of the chain; the newly activated version, if any."""
        try:
            reading = await self._read_ratified()
        except ChainConflict as exc:
            self._report_chain_failure("chain answers refused", exc)
            return None
        except ChainError as exc:
            self._report_chain_failure("chain unreachable", exc)
            return None
        self._last_sync = time.monotonic()
        self._metrics.chain_last_sync.set_to_current_time()
        ratified = reading.ratification
        active = self._store.active
        if ratified is None:
            self._set(
                State.NOT_READY if active is None else State.OK,
                "no version ratified yet",
                reading,
            )
            return None
        if active is not None and ratified.version < active.version:
            # A node behind the chain, or a chain rolled back: shown, never followed.
            older = f"the chain reports version {ratified.version}, older than the one in force"
            logger.warning("%s; keeping version %s", older, active.version)
            self._set(State.WARN, f"{older}; keeping version {active.version}", reading)
            return None
        if active is not None and ratified.version == active.version:
            self._set(State.OK, f"enforcing ratified version {active.version}", reading)
            return None
        return await self._activate(ratified, reading)

    async def _activate(self, ratified: Ratification, reading: _Reading) -> PolicyVersion | None:
        try:
            bundle = await self._source.fetch(ratified.digest, ratified.uri)
            version = await activate(
                self._store, self._metrics, bundle, ratified.version, ratified.digest,
                ratified.block_number,
            )  # fmt: skip
        except DigestMismatch as exc:
            self._refuse(ratified, "mismatch", f"digest mismatch: {exc}")
            return None
        except BundleUnavailable as exc:
            self._refuse(ratified, "unavailable", str(exc))
            return None
        except BundleError as exc:
            self._refuse(ratified, "invalid", f"invalid bundle: {exc}")
            return None
        except Exception as exc:  # a bundle must never take the watcher down
            self._refuse(ratified, "error", _unexpected(exc))
            logger.debug("unexpected failure activating a bundle", exc_info=True)
            return None
        self._set(State.OK, f"enforcing ratified version {version.version}", reading)
        return version

    def _refuse(self, ratified: Ratification, result: str, reason: str) -> None:
        self._metrics.bundle_verifications.labels(result).inc()
        keeping = self._keeping()
        logger.error(
            "ratified version %s not activated (%s); %s", ratified.version, reason, keeping
        )
        self._set(
            State.WARN if self._store.active else State.ERROR,
            f"ratified version {ratified.version} refused: {reason}; {keeping}",
        )

    def _report_chain_failure(self, what: str, exc: ChainError) -> None:
        keeping = self._keeping()
        level = logging.ERROR if isinstance(exc, ChainConflict) else logging.WARNING
        logger.log(level, "%s: %s; %s", what, exc, keeping)
        self._set(State.WARN if self._store.active else State.ERROR, f"{what}: {exc}; {keeping}")

    def _report_unexpected(self, action: str, exc: Exception) -> None:
        keeping = self._keeping()
        logger.error("%s failed: %s; %s", action, _unexpected(exc), keeping)
        logger.debug("unexpected failure %s", action, exc_info=True)
        self._set(
            State.WARN if self._store.active else State.ERROR,
            f"{action} failed: {_unexpected(exc)}; {keeping}",
        )

    def _keeping(self) -> str:
        active = self._store.active
        return f"keeping version {active.version}" if active else "no version is active"

    async def _read_ratified(self) -> _Reading:
        """The ratification every answering node agrees on, at a block all of them confirm."""
        positions, silent = await self._ask_all(lambda _, registry: registry.position())
        chain_ids = {index: position.chain_id for index, position in positions.items()}
        self._check_chain_ids(chain_ids)
        block = min(position.head for position in positions.values()) - self._config.confirmations
        if block < 0:
            return _Reading(None, block, tuple(silent.values()))
        views, late = await self._ask_all(
            lambda index, registry: _View(
                chain_ids[index],
                registry.block_hash(block),
                registry.ratified_at(block),
            ),
            among=positions,
        )
        silent.update(late)
        distinct = set(views.values())
        if len(distinct) > 1:
            said = "; ".join(f"{self._label(i)} says {v.describe()}" for i, v in views.items())
            raise ChainConflict(f"nodes disagree at block {block}: {said}")
        (view,) = distinct
        return _Reading(view.ratification, block, tuple(silent.values()))

    def _check_chain_ids(self, chain_ids: dict[int, int]) -> None:
        expected = self._config.chain_id
        wrong = {i: c for i, c in chain_ids.items() if expected is not None and c != expected}
        if wrong:
            named = ", ".join(f"{self._label(i)} reports chain id {c}" for i, c in wrong.items())
            raise ChainConflict(f"wrong network: {named}; governance.chain_id is {expected}")
        if len(set(chain_ids.values())) > 1:
            named = ", ".join(f"{self._label(i)} chain id {c}" for i, c in chain_ids.items())
            raise ChainConflict(f"nodes are on different chains: {named}")

    async def _ask_all(
        self,
        question: Callable[[int, RegistryClient], T],
        among: Iterable[int] | None = None,
    ) -> tuple[dict[int, T], dict[int, str]]:
        """Each node's answer (in parallel), and why the others did not answer.

        Fewer answers than the quorum is a ChainError; a node whose answers
        contradict each other is a ChainConflict (it is not merely down).
        """
        indexes = list(range(len(self._registries))) if among is None else list(among)
        loop = asyncio.get_running_loop()
        outcomes = await asyncio.gather(
            *(
                loop.run_in_executor(self._executor, question, index, self._registries[index])
                for index in indexes
            ),
            return_exceptions=True,
        )
        answers: dict[int, T] = {}
        silent: dict[int, str] = {}
        for index, outcome in zip(indexes, outcomes, strict=True):
            if isinstance(outcome, InconsistentRegistry):
                raise ChainConflict(f"{self._label(index)} is not believed: {outcome}")
            if isinstance(outcome, ChainError):
                silent[index] = f"{self._label(index)}: {outcome}"
            elif isinstance(outcome, BaseException):
                if not isinstance(outcome, Exception):
                    raise outcome
                silent[index] = f"{self._label(index)}: {_unexpected(outcome)}"
            else:
                answers[index] = outcome
        if len(answers) < self._required:
            reasons = "; ".join(silent.values())
            if len(self._registries) == 1:
                raise ChainError(reasons)
            raise ChainError(
                f"{len(answers)} of {len(self._registries)} nodes answered, "
                f"{self._required} needed: {reasons}"
            )
        return answers, silent

    def _label(self, index: int) -> str:
        node = self._registries[index].node
        return node if len(self._registries) == 1 else f"node {index + 1} ({node})"

    def _set(self, state: State, detail: str, reading: _Reading | None = None) -> None:
        if reading is not None and reading.silent:
            state = State.WARN if state is State.OK else state
            detail += f"; not answering: {'; '.join(reading.silent)}"
        self._state, self._detail = state, detail


def _unexpected(exc: BaseException) -> str:
    """An unexpected error, described without the secrets of any RPC URL its text may hold."""
    return scrub(f"unexpected {type(exc).__name__}: {exc}")
