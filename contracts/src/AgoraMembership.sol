// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ERC721} from "@openzeppelin/contracts/token/ERC721/ERC721.sol";
import {ERC721Votes} from "@openzeppelin/contracts/token/ERC721/extensions/ERC721Votes.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";

/// @title Agora membership
/// @notice One member, one vote. A membership is an ERC-721 token whose id is the member's
/// address, so nobody holds two; it cannot be transferred (only admitted and removed), and
/// its vote is delegated to the member at admission, for good: a vote that could be handed
/// on would let one person carry several, or a non-member vote.
/// @dev Only the membership authority, fixed at deployment, admits and removes members:
/// the governance timelock (admitting a member is then itself a proposal the community
/// votes on) or a named address. Votes and checkpoints are OpenZeppelin's ERC721Votes.
contract AgoraMembership is ERC721, EIP712, ERC721Votes {
    /// @notice Who may admit and remove members.
    address public immutable authority;

    error ZeroAddressAuthority();
    error NotMembershipAuthority(address caller);
    error AlreadyMember(address account);
    error NotMember(address account);
    error MembershipNotTransferable(uint256 tokenId);
    error MembershipVoteNotDelegable();

    constructor(
        address authority_,
        address[] memory initialMembers
    ) ERC721("Agora membership", "AGORAM") EIP712("Agora membership", "1") {
        if (authority_ == address(0)) revert ZeroAddressAuthority();
        authority = authority_;
        for (uint256 i = 0; i < initialMembers.length; ++i) {
            _admit(initialMembers[i]);
        }
    }

    modifier onlyAuthority() {
        if (msg.sender != authority) revert NotMembershipAuthority(msg.sender);
        _;
    }

    /// @notice Make `member` a member, with one vote from the next snapshot on.
    function admit(address member) external onlyAuthority {
        _admit(member);
    }

    /// @notice Take `member`'s membership, and its vote, away.
    function remove(address member) external onlyAuthority {
        if (!isMember(member)) revert NotMember(member);
        _burn(tokenIdOf(member));
    }

    /// @notice Whether `account` holds a membership now.
    function isMember(address account) public view returns (bool) {
        return account != address(0) && _ownerOf(tokenIdOf(account)) == account;
    }

    /// @notice The id of `account`'s membership token: its address as a number.
    function tokenIdOf(address account) public pure returns (uint256) {
        return uint256(uint160(account));
    }

    /// @dev A member's vote stays with the member.
    function delegate(address) public pure override {
        revert MembershipVoteNotDelegable();
    }

    /// @dev A member's vote stays with the member.
    function delegateBySig(address, uint256, uint256, uint8, bytes32, bytes32) public pure override {
        revert MembershipVoteNotDelegable();
    }

    function _admit(address member) private {
        if (isMember(member)) revert AlreadyMember(member);
        // _mint, not _safeMint: a contract (a multisig) may be a member without a callback.
        _mint(member, tokenIdOf(member));
        _delegate(member, member);
    }

    /// @dev Only mints (from the zero address) and burns (to it) get through.
    function _update(address to, uint256 tokenId, address auth) internal override(ERC721, ERC721Votes) returns (address) {
        if (to != address(0) && _ownerOf(tokenId) != address(0)) revert MembershipNotTransferable(tokenId);
        return super._update(to, tokenId, auth);
    }

    function _increaseBalance(address account, uint128 amount) internal override(ERC721, ERC721Votes) {
        super._increaseBalance(account, amount);
    }
}
