"""The watcher against the embedded chain: only ratified, verified bundles are activated."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp
import pytest

from gateway.bundle_source import BundleSource
from gateway.chain.demo import ratify_embedded, start_embedded_governance
from gateway.chain.registry import RegistryClient
from gateway.config import Governance
from gateway.lifecycle import State
from gateway.metrics import GatewayMetrics
from gateway.pinning import PolicyStore
from gateway.ratification import RatificationWatcher

ROOT = Path(__file__).resolve().parents[2]


def copy_policy(tmp_path: Path, name: str, extra: str = "") -> Path:
    target = tmp_path / name
    shutil.copytree(ROOT / "policies", target)
    if extra:
        (target / "agora" / "extra.rego").write_text(f"package agora.extra\n\n{extra}\n")
    return target


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def watcher_for(
    w3: object, registry: str, store: PolicyStore, session: aiohttp.ClientSession, **config: object
) -> RatificationWatcher:
    return RatificationWatcher(
        Governance.model_validate({"chain": "embedded", "confirmations": 0, **config}),
        [RegistryClient(w3, registry)],  # type: ignore[arg-type]
        store,
        BundleSource(session, None),
        GatewayMetrics(),
        ThreadPoolExecutor(1),
    )


async def test_ratified_versions_are_activated_in_order(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    first = copy_policy(tmp_path, "v1")
    w3, deployment, ratification = start_embedded_governance(first, first.as_uri())
    store = PolicyStore()
    watcher = watcher_for(w3, deployment.registry, store, session)
    activated = await watcher.sync_once()
    assert activated is not None and activated.version == 1
    assert activated.digest == ratification.digest
    assert activated.ratified_block == ratification.block_number
    assert watcher.state is State.OK

    second = copy_policy(tmp_path, "v2", "note := 2")
    ratify_embedded(w3, deployment, second, second.as_uri())
    activated = await watcher.sync_once()
    assert activated is not None and activated.version == 2
    assert store.active is activated
    assert await watcher.sync_once() is None  # nothing new


async def test_a_tampered_bundle_is_refused_and_the_old_version_stays(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    first = copy_policy(tmp_path, "v1")
    w3, deployment, _ = start_embedded_governance(first, first.as_uri())
    store = PolicyStore()
    watcher = watcher_for(w3, deployment.registry, store, session)
    await watcher.sync_once()
    second = copy_policy(tmp_path, "v2", "note := 2")
    ratify_embedded(w3, deployment, second, second.as_uri())
    rego = second / "agora" / "extra.rego"
    rego.write_bytes(rego.read_bytes().replace(b"2", b"3"))  # one byte changed after the vote
    assert await watcher.sync_once() is None
    assert store.active is not None and store.active.version == 1
    assert watcher.state is State.WARN
    assert "digest mismatch" in watcher.detail


async def test_confirmations_delay_activation(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    first = copy_policy(tmp_path, "v1")
    w3, deployment, _ = start_embedded_governance(first, first.as_uri())
    store = PolicyStore()
    watcher = watcher_for(w3, deployment.registry, store, session, confirmations=3)
    assert await watcher.sync_once() is None  # the execute block is the head: not confirmed yet
    w3.provider.ethereum_tester.mine_blocks(3)  # type: ignore[attr-defined]
    activated = await watcher.sync_once()
    assert activated is not None and activated.version == 1


async def test_unreachable_chain_keeps_the_last_verified_version(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    from web3 import HTTPProvider, Web3

    first = copy_policy(tmp_path, "v1")
    w3, deployment, _ = start_embedded_governance(first, first.as_uri())
    store = PolicyStore()
    await watcher_for(w3, deployment.registry, store, session).sync_once()
    dead = Web3(HTTPProvider("http://127.0.0.1:9", request_kwargs={"timeout": 1}))
    watcher = watcher_for(dead, deployment.registry, store, session)
    assert await watcher.sync_once() is None
    assert store.active is not None and store.active.version == 1
    assert watcher.state is State.WARN
    assert "chain unreachable" in watcher.detail


async def test_nothing_active_when_the_chain_is_down_from_the_start(
    session: aiohttp.ClientSession,
) -> None:
    from web3 import HTTPProvider, Web3

    dead = Web3(HTTPProvider("http://127.0.0.1:9", request_kwargs={"timeout": 1}))
    store = PolicyStore()
    watcher = watcher_for(dead, "0x" + "11" * 20, store, session)
    await watcher.sync_once()
    assert store.active is None
    assert watcher.state is State.ERROR
