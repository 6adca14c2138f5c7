// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title provmint anchor registry
/// @notice Issuers commit 32-byte anchor digests (each binds a Merkle root over batch
/// commitments and its tree size). Anyone can look an anchor up by issuer and digest,
/// from contract state (which nodes never prune) or from the Anchored event.
contract AnchorRegistry {
    /// @notice Emitted once per anchored digest.
    event Anchored(address indexed issuer, bytes32 indexed digest, uint256 timestamp);

    /// @notice issuer => digest => block timestamp of the anchor (0 if never anchored).
    /// Keyed by issuer so that nobody can front-run an issuer's digest and block it.
    mapping(address => mapping(bytes32 => uint256)) public anchoredAt;

    error AlreadyAnchored(bytes32 digest);
    error EmptyBatch();

    /// @notice Anchor one digest for msg.sender.
    function anchor(bytes32 digest) external {
        _anchor(digest);
    }

    /// @notice Anchor several digests for msg.sender in one transaction.
    function anchorBatch(bytes32[] calldata digests) external {
        if (digests.length == 0) revert EmptyBatch();
        for (uint256 i = 0; i < digests.length; ++i) {
            _anchor(digests[i]);
        }
    }

    function _anchor(bytes32 digest) private {
        if (anchoredAt[msg.sender][digest] != 0) revert AlreadyAnchored(digest);
        anchoredAt[msg.sender][digest] = block.timestamp;
        emit Anchored(msg.sender, digest, block.timestamp);
    }
}
