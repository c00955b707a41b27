"""The decision log's checkpoints anchored on a real ``geth --dev`` node.

``agora gov anchor-deploy`` deploys LogAnchor with the anchoring worker's key
as anchorer; the worker anchors a log that grows, over JSON-RPC with its key
from the environment; ``agora gov anchors`` lists what anyone can now hold the
operator to.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount

from gateway.chain.anchoring import AnchorWorker, anchoring_worker
from gateway.chain.anchors import read_anchors
from gateway.gov.environment import PRIVATE_KEY_ENV, RPC_URL_ENV
from gateway.lifecycle import State
from tests.integration.geth import DEV_CHAIN_ID, GethNode, start_geth
from tests.support import run_agora
from tests.unit.transparency.test_log import LOG_KEY, rewrite, run_writer

pytestmark = pytest.mark.integration

ORIGIN = "agora.example/log/geth"


def root(size: int) -> bytes:
    return hashlib.sha256(f"tree of {size}".encode()).digest()


def deploy_anchor(node: GethNode) -> tuple[LocalAccount, LocalAccount, dict[str, str], str]:
    """LogAnchor deployed with ``agora gov anchor-deploy``: the deployer, the worker's key
    (the anchorer), the CLI's environment, and the contract's address."""
    deployer, gateway_key = node.new_account(), node.new_account(ether=1)
    env = {RPC_URL_ENV: node.url, PRIVATE_KEY_ENV: deployer.key.hex()}
    deployed = run_agora(
        "gov", "anchor-deploy", "--anchorer", gateway_key.address, "--json", env=env
    )
    assert deployed.returncode == 0, deployed.stderr + node.log_tail()
    return deployer, gateway_key, env, json.loads(deployed.stdout)["anchor"]


def test_the_worker_anchors_a_growing_log_on_geth(tmp_path: Path) -> None:
    with start_geth(tmp_path, block_period_s=1) as node:
        deployer, gateway_key, env, address = deploy_anchor(node)

        key_env = {"AGORA_ANCHOR_PRIVATE_KEY": gateway_key.key.hex()}
        heads = [(ORIGIN, 10, root(10)), (ORIGIN, 10, root(10)), (ORIGIN, 42, root(42))]
        current: list[tuple[str, int, bytes]] = []

        async def run() -> AnchorWorker:
            worker = anchoring_worker(
                lambda: current[-1] if current else None,
                rpc_url=node.url,
                contract=address,
                interval_s=3600,
                chain_id=DEV_CHAIN_ID,
                environ=key_env,
            )
            for head in heads:
                current.append(head)
                await worker.tick()
                assert worker.state is State.OK, worker.detail
            return worker

        worker = asyncio.run(run())
        assert worker.anchors_sent == 2

        listed = run_agora("gov", "anchors", ORIGIN, "--anchor", address, "--json", env=env)
        assert listed.returncode == 0, listed.stderr
        anchors = json.loads(listed.stdout)["anchors"]
        assert [(a["index"], a["size"], a["root"]) for a in anchors] == [
            (0, 10, root(10).hex()),
            (1, 42, root(42).hex()),
        ]
        assert anchors[0]["block_number"] < anchors[1]["block_number"]
        read = read_anchors(node.url, address, ORIGIN, chain_id=DEV_CHAIN_ID)
        assert [(a.size, a.root) for a in read] == [(10, root(10)), (42, root(42))]

        refused = run_agora(
            "gov", "anchors", ORIGIN, "--anchor", deployer.address, env=env
        )  # an account, not the contract
        assert refused.returncode == 2 and "no contract at" in refused.stderr


def test_agora_log_verify_holds_the_files_to_every_anchor_on_geth(tmp_path: Path) -> None:
    """A real log, its signed checkpoints anchored by the worker; then the auditor's check
    with only the chain, the files and ``agora``: a cut tail and a rewritten record (its
    hash chain recomputed, so `agora log verify` alone passes) are both caught."""
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    with start_geth(tmp_path, block_period_s=1) as node:
        _, gateway_key, _, address = deploy_anchor(node)

        async def write_and_anchor() -> None:
            worker = anchoring_worker(
                lambda: writer.transparency.tree_head(),
                rpc_url=node.url,
                contract=address,
                interval_s=3600,
                chain_id=DEV_CHAIN_ID,
                environ={"AGORA_ANCHOR_PRIVATE_KEY": gateway_key.key.hex()},
            )
            for first in (0, 10):  # two checkpoints, each anchored
                writer = await run_writer(log_dir, first, 10, durable=True, checkpoint_every=10)
                await worker.tick()
                assert worker.state is State.OK, worker.detail
            assert worker.anchors_sent == 2

        asyncio.run(write_and_anchor())
        path = log_dir / "decisions.jsonl"
        origin = LOG_KEY.name
        verify_args = ("log", "verify", str(path), "--chain", node.url, "--anchor", address)
        verify_args += ("--origin", origin, "--chain-id", str(DEV_CHAIN_ID))

        checked = run_agora(*verify_args)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "anchors: 2 checkpoints" in checked.stdout and "each root matches" in checked.stdout

        whole = path.read_bytes()
        rewrite(path, 3)
        rewritten = run_agora(*verify_args)
        assert rewritten.returncode == 1 and "the log was rewritten" in rewritten.stdout
        assert run_agora("log", "verify", str(path)).returncode == 0  # the chain alone passes

        path.write_bytes(b"".join(whole.splitlines(keepends=True)[:15]))
        cut = run_agora(*verify_args)
        assert cut.returncode == 1 and "were cut" in cut.stdout, cut.stdout

        nothing = run_agora(*verify_args[:-4], "--origin", "another/log")
        assert nothing.returncode == 2 and "nothing is anchored" in nothing.stdout
