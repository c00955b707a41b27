"""The proposal lifecycle for ratifying a policy bundle: propose, vote, queue, execute.

A ratification proposal asks the timelock to call ``PolicyRegistry.ratify(digest, uri)``
(other proposals, such as admitting a member, go through the same steps).
Each step checks the proposal's state first, so that a step taken too early or
too late is refused with the reason (voting not open yet, defeated below quorum,
timelock delay not over...) rather than an opaque revert.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from functools import cached_property
from typing import Any, Literal

from eth_typing import ChecksumAddress
from eth_utils.crypto import keccak
from web3 import Web3
from web3.types import EventData

from gateway.chain.artifacts import load_artifact
from gateway.chain.digests import from_bytes32, to_bytes32
from gateway.chain.errors import parse_address, require_contract
from gateway.chain.registry import Ratification, RegistryClient
from gateway.chain.voting import VotingModel, detect_voting_model
from gateway.exceptions import ChainError
from gateway.gov.deploy import Deployment
from gateway.gov.errors import (
    PROPOSAL_STATES,
    defeated_reason,
    gov_errors,
    no_voting_power,
    not_ready_reason,
)
from gateway.gov.transactions import Sender


class Support(IntEnum):
    """A vote, as GovernorCountingSimple numbers it."""

    AGAINST = 0
    FOR = 1
    ABSTAIN = 2


class ProposalState(IntEnum):
    """OpenZeppelin's ``IGovernor.ProposalState``, in its order."""

    PENDING = 0
    ACTIVE = 1
    CANCELED = 2
    DEFEATED = 3
    SUCCEEDED = 4
    QUEUED = 5
    EXPIRED = 6
    EXECUTED = 7

    @property
    def label(self) -> str:
        return PROPOSAL_STATES[self]


OPEN_STATES = frozenset(
    {ProposalState.PENDING, ProposalState.ACTIVE, ProposalState.SUCCEEDED, ProposalState.QUEUED}
)


@dataclass(frozen=True)
class Proposal:
    """A proposal as created on chain; ``digest`` and ``uri`` are set for ratifications."""

    proposal_id: int
    proposer: ChecksumAddress
    description: str
    targets: tuple[ChecksumAddress, ...]
    values: tuple[int, ...]
    calldatas: tuple[bytes, ...]
    vote_start: int  # snapshot block: voting power is counted here; voting opens after it
    vote_end: int  # last block of the vote
    created_block: int
    digest: str | None
    uri: str | None

    @property
    def description_hash(self) -> bytes:
        return keccak(text=self.description)


@dataclass(frozen=True)
class Tally:
    """Votes cast so far and the quorum the proposal needs, as the governor weighs them
    (token base units, members, or their square roots: see :class:`VotingModel`)."""

    votes_for: int
    votes_against: int
    votes_abstain: int
    quorum: int


def ratification_description(digest: str, uri: str, note: str = "") -> str:
    """The proposal text: readable, and unique per digest, uri and note.

    A proposal id depends on its description, so proposing the same bundle and
    uri again (after a defeat) needs a different note.
    """
    text = f"Ratify Agora policy bundle {digest}\n\nBundle URI: {uri or '(none)'}\n"
    return f"{text}\n{note.strip()}\n" if note.strip() else text


class Governance:
    """Drives an ``AgoraGovernor`` whose timelock is the writer of a ``PolicyRegistry``."""

    def __init__(self, w3: Web3, governor: str, registry: str, from_block: int = 0) -> None:
        self.w3 = w3
        self.governor_address = parse_address(governor, "governor address")
        self.registry = RegistryClient(w3, registry)
        self.from_block = from_block
        self._governor = w3.eth.contract(
            address=self.governor_address, abi=load_artifact("AgoraGovernor").abi
        )
        self._registry = w3.eth.contract(
            address=self.registry.address, abi=load_artifact("PolicyRegistry").abi
        )

    @classmethod
    def from_deployment(cls, w3: Web3, deployment: Deployment) -> Governance:
        return cls(w3, deployment.governor, deployment.registry, deployment.block_number)

    def check(self) -> None:
        """``ChainError`` unless both contracts exist and the registry obeys this governor."""
        require_contract(self.w3, self.governor_address, "AgoraGovernor")
        self.registry.check()
        with gov_errors(f"checking that {self.governor_address} is an AgoraGovernor"):
            governor_timelock = self._governor.functions.timelock().call()
        with gov_errors(f"checking that {self.registry.address} is a PolicyRegistry"):
            registry_timelock = self._registry.functions.timelock().call()
        if governor_timelock != registry_timelock:
            raise ChainError(
                f"registry {self.registry.address} is written by timelock {registry_timelock}, "
                f"but governor {self.governor_address} executes through {governor_timelock}: "
                "they are not one deployment"
            )

    # -- reading

    @cached_property
    def voting_model(self) -> VotingModel:
        """How this governor weighs votes, read from the chain once."""
        return detect_voting_model(self.w3, self.governor_address)

    def state(self, proposal_id: int) -> ProposalState:
        with gov_errors(f"reading the state of proposal {proposal_id}"):
            return ProposalState(self._governor.functions.state(proposal_id).call())

    def tally(self, proposal_id: int) -> Tally:
        with gov_errors(f"reading the votes on proposal {proposal_id}"):
            against, for_, abstain = self._governor.functions.proposalVotes(proposal_id).call()
            snapshot = self._governor.functions.proposalSnapshot(proposal_id).call()
            quorum = self._governor.functions.quorum(snapshot).call()
        return Tally(int(for_), int(against), int(abstain), int(quorum))

    def eta(self, proposal_id: int) -> int:
        """Unix time from which a queued proposal can be executed (0 if not queued)."""
        with gov_errors(f"reading the timelock ETA of proposal {proposal_id}"):
            return int(self._governor.functions.proposalEta(proposal_id).call())

    def token_address(self) -> ChecksumAddress:
        """The votes token the governor counts."""
        with gov_errors("reading the governor's token"):
            return Web3.to_checksum_address(self._governor.functions.token().call())

    def timelock_address(self) -> ChecksumAddress:
        """The timelock that executes passed proposals."""
        with gov_errors("reading the governor's timelock"):
            return Web3.to_checksum_address(self._governor.functions.timelock().call())

    def voting_power(self, account: str, block: int | None = None) -> int:
        """The weight of ``account``'s vote as the governor counts it (see
        :class:`VotingModel`), now or at a past ``block``."""
        address = parse_address(account, "account")
        with gov_errors(f"reading the voting power of {address}"):
            if block is not None:
                return int(self._governor.functions.getVotes(address, block).call())
            model = self.voting_model
            if model is VotingModel.MEMBERSHIP_QUADRATIC and not self._votes(
                self.membership_address(), address
            ):
                return 0  # not a member
            return model.weight(self._votes(self.token_address(), address))

    def membership_address(self) -> ChecksumAddress:
        """The ``AgoraMembership`` whose members vote; ``ChainError`` if there is none."""
        model = self.voting_model
        if model is VotingModel.MEMBERSHIP:
            return self.token_address()
        if model is not VotingModel.MEMBERSHIP_QUADRATIC:
            raise ChainError(
                f"governor {self.governor_address} counts {model.summary}: it has no members "
                "(deploy with --voting membership or membership-quadratic)"
            )
        gated = self.w3.eth.contract(
            address=self.governor_address,
            abi=load_artifact("AgoraMembersQuadraticGovernor").abi,
        )
        with gov_errors("reading the governor's membership"):
            return Web3.to_checksum_address(gated.functions.membership().call())

    def _votes(self, votes_contract: ChecksumAddress, account: ChecksumAddress) -> int:
        """``account``'s current votes in an IVotes contract (token or membership)."""
        contract = self.w3.eth.contract(address=votes_contract, abi=load_artifact("AgoraToken").abi)
        with gov_errors(f"reading the votes of {account}"):
            return int(contract.functions.getVotes(account).call())

    def proposals(self) -> list[Proposal]:
        """Every proposal made to this governor since ``from_block``, oldest first."""
        with gov_errors("fetching ProposalCreated events"):
            logs = self._governor.events.ProposalCreated().get_logs(from_block=self.from_block)
        return [self._proposal_from_event(log) for log in logs]

    def proposal(self, proposal_id: int) -> Proposal:
        for proposal in self.proposals():
            if proposal.proposal_id == proposal_id:
                return proposal
        raise ChainError(
            f"proposal {proposal_id} does not exist on governor {self.governor_address} "
            f"(searched from block {self.from_block})"
        )

    # -- the lifecycle

    def propose_ratification(
        self, sender: Sender, digest: str, uri: str, note: str = ""
    ) -> Proposal:
        """Propose that the registry ratify bundle ``digest`` found at ``uri``."""
        digest_bytes = to_bytes32(digest)
        current = self.registry.current()
        if current is not None and current.digest == digest:
            raise ChainError(f"bundle {digest} is already the ratified version {current.version}")
        self.check()
        calldata = bytes.fromhex(
            self._registry.encode_abi("ratify", args=[digest_bytes, uri]).removeprefix("0x")
        )
        return self.propose(
            sender,
            self.registry.address,
            calldata,
            ratification_description(digest, uri, note),
            f"ratify {digest}",
            "this bundle and uri",
        )

    def propose(
        self,
        sender: Sender,
        target: ChecksumAddress,
        calldata: bytes,
        description: str,
        action: str,
        what: str,
    ) -> Proposal:
        """Propose that the timelock call ``target`` with ``calldata``; ``action`` names it in
        errors ("ratify sha256:..."), ``what`` names its arguments ("this bundle and uri")."""
        existing = self._existing_proposal_id(target, calldata, description)
        if existing is not None:
            raise ChainError(
                f"proposal {existing} already proposes {what} "
                f"({self.state(existing).label}); add a note to propose it again"
            )
        self._check_proposer(sender.address)
        receipt = sender.send(
            self._governor.functions.propose([target], [0], [calldata], description),
            f"proposing to {action}",
        )
        events = self._governor.events.ProposalCreated().process_receipt(receipt)
        if not events:
            raise ChainError("proposing: the transaction emitted no ProposalCreated event")
        return self._proposal_from_event(events[0])

    def vote(self, sender: Sender, proposal_id: int, support: Support, reason: str = "") -> int:
        """Cast ``sender``'s vote; returns its weight (token base units)."""
        state = self.state(proposal_id)
        head = self._block_number()
        if state is ProposalState.PENDING:
            snapshot = self._snapshot(proposal_id)
            raise ChainError(
                f"voting on proposal {proposal_id} has not opened yet: it opens after block "
                f"{snapshot} (the chain is at block {head})"
            )
        if state is not ProposalState.ACTIVE:
            raise ChainError(f"proposal {proposal_id} is {state.label}: voting is closed")
        snapshot = self._snapshot(proposal_id)
        weight = self.voting_power(sender.address, snapshot)
        if weight == 0:
            raise ChainError(no_voting_power(sender.address, proposal_id, snapshot))
        sender.send(
            self._governor.functions.castVoteWithReason(proposal_id, int(support), reason),
            f"voting {support.name.lower()} on proposal {proposal_id}",
        )
        return weight

    def queue(self, sender: Sender, proposal_id: int) -> int:
        """Queue a passed proposal in the timelock; returns the Unix time it can execute."""
        state = self.state(proposal_id)
        if state is not ProposalState.SUCCEEDED:
            raise ChainError(self._not_passed_reason(proposal_id, state, "queued"))
        proposal = self.proposal(proposal_id)
        sender.send(
            self._governor.functions.queue(*self._operation(proposal)),
            f"queueing proposal {proposal_id}",
        )
        return self.eta(proposal_id)

    def execute(self, sender: Sender, proposal_id: int) -> Ratification | None:
        """Execute a queued proposal whose delay is over; the ratification it made, if any."""
        state = self.state(proposal_id)
        if state is ProposalState.SUCCEEDED:
            raise ChainError(f"proposal {proposal_id} passed but is not queued yet: queue it first")
        if state is not ProposalState.QUEUED:
            raise ChainError(self._not_passed_reason(proposal_id, state, "executed"))
        eta, now = self.eta(proposal_id), self._latest_timestamp()
        if now < eta:
            raise ChainError(not_ready_reason(proposal_id, eta, now))
        proposal = self.proposal(proposal_id)
        receipt = sender.send(
            self._governor.functions.execute(*self._operation(proposal)),
            f"executing proposal {proposal_id}",
        )
        return self.registry.ratification_in(receipt)

    def wait_until(
        self,
        proposal_id: int,
        step: Literal["vote", "queue", "execute"],
        timeout_s: float,
        poll_s: float = 1.0,
    ) -> None:
        """Wait, up to ``timeout_s``, until it is no longer too early for ``step``.

        Returns quietly on timeout: the step itself then reports why it cannot run.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self._too_early(proposal_id, step):
            time.sleep(poll_s)

    # -- internals

    def _too_early(self, proposal_id: int, step: Literal["vote", "queue", "execute"]) -> bool:
        state = self.state(proposal_id)
        if step == "vote":
            return state is ProposalState.PENDING
        if step == "queue":
            return state in (ProposalState.PENDING, ProposalState.ACTIVE)
        if state in (ProposalState.PENDING, ProposalState.ACTIVE, ProposalState.SUCCEEDED):
            return True
        return state is ProposalState.QUEUED and self._latest_timestamp() < self.eta(proposal_id)

    def _not_passed_reason(self, proposal_id: int, state: ProposalState, step: str) -> str:
        if state is ProposalState.DEFEATED:
            t = self.tally(proposal_id)
            return defeated_reason(
                proposal_id,
                t.votes_for,
                t.votes_against,
                t.votes_abstain,
                t.quorum,
                self.voting_model.format_weight,
            )
        if state in (ProposalState.PENDING, ProposalState.ACTIVE):
            with gov_errors(f"reading the deadline of proposal {proposal_id}"):
                deadline = int(self._governor.functions.proposalDeadline(proposal_id).call())
            return (
                f"proposal {proposal_id} cannot be {step} yet: voting is open until block "
                f"{deadline} (the chain is at block {self._block_number()})"
            )
        return f"proposal {proposal_id} is {state.label}: it cannot be {step}"

    def _existing_proposal_id(
        self, target: ChecksumAddress, calldata: bytes, description: str
    ) -> int | None:
        for proposal in self.proposals():
            if (proposal.targets, proposal.calldatas) == ((target,), (calldata,)) and (
                proposal.description == description
            ):
                return proposal.proposal_id
        return None

    def _check_proposer(self, proposer: ChecksumAddress) -> None:
        """Refuse, in the model's units, a proposer below the proposal threshold (the
        governor counts the votes at the block before the proposal's: the latest one)."""
        with gov_errors("reading the proposal threshold"):
            threshold = int(self._governor.functions.proposalThreshold().call())
        if threshold == 0:
            return
        votes = self.voting_power(proposer)
        if votes < threshold:
            weight = self.voting_model.format_weight
            raise ChainError(
                f"insufficient votes to propose: {proposer} has {weight(votes)}, "
                f"the proposal threshold is {weight(threshold)}"
            )

    def _operation(self, proposal: Proposal) -> tuple[list[str], list[int], list[bytes], bytes]:
        return (
            list(proposal.targets),
            list(proposal.values),
            list(proposal.calldatas),
            proposal.description_hash,
        )

    def _snapshot(self, proposal_id: int) -> int:
        with gov_errors(f"reading the snapshot of proposal {proposal_id}"):
            return int(self._governor.functions.proposalSnapshot(proposal_id).call())

    def _block_number(self) -> int:
        with gov_errors("reading the chain head"):
            return int(self.w3.eth.block_number)

    def _latest_timestamp(self) -> int:
        with gov_errors("reading the latest block"):
            return int(self.w3.eth.get_block("latest")["timestamp"])

    def _proposal_from_event(self, event: EventData) -> Proposal:
        args: dict[str, Any] = dict(event["args"])
        targets = tuple(Web3.to_checksum_address(t) for t in args["targets"])
        calldatas = tuple(bytes(c) for c in args["calldatas"])
        digest, uri = self._ratification_args(targets, calldatas)
        return Proposal(
            proposal_id=int(args["proposalId"]),
            proposer=Web3.to_checksum_address(args["proposer"]),
            description=str(args["description"]),
            targets=targets,
            values=tuple(int(v) for v in args["values"]),
            calldatas=calldatas,
            vote_start=int(args["voteStart"]),
            vote_end=int(args["voteEnd"]),
            created_block=int(event["blockNumber"]),
            digest=digest,
            uri=uri,
        )

    def _ratification_args(
        self, targets: Sequence[ChecksumAddress], calldatas: Sequence[bytes]
    ) -> tuple[str | None, str | None]:
        if len(targets) != 1 or targets[0] != self.registry.address:
            return None, None
        try:
            function, args = self._registry.decode_function_input(calldatas[0])
        except ValueError:
            return None, None
        if function.fn_name != "ratify":
            return None, None
        return from_bytes32(args["digest"]), str(args["uri"])
