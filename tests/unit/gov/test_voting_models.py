"""Membership and quadratic voting on the embedded chain: whole cycles, and what a vote weighs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from math import isqrt
from pathlib import Path

import pytest
from eth_typing import ChecksumAddress
from web3.contract import Contract

from gateway.chain.artifacts import ContractName, load_artifact
from gateway.chain.registry import RegistryClient
from gateway.chain.tokens import TOKEN_UNIT
from gateway.chain.voting import VotingModel
from gateway.community.proposals import ChainReader
from gateway.exceptions import ChainError, ConfigError
from gateway.gov.deploy import Deployment, GovernanceParams, deploy_governance
from gateway.gov.governance import Governance, Proposal, ProposalState, Support
from gateway.gov.membership import Membership
from gateway.gov.transactions import Sender
from gateway.pinning.bundle import load_bundle
from tests.embedded_chain import EmbeddedChain, dev_address
from tests.unit.gov.test_lifecycle import make_bundle

DEPLOYER, ALICE, BOB, CAROL, NOBODY, AUTHORITY = range(6)


@dataclass
class World:
    chain: EmbeddedChain
    deployment: Deployment
    governance: Governance

    def sender(self, who: int) -> Sender:
        return self.chain.sender(who)

    def address(self, who: int) -> ChecksumAddress:
        return self.chain.accounts[who].address

    def contract(self, name: ContractName, address: ChecksumAddress) -> Contract:
        return self.chain.w3.eth.contract(address=address, abi=load_artifact(name).abi)

    def propose(self, tmp_path: Path, name: str, who: int = ALICE) -> Proposal:
        bundle = make_bundle(tmp_path, name)
        digest = load_bundle(bundle).digest
        return self.governance.propose_ratification(self.sender(who), digest, bundle.as_uri())

    def open_vote(self, proposal: Proposal) -> None:
        self.chain.mine_until(proposal.vote_start + 1)

    def enact(self, proposal: Proposal) -> None:
        """Close the vote, queue, wait out the timelock and execute."""
        self.chain.mine_until(proposal.vote_end + 1)
        eta = self.governance.queue(self.sender(NOBODY), proposal.proposal_id)
        self.chain.advance_time_to(eta)
        self.governance.execute(self.sender(NOBODY), proposal.proposal_id)
        assert self.governance.state(proposal.proposal_id) is ProposalState.EXECUTED


Deployed = tuple[EmbeddedChain, Deployment, object]


def deploy_once(params: GovernanceParams) -> Deployed:
    """A fresh chain with ``params`` deployed, and a snapshot that each test reverts to."""
    chain = EmbeddedChain()
    deployment = deploy_governance(chain.sender(DEPLOYER), params)
    if params.voting is not VotingModel.MEMBERSHIP:
        _distribute(chain, deployment)
    return chain, deployment, chain.tester.take_snapshot()


def reverting(deployed: Deployed) -> Iterator[World]:
    chain, deployment, snapshot = deployed
    yield World(chain, deployment, Governance.from_deployment(chain.w3, deployment))
    chain.tester.revert_to_snapshot(snapshot)


HOLDINGS = {ALICE: 300_000, BOB: 400_000, CAROL: 10_000}  # the deployer keeps 290,000


def _distribute(chain: EmbeddedChain, deployment: Deployment) -> None:
    token = chain.w3.eth.contract(address=deployment.token, abi=load_artifact("AgoraToken").abi)
    for who, amount in HOLDINGS.items():
        address = chain.accounts[who].address
        chain.sender(DEPLOYER).send(token.functions.transfer(address, amount * TOKEN_UNIT), "t")
        chain.sender(who).send(token.functions.delegate(address), "delegate")


# --- membership ---------------------------------------------------------------------------


MEMBERSHIP_RULES = GovernanceParams(
    voting_delay=1,
    voting_period=30,
    timelock_delay=10,
    quorum_percent=50,
    proposal_threshold=1,
    voting=VotingModel.MEMBERSHIP,
    initial_members=tuple(dev_address(who) for who in (DEPLOYER, ALICE, BOB)),
)


@pytest.fixture(scope="module")
def membership_deployed() -> Deployed:
    return deploy_once(MEMBERSHIP_RULES)


@pytest.fixture
def membership(membership_deployed: Deployed) -> Iterator[World]:
    yield from reverting(membership_deployed)


def test_membership_deployment_gives_each_member_one_vote(membership: World) -> None:
    w = membership
    assert w.deployment.voting is VotingModel.MEMBERSHIP
    assert w.governance.voting_model is VotingModel.MEMBERSHIP
    members = Membership(w.governance)
    assert members.authority() == w.deployment.timelock and members.authority_is_timelock()
    listed = members.members()
    assert [m.address for m in listed] == list(MEMBERSHIP_RULES.initial_members)
    assert all(m.delegate == m.address and m.votes == 1 for m in listed)
    assert not members.is_member(w.address(CAROL))
    # The deployment file records the model and its rules.
    assert Deployment.from_json(w.deployment.to_json(), "x") == w.deployment
    assert '"voting": "membership"' in w.deployment.to_json()


def test_membership_whole_cycle_and_quorum_of_members(membership: World, tmp_path: Path) -> None:
    w = membership
    proposal = w.propose(tmp_path, "members-v1")
    w.open_vote(proposal)
    assert w.governance.vote(w.sender(ALICE), proposal.proposal_id, Support.FOR) == 1
    assert w.governance.vote(w.sender(BOB), proposal.proposal_id, Support.FOR) == 1
    tally = w.governance.tally(proposal.proposal_id)
    # Quorum: 50% of the 3 members at the snapshot, rounded down, as OpenZeppelin computes it.
    assert (tally.votes_for, tally.quorum) == (2, 1)
    w.enact(proposal)
    current = RegistryClient(w.chain.w3, w.deployment.registry).current()
    assert current is not None and current.digest == proposal.digest


def test_the_community_page_reads_member_votes_as_votes(membership: World, tmp_path: Path) -> None:
    w = membership
    proposal = w.propose(tmp_path, "members-page")
    w.open_vote(proposal)
    w.governance.vote(w.sender(ALICE), proposal.proposal_id, Support.FOR)
    reader = ChainReader(w.chain.w3, w.deployment.registry, w.deployment.governor)
    view = reader.read()
    assert view.voting is VotingModel.MEMBERSHIP
    (shown,) = view.proposals
    assert (shown.votes_for, shown.votes_against, shown.quorum) == ("1 vote", "0 votes", "1 vote")


def test_a_membership_cannot_be_transferred_or_its_vote_delegated(membership: World) -> None:
    w = membership
    token = w.contract("AgoraMembership", w.deployment.token)
    alice, carol = w.address(ALICE), w.address(CAROL)
    token_id = token.functions.tokenIdOf(alice).call()
    with pytest.raises(ChainError, match="a membership cannot be transferred"):
        w.sender(ALICE).send(token.functions.transferFrom(alice, carol, token_id), "transfer")
    with pytest.raises(ChainError, match="cannot be delegated"):
        w.sender(ALICE).send(token.functions.delegate(carol), "delegate")
    with pytest.raises(ChainError, match="only the membership authority may admit"):
        w.sender(ALICE).send(token.functions.admit(carol), "admit")
    assert token.functions.ownerOf(token_id).call() == alice
    assert Membership(w.governance).members()[1].votes == 1


def test_one_member_has_one_vote_whatever_else_they_hold(membership: World, tmp_path: Path) -> None:
    w = membership
    # Alice also holds (and delegates) a large amount of another votes token: it weighs nothing.
    other = w.sender(ALICE).deploy(load_artifact("AgoraToken"), 10**6 * TOKEN_UNIT)
    w.sender(ALICE).send(w.contract("AgoraToken", other).functions.delegate(w.address(ALICE)), "d")
    proposal = w.propose(tmp_path, "one-vote")
    w.open_vote(proposal)
    assert w.governance.voting_power(w.address(ALICE), proposal.vote_start) == 1
    assert w.governance.vote(w.sender(ALICE), proposal.proposal_id, Support.FOR) == 1
    # A non-member has no weight: refused by the library, and counted as zero by the governor.
    assert w.governance.voting_power(w.address(NOBODY), proposal.vote_start) == 0
    with pytest.raises(ChainError, match="had no voting power"):
        w.governance.vote(w.sender(NOBODY), proposal.proposal_id, Support.AGAINST)
    governor = w.contract("AgoraGovernor", w.deployment.governor)
    w.sender(NOBODY).send(governor.functions.castVote(proposal.proposal_id, 0), "raw vote")
    assert w.governance.tally(proposal.proposal_id).votes_against == 0
    # Nor may a non-member propose (the threshold is one member).
    bundle = make_bundle(tmp_path, "from-outside")
    with pytest.raises(ChainError, match=r"insufficient votes to propose: .* has 0 votes"):
        w.governance.propose_ratification(
            w.sender(NOBODY), load_bundle(bundle).digest, bundle.as_uri()
        )


def test_a_member_admitted_by_vote_votes_from_the_next_proposal(
    membership: World, tmp_path: Path
) -> None:
    w = membership
    members = Membership(w.governance)
    carol = w.address(CAROL)
    admission = members.change(w.sender(ALICE), "add", carol, note="runs the staging gateway")
    assert admission.proposal is not None and admission.block_number is None
    assert admission.proposal.description.startswith(f"Admit {carol} as a member")
    with pytest.raises(ChainError, match=f"already proposes to admit {carol}"):
        members.change(w.sender(ALICE), "add", carol, note="runs the staging gateway")
    w.open_vote(admission.proposal)
    for who in (ALICE, BOB):
        w.governance.vote(w.sender(who), admission.proposal.proposal_id, Support.FOR)
    w.chain.mine_until(admission.proposal.vote_end + 1)
    eta = w.governance.queue(w.sender(NOBODY), admission.proposal.proposal_id)
    # Proposed while the admission waits in the timelock: its snapshot precedes it.
    pending = w.propose(tmp_path, "made-before-admission")
    w.chain.advance_time_to(eta)
    w.governance.execute(w.sender(NOBODY), admission.proposal.proposal_id)
    assert members.is_member(carol)
    assert [m.address for m in members.members()][-1] == carol

    # The proposal made before the admission took its snapshot without Carol.
    w.open_vote(pending)
    with pytest.raises(ChainError, match="had no voting power"):
        w.governance.vote(w.sender(CAROL), pending.proposal_id, Support.FOR)
    # A proposal is simulated at the latest block, which reads votes one block back.
    w.chain.mine()
    after = w.propose(tmp_path, "made-after-admission", who=CAROL)
    w.open_vote(after)
    assert w.governance.vote(w.sender(CAROL), after.proposal_id, Support.FOR) == 1
    assert w.governance.tally(after.proposal_id).quorum == 2  # 50% of 4 members

    # Removal is a proposal too; afterwards Carol is no member and has no vote.
    removal = members.change(w.sender(ALICE), "remove", carol)
    assert removal.proposal is not None
    w.open_vote(removal.proposal)
    for who in (ALICE, BOB):
        w.governance.vote(w.sender(who), removal.proposal.proposal_id, Support.FOR)
    w.enact(removal.proposal)
    assert not members.is_member(carol)
    assert carol not in [m.address for m in members.members()]
    assert w.governance.voting_power(carol) == 0
    with pytest.raises(ChainError, match=f"{carol} is not a member"):
        members.change(w.sender(ALICE), "remove", carol)


@pytest.fixture(scope="module")
def authority_deployed() -> Deployed:
    named = GovernanceParams(
        voting_delay=1,
        voting_period=30,
        timelock_delay=10,
        voting=VotingModel.MEMBERSHIP,
        membership_authority=dev_address(AUTHORITY),
    )
    return deploy_once(named)


@pytest.fixture
def authority_world(authority_deployed: Deployed) -> Iterator[World]:
    yield from reverting(authority_deployed)


def test_a_named_membership_authority_admits_directly(authority_world: World) -> None:
    w = authority_world
    members = Membership(w.governance)
    assert members.authority() == w.address(AUTHORITY) and not members.authority_is_timelock()
    assert [m.address for m in members.members()] == [w.deployment.deployer]
    with pytest.raises(ChainError, match=f"only the membership authority {w.address(AUTHORITY)}"):
        members.change(w.sender(ALICE), "add", w.address(CAROL))
    done = members.change(w.sender(AUTHORITY), "add", w.address(CAROL))
    assert done.proposal is None and done.block_number is not None
    assert members.is_member(w.address(CAROL))
    members.change(w.sender(AUTHORITY), "remove", w.address(CAROL))
    assert not members.is_member(w.address(CAROL))


def test_membership_parameters_are_checked() -> None:
    with pytest.raises(ConfigError, match="proposal_threshold=2 is out of range"):
        GovernanceParams(voting=VotingModel.MEMBERSHIP, proposal_threshold=2)
    with pytest.raises(ConfigError, match="apply to voting with members only, not token"):
        GovernanceParams(initial_members=("0x" + "12" * 20,))
    with pytest.raises(ConfigError, match="voting='liquid' is not one of token, membership"):
        GovernanceParams(voting="liquid")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="lists a member twice"):
        GovernanceParams(voting=VotingModel.MEMBERSHIP, initial_members=("0x" + "12" * 20,) * 2)
    with pytest.raises(ConfigError, match="membership authority 'me' is not an Ethereum address"):
        GovernanceParams(voting=VotingModel.MEMBERSHIP, membership_authority="me")


# --- quadratic ----------------------------------------------------------------------------

QUADRATIC_RULES = GovernanceParams(
    voting_delay=1, voting_period=30, timelock_delay=10, voting=VotingModel.QUADRATIC
)


@pytest.fixture(scope="module")
def quadratic_deployed() -> Deployed:
    return deploy_once(QUADRATIC_RULES)


@pytest.fixture
def quadratic(quadratic_deployed: Deployed) -> Iterator[World]:
    yield from reverting(quadratic_deployed)


def test_quadratic_whole_cycle_weights_are_square_roots(quadratic: World, tmp_path: Path) -> None:
    w = quadratic
    assert w.governance.voting_model is VotingModel.QUADRATIC
    assert w.deployment.voting is VotingModel.QUADRATIC
    proposal = w.propose(tmp_path, "quadratic-v1")
    w.open_vote(proposal)
    weights = {
        who: w.governance.vote(w.sender(who), proposal.proposal_id, support)
        for who, support in ((ALICE, Support.FOR), (BOB, Support.FOR), (CAROL, Support.AGAINST))
    }
    assert weights == {who: isqrt(amount * TOKEN_UNIT) for who, amount in HOLDINGS.items()}
    tally = w.governance.tally(proposal.proposal_id)
    assert tally.votes_for == weights[ALICE] + weights[BOB]
    assert tally.votes_against == weights[CAROL]
    # The quorum is the square root of the token quorum (4% of the supply).
    assert tally.quorum == isqrt(40_000 * TOKEN_UNIT)
    w.enact(proposal)
    current = RegistryClient(w.chain.w3, w.deployment.registry).current()
    assert current is not None and current.digest == proposal.digest


def test_quadratic_weight_is_read_at_the_snapshot(quadratic: World, tmp_path: Path) -> None:
    w = quadratic
    proposal = w.propose(tmp_path, "snapshot")
    w.open_vote(proposal)
    # Bob hands his tokens to Alice after the snapshot: neither weight changes for this vote.
    token = w.contract("AgoraToken", w.deployment.token)
    w.sender(BOB).send(
        token.functions.transfer(w.address(ALICE), HOLDINGS[BOB] * TOKEN_UNIT), "transfer"
    )
    alice = w.governance.vote(w.sender(ALICE), proposal.proposal_id, Support.FOR)
    bob = w.governance.vote(w.sender(BOB), proposal.proposal_id, Support.FOR)
    assert (alice, bob) == (isqrt(300_000 * TOKEN_UNIT), isqrt(400_000 * TOKEN_UNIT))
    # Now (for the next proposal) Alice weighs the square root of both holdings.
    assert w.governance.voting_power(w.address(ALICE)) == isqrt(700_000 * TOKEN_UNIT)
    assert (
        VotingModel.QUADRATIC.format_weight(isqrt(700_000 * TOKEN_UNIT)) == "836.660026534 √AGORA"
    )


def test_quadratic_splitting_tokens_raises_their_weight(quadratic: World, tmp_path: Path) -> None:
    """The documented weakness: Carol's 10,000 tokens split over two addresses weigh more."""
    w = quadratic
    token = w.contract("AgoraToken", w.deployment.token)
    w.sender(CAROL).send(token.functions.transfer(w.address(NOBODY), 5_000 * TOKEN_UNIT), "split")
    w.sender(NOBODY).send(token.functions.delegate(w.address(NOBODY)), "delegate")
    proposal = w.propose(tmp_path, "split")
    w.open_vote(proposal)
    carol = w.governance.vote(w.sender(CAROL), proposal.proposal_id, Support.FOR)
    nobody = w.governance.vote(w.sender(NOBODY), proposal.proposal_id, Support.FOR)
    assert carol + nobody == 2 * isqrt(5_000 * TOKEN_UNIT) > isqrt(10_000 * TOKEN_UNIT)


# --- quadratic among members --------------------------------------------------------------

MEMBERS_QUADRATIC_RULES = GovernanceParams(
    voting_delay=1,
    voting_period=30,
    timelock_delay=10,
    voting=VotingModel.MEMBERSHIP_QUADRATIC,
    initial_members=tuple(dev_address(who) for who in (DEPLOYER, ALICE, BOB)),
)


@pytest.fixture(scope="module")
def members_quadratic_deployed() -> Deployed:
    return deploy_once(MEMBERS_QUADRATIC_RULES)


@pytest.fixture
def members_quadratic(members_quadratic_deployed: Deployed) -> Iterator[World]:
    yield from reverting(members_quadratic_deployed)


def test_members_quadratic_whole_cycle_only_members_weigh(
    members_quadratic: World, tmp_path: Path
) -> None:
    w = members_quadratic
    assert w.governance.voting_model is VotingModel.MEMBERSHIP_QUADRATIC
    assert w.deployment.membership is not None and w.deployment.membership != w.deployment.token
    members = Membership(w.governance)
    assert members.address == w.deployment.membership
    assert [m.address for m in members.members()] == list(MEMBERS_QUADRATIC_RULES.initial_members)
    proposal = w.propose(tmp_path, "members-quadratic")
    w.open_vote(proposal)
    alice = w.governance.vote(w.sender(ALICE), proposal.proposal_id, Support.FOR)
    bob = w.governance.vote(w.sender(BOB), proposal.proposal_id, Support.AGAINST)
    assert (alice, bob) == (isqrt(300_000 * TOKEN_UNIT), isqrt(400_000 * TOKEN_UNIT))
    # Carol holds 10,000 tokens but is no member: no weight, and a raw vote counts zero.
    assert w.governance.voting_power(w.address(CAROL)) == 0
    with pytest.raises(ChainError, match="had no voting power"):
        w.governance.vote(w.sender(CAROL), proposal.proposal_id, Support.FOR)
    governor = w.contract("AgoraMembersQuadraticGovernor", w.deployment.governor)
    w.sender(CAROL).send(governor.functions.castVote(proposal.proposal_id, 0), "raw vote")
    deployer = w.governance.vote(w.sender(DEPLOYER), proposal.proposal_id, Support.FOR)
    tally = w.governance.tally(proposal.proposal_id)
    assert (tally.votes_for, tally.votes_against) == (alice + deployer, bob)
    assert tally.quorum == isqrt(40_000 * TOKEN_UNIT)
    w.enact(proposal)
    current = RegistryClient(w.chain.w3, w.deployment.registry).current()
    assert current is not None and current.digest == proposal.digest


def test_members_quadratic_a_non_member_can_back_a_member(
    members_quadratic: World, tmp_path: Path
) -> None:
    w = members_quadratic
    token = w.contract("AgoraToken", w.deployment.token)
    w.sender(CAROL).send(token.functions.delegate(w.address(ALICE)), "delegate to Alice")
    proposal = w.propose(tmp_path, "backed")
    w.open_vote(proposal)
    weight = w.governance.vote(w.sender(ALICE), proposal.proposal_id, Support.FOR)
    assert weight == isqrt(310_000 * TOKEN_UNIT)
