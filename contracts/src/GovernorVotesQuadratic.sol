// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {GovernorVotesQuorumFraction} from "@openzeppelin/contracts/governance/extensions/GovernorVotesQuorumFraction.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";

/// @title Quadratic voting weight for an OpenZeppelin Governor
/// @notice An account's voting weight is the integer square root of the token votes
/// delegated to it at the proposal's snapshot, and the quorum is the square root of the
/// token quorum: the weight that one holder of the quorum's share of the supply would
/// have. So holders of that share who take part always reach it, as with plain token
/// votes, and more, smaller holders reach it with fewer tokens.
/// @dev Known weakness: splitting tokens across addresses raises their total weight
/// (n addresses with s/n each weigh sqrt(n * s)); nothing on chain can tell one person's
/// addresses apart. Proposal thresholds are compared with the same square-rooted weight.
abstract contract GovernorVotesQuadratic is GovernorVotesQuorumFraction {
    function _getVotes(
        address account,
        uint256 timepoint,
        bytes memory params
    ) internal view virtual override returns (uint256) {
        return Math.sqrt(super._getVotes(account, timepoint, params));
    }

    function quorum(uint256 timepoint) public view virtual override returns (uint256) {
        return Math.sqrt(super.quorum(timepoint));
    }
}
