"""What the community decided and is deciding, read from the chain over JSON-RPC (read only).

The registry's ratifications (``PolicyRatified``: version, digest, uri, block
and transaction) and the governor's proposals (``ProposalCreated``), with each
proposal's state, votes for, against and abstaining, quorum and deadlines.
A ratification proposal is one call to ``PolicyRegistry.ratify(digest, uri)``;
other proposals are shown without a bundle. Calls block: run them in a thread.
This module imports web3 and is loaded only when ``community.governor`` or
``governance`` is configured.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from web3 import Web3
from web3.types import EventData

from gateway.chain.artifacts import load_artifact
from gateway.chain.digests import from_bytes32
from gateway.chain.errors import chain_errors, parse_address
from gateway.chain.voting import VotingModel, detect_voting_model

STATES = ("Pending", "Active", "Canceled", "Defeated", "Succeeded", "Queued", "Expired", "Executed")
"""OpenZeppelin's ``IGovernor.ProposalState``, in its order."""
OPEN_STATES = frozenset({"Pending", "Active", "Succeeded", "Queued"})
FINAL_STATES = frozenset({"Canceled", "Defeated", "Expired", "Executed"})
"""States a proposal never leaves: read once, then kept."""


@dataclass(frozen=True)
class RatifiedVersion:
    version: int
    digest: str
    uri: str
    block_number: int
    transaction: str
    timestamp: int


@dataclass(frozen=True)
class ProposalView:
    """A proposal as the page shows it; ``digest``/``uri`` only for a ratification."""

    proposal_id: str
    proposer: str
    description: str
    state: str
    digest: str | None
    uri: str | None
    votes_for: str
    votes_against: str
    votes_abstain: str
    quorum: str
    """Votes and quorum as the governor weighs them (``VotingModel.format_weight``)."""
    snapshot_block: int
    deadline_block: int
    created_block: int
    transaction: str
    eta: int

    @property
    def open(self) -> bool:
        return self.state in OPEN_STATES


@dataclass(frozen=True)
class ChainView:
    """One reading of the chain: its head, the ratified versions and the proposals, and how
    the governor weighs votes (None without a governor)."""

    head_block: int
    head_time: int
    versions: tuple[RatifiedVersion, ...]
    proposals: tuple[ProposalView, ...]
    voting: VotingModel | None = None


class ChainReader:
    """Reads a PolicyRegistry and, if given, the AgoraGovernor that writes it."""

    def __init__(self, w3: Web3, registry: str, governor: str | None, from_block: int = 0):
        self._w3 = w3
        self._from = from_block
        self._registry = w3.eth.contract(
            address=parse_address(registry, "policy registry address"),
            abi=load_artifact("PolicyRegistry").abi,
        )
        self._governor = (
            None
            if governor is None
            else w3.eth.contract(
                address=parse_address(governor, "governor address"),
                abi=load_artifact("AgoraGovernor").abi,
            )
        )
        self._voting: VotingModel | None = None
        self._final: dict[int, ProposalView] = {}
        self._block_times: dict[int, int] = {}

    def read(self) -> ChainView:
        """Everything the page shows from the chain; ChainError on any failure."""
        with chain_errors("reading the chain head"):
            head = self._w3.eth.get_block("latest")
        versions = self._versions()
        if self._governor is None:
            return ChainView(int(head["number"]), int(head["timestamp"]), versions, ())
        voting = self._voting_model()
        proposals = self._proposals()
        return ChainView(int(head["number"]), int(head["timestamp"]), versions, proposals, voting)

    def _voting_model(self) -> VotingModel:
        """Read once: a governor's voting model is fixed at its deployment."""
        if self._voting is None:
            governor = self._governor
            assert governor is not None
            self._voting = detect_voting_model(self._w3, governor.address)
        return self._voting

    def _versions(self) -> tuple[RatifiedVersion, ...]:
        with chain_errors("fetching PolicyRatified events"):
            logs = self._registry.events.PolicyRatified().get_logs(from_block=self._from)
            times = {n: self._block_time(n) for n in {int(log["blockNumber"]) for log in logs}}
        return tuple(
            RatifiedVersion(
                version=int(log["args"]["version"]),
                digest=from_bytes32(log["args"]["digest"]),
                uri=str(log["args"]["uri"]),
                block_number=int(log["blockNumber"]),
                transaction=_hex(log["transactionHash"]),
                timestamp=times[int(log["blockNumber"])],
            )
            for log in logs
        )

    def _proposals(self) -> tuple[ProposalView, ...]:
        governor = self._governor
        assert governor is not None
        with chain_errors("fetching ProposalCreated events"):
            logs = governor.events.ProposalCreated().get_logs(from_block=self._from)
        return tuple(self._proposal(log) for log in logs)

    def _proposal(self, log: EventData) -> ProposalView:
        governor = self._governor
        assert governor is not None
        args: dict[str, Any] = dict(log["args"])
        pid = int(args["proposalId"])
        if pid in self._final:
            return self._final[pid]
        calls = governor.functions
        with chain_errors(f"reading proposal {pid}"):
            state = STATES[int(calls.state(pid).call())]
            against, for_, abstain = calls.proposalVotes(pid).call()
            snapshot = int(calls.proposalSnapshot(pid).call())
            deadline = int(calls.proposalDeadline(pid).call())
            quorum = int(calls.quorum(snapshot).call())
            eta = int(calls.proposalEta(pid).call())
        digest, uri = self._ratification(args["targets"], args["calldatas"])
        view = ProposalView(
            proposal_id=str(pid),
            proposer=Web3.to_checksum_address(args["proposer"]),
            description=str(args["description"]),
            state=state,
            digest=digest,
            uri=uri,
            votes_for=self._weight(int(for_)),
            votes_against=self._weight(int(against)),
            votes_abstain=self._weight(int(abstain)),
            quorum=self._weight(quorum),
            snapshot_block=snapshot,
            deadline_block=deadline,
            created_block=int(log["blockNumber"]),
            transaction=_hex(log["transactionHash"]),
            eta=eta,
        )
        if state in FINAL_STATES:
            self._final[pid] = view
        return view

    def _ratification(
        self, targets: list[str], calldatas: list[bytes]
    ) -> tuple[str | None, str | None]:
        if len(targets) != 1 or Web3.to_checksum_address(targets[0]) != self._registry.address:
            return None, None
        try:
            function, args = self._registry.decode_function_input(bytes(calldatas[0]))
        except ValueError:
            return None, None
        if function.fn_name != "ratify":
            return None, None
        return from_bytes32(args["digest"]), str(args["uri"])

    def _weight(self, weight: int) -> str:
        """Votes as the governor weighs them: tokens, members, or square-rooted tokens."""
        return self._voting_model().format_weight(weight)

    def _block_time(self, number: int) -> int:
        """The block's timestamp (call inside ``chain_errors``); a ratification's is read once."""
        if number not in self._block_times:
            self._block_times[number] = int(self._w3.eth.get_block(number)["timestamp"])
        return self._block_times[number]


def _hex(value: bytes | str) -> str:
    text = value if isinstance(value, str) else bytes(value).hex()
    return text if text.startswith("0x") else "0x" + text
