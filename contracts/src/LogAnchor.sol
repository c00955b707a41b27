// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";

/// @title Agora log anchor
/// @notice Checkpoints of transparency logs (C2SP tlog-checkpoint: an origin, a tree
/// size and a root hash), published on chain so that anyone holding the chain can
/// tell whether a log was later cut or rewritten: every later checkpoint of the log
/// must be consistent with each one anchored here.
/// @dev Anchorers (ANCHORER_ROLE) are the gateways' sending keys; the admin
/// (DEFAULT_ADMIN_ROLE, e.g. the governance timelock) grants and revokes them.
/// For each origin, sizes only grow: an anchor never replaces or shrinks an
/// earlier one, and the whole history stays readable.
contract LogAnchor is AccessControl {
    /// @notice May call `anchor`.
    bytes32 public constant ANCHORER_ROLE = keccak256("ANCHORER_ROLE");

    struct Checkpoint {
        uint64 size;
        bytes32 root;
        uint64 blockNumber;
        uint64 timestamp;
    }

    mapping(bytes32 originHash => Checkpoint[]) private _history;

    /// @notice A checkpoint was anchored; `index` is its place in the origin's history (from 0).
    event Anchored(
        bytes32 indexed originHash, string origin, uint256 index, uint64 size, bytes32 root
    );

    error ZeroAddressAdmin();
    error EmptyOrigin();
    error SizeNotIncreasing(uint64 anchored, uint64 size);
    error UnknownCheckpoint(string origin, uint256 index);

    /// @param admin grants and revokes ANCHORER_ROLE.
    /// @param anchorer the first anchorer (address(0): none yet).
    constructor(address admin, address anchorer) {
        if (admin == address(0)) revert ZeroAddressAdmin();
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        if (anchorer != address(0)) _grantRole(ANCHORER_ROLE, anchorer);
    }

    /// @notice Anchor the checkpoint (`origin`, `size`, `root`); `size` must exceed the
    /// origin's last anchored size. Returns its index in the origin's history.
    function anchor(
        string calldata origin,
        uint64 size,
        bytes32 root
    ) external onlyRole(ANCHORER_ROLE) returns (uint256 index) {
        if (bytes(origin).length == 0) revert EmptyOrigin();
        bytes32 key = keccak256(bytes(origin));
        Checkpoint[] storage history = _history[key];
        index = history.length;
        uint64 last = index == 0 ? 0 : history[index - 1].size;
        if (size <= last) revert SizeNotIncreasing(last, size);
        history.push(Checkpoint(size, root, uint64(block.number), uint64(block.timestamp)));
        emit Anchored(key, origin, index, size, root);
    }

    /// @notice How many checkpoints of `origin` were anchored.
    function count(string calldata origin) external view returns (uint256) {
        return _history[keccak256(bytes(origin))].length;
    }

    /// @notice Checkpoint `index` (from 0) of `origin`; reverts with `UnknownCheckpoint`.
    function checkpoint(
        string calldata origin,
        uint256 index
    ) external view returns (uint64 size, bytes32 root, uint64 blockNumber, uint64 timestamp) {
        Checkpoint[] storage history = _history[keccak256(bytes(origin))];
        if (index >= history.length) revert UnknownCheckpoint(origin, index);
        Checkpoint storage c = history[index];
        return (c.size, c.root, c.blockNumber, c.timestamp);
    }

    /// @notice The last checkpoint of `origin`; all zero when none was anchored.
    function latest(
        string calldata origin
    ) external view returns (uint64 size, bytes32 root, uint64 blockNumber, uint64 timestamp) {
        Checkpoint[] storage history = _history[keccak256(bytes(origin))];
        if (history.length == 0) return (0, bytes32(0), 0, 0);
        Checkpoint storage c = history[history.length - 1];
        return (c.size, c.root, c.blockNumber, c.timestamp);
    }
}
