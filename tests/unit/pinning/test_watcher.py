"""The watcher against eth-tester chains: only ratified, verified bundles are activated."""

from __future__ import annotations

import asyncio
import io
import logging
import shutil
import tarfile
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from eth_abi.abi import encode
from web3 import HTTPProvider, Web3
from web3.middleware import Web3Middleware
from web3.types import RPCEndpoint, RPCResponse

from gateway.chain.digests import to_bytes32
from gateway.chain.registry import Ratification, RegistryClient
from gateway.chain.rpc import connect
from gateway.config import Governance, Settings, load_settings
from gateway.exceptions import ChainError, ConfigError
from gateway.gov.deploy import Deployment
from gateway.gov.governance import Governance as Community
from gateway.gov.governance import Support
from gateway.lifecycle import State
from gateway.metrics import GatewayMetrics
from gateway.pinning.bundle import Bundle, digest_of_files
from gateway.pinning.nodes import start_watcher
from gateway.pinning.source import BundleSource
from gateway.pinning.store import PolicyStore
from gateway.pinning.watcher import RatificationWatcher
from tests.embedded_chain import EmbeddedChain, ratify_embedded, start_embedded_governance

ROOT = Path(__file__).resolve().parents[3]
NODE_URL = "http://127.0.0.1:8545"
"""The configuration names a node; the watchers here read the embedded chains they are given."""


def copy_policy(tmp_path: Path, name: str, extra: str = "") -> Path:
    target = tmp_path / name
    shutil.copytree(ROOT / "policies", target)
    if extra:
        (target / "agora" / "extra.rego").write_text(f"package agora.extra\n\n{extra}\n")
    return target


def governed_from_v1(tmp_path: Path) -> tuple[Web3, Deployment, Ratification]:
    """A fresh embedded chain with a copy of policies/ ratified as version 1."""
    first = copy_policy(tmp_path, "v1")
    return start_embedded_governance(first, first.as_uri())


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def watcher_for(
    nodes: Web3 | Sequence[Web3],
    registry: str,
    store: PolicyStore,
    session: aiohttp.ClientSession,
    metrics: GatewayMetrics | None = None,
    **config: object,
) -> RatificationWatcher:
    nodes = [nodes] if isinstance(nodes, Web3) else list(nodes)
    return RatificationWatcher(
        Governance.model_validate(
            {"rpc_urls": [NODE_URL], "registry": registry, "confirmations": 0, **config}
        ),
        [RegistryClient(w3, registry) for w3 in nodes],
        store,
        BundleSource(session, None),
        metrics or GatewayMetrics(),
        ThreadPoolExecutor(1),  # eth-tester is not thread-safe
    )


async def test_ratified_versions_are_activated_in_order(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    w3, deployment, ratification = governed_from_v1(tmp_path)
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
    w3, deployment, _ = governed_from_v1(tmp_path)
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


async def test_a_chain_reporting_an_older_version_is_shown_and_never_followed(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    first = copy_policy(tmp_path, "v1")
    w3, deployment, _ = start_embedded_governance(first, first.as_uri())
    second = copy_policy(tmp_path, "v2", "note := 2")
    ratify_embedded(w3, deployment, second, second.as_uri())
    store = PolicyStore()
    assert await watcher_for(w3, deployment.registry, store, session).sync_once() is not None
    # A node that lags (or a chain rolled back): only version 1 ratified there.
    behind, behind_deployment, _ = start_embedded_governance(first, first.as_uri())
    watcher = watcher_for(behind, behind_deployment.registry, store, session)
    assert await watcher.sync_once() is None
    assert store.active is not None and store.active.version == 2
    assert watcher.state is State.WARN
    assert "reports version 1, older than the one in force; keeping version 2" in watcher.detail
    caught_up = watcher_for(w3, deployment.registry, store, session)
    assert await caught_up.sync_once() is None
    assert caught_up.state is State.OK


async def test_confirmations_delay_activation(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    w3, deployment, _ = governed_from_v1(tmp_path)
    store = PolicyStore()
    watcher = watcher_for(w3, deployment.registry, store, session, confirmations=3)
    assert await watcher.sync_once() is None  # the execute block is the head: not confirmed yet
    w3.provider.ethereum_tester.mine_blocks(3)  # type: ignore[attr-defined]
    activated = await watcher.sync_once()
    assert activated is not None and activated.version == 1


async def test_unreachable_chain_keeps_the_last_verified_version(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    w3, deployment, _ = governed_from_v1(tmp_path)
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
    dead = Web3(HTTPProvider("http://127.0.0.1:9", request_kwargs={"timeout": 1}))
    store = PolicyStore()
    watcher = watcher_for(dead, "0x" + "11" * 20, store, session)
    await watcher.sync_once()
    assert store.active is None
    assert watcher.state is State.ERROR


# --- a bundle that cannot be read never takes the watcher down ------------------------------


def ratify_digest(w3: Web3, deployment: Any, digest: str, uri: str) -> Ratification:
    """Ratify ``digest`` as it is, through the whole vote (the deployer holds every vote)."""
    chain = EmbeddedChain(w3)
    sender = chain.sender(0)
    community = Community.from_deployment(w3, deployment)
    proposal = community.propose_ratification(sender, digest, uri, "")
    chain.mine_until(proposal.vote_start + 1)
    community.vote(sender, proposal.proposal_id, Support.FOR)
    chain.mine_until(proposal.vote_end + 1)
    chain.advance_time_to(community.queue(sender, proposal.proposal_id))
    ratification = community.execute(sender, proposal.proposal_id)
    assert ratification is not None
    return ratification


def tar_gz_of(files: dict[str, bytes], path: Path) -> Path:
    with tarfile.open(path, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize(
    "manifest",
    [b"{not json", b"[]", b'{"roots": "agora"}', b'{"roots": [1]}'],
    ids=["not-json", "not-object", "roots-string", "roots-not-strings"],
)
async def test_a_malformed_manifest_is_reported_and_the_watcher_goes_on(
    tmp_path: Path, session: aiohttp.ClientSession, manifest: bytes
) -> None:
    w3, deployment, _ = governed_from_v1(tmp_path)
    store, metrics = PolicyStore(), GatewayMetrics()
    watcher = watcher_for(w3, deployment.registry, store, session, metrics)
    await watcher.sync_once()
    # Version 2 is exactly the ratified bytes, but its manifest is not what OPA reads.
    files = {".manifest": manifest, "agora/main.rego": b"package agora.main\n"}
    archive = tar_gz_of(files, tmp_path / "v2.tar.gz")
    ratify_digest(w3, deployment, digest_of_files(files), archive.as_uri())
    assert await watcher.sync_once() is None
    assert store.active is not None and store.active.version == 1
    assert watcher.state is State.WARN
    assert "ratified version 2 refused: invalid bundle" in watcher.detail
    assert "keeping version 1" in watcher.detail
    exposition = metrics.exposition().decode()
    assert 'agora_bundle_verifications_total{result="invalid"} 1.0' in exposition

    # The community fixes it with version 3: the same watcher activates it.
    third = copy_policy(tmp_path, "v3", "note := 3")
    ratify_embedded(w3, deployment, third, third.as_uri())
    activated = await watcher.sync_once()
    assert activated is not None and activated.version == 3


class ExplodingSource(BundleSource):
    """A source failing in a way nobody planned for, its message holding a credential."""

    async def fetch(self, digest: str, uri: str) -> Bundle:
        raise RuntimeError("boom at https://user:hunter2@rpc.example/v3/SECRETKEY")


async def test_an_unexpected_failure_fetching_a_bundle_is_reported(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    w3, deployment, _ = governed_from_v1(tmp_path)
    metrics = GatewayMetrics()
    watcher = RatificationWatcher(
        Governance.model_validate(
            {"rpc_urls": [NODE_URL], "registry": deployment.registry, "confirmations": 0}
        ),
        [RegistryClient(w3, deployment.registry)],
        PolicyStore(),
        ExplodingSource(session, None),
        metrics,
        ThreadPoolExecutor(1),
    )
    assert await watcher.sync_once() is None
    assert watcher.state is State.ERROR
    assert "unexpected RuntimeError: boom at https://rpc.example" in watcher.detail
    assert "hunter2" not in watcher.detail and "SECRETKEY" not in watcher.detail
    assert 'agora_bundle_verifications_total{result="error"} 1.0' in metrics.exposition().decode()


async def test_the_watcher_loop_survives_an_unexpected_exception(
    tmp_path: Path, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    w3, deployment, _ = governed_from_v1(tmp_path)
    store = PolicyStore()
    watcher = watcher_for(w3, deployment.registry, store, session, poll_s=0.05)
    honest = watcher.sync_once
    rounds: list[str] = []

    async def flaky() -> object:
        rounds.append(watcher.detail)
        if len(rounds) == 1:
            raise KeyError("a bug")
        return await honest()

    monkeypatch.setattr(watcher, "sync_once", flaky)
    await watcher.start()
    try:
        for _ in range(200):
            if store.active is not None:
                break
            await asyncio.sleep(0.02)
    finally:
        await watcher.stop()
    assert store.active is not None and store.active.version == 1
    assert "checking the chain failed: unexpected KeyError" in rounds[1]


# --- several nodes: they must agree -------------------------------------------------------

CURRENT = "0x9fa6a6e3"  # PolicyRegistry.current()
VERSION = "0xd3cbde31"  # PolicyRegistry.version(uint256)
Lie = Callable[[str, Any, RPCResponse], RPCResponse]


def liar(honest: Web3, lie: Lie) -> Web3:
    """Another node on the same chain, whose JSON-RPC answers pass through ``lie``."""

    class Lying(Web3Middleware):
        def wrap_make_request(self, make_request: Any) -> Any:
            def middleware(method: RPCEndpoint, params: Any) -> RPCResponse:
                return lie(method, params, make_request(method, params))

            return middleware

    w3 = Web3(honest.provider)
    w3.middleware_onion.add(Lying)
    return w3


def ratification_result(version: int, digest: str, uri: str, block: int) -> str:
    values = (version, to_bytes32(digest), uri, block)
    return "0x" + encode(["uint256", "bytes32", "string", "uint256"], values).hex()


def forging(call: str, forged: Callable[[], str]) -> Lie:
    """A lie about every ``eth_call`` to the function with selector ``call``."""

    def lie(method: str, params: Any, response: RPCResponse) -> RPCResponse:
        if method == "eth_call" and params[0]["data"].startswith(call):
            return {**response, "result": forged()}
        return response

    return lie


def both(*lies: Lie) -> Lie:
    def lie(method: str, params: Any, response: RPCResponse) -> RPCResponse:
        for each in lies:
            response = each(method, params, response)
        return response

    return lie


async def test_nodes_that_disagree_activate_nothing_and_are_named(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    w3, deployment, one = governed_from_v1(tmp_path)
    store = PolicyStore()
    await watcher_for(w3, deployment.registry, store, session).sync_once()
    second = copy_policy(tmp_path, "v2", "note := 2")
    two = ratify_embedded(w3, deployment, second, second.as_uri())
    # Node 2 lies consistently: version 2 is another bundle, in current() and in version(2).
    evil = "sha256:" + "e" * 64
    forged = lambda: ratification_result(2, evil, two.uri, two.block_number)  # noqa: E731
    lying = liar(w3, both(forging(CURRENT, forged), forging(VERSION, forged)))
    assert RegistryClient(lying, deployment.registry).ratified_at(two.block_number) is not None
    watcher = watcher_for([w3, lying], deployment.registry, store, session)
    assert await watcher.sync_once() is None
    assert store.active is not None and store.active.digest == one.digest
    assert watcher.state is State.WARN
    assert watcher.detail.startswith("chain answers refused: nodes disagree at block")
    assert f"node 1 (in-process) says version 2 {two.digest}" in watcher.detail
    assert f"node 2 (in-process) says version 2 {evil}" in watcher.detail
    assert watcher.stale  # a refused reading is not a successful sync


async def test_a_node_on_another_chain_blocks_activation(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    w3, deployment, _ = governed_from_v1(tmp_path)

    def other_chain(method: str, params: Any, response: RPCResponse) -> RPCResponse:
        return {**response, "result": 5} if method == "eth_chainId" else response

    store = PolicyStore()
    watcher = watcher_for([w3, liar(w3, other_chain)], deployment.registry, store, session)
    assert await watcher.sync_once() is None
    assert store.active is None and watcher.state is State.ERROR
    assert "nodes are on different chains" in watcher.detail
    assert "node 2 (in-process) chain id 5" in watcher.detail

    pinned = watcher_for(w3, deployment.registry, store, session, chain_id=1)
    assert await pinned.sync_once() is None
    assert store.active is None
    assert "wrong network: in-process reports chain id" in pinned.detail
    assert "governance.chain_id is 1" in pinned.detail


@pytest.mark.parametrize(
    ("version", "message"),
    [(2**255, "beyond any real registry"), (2, "the registry does not list it")],
)
async def test_a_node_cannot_move_the_version_beyond_what_the_registry_lists(
    tmp_path: Path, session: aiohttp.ClientSession, version: int, message: str
) -> None:
    w3, deployment, one = governed_from_v1(tmp_path)
    forged = lambda: ratification_result(version, one.digest, one.uri, one.block_number)  # noqa: E731
    store = PolicyStore()
    lying = liar(w3, forging(CURRENT, forged))
    watcher = watcher_for(lying, deployment.registry, store, session)
    assert await watcher.sync_once() is None
    assert store.active is None
    assert watcher.state is State.ERROR
    assert "chain answers refused: in-process is not believed" in watcher.detail
    assert message in watcher.detail


async def test_a_node_down_blocks_activation_unless_a_quorum_allows_it(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    w3, deployment, _ = governed_from_v1(tmp_path)
    dead = Web3(HTTPProvider("http://127.0.0.1:9", request_kwargs={"timeout": 1}))
    store = PolicyStore()
    everyone = watcher_for([w3, dead], deployment.registry, store, session)
    assert await everyone.sync_once() is None
    assert store.active is None
    assert everyone.detail.startswith("chain unreachable: 1 of 2 nodes answered, 2 needed")
    assert "node 2 (http://127.0.0.1:9)" in everyone.detail

    one_of_two = watcher_for([w3, dead], deployment.registry, store, session, quorum=1)
    activated = await one_of_two.sync_once()
    assert activated is not None and activated.version == 1
    assert one_of_two.state is State.WARN
    assert "enforcing ratified version 1; not answering: node 2 (http://127.0.0.1:9)" in (
        one_of_two.detail
    )


# --- secrets in RPC URLs ------------------------------------------------------------------


@pytest.fixture
async def refusing_node() -> AsyncIterator[int]:
    """A loopback "node" answering every JSON-RPC call with 401, as providers do to a bad key."""

    async def refuse(request: web.Request) -> web.Response:
        return web.json_response({"error": "invalid project id"}, status=401)

    app = web.Application()
    app.router.add_post("/{tail:.*}", refuse)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


SECRETS = ("hunter2", "SECRETKEY", "QUERYSECRET", "apikey")


async def test_secrets_in_rpc_urls_never_show(
    refusing_node: int, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    urls = [
        f"http://user:hunter2@127.0.0.1:{refusing_node}/v3/SECRETKEY?apikey=QUERYSECRET",
        "http://user:hunter2@127.0.0.1:9/v3/SECRETKEY?apikey=QUERYSECRET",
    ]
    settings = Settings.model_validate(
        {
            "auth": {"required": False},
            "governance": {
                "chain": "rpc",
                "rpc_urls": urls,
                "registry": "0x" + "11" * 20,
                "confirmations": 0,
                "poll_s": 60,
                "rpc_timeout_s": 2,
            },
        }
    )
    metrics = GatewayMetrics()
    caplog.set_level(logging.DEBUG)
    watcher = await start_watcher(settings, PolicyStore(), session, metrics)
    try:
        await watcher.sync_once()
        detail = watcher.detail
    finally:
        await watcher.stop()
    assert "HTTP 401" in detail and "Connection refused" in detail
    assert f"node 1 (http://127.0.0.1:{refusing_node})" in detail
    assert "urllib3.connectionpool" in {record.name for record in caplog.records}
    shown = "\n".join([detail, caplog.text, metrics.exposition().decode()])
    for secret in SECRETS:
        assert secret not in shown


async def test_chain_errors_never_carry_the_url(refusing_node: int) -> None:
    url = f"http://user:hunter2@127.0.0.1:{refusing_node}/v3/SECRETKEY?apikey=QUERYSECRET"
    with pytest.raises(ChainError) as refused:
        await asyncio.to_thread(connect, url, timeout_s=2)
    message = str(refused.value)
    assert f"connecting to http://127.0.0.1:{refusing_node}" in message and "HTTP 401" in message
    assert not any(secret in message for secret in SECRETS)


# --- the configuration of the nodes ---------------------------------------------------------


def rpc_settings(tmp_path: Path, **governance: object) -> Settings:
    """Settings read from a configuration file with this ``governance`` section."""
    section = {"chain": "rpc", "registry": "0x" + "11" * 20, **governance}
    path = tmp_path / "agora.yaml"
    path.write_text(yaml.safe_dump({"auth": {"required": False}, "governance": section}))
    return load_settings(path, {})


@pytest.mark.parametrize(
    "url",
    [
        "http://rpc.example:8545",
        "http://user:hunter2@node.example/v3/SECRETKEY?apikey=QUERYSECRET",
        "http://10.0.0.7:8545",
    ],
)
def test_rpc_urls_must_be_https_except_on_loopback(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError) as refused:
        rpc_settings(tmp_path, rpc_urls=["https://ok.example", url])
    message = str(refused.value)
    assert "governance.rpc_urls.1: " in message and "must use https" in message
    assert not any(secret in message for secret in SECRETS)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8545", "http://[::1]:8545", "http://localhost:8545/", "https://x.io"]
)
def test_https_and_loopback_rpc_urls_are_accepted(tmp_path: Path, url: str) -> None:
    settings = rpc_settings(tmp_path, rpc_urls=[url])
    assert settings.governance is not None and len(settings.governance.rpc_urls) == 1


def test_the_quorum_is_at_most_the_number_of_nodes(tmp_path: Path) -> None:
    urls = ["https://a.example", "https://b.example"]
    settings = rpc_settings(tmp_path, rpc_urls=urls, quorum=2, chain_id=1)
    assert settings.governance is not None and settings.governance.quorum == 2
    with pytest.raises(ConfigError, match=r"governance\.quorum: .*3 is more than the 2 rpc_urls"):
        rpc_settings(tmp_path, rpc_urls=urls, quorum=3)
    with pytest.raises(ConfigError, match=r"governance\.quorum: .*greater than or equal to 1"):
        rpc_settings(tmp_path, rpc_urls=urls, quorum=0)
