"""Read-only client of ``PolicyRegistry``: which policy version the community ratified.

This is what the gateway polls. It never needs a key. Reads can be pinned to
``head - confirmations`` so that a ratification is acted on only once it is
unlikely to be reorganised away, and are checked against the registry's own
list of versions.
"""

from __future__ import annotations

from dataclasses import dataclass

from eth_typing import ChecksumAddress
from web3 import Web3
from web3.exceptions import BadFunctionCallOutput
from web3.types import BlockIdentifier, EventData, TxReceipt

from gateway.chain.artifacts import load_artifact
from gateway.chain.digests import ZERO_BYTES32, from_bytes32
from gateway.chain.errors import chain_errors, parse_address, require_contract
from gateway.exceptions import ChainError, InconsistentRegistry
from gateway.redaction import redact_url

MAX_VERSION = 1_000_000
"""Far above any real registry (each version is a vote), far below a forged 2**255."""


@dataclass(frozen=True)
class Ratification:
    """One ratified policy version: the bundle's digest, where to fetch it, and when."""

    version: int
    digest: str  # "sha256:<64 hex>"
    uri: str
    block_number: int


@dataclass(frozen=True)
class NodePosition:
    """Which chain a node is on, and how far it has got."""

    chain_id: int
    head: int


class RegistryClient:
    """Reads a ``PolicyRegistry`` contract; every failure is a ``ChainError``."""

    def __init__(self, w3: Web3, address: str) -> None:
        self.w3 = w3
        self.address: ChecksumAddress = parse_address(address, "policy registry address")
        self._contract = w3.eth.contract(
            address=self.address, abi=load_artifact("PolicyRegistry").abi
        )
        endpoint = getattr(w3.provider, "endpoint_uri", None)
        self.node = "in-process" if endpoint is None else redact_url(str(endpoint))
        """The node, as it may be shown: ``scheme://host[:port]``, no credentials."""

    def check(self) -> None:
        """``ChainError`` unless a contract answering like a registry is at the address."""
        require_contract(self.w3, self.address, "PolicyRegistry")
        with chain_errors(f"reading the PolicyRegistry at {self.address}"):
            self._contract.functions.versionCount().call()

    def current(self, block: BlockIdentifier = "latest") -> Ratification | None:
        """The version in force at ``block``; ``None`` before the first ratification."""
        with chain_errors("reading the current policy version"):
            version, digest, uri, block_number = self._contract.functions.current().call(
                block_identifier=block
            )
        if version == 0 or digest == ZERO_BYTES32:
            return None
        return Ratification(int(version), from_bytes32(digest), str(uri), int(block_number))

    def version(self, n: int, block: BlockIdentifier = "latest") -> Ratification:
        """Version ``n`` (from 1); ``ChainError`` if it does not exist."""
        with chain_errors(f"reading policy version {n}"):
            version, digest, uri, block_number = self._contract.functions.version(n).call(
                block_identifier=block
            )
        return Ratification(int(version), from_bytes32(digest), str(uri), int(block_number))

    def position(self) -> NodePosition:
        """The node's chain id and head block."""
        with chain_errors("reading the chain id and head"):
            return NodePosition(int(self.w3.eth.chain_id), int(self.w3.eth.block_number))

    def block_hash(self, block: int) -> str:
        """The hash of ``block``, to tell whether two nodes are on the same chain."""
        with chain_errors(f"reading block {block}"):
            return "0x" + bytes(self.w3.eth.get_block(block)["hash"]).hex()

    def ratified_at(self, block: int) -> Ratification | None:
        """The version in force at ``block``, checked against the registry's own list.

        ``current()`` must name a version the registry lists, ``version(n)`` must
        give the same digest, uri and block, that block must not be after ``block``,
        and ``n`` must be sane: a node that answers otherwise is not believed
        (InconsistentRegistry), so that it cannot move the version to 2**255 and
        lock out every later one. ``None`` if nothing was ratified by ``block``,
        including when the registry did not exist yet.
        """
        try:
            current = self.current(block)
        except ChainError as exc:
            if not isinstance(exc.__cause__, BadFunctionCallOutput):
                raise
            with chain_errors("reading the registry code"):
                deployed = bool(self.w3.eth.get_code(self.address, block))
            if deployed:
                raise
            return None
        if current is None:
            return None
        if current.version > MAX_VERSION:
            raise InconsistentRegistry(
                f"the registry reports version {current.version}, beyond any real registry"
            )
        if current.block_number > block:
            raise InconsistentRegistry(
                f"version {current.version} is reported ratified in block "
                f"{current.block_number}, after block {block} that was read"
            )
        try:
            listed = self.version(current.version, block)
        except ChainError as exc:
            raise InconsistentRegistry(
                f"current() reports version {current.version}, "
                f"but the registry does not list it ({exc})"
            ) from exc
        if listed != current:
            raise InconsistentRegistry(
                f"current() reports version {current.version} as {current.digest} "
                f"({current.uri}), but version({current.version}) is {listed.digest} ({listed.uri})"
            )
        return current

    def latest_confirmed(self, confirmations: int) -> Ratification | None:
        """The version in force ``confirmations`` blocks below the head (see :meth:`ratified_at`).

        ``None`` if nothing was ratified by then, including when the chain is
        younger than ``confirmations``.
        """
        if confirmations < 0:
            raise ChainError(f"confirmations must be >= 0, got {confirmations}")
        with chain_errors("reading the chain head"):
            head = int(self.w3.eth.block_number)
        block = head - confirmations
        return None if block < 0 else self.ratified_at(block)

    def ratifications_since(
        self, from_block: int, to_block: BlockIdentifier = "latest"
    ) -> list[Ratification]:
        """Every ``PolicyRatified`` event in ``[from_block, to_block]``, oldest first."""
        with chain_errors("fetching PolicyRatified events"):
            logs = self._contract.events.PolicyRatified().get_logs(
                from_block=from_block, to_block=to_block
            )
        return [self._from_event(log) for log in logs]

    def ratification_in(self, receipt: TxReceipt) -> Ratification | None:
        """The ratification a transaction made (the ``execute`` of a proposal), if any."""
        for log in receipt["logs"]:
            if log["address"] == self.address:
                return self._from_event(self._contract.events.PolicyRatified().process_log(log))
        return None

    @staticmethod
    def _from_event(event: EventData) -> Ratification:
        args = event["args"]
        return Ratification(
            version=int(args["version"]),
            digest=from_bytes32(args["digest"]),
            uri=str(args["uri"]),
            block_number=int(event["blockNumber"]),
        )
