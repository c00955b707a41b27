"""Deploying the governance contracts and wiring them so that only a vote can ratify a policy.

Order: token, timelock, governor, registry (under membership voting, the
timelock comes before the membership: it may be the membership authority). The timelock then
makes the governor its only proposer and canceller, lets anyone execute a passed
proposal once its delay is over, and the deployer renounces the timelock's admin
role, so that nobody (the deployer included) can bypass a vote. Under token and
quadratic voting the deployer receives the whole token supply, delegated to
itself, to distribute to the community; under membership voting the initial
members (the deployer by default) are admitted.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from eth_typing import ChecksumAddress

from gateway.chain.artifacts import load_artifact
from gateway.chain.errors import parse_address
from gateway.chain.tokens import TOKEN_UNIT
from gateway.chain.voting import VotingModel
from gateway.exceptions import ChainError, ConfigError
from gateway.gov.errors import gov_errors
from gateway.gov.transactions import Sender

ANYONE = "0x0000000000000000000000000000000000000000"
TIMELOCK_AUTHORITY = "timelock"
_UINT32_MAX = 2**32 - 1
_UINT48_MAX = 2**48 - 1


@dataclass(frozen=True)
class GovernanceParams:
    """The rules of the vote, fixed at deployment (changeable later only by a vote).

    The defaults suit a public chain with 12-second blocks: a day before the vote
    opens, a week of voting, a day of timelock before the result takes effect.
    """

    voting_delay: int = 7200  # blocks between a proposal and the opening of its vote
    voting_period: int = 50400  # blocks the vote stays open
    timelock_delay: int = 86400  # seconds between queueing a passed proposal and executing it
    quorum_percent: int = 4  # share of the supply that must vote for or abstain
    proposal_threshold: int = 0  # whole tokens of voting power needed to propose
    initial_supply: int = 1_000_000  # whole tokens minted to the deployer (token, quadratic)
    voting: VotingModel = VotingModel.TOKEN  # how votes are weighed
    # Membership voting only: who admits and removes members ("timelock": a vote), and
    # who the first members are (none given: the deployer).
    membership_authority: str = TIMELOCK_AUTHORITY
    initial_members: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "voting", VotingModel(self.voting))
        except ValueError:
            models = ", ".join(m.value for m in VotingModel)
            raise ConfigError(
                f"governance parameter voting={self.voting!r} is not one of {models}"
            ) from None
        membership = self.voting.has_members
        # A member has one vote: a threshold of 1 lets only members propose.
        threshold_max = 1 if self.voting is VotingModel.MEMBERSHIP else self.initial_supply
        checks = {
            "voting_delay": 0 <= self.voting_delay <= _UINT48_MAX,
            "voting_period": 1 <= self.voting_period <= _UINT32_MAX,
            "timelock_delay": self.timelock_delay >= 0,
            "quorum_percent": 0 <= self.quorum_percent <= 100,
            "proposal_threshold": 0 <= self.proposal_threshold <= threshold_max,
            "initial_supply": self.initial_supply > 0,
        }
        for name, ok in checks.items():
            if not ok:
                value = getattr(self, name)
                raise ConfigError(f"governance parameter {name}={value} is out of range")
        if not membership and (
            self.membership_authority != TIMELOCK_AUTHORITY or self.initial_members
        ):
            raise ConfigError(
                "governance parameters membership_authority and initial_members apply to "
                f"voting with members only, not {self.voting.value}"
            )
        try:
            if self.membership_authority != TIMELOCK_AUTHORITY:
                object.__setattr__(
                    self,
                    "membership_authority",
                    parse_address(self.membership_authority, "membership authority"),
                )
            members = tuple(parse_address(m, "initial member") for m in self.initial_members)
        except ChainError as exc:
            raise ConfigError(f"governance parameter: {exc}") from None
        if len(set(members)) != len(members):
            raise ConfigError("governance parameter initial_members lists a member twice")
        object.__setattr__(self, "initial_members", members)


@dataclass(frozen=True)
class Deployment:
    """Where the governance contracts live; saved as JSON for ``agora gov --deployment``."""

    chain_id: int
    token: ChecksumAddress  # what the governor counts: AgoraToken, or AgoraMembership
    timelock: ChecksumAddress
    governor: ChecksumAddress
    registry: ChecksumAddress
    deployer: ChecksumAddress
    block_number: int  # first block of the deployment: event scans start here
    params: GovernanceParams = field(default_factory=GovernanceParams)
    membership: ChecksumAddress | None = None  # the AgoraMembership, if members vote

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str) -> Deployment:
        try:
            data: dict[str, Any] = json.loads(text)
            addresses = {
                key: parse_address(str(data[key]), key)
                for key in ("token", "timelock", "governor", "registry", "deployer")
            }
            params = dict(data.get("params", {}))
            params["initial_members"] = tuple(params.get("initial_members", ()))
            membership = data.get("membership")
            return cls(
                membership=None if membership is None else parse_address(membership, "membership"),
                chain_id=int(data["chain_id"]),
                block_number=int(data["block_number"]),
                params=GovernanceParams(**params),
                **addresses,
            )
        except (ValueError, TypeError, KeyError, ChainError) as exc:
            raise ConfigError(f"deployment file {source} is invalid: {exc!r}") from exc

    def save(self, path: Path) -> None:
        path.write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> Deployment:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"deployment file {path} cannot be read: {exc}") from exc
        return cls.from_json(text, str(path))

    @property
    def voting(self) -> VotingModel:
        return self.params.voting


def deploy_governance(sender: Sender, params: GovernanceParams | None = None) -> Deployment:
    """Deploy and wire votes, timelock, governor and registry from ``sender``'s account."""
    params = params or GovernanceParams()
    w3 = sender.w3
    with gov_errors("reading the chain before deployment"):
        chain_id = int(w3.eth.chain_id)
        first_block = int(w3.eth.block_number) + 1
    deployer = sender.address

    def deploy_timelock() -> ChecksumAddress:
        return sender.deploy(
            load_artifact("TimelockController"), params.timelock_delay, [], [ANYONE], deployer
        )

    def deploy_membership(timelock: ChecksumAddress) -> ChecksumAddress:
        authority = params.membership_authority
        return sender.deploy(
            load_artifact("AgoraMembership"),
            timelock if authority == TIMELOCK_AUTHORITY else authority,
            list(params.initial_members or (deployer,)),
        )

    membership = None
    if params.voting is VotingModel.MEMBERSHIP:
        timelock = deploy_timelock()
        token = membership = deploy_membership(timelock)
    else:
        token = sender.deploy(load_artifact("AgoraToken"), params.initial_supply * TOKEN_UNIT)
        timelock = deploy_timelock()
        if params.voting.has_members:
            membership = deploy_membership(timelock)
    rules = (
        params.voting_delay,
        params.voting_period,
        params.voting.threshold(params.proposal_threshold),
        params.quorum_percent,
    )
    governor_artifact = load_artifact(params.voting.governor_contract)
    if params.voting is VotingModel.MEMBERSHIP_QUADRATIC:
        governor = sender.deploy(governor_artifact, token, membership, timelock, *rules)
    else:
        governor = sender.deploy(governor_artifact, token, timelock, *rules)
    registry = sender.deploy(load_artifact("PolicyRegistry"), timelock)

    tl = w3.eth.contract(address=timelock, abi=load_artifact("TimelockController").abi)
    with gov_errors("reading the timelock roles"):
        proposer_role = tl.functions.PROPOSER_ROLE().call()
        canceller_role = tl.functions.CANCELLER_ROLE().call()
        admin_role = tl.functions.DEFAULT_ADMIN_ROLE().call()
    sender.send(tl.functions.grantRole(proposer_role, governor), "making the governor proposer")
    sender.send(tl.functions.grantRole(canceller_role, governor), "making the governor canceller")
    sender.send(
        tl.functions.renounceRole(admin_role, deployer), "renouncing the deployer's timelock admin"
    )
    if params.voting is not VotingModel.MEMBERSHIP:
        delegate_votes(sender, token, deployer)
    return Deployment(
        chain_id=chain_id,
        token=token,
        timelock=timelock,
        governor=governor,
        registry=registry,
        deployer=deployer,
        block_number=first_block,
        params=params,
        membership=membership,
    )


def delegate_votes(sender: Sender, token: ChecksumAddress, delegatee: ChecksumAddress) -> None:
    """Make ``sender``'s tokens count as votes for ``delegatee`` (itself to vote in person).

    Token balances only count as votes once delegated, and only for proposals
    made after the delegation.
    """
    contract = sender.w3.eth.contract(address=token, abi=load_artifact("AgoraToken").abi)
    sender.send(contract.functions.delegate(delegatee), f"delegating votes to {delegatee}")
