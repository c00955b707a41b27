"""The embedded chain over JSON-RPC: plain web3 and the real ``agora gov`` against the bridge.

The bridge serves on a free loopback port and mines a block every 0.2 s, so that
the voting delay, the voting period and the timelock delay pass on their own, as
on ``geth --dev``. The CLI runs as subprocesses of the real entry point.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import sys
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from eth_account import Account
from eth_tester.exceptions import TransactionFailed
from web3 import HTTPProvider, Web3
from web3._utils.error_formatters_utils import raise_contract_logic_error_on_revert
from web3.exceptions import ContractCustomError, ContractLogicError
from web3.types import RPCResponse

from gateway.chain.artifacts import load_artifact
from gateway.chain.demo import ratify_embedded
from gateway.chain.digests import to_bytes32
from gateway.chain.embedded import EmbeddedChain
from gateway.chain.errors import describe_revert
from gateway.chain.registry import Ratification, RegistryClient
from gateway.chain.rpc_bridge import RpcBridge, mine_block_now, revert_error, to_json_rpc
from gateway.exceptions import ChainError
from gateway.gov.deploy import Deployment, GovernanceParams, deploy_governance
from gateway.gov.environment import PRIVATE_KEY_ENV
from gateway.gov.transactions import Sender
from gateway.governance import EmbeddedGovernance
from gateway.lifecycle import State
from gateway.pinning.bundle import load_bundle
from tests.support import ROOT, tool_env

PERIOD_S = 0.2
# A vote window of about 20 s at 5 blocks a second: room for a CLI process to start
# on a busy machine. The timelock delay (2 s) then passes in a few blocks.
PARAMS = GovernanceParams(voting_delay=1, voting_period=100, timelock_delay=2)


@dataclass
class Bridged:
    bridge: RpcBridge
    deployment: Deployment
    deployment_file: Path
    first: Ratification
    workdir: Path

    @property
    def url(self) -> str:
        return self.bridge.url

    def web3(self) -> Web3:
        """A client like any other: HTTP to the bridge (blocking: call it in a thread)."""
        return Web3(HTTPProvider(self.url, request_kwargs={"timeout": 30}))


def start_chain(bundle: Path) -> tuple[Web3, Deployment, Ratification]:
    """``start_embedded_governance`` with rules a person (or a CLI process) can follow live."""
    chain = EmbeddedChain()
    deployment = deploy_governance(chain.sender(), PARAMS)
    return chain.w3, deployment, ratify_embedded(chain.w3, deployment, bundle, bundle.as_uri())


def copy_policy(workdir: Path, name: str, extra: str = "") -> Path:
    target = workdir / name
    shutil.copytree(ROOT / "policies", target)
    if extra:
        (target / "agora" / "extra.rego").write_text(f"package agora.extra\n\n{extra}\n")
    return target


@pytest.fixture(scope="module")
async def bridged(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Bridged]:
    workdir = tmp_path_factory.mktemp("rpc-bridge")
    executor = ThreadPoolExecutor(1, thread_name_prefix="agora-chain")
    loop = asyncio.get_running_loop()
    w3, deployment, first = await loop.run_in_executor(
        executor, start_chain, copy_policy(workdir, "v1")
    )
    bridge = RpcBridge(EmbeddedGovernance(w3, deployment, executor), port=0, period_s=PERIOD_S)
    await bridge.start()
    try:
        deployment_file = bridge.write_deployment(workdir / "deployment.json")
        yield Bridged(bridge, deployment, deployment_file, first, workdir)
    finally:
        await bridge.stop()
        executor.shutdown()
    assert bridge.state is State.STOPPED


# -- encoding and errors, without a server ------------------------------------------------


def test_values_are_encoded_as_a_node_writes_them() -> None:
    block = {
        "number": 26,
        "hash": "0xab",
        "logsBloom": 0,
        "transactions": [b"\x01\x02"],
        "gasUsedRatio": [0.5],
        "nested": {"status": 1, "ok": True, "to": None},
    }
    encoded = to_json_rpc(block)
    assert encoded["number"] == "0x1a" and encoded["hash"] == "0xab"
    assert encoded["logsBloom"] == "0x" + "00" * 256
    assert encoded["transactions"] == ["0x0102"] and encoded["gasUsedRatio"] == [0.5]
    assert encoded["nested"] == {"status": "0x1", "ok": True, "to": None}
    assert to_json_rpc(0) == "0x0"
    with pytest.raises(TypeError):
        to_json_rpc(object())


def as_web3_sees_it(error: dict[str, Any]) -> ContractLogicError:
    """What web3's HTTP provider raises for an ``eth_call``/``eth_estimateGas`` error reply."""
    with pytest.raises(ContractLogicError) as raised:
        raise_contract_logic_error_on_revert(
            cast(RPCResponse, {"jsonrpc": "2.0", "id": 1, "error": error})
        )
    return raised.value


def test_reverts_are_reported_like_geth_and_decode_the_same() -> None:
    caller = "0x" + "ab" * 20
    custom = Web3.keccak(text="NotTimelock(address)")[:4] + bytes(12) + bytes.fromhex(caller[2:])
    error = revert_error(TransactionFailed(f"execution reverted: {custom!r}"))
    assert error == {"code": 3, "message": "execution reverted", "data": "0x" + custom.hex()}
    exc = as_web3_sees_it(error)
    assert isinstance(exc, ContractCustomError)
    assert describe_revert(exc).startswith("only the governance timelock may ratify a policy")

    error = revert_error(TransactionFailed("execution reverted: not allowed"))
    assert error["code"] == 3 and str(error["data"]).startswith("0x08c379a0")
    assert as_web3_sees_it(error).message == "execution reverted: not allowed"

    error = revert_error(TransactionFailed("execution reverted: b''"))
    assert error == {"code": 3, "message": "execution reverted"}
    assert as_web3_sees_it(error).message == "execution reverted"


def test_blocks_follow_the_wall_clock_and_never_go_back() -> None:
    chain = EmbeddedChain()
    latest = int(chain.w3.eth.get_block("latest")["timestamp"])
    # The clock is ahead of the chain (eth-tester alone adds one second a block): catch up.
    assert mine_block_now(chain, now=latest + 100) == latest + 100
    assert chain.block_number == 1
    # The chain is ahead of the clock (a time travel, or several blocks a second): +1 s.
    assert mine_block_now(chain, now=latest + 50) == latest + 101
    assert mine_block_now(chain) >= int(time.time())


# -- a plain web3 client over HTTP ----------------------------------------------------------


async def test_web3_reads_the_chain_and_the_registry_over_http(bridged: Bridged) -> None:
    def read() -> tuple[int, Ratification | None, Ratification, int, int]:
        w3 = bridged.web3()
        registry = RegistryClient(w3, bridged.deployment.registry)
        registry.check()
        first_block = int(w3.eth.block_number)
        time.sleep(5 * PERIOD_S)
        return (
            int(w3.eth.chain_id),
            registry.current(),
            registry.version(1),
            int(w3.eth.block_number) - first_block,
            int(w3.eth.get_block("latest")["timestamp"]),
        )

    chain_id, current, first, new_blocks, timestamp = await asyncio.to_thread(read)
    assert chain_id == bridged.deployment.chain_id == bridged.bridge.chain_id
    assert current is not None and current.version >= 1
    assert first == bridged.first
    assert new_blocks >= 2, "the bridge mines blocks on its own"
    assert timestamp >= int(time.time()) - 1, "block timestamps never fall behind the clock"
    assert bridged.bridge.blocks_mined >= 2 and bridged.bridge.state is State.OK


async def test_a_revert_reaches_the_client_with_its_decoded_reason(bridged: Bridged) -> None:
    deployer = Account.from_key(bridged.bridge.deployer_key)
    assert deployer.address == bridged.deployment.deployer

    def ratify_directly() -> None:
        w3 = bridged.web3()
        registry = w3.eth.contract(
            address=bridged.deployment.registry, abi=load_artifact("PolicyRegistry").abi
        )
        digest = to_bytes32("sha256:" + "11" * 32)
        Sender(w3, deployer).send(registry.functions.ratify(digest, "x"), "ratifying directly")

    with pytest.raises(ChainError, match="only the governance timelock may ratify a policy"):
        await asyncio.to_thread(ratify_directly)  # eth_estimateGas reverts

    def read_missing_version() -> None:
        RegistryClient(bridged.web3(), bridged.deployment.registry).version(99)

    with pytest.raises(ChainError, match="policy version 99 does not exist"):
        await asyncio.to_thread(read_missing_version)  # eth_call reverts


async def test_json_rpc_protocol(bridged: Bridged) -> None:
    async with httpx.AsyncClient(base_url=bridged.url, timeout=30) as client:

        async def post(content: str) -> Any:
            response = await client.post("/", content=content)
            return response.json() if response.content else response.status_code

        chain_id = hex(bridged.deployment.chain_id)
        assert await post('{"jsonrpc": "2.0", "id": 7, "method": "eth_chainId"}') == {
            "jsonrpc": "2.0",
            "id": 7,
            "result": chain_id,
        }
        batch = await post(
            '[{"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []},'
            ' {"jsonrpc": "2.0", "id": "b", "method": "net_version", "params": []},'
            ' {"jsonrpc": "2.0", "method": "eth_blockNumber", "params": []}]'
        )
        assert batch == [
            {"jsonrpc": "2.0", "id": 1, "result": chain_id},
            {"jsonrpc": "2.0", "id": "b", "result": "1"},
        ]
        # A notification (no id) gets no reply.
        assert await post('{"jsonrpc": "2.0", "method": "eth_blockNumber"}') == 204

        def error_of(reply: Any) -> tuple[Any, int]:
            return reply["id"], reply["error"]["code"]

        assert error_of(await post("{not json")) == (None, -32700)
        assert error_of(await post("[]")) == (None, -32600)
        assert error_of((await post("[1]"))[0]) == (None, -32600)  # a batch of one bad request
        assert error_of(await post('{"jsonrpc": "2.0", "id": 1}')) == (1, -32600)
        assert error_of(
            await post('{"jsonrpc": "2.0", "id": 2, "method": "eth_chainId", "params": {}}')
        ) == (2, -32602)
        for method in ("eth_noSuchMethod", "evm_mine", "evm_revert", "testing_timeTravel"):
            reply = await post(f'{{"jsonrpc": "2.0", "id": 3, "method": "{method}"}}')
            assert error_of(reply) == (3, -32601), reply
        reply = await post(
            '{"jsonrpc": "2.0", "id": 4, "method": "eth_getBlockByNumber",'
            ' "params": ["0x0", false]}'
        )
        block = reply["result"]
        assert block["number"] == "0x0" and len(block["logsBloom"]) == 2 + 512
        assert block["parentHash"] == "0x" + "00" * 32 and "parent_hash" not in block


# -- the real CLI ---------------------------------------------------------------------------


async def agora_gov(bridged: Bridged, *args: str) -> Any:
    """``agora gov ARGS --json`` in a fresh process against the bridge; its parsed output."""
    command = [sys.executable, "-m", "gateway", "gov", *args, "--json"]
    command += ["--rpc-url", bridged.url, "--deployment", str(bridged.deployment_file)]
    process = await asyncio.create_subprocess_exec(
        *command,
        env=tool_env({PRIVATE_KEY_ENV: bridged.bridge.deployer_key}),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), 90)
    except TimeoutError:
        process.kill()
        raise
    assert process.returncode == 0, f"agora gov {' '.join(args)}: {stderr.decode()}"
    return json.loads(stdout)


async def test_the_cli_ratifies_a_second_version_through_the_bridge(bridged: Bridged) -> None:
    started = time.monotonic()
    status = await agora_gov(bridged, "status")
    assert status["chain_id"] == bridged.deployment.chain_id
    assert status["current"]["version"] == 1 and status["proposals"] == []

    second = copy_policy(bridged.workdir, "v2", "answer := 42")
    digest = load_bundle(second).digest
    proposal = await agora_gov(
        bridged, "propose", "--bundle", str(second), "--uri", second.as_uri()
    )
    assert (proposal["proposal_id"], proposal["digest"]) == (2, digest)  # ids are sequential
    vote = await agora_gov(bridged, "vote", "2", "for", "--wait", "60")
    assert vote["weight"] > 0
    queued = await agora_gov(bridged, "queue", "2", "--wait", "60")
    assert queued["eta"] > 0
    executed = await agora_gov(bridged, "execute", "2", "--wait", "60")
    ratification = executed["ratification"]
    assert (ratification["version"], ratification["digest"]) == (2, digest)
    elapsed = time.monotonic() - started
    print(f"\nstatus, propose, vote, queue, execute through the bridge: {elapsed:.1f} s")

    def current() -> Ratification | None:
        return RegistryClient(bridged.web3(), bridged.deployment.registry).current()

    seen = await asyncio.to_thread(current)
    assert seen is not None and (seen.version, seen.digest, seen.uri) == (
        2,
        digest,
        second.as_uri(),
    )


# -- the lifecycle --------------------------------------------------------------------------


async def test_a_taken_port_is_refused_and_stop_closes_the_port(bridged: Bridged) -> None:
    embedded = bridged.bridge.embedded
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        refused = RpcBridge(embedded, port=port)
        with pytest.raises(ChainError, match=f"cannot listen on http://127.0.0.1:{port}"):
            await refused.start()
        assert refused.state is State.ERROR

    second = RpcBridge(embedded, port=0, period_s=60)
    await second.start()
    async with httpx.AsyncClient(timeout=10) as client:
        reply = await client.post(
            second.url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}
        )
        assert reply.json()["result"] == hex(bridged.deployment.chain_id)
        await second.stop()
        assert second.state is State.STOPPED
        with pytest.raises(httpx.ConnectError):
            await client.post(second.url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"})
