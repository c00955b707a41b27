"""The community loop on a real Ethereum node, driven only through ``agora gov``.

geth runs in dev mode with a block every second, the contracts are deployed by
``agora gov deploy`` with short voting and timelock delays, and every step is a
subprocess of the real ``agora`` entry point.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from gateway.chain.registry import RegistryClient
from gateway.chain.tokens import TOKEN_UNIT
from gateway.gov.deploy import Deployment
from gateway.gov.environment import (
    DEPLOYMENT_ENV,
    KEYSTORE_PASSWORD_ENV,
    PRIVATE_KEY_ENV,
    RPC_URL_ENV,
)
from gateway.pinning.bundle import load_bundle
from tests.integration.geth import DEV_CHAIN_ID, GethNode, start_geth
from tests.support import ROOT, run_agora

pytestmark = pytest.mark.integration

FAST_RULES = ["--voting-delay", "1", "--voting-period", "5", "--timelock-delay", "1"]


def agora_gov(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``agora gov ARGS`` through the real entry point, in a fresh process."""
    return run_agora("gov", *args, env=env)


def succeeds(node: GethNode, env: dict[str, str], *args: str) -> Any:
    """Run a ``--json`` command that must succeed; its parsed output."""
    result = agora_gov(env, *args, "--json")
    assert result.returncode == 0, (
        f"agora gov {' '.join(args)} failed:\n{result.stderr}\ngeth:\n{node.log_tail()}"
    )
    return json.loads(result.stdout)


@dataclass
class Community:
    """A node with the contracts deployed by the CLI, and the deployer's environment."""

    node: GethNode
    env: dict[str, str]
    deployment: Deployment

    def ok(self, *args: str) -> Any:
        return succeeds(self.node, self.env, *args)

    def gov(self, *args: str) -> subprocess.CompletedProcess[str]:
        return agora_gov(self.env, *args)

    def refused(self, *args: str, env: dict[str, str] | None = None) -> str:
        """Run a command that must fail cleanly; its one-line error."""
        result = agora_gov({**self.env, **(env or {})}, *args)
        assert result.returncode == 2, result.stdout + result.stderr
        assert result.stderr.startswith("agora gov: error: ") and "Traceback" not in result.stderr
        return result.stderr


@pytest.fixture(scope="module")
def community(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Community]:
    workdir = tmp_path_factory.mktemp("geth")
    with start_geth(workdir) as node:
        deployer = node.new_account()
        out = workdir / "deployment.json"
        env = {RPC_URL_ENV: node.url, PRIVATE_KEY_ENV: deployer.key.hex()}
        started = time.monotonic()
        succeeds(node, env, "deploy", *FAST_RULES, "--out", str(out))
        print(f"\nagora gov deploy on geth: {time.monotonic() - started:.1f} s")
        deployment = Deployment.load(out)
        assert deployment.chain_id == DEV_CHAIN_ID and deployment.deployer == deployer.address
        yield Community(node, {**env, DEPLOYMENT_ENV: str(out)}, deployment)


def test_the_whole_loop_through_the_cli(community: Community) -> None:
    digest = load_bundle(ROOT / "policies").digest
    uri = (ROOT / "policies").as_uri()
    assert community.ok("status")["current"] is None

    started = time.monotonic()
    proposal = community.ok("propose", "--bundle", str(ROOT / "policies"), "--uri", uri)
    pid = str(proposal["proposal_id"])
    assert proposal["digest"] == digest and digest in proposal["description"]
    vote = community.ok("vote", pid, "for", "--wait", "60", "--reason", "the default policy")
    assert vote["weight"] == 1_000_000 * TOKEN_UNIT
    listed = community.ok("status")["proposals"]
    assert [(p["proposal_id"], p["digest"], p["uri"]) for p in listed] == [(int(pid), digest, uri)]
    assert listed[0]["votes"]["for"] == 1_000_000 * TOKEN_UNIT
    community.ok("queue", pid, "--wait", "60")
    executed = community.ok("execute", pid, "--wait", "60")
    elapsed = time.monotonic() - started
    print(f"\npropose, vote, queue, execute through agora gov on geth: {elapsed:.1f} s")

    ratification = executed["ratification"]
    assert (ratification["version"], ratification["digest"], ratification["uri"]) == (
        1,
        digest,
        uri,
    )
    status = community.ok("status", "--all")
    assert status["current"] == ratification
    assert [p["state"] for p in status["proposals"]] == ["Executed"]
    assert community.ok("status")["proposals"] == []

    # What the gateway reads, independently of the CLI.
    registry = RegistryClient(community.node.w3, community.deployment.registry)
    current = registry.current()
    assert current is not None and (current.version, current.digest) == (1, digest)
    assert registry.ratifications_since(community.deployment.block_number) == [current]
    human = community.gov("status")
    assert f"policy in force: version 1, {digest}" in human.stdout


def test_a_proposal_voted_down_is_defeated(community: Community, tmp_path: Path) -> None:
    bundle = tmp_path / "rejected"
    (bundle / "agora").mkdir(parents=True)
    (bundle / "agora" / "main.rego").write_text("package agora.main\n\ndefault allow := true\n")
    pid = str(
        community.ok("propose", "--bundle", str(bundle), "--uri", "https://example.test/r.tar.gz")[
            "proposal_id"
        ]
    )
    community.ok("vote", pid, "against", "--wait", "60")
    error = community.refused("queue", pid, "--wait", "60")
    # Against votes do not count towards the quorum, so this one fails on both counts.
    assert f"proposal {pid} was defeated: below quorum (0 AGORA of the 40000 AGORA" in error
    current = community.ok("status")["current"]
    assert current is None or current["digest"] != load_bundle(bundle).digest


def test_wrong_network_missing_contract_and_missing_votes_are_clear(
    community: Community, tmp_path: Path
) -> None:
    error = community.refused("status", "--chain-id", "1")
    assert "wrong network: --chain-id 1 but the deployment file is for chain 1337" in error

    stranger = community.node.new_account()
    error = community.refused(
        "status", "--governor", community.deployment.governor, "--registry", stranger.address,
        env={DEPLOYMENT_ENV: ""},
    )  # fmt: skip
    assert f"no contract at {stranger.address}: it is not a PolicyRegistry" in error

    error = community.refused("status", "--rpc-url", "http://127.0.0.1:9")
    assert "JSON-RPC endpoint is unreachable (Connection refused)" in error

    # An account without delegated tokens cannot vote; its key comes from a keystore.
    bundle = tmp_path / "other"
    bundle.mkdir()
    (bundle / "data.json").write_text('{"n": 1}')
    pid = str(community.ok("propose", "--bundle", str(bundle), "--uri", "u")["proposal_id"])
    keystore = tmp_path / "stranger.json"
    keystore.write_text(json.dumps(Account.encrypt(stranger.key, "pw", iterations=2)))
    error = community.refused(
        "vote", pid, "for", "--wait", "60", "--keystore", str(keystore),
        env={PRIVATE_KEY_ENV: "", KEYSTORE_PASSWORD_ENV: "pw"},
    )  # fmt: skip
    assert f"insufficient votes: {stranger.address} had no voting power" in error
