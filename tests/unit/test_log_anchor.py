"""LogAnchor on the embedded chain: who may anchor, sizes that only grow, history, the worker."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator

import pytest
from eth_utils.crypto import keccak

from gateway.chain.anchoring import AnchorWorker, sending_account
from gateway.chain.anchors import Anchor, AnchorClient, deploy_anchor
from gateway.chain.artifacts import load_artifact
from gateway.exceptions import ChainError, ConfigError
from gateway.lifecycle import State
from tests.embedded_chain import EmbeddedChain

ADMIN, ANCHORER, OTHER = range(3)
ORIGIN = "agora.example/log/eu-1"


def root(n: int) -> bytes:
    return hashlib.sha256(f"root {n}".encode()).digest()


@pytest.fixture(scope="module")
def deployed() -> tuple[EmbeddedChain, str, object]:
    chain = EmbeddedChain()
    address = deploy_anchor(chain.sender(ADMIN), anchorer=chain.accounts[ANCHORER].address)
    return chain, address, chain.tester.take_snapshot()


@pytest.fixture
def chain(deployed: tuple[EmbeddedChain, str, object]) -> Iterator[EmbeddedChain]:
    found, _, snapshot = deployed
    yield found
    found.tester.revert_to_snapshot(snapshot)


@pytest.fixture
def address(deployed: tuple[EmbeddedChain, str, object]) -> str:
    return deployed[1]


def client(chain: EmbeddedChain, address: str, who: int = ANCHORER) -> AnchorClient:
    return AnchorClient(chain.w3, address, chain.sender(who))


def test_anchors_are_kept_in_order_and_read_back(chain: EmbeddedChain, address: str) -> None:
    anchors = client(chain, address)
    anchors.check()
    assert anchors.anchors(ORIGIN) == [] and anchors.latest(ORIGIN) is None
    first = anchors.anchor(ORIGIN, 5, root(5))
    second = anchors.anchor(ORIGIN, 9, root(9))
    other = anchors.anchor("agora.example/log/us-1", 2, root(2))
    assert (first.index, second.index, other.index) == (0, 1, 0)
    assert second.block_number > first.block_number and second.timestamp >= first.timestamp
    read = AnchorClient(chain.w3, address)  # anyone can read, no key needed
    assert read.anchors(ORIGIN) == [first, second]
    assert read.latest(ORIGIN) == second
    assert read.anchors("agora.example/log/us-1") == [other]

    contract = chain.w3.eth.contract(address=read.address, abi=load_artifact("LogAnchor").abi)
    logs = contract.events.Anchored().get_logs(from_block=0)
    assert [(e["args"]["origin"], e["args"]["size"]) for e in logs] == [
        (ORIGIN, 5), (ORIGIN, 9), ("agora.example/log/us-1", 2)
    ]  # fmt: skip
    assert logs[0]["args"]["originHash"] == keccak(text=ORIGIN)
    assert bytes(logs[1]["args"]["root"]) == root(9)


@pytest.mark.parametrize("size", [5, 4, 0])
def test_sizes_only_grow(chain: EmbeddedChain, address: str, size: int) -> None:
    anchors = client(chain, address)
    anchors.anchor(ORIGIN, 5, root(5))
    message = "sizes only grow" if size else "not a checkpoint"
    with pytest.raises(ChainError, match=message):
        anchors.anchor(ORIGIN, size, root(size))
    assert [a.size for a in anchors.anchors(ORIGIN)] == [5]


def test_only_an_anchorer_may_anchor(chain: EmbeddedChain, address: str) -> None:
    with pytest.raises(ChainError, match="lacks the contract's ANCHORER_ROLE"):
        client(chain, address, OTHER).anchor(ORIGIN, 1, root(1))
    with pytest.raises(ChainError, match="anchoring needs a sending key"):
        AnchorClient(chain.w3, address).anchor(ORIGIN, 1, root(1))
    # The admin grants the role to a new key (a rotation), and revokes the old one.
    contract = chain.w3.eth.contract(address=address, abi=load_artifact("LogAnchor").abi)
    role = contract.functions.ANCHORER_ROLE().call()
    admin = chain.sender(ADMIN)
    admin.send(contract.functions.grantRole(role, chain.accounts[OTHER].address), "grant")
    admin.send(contract.functions.revokeRole(role, chain.accounts[ANCHORER].address), "revoke")
    assert client(chain, address, OTHER).anchor(ORIGIN, 1, root(1)).size == 1
    with pytest.raises(ChainError, match="ANCHORER_ROLE"):
        client(chain, address, ANCHORER).anchor(ORIGIN, 2, root(2))


def test_an_address_without_the_contract_is_refused(chain: EmbeddedChain) -> None:
    with pytest.raises(ChainError, match="no contract at"):
        AnchorClient(chain.w3, chain.accounts[OTHER].address).check()


class Log:
    """Stands for the transparency log: its latest signed checkpoint."""

    def __init__(self) -> None:
        self.head: tuple[str, int, bytes] | None = None

    def latest(self) -> tuple[str, int, bytes] | None:
        return self.head


async def test_the_worker_anchors_what_grew_and_catches_a_cut_or_rewritten_log(
    chain: EmbeddedChain, address: str
) -> None:
    log = Log()
    worker = AnchorWorker(lambda: client(chain, address), log.latest, interval_s=3600)
    await worker.tick()
    assert worker.state is State.OK and worker.detail == "no signed checkpoint yet"

    log.head = (ORIGIN, 10, root(10))
    await worker.tick()
    await worker.tick()  # nothing new: nothing sent
    log.head = (ORIGIN, 25, root(25))
    await worker.tick()
    assert worker.anchors_sent == 2 and worker.state is State.OK
    assert [(a.size, a.root) for a in AnchorClient(chain.w3, address).anchors(ORIGIN)] == [
        (10, root(10)), (25, root(25))
    ]  # fmt: skip

    restarted = AnchorWorker(lambda: client(chain, address), log.latest, interval_s=3600)
    await restarted.tick()  # reads the last anchor from the chain: nothing to send
    assert restarted.anchors_sent == 0 and restarted.state is State.OK
    log.head = (ORIGIN, 20, root(20))
    await restarted.tick()
    assert restarted.state is State.ERROR and "the log was cut" in restarted.detail
    log.head = (ORIGIN, 25, root(99))
    await restarted.tick()
    assert restarted.state is State.ERROR and "the log was rewritten" in restarted.detail
    assert restarted.anchors_sent == 0


async def test_a_chain_that_fails_is_tried_again(chain: EmbeddedChain, address: str) -> None:
    attempts: list[int] = []

    def flaky() -> AnchorClient:
        attempts.append(1)
        if len(attempts) == 1:
            raise ChainError("connecting to http://node:8545: unreachable")
        return client(chain, address)

    log = Log()
    log.head = (ORIGIN, 3, root(3))
    worker = AnchorWorker(flaky, log.latest, interval_s=0.01)
    await worker.start()
    assert not worker.gates_readiness
    for _ in range(500):
        if worker.anchors_sent:
            break
        await asyncio.sleep(0.01)
    await worker.stop()
    assert worker.failures == 1 and worker.anchors_sent == 1
    assert worker.anchored is not None and isinstance(worker.anchored, Anchor)
    assert worker.state is State.STOPPED


def test_the_sending_key_comes_from_the_environment() -> None:
    with pytest.raises(ConfigError, match="AGORA_ANCHOR_PRIVATE_KEY is unset or empty"):
        sending_account(environ={})
    with pytest.raises(ConfigError, match="MY_KEY is not a valid private key"):
        sending_account("MY_KEY", {"MY_KEY": "0x1234"})
    key = "0x" + "11" * 32
    assert sending_account(environ={"AGORA_ANCHOR_PRIVATE_KEY": key}).key.hex() == key[2:]
