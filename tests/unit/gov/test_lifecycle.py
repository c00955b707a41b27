"""Governance on the embedded chain: the whole propose/vote/queue/execute loop and its refusals."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.chain.artifacts import load_artifact
from gateway.chain.digests import to_bytes32
from gateway.chain.registry import RegistryClient
from gateway.chain.tokens import TOKEN_UNIT
from gateway.exceptions import ChainError
from gateway.gov.deploy import Deployment, deploy_governance
from gateway.gov.governance import Governance, Proposal, ProposalState, Support
from gateway.gov.transactions import Sender
from gateway.pinning.bundle import load_bundle
from tests.embedded_chain import FAST_RULES, EmbeddedChain, ratify_embedded

# Votes of each account after distribution (the supply is 1,000,000; quorum is 4%).
DEPLOYER, ALICE, BOB, CAROL, NOBODY = range(5)
HOLDINGS = {ALICE: 300_000, BOB: 400_000, CAROL: 10_000}


@dataclass
class World:
    chain: EmbeddedChain
    deployment: Deployment
    governance: Governance
    registry: RegistryClient

    def sender(self, who: int) -> Sender:
        return self.chain.sender(who)


def make_bundle(root: Path, name: str) -> Path:
    bundle = root / name
    (bundle / "agora").mkdir(parents=True)
    (bundle / ".manifest").write_text('{"roots": ["agora"]}')
    (bundle / "agora" / "main.rego").write_text(
        f'package agora.main\n\ndefault allow := false\n\nname := "{name}"\n'
    )
    return bundle


@pytest.fixture(scope="module")
def deployed() -> tuple[EmbeddedChain, Deployment, object]:
    """One deployment per module, tokens distributed and delegated; tests revert to it."""
    chain = EmbeddedChain()
    deployment = deploy_governance(chain.sender(DEPLOYER), FAST_RULES)
    token = chain.w3.eth.contract(address=deployment.token, abi=load_artifact("AgoraToken").abi)
    for who, amount in HOLDINGS.items():
        chain.sender(DEPLOYER).send(
            token.functions.transfer(chain.accounts[who].address, amount * TOKEN_UNIT), "transfer"
        )
        chain.sender(who).send(token.functions.delegate(chain.accounts[who].address), "delegate")
    return chain, deployment, chain.tester.take_snapshot()


@pytest.fixture
def world(deployed: tuple[EmbeddedChain, Deployment, object]) -> Iterator[World]:
    chain, deployment, snapshot = deployed
    yield World(
        chain,
        deployment,
        Governance.from_deployment(chain.w3, deployment),
        RegistryClient(chain.w3, deployment.registry),
    )
    chain.tester.revert_to_snapshot(snapshot)


def propose(world: World, bundle: Path, uri: str = "https://bundles.example/b.tar.gz") -> Proposal:
    digest = load_bundle(bundle).digest
    return world.governance.propose_ratification(world.sender(ALICE), digest, uri)


def open_vote(world: World, proposal: Proposal) -> None:
    world.chain.mine_until(proposal.vote_start + 1)


def close_vote(world: World, proposal: Proposal) -> None:
    world.chain.mine_until(proposal.vote_end + 1)


def test_deployment_leaves_no_one_but_the_governor_in_control(world: World) -> None:
    d = world.deployment
    timelock = world.chain.w3.eth.contract(
        address=d.timelock, abi=load_artifact("TimelockController").abi
    )
    roles = timelock.functions
    admin, proposer = roles.DEFAULT_ADMIN_ROLE().call(), roles.PROPOSER_ROLE().call()
    canceller, executor = roles.CANCELLER_ROLE().call(), roles.EXECUTOR_ROLE().call()
    assert not roles.hasRole(admin, d.deployer).call()
    assert roles.hasRole(admin, d.timelock).call()  # only the timelock administers itself
    assert roles.hasRole(proposer, d.governor).call()
    assert roles.hasRole(canceller, d.governor).call()
    assert not roles.hasRole(proposer, d.deployer).call()
    assert roles.hasRole(executor, "0x0000000000000000000000000000000000000000").call()
    registry = world.chain.w3.eth.contract(
        address=d.registry, abi=load_artifact("PolicyRegistry").abi
    )
    assert registry.functions.timelock().call() == d.timelock
    world.governance.check()
    assert world.registry.current() is None


def test_the_whole_lifecycle_ratifies_and_current_reflects_it(world: World, tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path, "v1")
    digest = load_bundle(bundle).digest
    proposal = propose(world, bundle, "https://bundles.example/v1.tar.gz")
    assert digest in proposal.description and "https://bundles.example/v1.tar.gz" in (
        proposal.description
    )
    assert (proposal.digest, proposal.uri) == (digest, "https://bundles.example/v1.tar.gz")
    assert world.governance.state(proposal.proposal_id) is ProposalState.PENDING

    open_vote(world, proposal)
    assert world.governance.state(proposal.proposal_id) is ProposalState.ACTIVE
    weight = world.governance.vote(world.sender(ALICE), proposal.proposal_id, Support.FOR)
    assert weight == HOLDINGS[ALICE] * TOKEN_UNIT
    world.governance.vote(world.sender(CAROL), proposal.proposal_id, Support.ABSTAIN)
    world.governance.vote(world.sender(BOB), proposal.proposal_id, Support.FOR, "looks good")
    close_vote(world, proposal)
    assert world.governance.state(proposal.proposal_id) is ProposalState.SUCCEEDED
    tally = world.governance.tally(proposal.proposal_id)
    assert (tally.votes_for, tally.votes_against, tally.votes_abstain) == (
        700_000 * TOKEN_UNIT,
        0,
        10_000 * TOKEN_UNIT,
    )

    eta = world.governance.queue(world.sender(NOBODY), proposal.proposal_id)
    assert world.governance.state(proposal.proposal_id) is ProposalState.QUEUED
    with pytest.raises(ChainError, match="timelock delay is not over"):
        world.governance.execute(world.sender(NOBODY), proposal.proposal_id)
    world.chain.advance_time_to(eta)
    ratification = world.governance.execute(world.sender(NOBODY), proposal.proposal_id)

    assert ratification is not None
    assert (ratification.version, ratification.digest) == (1, digest)
    assert ratification.uri == "https://bundles.example/v1.tar.gz"
    assert world.registry.current() == ratification
    assert world.registry.version(1) == ratification
    assert world.registry.ratifications_since(world.deployment.block_number) == [ratification]
    assert world.governance.state(proposal.proposal_id) is ProposalState.EXECUTED
    assert [p.proposal_id for p in world.governance.proposals()] == [proposal.proposal_id]


def test_a_second_ratification_is_version_2(world: World, tmp_path: Path) -> None:
    first, second = make_bundle(tmp_path, "v1"), make_bundle(tmp_path, "v2")
    w3, deployment = world.chain.w3, world.deployment
    one = ratify_embedded(w3, deployment, first, first.as_uri())
    two = ratify_embedded(w3, deployment, second, second.as_uri())

    assert (one.version, two.version) == (1, 2)
    assert two.digest == load_bundle(second).digest != one.digest
    assert world.registry.current() == two
    assert world.registry.version(1) == one
    assert world.registry.version(2) == two
    assert world.registry.ratifications_since(0) == [one, two]
    assert world.registry.ratifications_since(two.block_number) == [two]
    for missing in (0, 3):
        with pytest.raises(ChainError, match=f"policy version {missing} does not exist"):
            world.registry.version(missing)


def test_more_votes_against_defeats_a_proposal(world: World, tmp_path: Path) -> None:
    proposal = propose(world, make_bundle(tmp_path, "contested"))
    open_vote(world, proposal)
    world.governance.vote(world.sender(ALICE), proposal.proposal_id, Support.FOR)
    world.governance.vote(world.sender(BOB), proposal.proposal_id, Support.AGAINST)
    close_vote(world, proposal)

    assert world.governance.state(proposal.proposal_id) is ProposalState.DEFEATED
    with pytest.raises(ChainError, match=r"defeated: insufficient votes in favour"):
        world.governance.queue(world.sender(ALICE), proposal.proposal_id)
    with pytest.raises(ChainError, match=r"defeated"):
        world.governance.execute(world.sender(ALICE), proposal.proposal_id)
    assert world.registry.current() is None


def test_a_proposal_below_quorum_is_defeated(world: World, tmp_path: Path) -> None:
    proposal = propose(world, make_bundle(tmp_path, "quiet"))
    open_vote(world, proposal)
    world.governance.vote(world.sender(CAROL), proposal.proposal_id, Support.FOR)  # 1% of supply
    close_vote(world, proposal)

    assert world.governance.state(proposal.proposal_id) is ProposalState.DEFEATED
    tally = world.governance.tally(proposal.proposal_id)
    assert tally.quorum == 40_000 * TOKEN_UNIT > tally.votes_for
    with pytest.raises(ChainError, match=r"below quorum \(10000 AGORA of the 40000 AGORA needed"):
        world.governance.queue(world.sender(CAROL), proposal.proposal_id)
    assert world.registry.current() is None


def test_calling_ratify_directly_reverts(world: World) -> None:
    registry = world.chain.w3.eth.contract(
        address=world.deployment.registry, abi=load_artifact("PolicyRegistry").abi
    )
    digest = to_bytes32("sha256:" + "ab" * 32)
    deployer = world.chain.accounts[DEPLOYER].address
    with pytest.raises(ChainError, match=f"only the governance timelock.*{deployer} is not it"):
        world.sender(DEPLOYER).send(registry.functions.ratify(digest, "x"), "ratifying directly")
    assert world.registry.current() is None


def test_voting_is_refused_early_twice_or_without_votes(world: World, tmp_path: Path) -> None:
    proposal = propose(world, make_bundle(tmp_path, "rules"))
    with pytest.raises(ChainError, match="has not opened yet"):
        world.governance.vote(world.sender(ALICE), proposal.proposal_id, Support.FOR)
    open_vote(world, proposal)
    with pytest.raises(ChainError, match=r"insufficient votes: .* had no voting power"):
        world.governance.vote(world.sender(NOBODY), proposal.proposal_id, Support.FOR)
    world.governance.vote(world.sender(ALICE), proposal.proposal_id, Support.FOR)
    with pytest.raises(ChainError, match="has already voted"):
        world.governance.vote(world.sender(ALICE), proposal.proposal_id, Support.AGAINST)
    with pytest.raises(ChainError, match="cannot be queued yet: voting is open until block"):
        world.governance.queue(world.sender(ALICE), proposal.proposal_id)


def test_proposals_must_be_new(world: World, tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path, "twice")
    first = propose(world, bundle)
    with pytest.raises(ChainError, match=f"proposal {first.proposal_id} already proposes"):
        propose(world, bundle)
    digest = load_bundle(bundle).digest
    again = world.governance.propose_ratification(
        world.sender(ALICE), digest, "https://bundles.example/b.tar.gz", note="second try"
    )
    assert again.proposal_id == first.proposal_id + 1
    assert again.description.endswith("second try\n")

    ratified = ratify_embedded(world.chain.w3, world.deployment, make_bundle(tmp_path, "in"), "u")
    with pytest.raises(ChainError, match="already the ratified version 1"):
        world.governance.propose_ratification(world.sender(ALICE), ratified.digest, "other")


def test_latest_confirmed_waits_for_confirmations(world: World, tmp_path: Path) -> None:
    ratification = ratify_embedded(
        world.chain.w3, world.deployment, make_bundle(tmp_path, "v1"), "u"
    )
    head = world.chain.block_number
    assert head == ratification.block_number
    assert world.registry.latest_confirmed(0) == ratification
    assert world.registry.latest_confirmed(2) is None
    assert world.registry.latest_confirmed(head + 5) is None  # before the chain began
    world.chain.mine(2)
    assert world.registry.latest_confirmed(2) == ratification
    assert world.registry.latest_confirmed(3) is None
    with pytest.raises(ChainError, match="confirmations must be >= 0"):
        world.registry.latest_confirmed(-1)


def test_latest_confirmed_before_the_registry_existed_is_none(world: World) -> None:
    blocks_since_deployment = world.chain.block_number - world.deployment.block_number
    assert world.registry.latest_confirmed(blocks_since_deployment + 1) is None
