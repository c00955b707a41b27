"""Checkpoints of the decision log anchored on chain, in a ``LogAnchor`` contract.

An anchor is a checkpoint's ``(origin, tree size, root hash)`` recorded on
chain by an authorised key. Anyone holding the chain can read every anchor of
an origin (:meth:`AnchorClient.anchors`) and check the log's files against
each: the tree of the log's first ``size`` records must have that root, so a
log cut or rewritten after it was anchored is caught. Writing one
(:meth:`AnchorClient.anchor`) needs a sending key with the contract's
``ANCHORER_ROLE``; sizes of an origin only grow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from eth_typing import ChecksumAddress
from web3 import Web3

from gateway.chain.artifacts import load_artifact
from gateway.chain.errors import (
    REGISTRY_SENTENCES,
    RevertSentences,
    chain_errors,
    parse_address,
    require_contract,
)
from gateway.chain.rpc import connect
from gateway.exceptions import ChainError

if TYPE_CHECKING:
    from gateway.gov.transactions import Sender

ZERO_ADDRESS = "0x" + "00" * 20
MAX_SIZE = 2**64 - 1
"""The contract stores sizes as uint64."""

ANCHOR_SENTENCES: RevertSentences = {
    **REGISTRY_SENTENCES,
    "AccessControlUnauthorizedAccount": lambda a: (
        f"{a['account']} may not anchor checkpoints: it lacks the contract's ANCHORER_ROLE "
        "(the contract's admin grants it with grantRole(ANCHORER_ROLE, account))"
    ),
    "SizeNotIncreasing": lambda a: (
        f"a checkpoint of size {a['size']} cannot be anchored: size {a['anchored']} "
        "is anchored already, and sizes only grow"
    ),
    "EmptyOrigin": lambda a: "a checkpoint needs an origin",
    "UnknownCheckpoint": lambda a: f"{a['origin']} has no anchored checkpoint {a['index']}",
}
"""Sentences for the errors of ``LogAnchor``."""


@dataclass(frozen=True)
class Anchor:
    """One anchored checkpoint of a log: its tree size and root, and when it was anchored."""

    origin: str
    index: int
    """Its place in the origin's history, from 0."""
    size: int
    root: bytes
    """The RFC 6962 root hash of the log's first ``size`` records (32 bytes)."""
    block_number: int
    timestamp: int
    """Unix time of the block that anchored it."""


class AnchorClient:
    """A ``LogAnchor`` contract: its anchors (read) and, with a sender, new ones (write)."""

    def __init__(self, w3: Web3, address: str, sender: Sender | None = None) -> None:
        self.w3 = w3
        self.address: ChecksumAddress = parse_address(address, "log anchor contract address")
        self._contract = w3.eth.contract(address=self.address, abi=load_artifact("LogAnchor").abi)
        self._sender = sender

    def check(self) -> None:
        """``ChainError`` unless a contract answering like a ``LogAnchor`` is at the address."""
        require_contract(self.w3, self.address, "LogAnchor")
        with chain_errors(f"reading the LogAnchor at {self.address}", ANCHOR_SENTENCES):
            self._contract.functions.count("").call()

    def anchors(self, origin: str) -> list[Anchor]:
        """Every checkpoint anchored for ``origin``, oldest first (read at one block)."""
        with chain_errors(f"reading the anchors of {origin}", ANCHOR_SENTENCES):
            block = int(self.w3.eth.block_number)
            count = int(self._contract.functions.count(origin).call(block_identifier=block))
            return [self._read(origin, index, block) for index in range(count)]

    def latest(self, origin: str) -> Anchor | None:
        """The last checkpoint anchored for ``origin``; None when there is none."""
        with chain_errors(f"reading the latest anchor of {origin}", ANCHOR_SENTENCES):
            block = int(self.w3.eth.block_number)
            count = int(self._contract.functions.count(origin).call(block_identifier=block))
            return self._read(origin, count - 1, block) if count else None

    def anchor(self, origin: str, size: int, root: bytes) -> Anchor:
        """Anchor ``(origin, size, root)``: send it, wait until it is mined; the new anchor.

        Raise ChainError saying why when the contract refuses it (the key is not
        an anchorer; ``size`` is not larger than the last anchored size), before
        anything is sent.
        """
        if self._sender is None:
            raise ChainError("anchoring needs a sending key")
        if not origin or not 0 < size <= MAX_SIZE or len(root) != 32:
            raise ChainError(
                f"not a checkpoint: origin {origin!r}, size {size}, {len(root)}-byte root"
            )
        action = f"anchoring {origin} at size {size}"
        call = self._contract.functions.anchor(origin, size, root)
        with chain_errors(action, ANCHOR_SENTENCES):
            call.call({"from": self._sender.address})  # a refusal, said before anything is sent
        receipt = self._sender.send(call, action)
        with chain_errors(action, ANCHOR_SENTENCES):
            events = self._contract.events.Anchored().process_receipt(receipt)
            block = self.w3.eth.get_block(receipt["blockNumber"])
        if len(events) != 1:
            raise ChainError(f"{action}: the transaction logged {len(events)} Anchored events")
        index = int(events[0]["args"]["index"])
        return Anchor(
            origin, index, size, root, int(receipt["blockNumber"]), int(block["timestamp"])
        )

    def _read(self, origin: str, index: int, block: int) -> Anchor:
        size, root, block_number, timestamp = self._contract.functions.checkpoint(
            origin, index
        ).call(block_identifier=block)
        return Anchor(origin, index, int(size), bytes(root), int(block_number), int(timestamp))


def deploy_anchor(
    sender: Sender, admin: str | None = None, anchorer: str | None = None
) -> ChecksumAddress:
    """Deploy a ``LogAnchor``; its address.

    ``admin`` (default: the sender) grants and revokes the anchorers' role;
    ``anchorer`` (default: none yet) is the first key allowed to anchor.
    """
    admin_address = parse_address(admin, "admin") if admin else sender.address
    anchorer_address = parse_address(anchorer, "anchorer") if anchorer else ZERO_ADDRESS
    return sender.deploy(load_artifact("LogAnchor"), admin_address, anchorer_address)


def read_anchors(
    rpc_url: str, contract: str, origin: str, *, chain_id: int | None = None
) -> list[Anchor]:
    """Every checkpoint anchored for ``origin`` in the ``LogAnchor`` at ``contract``, oldest
    first, read from the node at ``rpc_url`` (what ``agora log verify --chain`` checks the
    files against). Raise ChainError saying what failed."""
    client = AnchorClient(connect(rpc_url, expected_chain_id=chain_id), contract)
    client.check()
    return client.anchors(origin)
