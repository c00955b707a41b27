// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title Agora policy registry
/// @notice The append-only list of policy bundle versions the community ratified.
/// Version n (from 1) is the n-th ratified bundle, named by its digest (the SHA-256
/// defined in docs/governance.md) and a URI where it can be fetched. Gateways
/// enforce only the bundle whose digest is `current()`.
/// @dev The only writer is the governance timelock, so every version went through
/// a proposal, a vote and the timelock delay.
contract PolicyRegistry {
    struct Ratification {
        bytes32 digest;
        string uri;
        uint256 blockNumber;
    }

    /// @notice The TimelockController allowed to call `ratify`.
    address public immutable timelock;

    Ratification[] private _ratifications;

    /// @notice A new version was ratified; `version` starts at 1.
    event PolicyRatified(uint256 indexed version, bytes32 indexed digest, string uri);

    error ZeroAddressTimelock();
    error NotTimelock(address caller);
    error ZeroDigest();
    error DigestAlreadyCurrent(bytes32 digest);
    error UnknownVersion(uint256 version);

    constructor(address timelock_) {
        if (timelock_ == address(0)) revert ZeroAddressTimelock();
        timelock = timelock_;
    }

    /// @notice Append version N+1. Only the timelock, i.e. only an executed proposal.
    /// @dev Re-ratifying the current digest is refused: it would add a version that
    /// changes nothing the gateways enforce. An older digest may come back as a new version.
    function ratify(bytes32 digest, string calldata uri) external returns (uint256 newVersion) {
        if (msg.sender != timelock) revert NotTimelock(msg.sender);
        if (digest == bytes32(0)) revert ZeroDigest();
        uint256 count = _ratifications.length;
        if (count > 0 && _ratifications[count - 1].digest == digest) revert DigestAlreadyCurrent(digest);
        _ratifications.push(Ratification(digest, uri, block.number));
        newVersion = count + 1;
        emit PolicyRatified(newVersion, digest, uri);
    }

    /// @notice The version in force; `(0, 0x0, "", 0)` before the first ratification.
    function current()
        external
        view
        returns (uint256 version_, bytes32 digest, string memory uri, uint256 blockNumber)
    {
        uint256 count = _ratifications.length;
        if (count == 0) return (0, bytes32(0), "", 0);
        Ratification storage r = _ratifications[count - 1];
        return (count, r.digest, r.uri, r.blockNumber);
    }

    /// @notice Version `n` (1-based); reverts with `UnknownVersion` outside 1..count.
    function version(
        uint256 n
    ) external view returns (uint256 version_, bytes32 digest, string memory uri, uint256 blockNumber) {
        if (n == 0 || n > _ratifications.length) revert UnknownVersion(n);
        Ratification storage r = _ratifications[n - 1];
        return (n, r.digest, r.uri, r.blockNumber);
    }

    /// @notice How many versions were ratified (the current version number).
    function versionCount() external view returns (uint256) {
        return _ratifications.length;
    }
}
