"""Membership and quadratic voting on a real node, through ``agora gov`` only, and a gateway
enforcing what a membership vote ratified.

One ``geth --dev`` node (a block every second) for the module; each model gets its own
deployment by ``agora gov deploy --voting ...`` with short rules, and every step is a
subprocess of the real ``agora`` entry point.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from math import isqrt
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from gateway.chain.artifacts import load_artifact
from gateway.chain.rpc import connect
from gateway.chain.tokens import TOKEN_UNIT
from gateway.exceptions import ChainError
from gateway.gov.deploy import Deployment
from gateway.gov.environment import DEPLOYMENT_ENV, PRIVATE_KEY_ENV, RPC_URL_ENV
from gateway.gov.transactions import Sender
from gateway.pinning.bundle import load_bundle
from tests.integration.conftest import RunningGateway, StartGateway
from tests.integration.geth import DEV_CHAIN_ID, GethNode, start_geth
from tests.support import ROOT, run_agora

pytestmark = pytest.mark.integration

FAST_RULES = ["--voting-delay", "1", "--voting-period", "5", "--timelock-delay", "1"]


@dataclass
class Community:
    """One deployment on the module's node, and a CLI environment per account."""

    node: GethNode
    deployment: Deployment
    envs: dict[str, dict[str, str]]  # by account name

    def ok(self, who: str, *args: str) -> Any:
        result = run_agora("gov", *args, "--json", env=self.envs[who])
        assert result.returncode == 0, (
            f"agora gov {' '.join(args)} as {who} failed:\n{result.stderr}\n"
            f"geth:\n{self.node.log_tail()}"
        )
        return json.loads(result.stdout)

    def refused(self, who: str, *args: str) -> str:
        result = run_agora("gov", *args, env=self.envs[who])
        assert result.returncode == 2, result.stdout + result.stderr
        assert result.stderr.startswith("agora gov: error: ")
        return result.stderr

    def ratify(self, bundle: Path, voters: tuple[str, ...]) -> dict[str, Any]:
        """Propose ``bundle``, vote for it with ``voters``, queue and execute; the ratification."""
        pid = str(
            self.ok(voters[0], "propose", "--bundle", str(bundle), "--uri", bundle.as_uri())[
                "proposal_id"
            ]
        )
        for who in voters:
            self.ok(who, "vote", pid, "for", "--wait", "60")
        self.ok(voters[0], "queue", pid, "--wait", "60")
        ratification: dict[str, Any] = self.ok(voters[0], "execute", pid, "--wait", "60")[
            "ratification"
        ]
        return ratification


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GethNode]:
    with start_geth(tmp_path_factory.mktemp("geth-voting")) as running:
        yield running


def deploy(
    node: GethNode, workdir: Path, accounts: dict[str, LocalAccount], *options: str
) -> Community:
    """``agora gov deploy OPTIONS`` by the first account; every account's CLI environment."""
    out = workdir / "deployment.json"
    envs = {
        name: {RPC_URL_ENV: node.url, PRIVATE_KEY_ENV: account.key.hex()}
        for name, account in accounts.items()
    }
    deployer = next(iter(accounts))
    result = run_agora("gov", "deploy", *FAST_RULES, *options, "--out", str(out), "--json",
                       env=envs[deployer])  # fmt: skip
    assert result.returncode == 0, result.stderr
    deployment = Deployment.load(out)
    assert deployment.chain_id == DEV_CHAIN_ID
    for env in envs.values():
        env[DEPLOYMENT_ENV] = str(out)
    return Community(node, deployment, envs)


@pytest.fixture(scope="module")
def members(node: GethNode, tmp_path_factory: pytest.TempPathFactory) -> Community:
    """Membership voting: the deployer and Alice are the first members; Carol is not one."""
    accounts = {name: node.new_account() for name in ("deployer", "alice", "carol")}
    return deploy(
        node,
        tmp_path_factory.mktemp("members"),
        accounts,
        "--voting", "membership",
        "--member", accounts["deployer"].address,
        "--member", accounts["alice"].address,
        "--quorum-percent", "50",
        "--proposal-threshold", "1",
        "--voting-period", "15",  # three voters, each an `agora` process of its own
    )  # fmt: skip


def bundle_copy(dest: Path, anonymous_max_tokens: int) -> Path:
    """The default policy with another output-token cap for anonymous callers."""
    shutil.copytree(ROOT / "policies", dest)
    data_file = dest / "agora" / "config" / "data.json"
    data = json.loads(data_file.read_text())
    data["max_tokens"]["anonymous"] = anonymous_max_tokens
    data_file.write_text(json.dumps(data, indent=2) + "\n")
    return dest


def test_membership_cycle_members_commands_and_one_vote_each(members: Community) -> None:
    carol = members.envs["carol"]
    status = members.ok("deployer", "status")
    assert status["voting"]["model"] == "membership"
    assert status["voting"]["members"] == 2 and status["voting"]["authority_is_timelock"]
    listed = members.ok("carol", "members", "list")["members"]
    assert [(m["delegate"], m["votes"]) for m in listed] == [(m["address"], 1) for m in listed]

    # A membership cannot be moved to someone else, even by its holder.
    alice_key = members.envs["alice"][PRIVATE_KEY_ENV]
    w3 = connect(members.node.url, expected_chain_id=DEV_CHAIN_ID, timeout_s=10)
    alice = Sender(w3, Account.from_key(alice_key))
    token = w3.eth.contract(
        address=members.deployment.token, abi=load_artifact("AgoraMembership").abi
    )
    carol_address = Account.from_key(carol[PRIVATE_KEY_ENV]).address
    with pytest.raises(ChainError, match="a membership cannot be transferred"):
        alice.send(
            token.functions.transferFrom(alice.address, carol_address, int(alice.address, 16)),
            "transferring a membership",
        )

    # Admitting Carol is a proposal; she then votes on the next proposal, with one vote.
    admission = members.ok("alice", "members", "add", carol_address, "--note", "welcome")
    pid = str(admission["proposal_id"])
    error = members.refused("carol", "vote", pid, "for", "--wait", "60")
    assert f"insufficient votes: {carol_address} had no voting power" in error
    for who in ("deployer", "alice"):
        vote = members.ok(who, "vote", pid, "for", "--wait", "60")
        assert vote["weight"] == 1
    members.ok("alice", "queue", pid, "--wait", "60")
    assert members.ok("alice", "execute", pid, "--wait", "60")["ratification"] is None
    listed = members.ok("carol", "members", "list")["members"]
    assert carol_address in [m["address"] for m in listed] and len(listed) == 3

    # A proposal is simulated at the latest block, which reads votes one block back:
    # let a block pass after the one that admitted Carol (blocks come every second).
    time.sleep(2)
    bundle = load_bundle(ROOT / "policies")
    ratification = members.ratify(ROOT / "policies", ("carol", "alice"))
    assert (ratification["version"], ratification["digest"]) == (1, bundle.digest)
    human = run_agora("gov", "status", "--all", env=members.envs["carol"]).stdout
    assert "voting: membership (one member, one vote); 3 members, admitted by proposal" in human
    assert f"Admit {carol_address} as a member of the Agora community" in human


def test_a_gateway_enforces_what_the_members_ratified(
    members: Community, start_gateway: StartGateway, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The PolicyRegistry path does not depend on the voting model."""
    gateway: RunningGateway = start_gateway(
        policy={"bundle": str(ROOT / "policies"), "opa": "managed", "timeout_ms": 2000},
        governance={
            "chain": "rpc",
            "rpc_urls": [members.node.url],
            "registry": members.deployment.registry,
            "confirmations": 1,
            "poll_s": 0.5,
        },
    )
    bundle = bundle_copy(tmp_path_factory.mktemp("v2") / "policies", anonymous_max_tokens=200)
    ratification = members.ratify(bundle, ("deployer", "alice", "carol"))
    assert ratification["version"] == 2
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready = httpx.get(f"{gateway.admin_url}/readyz", timeout=10).json()
        if ready.get("opa_enforces") == 2:
            break
        time.sleep(0.2)
    assert ready["policy"]["digest"] == load_bundle(bundle).digest
    chat = {"model": "demo-small", "messages": [{"role": "user", "content": "Hi"}]}
    with gateway.client() as client:
        refused = client.post("/v1/chat/completions", json={**chat, "max_tokens": 240})
        allowed = client.post("/v1/chat/completions", json={**chat, "max_tokens": 16})
    assert refused.status_code == 403 and refused.headers["x-agora-policy-version"] == "2"
    assert allowed.status_code == 200 and allowed.headers["x-agora-policy-version"] == "2"


def test_quadratic_cycle_weighs_square_roots(
    node: GethNode, tmp_path_factory: pytest.TempPathFactory
) -> None:
    accounts = {"deployer": node.new_account()}
    community = deploy(
        node, tmp_path_factory.mktemp("quadratic"), accounts, "--voting", "quadratic"
    )
    assert community.deployment.voting.value == "quadratic"
    status = community.ok("deployer", "status")
    assert status["voting"] == {"model": "quadratic", "token": community.deployment.token}
    pid = str(
        community.ok("deployer", "propose", "--bundle", str(ROOT / "policies"), "--uri", "u")[
            "proposal_id"
        ]
    )
    vote = community.ok("deployer", "vote", pid, "for", "--wait", "60")
    assert vote["weight"] == isqrt(1_000_000 * TOKEN_UNIT) == 10**12
    tally = community.ok("deployer", "status")["proposals"][0]["votes"]
    assert tally["quorum"] == isqrt(40_000 * TOKEN_UNIT)
    community.ok("deployer", "queue", pid, "--wait", "60")
    ratification = community.ok("deployer", "execute", pid, "--wait", "60")["ratification"]
    assert ratification["version"] == 1
    human = run_agora("gov", "status", "--all", env=community.envs["deployer"]).stdout
    assert "voting: quadratic (square root of the AGORA tokens" in human
    assert "for 1000 √AGORA, against 0 √AGORA" in human


def test_members_quadratic_cycle_counts_only_members(
    node: GethNode, tmp_path_factory: pytest.TempPathFactory
) -> None:
    accounts = {"deployer": node.new_account(), "bob": node.new_account()}
    community = deploy(
        node,
        tmp_path_factory.mktemp("members-quadratic"),
        accounts,
        "--voting", "membership-quadratic",
        "--voting-period", "10",
    )  # fmt: skip
    deployment = community.deployment
    assert deployment.membership is not None and deployment.membership != deployment.token
    listed = community.ok("bob", "members", "list")
    assert listed["membership"] == deployment.membership
    assert [m["address"] for m in listed["members"]] == [deployment.deployer]
    # Bob gets tokens but is no member: he cannot vote with them.
    w3 = connect(node.url, expected_chain_id=DEV_CHAIN_ID, timeout_s=10)
    deployer = Sender(w3, Account.from_key(community.envs["deployer"][PRIVATE_KEY_ENV]))
    token = w3.eth.contract(address=deployment.token, abi=load_artifact("AgoraToken").abi)
    bob = accounts["bob"].address
    deployer.send(token.functions.transfer(bob, 640_000 * TOKEN_UNIT), "transfer to Bob")
    Sender(w3, accounts["bob"]).send(token.functions.delegate(bob), "Bob delegates")
    pid = str(
        community.ok("deployer", "propose", "--bundle", str(ROOT / "policies"), "--uri", "u")[
            "proposal_id"
        ]
    )
    error = community.refused("bob", "vote", pid, "for", "--wait", "60")
    assert f"insufficient votes: {bob} had no voting power" in error
    vote = community.ok("deployer", "vote", pid, "for", "--wait", "60")
    assert vote["weight"] == isqrt(360_000 * TOKEN_UNIT)  # sqrt(360,000) = 600 √AGORA
    community.ok("deployer", "queue", pid, "--wait", "60")
    assert community.ok("deployer", "execute", pid, "--wait", "60")["ratification"]["version"] == 1
    assert community.ok("bob", "status")["voting"]["model"] == "membership-quadratic"
