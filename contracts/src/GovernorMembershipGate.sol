// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {GovernorVotes} from "@openzeppelin/contracts/governance/extensions/GovernorVotes.sol";
import {IVotes} from "@openzeppelin/contracts/governance/utils/IVotes.sol";

/// @title Members-only voting for an OpenZeppelin Governor
/// @notice Only accounts that held a membership at the proposal's snapshot have voting
/// weight; a member's weight is whatever the rest of the governor counts (with
/// `GovernorVotesQuadratic`: the square root of the tokens delegated to them).
/// @dev Membership is read from a votes contract whose votes stay with their holder
/// (`AgoraMembership`): having one vote there at the snapshot is being a member.
abstract contract GovernorMembershipGate is GovernorVotes {
    IVotes private immutable _membership;

    constructor(IVotes membership_) {
        _membership = membership_;
    }

    /// @notice The membership whose members may vote.
    function membership() public view virtual returns (IVotes) {
        return _membership;
    }

    function _getVotes(
        address account,
        uint256 timepoint,
        bytes memory params
    ) internal view virtual override returns (uint256) {
        if (_membership.getPastVotes(account, timepoint) == 0) return 0;
        return super._getVotes(account, timepoint, params);
    }
}
