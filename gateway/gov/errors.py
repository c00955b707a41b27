"""``agora gov``'s errors as sentences: the governor's, the timelock's and the token's
reverts, and why a step of a proposal cannot be taken yet (or any more).

:func:`gov_errors` is :func:`gateway.chain.errors.chain_errors` with these
sentences added to the registry's.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime

from web3.exceptions import ContractLogicError

from gateway.chain import errors as chain
from gateway.chain.tokens import TOKEN_SYMBOL, format_tokens

PROPOSAL_STATES = (
    "Pending",
    "Active",
    "Canceled",
    "Defeated",
    "Succeeded",
    "Queued",
    "Expired",
    "Executed",
)


def _state_names(bitmap: bytes) -> str:
    """OpenZeppelin's ``bytes32`` state bitmap as names (bit i set: state i expected)."""
    bits = int.from_bytes(bitmap, "big")
    return " or ".join(s for i, s in enumerate(PROPOSAL_STATES) if bits >> i & 1)


def _tokens(base_units: int) -> str:
    return f"{format_tokens(base_units)} {TOKEN_SYMBOL}"


# Sentences for the errors a community member can actually cause; the rest are
# shown as ``Name(arg=value, ...)``.
GOVERNANCE_SENTENCES: chain.RevertSentences = {
    **chain.REGISTRY_SENTENCES,
    "GovernorInsufficientProposerVotes": lambda a: (
        f"insufficient votes to propose: {a['proposer']} has {_tokens(a['votes'])}, "
        f"the proposal threshold is {_tokens(a['threshold'])}"
    ),
    "GovernorUnexpectedProposalState": lambda a: (
        f"proposal {a['proposalId']} is {PROPOSAL_STATES[a['current']]}"
        + (
            f", this needs it {_state_names(a['expectedStates'])}"
            if any(a["expectedStates"])
            else ""
        )
    ),
    "GovernorNonexistentProposal": lambda a: f"proposal {a['proposalId']} does not exist",
    "GovernorAlreadyCastVote": lambda a: f"{a['voter']} has already voted on this proposal",
    "GovernorInvalidVoteType": lambda a: "invalid vote: use for, against or abstain",
    "TimelockUnexpectedOperationState": lambda a: (
        "the timelock refused the operation: it is not ready "
        "(the timelock delay has not passed, or it was already executed or cancelled)"
    ),
    "AccessControlUnauthorizedAccount": lambda a: (
        f"{a['account']} lacks role 0x{a['neededRole'].hex()} on the timelock"
    ),
    "ERC20InsufficientBalance": lambda a: (
        f"{a['sender']} holds {_tokens(a['balance'])}, {_tokens(a['needed'])} needed"
    ),
    "NotMembershipAuthority": lambda a: (
        f"only the membership authority may admit or remove members; {a['caller']} is not it"
    ),
    "AlreadyMember": lambda a: f"{a['account']} is already a member",
    "NotMember": lambda a: f"{a['account']} is not a member",
    "MembershipNotTransferable": lambda a: (
        "a membership cannot be transferred: members are admitted and removed, one each"
    ),
    "MembershipVoteNotDelegable": lambda a: (
        "a member's vote cannot be delegated: under membership voting each member votes in person"
    ),
}


def gov_errors(action: str) -> AbstractContextManager[None]:
    """Anything web3 or the transport raises while doing ``action``, as ``ChainError``."""
    return chain.chain_errors(action, GOVERNANCE_SENTENCES)


def describe_revert(exc: ContractLogicError) -> str:
    """A readable reason for a revert of any of Agora's contracts."""
    return chain.describe_revert(exc, GOVERNANCE_SENTENCES)


def defeated_reason(
    proposal_id: int,
    votes_for: int,
    votes_against: int,
    votes_abstain: int,
    quorum: int,
    weight: Callable[[int], str] = _tokens,
) -> str:
    """Why a proposal was defeated: below quorum, or not more for than against (the votes
    as the governor weighs them, written by ``weight``: token base units by default)."""
    participation = votes_for + votes_abstain
    if participation < quorum:
        return (
            f"proposal {proposal_id} was defeated: below quorum ({weight(participation)} "
            f"of the {weight(quorum)} needed voted for or abstain)"
        )
    return (
        f"proposal {proposal_id} was defeated: insufficient votes in favour "
        f"({weight(votes_for)} for, {weight(votes_against)} against)"
    )


def no_voting_power(voter: str, proposal_id: int, snapshot: int) -> str:
    """The voter had no delegated votes when the proposal took its snapshot."""
    return (
        f"insufficient votes: {voter} had no voting power at block {snapshot}, when proposal "
        f"{proposal_id} took its snapshot; tokens count as votes only once delegated "
        "(agora gov delegate), and only for proposals made after the delegation"
    )


def not_ready_reason(proposal_id: int, eta: int, now: int) -> str:
    """The timelock delay of a queued proposal has not passed yet."""
    when = datetime.fromtimestamp(eta, UTC).isoformat(timespec="seconds")
    return (
        f"proposal {proposal_id} is queued, but the timelock delay is not over: "
        f"it can be executed from {when} (in {eta - now} s)"
    )
