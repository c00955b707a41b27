"""Read-only client of ``PolicyRegistry``: which policy version the community ratified.

This is what the gateway polls. It never needs a key. Reads can be pinned to
``head - confirmations`` so that a ratification is acted on only once it is
unlikely to be reorganised away.
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
from gateway.exceptions import ChainError


@dataclass(frozen=True)
class Ratification:
    """One ratified policy version: the bundle's digest, where to fetch it, and when."""

    version: int
    digest: str  # "sha256:<64 hex>"
    uri: str
    block_number: int


class RegistryClient:
    """Reads a ``PolicyRegistry`` contract; every failure is a ``ChainError``."""

    def __init__(self, w3: Web3, address: str) -> None:
        self.w3 = w3
        self.address: ChecksumAddress = parse_address(address, "policy registry address")
        self._contract = w3.eth.contract(
            address=self.address, abi=load_artifact("PolicyRegistry").abi
        )

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

    def version(self, n: int) -> Ratification:
        """Version ``n`` (from 1); ``ChainError`` if it does not exist."""
        with chain_errors(f"reading policy version {n}"):
            version, digest, uri, block_number = self._contract.functions.version(n).call()
        return Ratification(int(version), from_bytes32(digest), str(uri), int(block_number))

    def latest_confirmed(self, confirmations: int) -> Ratification | None:
        """The version in force ``confirmations`` blocks below the head.

        ``None`` if nothing was ratified by then, including when the chain is
        younger than ``confirmations`` or the registry did not exist yet.
        """
        if confirmations < 0:
            raise ChainError(f"confirmations must be >= 0, got {confirmations}")
        with chain_errors("reading the chain head"):
            head = int(self.w3.eth.block_number)
        block = head - confirmations
        if block < 0:
            return None
        try:
            return self.current(block)
        except ChainError as exc:
            if not isinstance(exc.__cause__, BadFunctionCallOutput):
                raise
            with chain_errors("reading the registry code"):
                deployed = bool(self.w3.eth.get_code(self.address, block))
            if deployed:
                raise
            return None

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
