"""Members of a community where only members vote: list, admit, remove.

``AgoraMembership`` lets only its authority, fixed at deployment, admit and
remove members. When that is the governance timelock, admitting someone is a
proposal like any other (vote, queue, execute); when it is a named address,
that address sends the transaction itself. Either way the new member's vote
counts from the next proposal on: voting power is read at each proposal's snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from eth_typing import ChecksumAddress
from web3 import Web3

from gateway.chain.artifacts import load_artifact
from gateway.chain.errors import parse_address
from gateway.exceptions import ChainError
from gateway.gov.errors import gov_errors
from gateway.gov.governance import Governance, Proposal
from gateway.gov.transactions import Sender

Change = Literal["add", "remove"]


@dataclass(frozen=True)
class Member:
    """A current member, whom its vote is delegated to (itself), and the votes it holds."""

    address: ChecksumAddress
    delegate: ChecksumAddress
    votes: int
    since_block: int  # the block of its (latest) admission


@dataclass(frozen=True)
class MembershipChange:
    """What ``add``/``remove`` did: a proposal to vote on, or a transaction already mined."""

    change: Change
    member: ChecksumAddress
    proposal: Proposal | None  # set when the authority is the timelock
    block_number: int | None  # set when the authority sent it directly


def membership_description(change: Change, member: str, note: str = "") -> str:
    """The proposal text; like a ratification's, unique per member and note."""
    text = (
        f"Admit {member} as a member of the Agora community\n"
        if change == "add"
        else f"Remove {member} from the members of the Agora community\n"
    )
    return f"{text}\n{note.strip()}\n" if note.strip() else text


class Membership:
    """The ``AgoraMembership`` contract a governance counts votes from."""

    def __init__(self, governance: Governance) -> None:
        self.governance = governance
        self.address = governance.membership_address()
        self._contract = governance.w3.eth.contract(
            address=self.address, abi=load_artifact("AgoraMembership").abi
        )

    def authority(self) -> ChecksumAddress:
        with gov_errors("reading the membership authority"):
            return Web3.to_checksum_address(self._contract.functions.authority().call())

    def authority_is_timelock(self) -> bool:
        return self.authority() == self.governance.timelock_address()

    def is_member(self, account: str) -> bool:
        address = parse_address(account, "account")
        with gov_errors(f"checking whether {address} is a member"):
            return bool(self._contract.functions.isMember(address).call())

    def admitted(self) -> dict[ChecksumAddress, int]:
        """Each current member and the block of its (latest) admission, in order of admission,
        from the ``Transfer`` events since the governance's first block."""
        with gov_errors("fetching the membership Transfer events"):
            logs = self._contract.events.Transfer().get_logs(from_block=self.governance.from_block)
        admitted: dict[ChecksumAddress, int] = {}
        for log in logs:
            account = Web3.to_checksum_address(log["args"]["tokenId"].to_bytes(20, "big"))
            if int(log["args"]["to"], 16) == 0:  # burnt: removed
                admitted.pop(account, None)
            else:
                admitted[account] = int(log["blockNumber"])
        return admitted

    def members(self) -> list[Member]:
        """The current members, in order of admission, with their delegate and votes."""
        members = []
        with gov_errors("reading the members' votes"):
            for account, block in self.admitted().items():
                delegate = self._contract.functions.delegates(account).call()
                votes = int(self._contract.functions.getVotes(account).call())
                members.append(Member(account, Web3.to_checksum_address(delegate), votes, block))
        return members

    def change(
        self, sender: Sender, change: Change, member: str, note: str = ""
    ) -> MembershipChange:
        """Admit or remove ``member``: a proposal if the timelock is the authority, else the
        authority's own transaction (``sender`` must then be the authority)."""
        address = parse_address(member, "member")
        present = self.is_member(address)
        if change == "add" and present:
            raise ChainError(f"{address} is already a member")
        if change == "remove" and not present:
            raise ChainError(f"{address} is not a member")
        verb = "admit" if change == "add" else "remove"  # also the contract's function
        if self.authority_is_timelock():
            calldata = bytes.fromhex(
                self._contract.encode_abi(verb, args=[address]).removeprefix("0x")
            )
            proposal = self.governance.propose(
                sender,
                self.address,
                calldata,
                membership_description(change, address, note),
                f"{verb} member {address}",
                f"to {verb} {address}",
            )
            return MembershipChange(change, address, proposal, None)
        authority = self.authority()
        if sender.address != authority:
            raise ChainError(
                f"only the membership authority {authority} may {verb} members; "
                f"{sender.address} is not it"
            )
        call = getattr(self._contract.functions, verb)(address)
        receipt = sender.send(call, f"{verb} member {address}")
        return MembershipChange(change, address, None, int(receipt["blockNumber"]))
