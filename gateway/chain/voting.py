"""The voting models a community picks at deployment, and what one vote weighs under each.

======================  ================================================================
``token`` (default)     one delegated AGORA token, one vote (``AgoraToken``, ERC20Votes)
``membership``          one member, one vote (``AgoraMembership``, a non-transferable
                        ERC721Votes token whose minting is the membership authority's)
``quadratic``           the integer square root of the delegated AGORA at the snapshot
                        (``AgoraQuadraticGovernor``)
``membership-quadratic`` members only, each weighing the square root of the AGORA
                        delegated to them (``AgoraMembersQuadraticGovernor``)
======================  ================================================================

The model is told by the contracts themselves: by the governor's name, and for
the plain governor by its token's (``Agora membership`` for a membership).
"""

from __future__ import annotations

from enum import StrEnum
from math import isqrt

from eth_typing import ChecksumAddress
from web3 import Web3

from gateway.chain.artifacts import ContractName, load_artifact
from gateway.chain.errors import chain_errors
from gateway.chain.tokens import TOKEN_SYMBOL, TOKEN_UNIT, format_tokens

MEMBERSHIP_TOKEN_NAME = "Agora membership"
_SQRT_UNIT = isqrt(TOKEN_UNIT)  # the weight of one whole token under quadratic voting


class VotingModel(StrEnum):
    """How votes are weighed; fixed at deployment."""

    TOKEN = "token"
    MEMBERSHIP = "membership"
    QUADRATIC = "quadratic"
    MEMBERSHIP_QUADRATIC = "membership-quadratic"

    @property
    def governor_contract(self) -> ContractName:
        return _GOVERNORS[self]

    @property
    def has_members(self) -> bool:
        """Whether an ``AgoraMembership`` says who may vote."""
        return self in (VotingModel.MEMBERSHIP, VotingModel.MEMBERSHIP_QUADRATIC)

    @property
    def quadratic(self) -> bool:
        return self in (VotingModel.QUADRATIC, VotingModel.MEMBERSHIP_QUADRATIC)

    @property
    def summary(self) -> str:
        return {
            VotingModel.TOKEN: "one AGORA token, one vote",
            VotingModel.MEMBERSHIP: "one member, one vote",
            VotingModel.QUADRATIC: "square root of the AGORA tokens (quadratic voting)",
            VotingModel.MEMBERSHIP_QUADRATIC: (
                "members only, each with the square root of their AGORA tokens"
            ),
        }[self]

    def weight(self, votes: int) -> int:
        """The voting weight of ``votes`` units of the governor's token (token base units,
        or memberships) held by someone who may vote."""
        return isqrt(votes) if self.quadratic else votes

    def threshold(self, whole: int) -> int:
        """The governor's proposal threshold for ``whole`` tokens (or members) of votes."""
        if self is VotingModel.MEMBERSHIP:
            return whole
        return self.weight(whole * TOKEN_UNIT)

    def format_weight(self, weight: int) -> str:
        """A weight as people read it: ``300000 AGORA``, ``1 vote``, ``547.722557505 √AGORA``."""
        if self is VotingModel.MEMBERSHIP:
            return f"{weight} vote" if weight == 1 else f"{weight} votes"
        if self.quadratic:
            whole, fraction = divmod(weight, _SQRT_UNIT)
            digits = len(str(_SQRT_UNIT)) - 1
            shown = f"{whole}.{fraction:0{digits}d}".rstrip("0").rstrip(".")
            return f"{shown} √{TOKEN_SYMBOL}"
        return f"{format_tokens(weight)} {TOKEN_SYMBOL}"


_GOVERNORS: dict[VotingModel, ContractName] = {
    VotingModel.TOKEN: "AgoraGovernor",
    VotingModel.MEMBERSHIP: "AgoraGovernor",
    VotingModel.QUADRATIC: "AgoraQuadraticGovernor",
    VotingModel.MEMBERSHIP_QUADRATIC: "AgoraMembersQuadraticGovernor",
}


def detect_voting_model(w3: Web3, governor: ChecksumAddress) -> VotingModel:
    """The model of the governor at ``governor``, read from the chain (each governor's
    ``name()`` is its contract's name)."""
    contract = w3.eth.contract(address=governor, abi=load_artifact("AgoraGovernor").abi)
    with chain_errors(f"reading how governor {governor} counts votes"):
        name = str(contract.functions.name().call())
        if name == "AgoraQuadraticGovernor":
            return VotingModel.QUADRATIC
        if name == "AgoraMembersQuadraticGovernor":
            return VotingModel.MEMBERSHIP_QUADRATIC
        votes = Web3.to_checksum_address(contract.functions.token().call())
        token = w3.eth.contract(address=votes, abi=load_artifact("AgoraToken").abi)
        token_name = str(token.functions.name().call())  # ERC-20 and ERC-721 share name()
    return VotingModel.MEMBERSHIP if token_name == MEMBERSHIP_TOKEN_NAME else VotingModel.TOKEN
