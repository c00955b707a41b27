"""The community page's background work: reading the chain, fetching bundles, feeding the shadow.

A worker of the gateway (``community``) that never gates readiness: the page
is a view, and the gateway enforces whatever the page can or cannot show.
Every ``community.poll_s`` it reads the registry and the governor (one node,
``governance.rpc_urls[0]``: the page shows, the watcher cross-checks), fetches
and verifies the bundles of the ratified versions and open proposals, and
tells the shadow which proposals to judge.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp

from gateway.community.bundles import BundleCatalog
from gateway.community.shadow import ShadowEvaluator, ShadowPool, Target
from gateway.config import Settings
from gateway.lifecycle import State, Status, cancel_task
from gateway.pinning.source import BundleSource
from gateway.pinning.store import PolicyStore

if TYPE_CHECKING:  # web3 is loaded only with a chain
    from gateway.community.proposals import ChainReader, ChainView

logger = logging.getLogger("agora.community")


class CommunityService(Status):
    """What the page shows that is not in the gateway already: the chain's view, bundles, shadow."""

    name = "community"
    gates_readiness = False

    def __init__(self, settings: Settings, store: PolicyStore, http: aiohttp.ClientSession):
        config = settings.community
        governance = settings.governance
        self._settings = settings
        self._store = store
        self.catalog = BundleCatalog(
            BundleSource(http, governance.bundle_dir) if governance is not None else None
        )
        self.pool = ShadowPool(
            settings.policy.opa_binary,
            settings.policy.decision_path,
            config.shadow.max_bundles,
            config.shadow.timeout_ms,
        )
        self.shadow = (
            ShadowEvaluator(config.shadow, self.pool, settings.decision_log.group_claim)
            if config.shadow.enabled
            else None
        )
        self.view: ChainView | None = None
        self.read_at: float | None = None
        self._reader: ChainReader | None = None
        self._task: asyncio.Task[None] | None = None
        self._state = State.OK
        self._detail = "no chain configured: the page shows the pinned version"

    async def start(self) -> None:
        await self.pool.start()
        if self.shadow is not None:
            await self.shadow.start()
        if self._settings.governance is not None:
            self._state, self._detail = State.WARN, "the chain has not been read yet"
            self._task = asyncio.create_task(self._run(), name="community")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_task(task)
        if self.shadow is not None:
            await self.shadow.stop()
        await self.pool.stop()

    async def in_force(self) -> Mapping[str, bytes] | None:
        """The files of the version in force, verified against its digest."""
        active = self._store.active
        if active is None:
            return None
        files = self.catalog.get(active.digest)
        if files is not None:
            return files
        if "://" not in active.source:
            local = Path(active.source)
            return await asyncio.to_thread(self.catalog.add_local, active.digest, local)
        return await self.catalog.fetch(active.digest, active.source)

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # the page must keep serving what it last read
                self._state = State.WARN
                self._detail = f"reading the chain failed: {exc}"
                logger.warning("community page: reading the chain failed: %s", exc)
            await asyncio.sleep(self._settings.community.poll_s)

    async def refresh(self) -> None:
        """Read the chain once; fetch the bundles it names; set the shadow's proposals."""
        if self._reader is None:
            self._reader = await asyncio.to_thread(self._connect)
        reader = self._reader
        view = await asyncio.to_thread(reader.read)
        for version in view.versions:
            await self.catalog.fetch(version.digest, version.uri)
        await self.in_force()  # fetched for the page (and the dry-run form) before it is asked
        active = self._store.active
        targets = []
        for proposal in view.proposals:
            if not proposal.open or proposal.digest is None or proposal.uri is None:
                continue
            files = await self.catalog.fetch(proposal.digest, proposal.uri)
            if files is not None and (active is None or proposal.digest != active.digest):
                targets.append(Target(proposal.proposal_id, proposal.digest, files))
        if self.shadow is not None:
            self.shadow.set_targets(targets)
        keep = {t.digest for t in targets} | ({active.digest} if active else set())
        await self.pool.keep_only(frozenset(keep))
        self.view, self.read_at = view, time.time()
        self._state = State.OK
        self._detail = (
            f"block {view.head_block}: {len(view.versions)} versions, "
            f"{sum(p.open for p in view.proposals)} open proposals, {len(targets)} in shadow"
        )

    def _connect(self) -> ChainReader:
        limit = sys.getrecursionlimit()
        try:
            from web3 import HTTPProvider, Web3

            from gateway.community.proposals import ChainReader
        finally:
            sys.setrecursionlimit(limit)  # as in pinning/nodes.py: py_ecc raises it

        governance = self._settings.governance
        assert governance is not None
        w3 = Web3(
            HTTPProvider(
                str(governance.rpc_urls[0]),
                request_kwargs={"timeout": governance.rpc_timeout_s, "allow_redirects": False},
                exception_retry_configuration=None,
            )
        )
        return ChainReader(
            w3,
            governance.registry or "",
            self._settings.community.governor,
            self._settings.community.from_block,
        )
