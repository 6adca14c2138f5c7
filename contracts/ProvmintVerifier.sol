// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @notice The one function of the AnchorRegistry (contracts/AnchorRegistry.sol) read here.
interface IAnchorRegistry {
    function anchoredAt(address issuer, bytes32 digest) external view returns (uint256);
}

/// @title provmint product-proof verifier
/// @notice Checks a provmint-proof/1 on chain, from the record up to the AnchorRegistry
/// (docs/FORMATS.md, "Verification", steps 2, 3, 9 and 11, and the registry's state).
/// Nothing the caller could forge is trusted: the leaf is recomputed from the record's
/// fields, every root from its path, the batch commitment and the anchor digest from
/// those roots, and the registry is the one fixed at deployment. The proof's roots,
/// commitment and digest are therefore not inputs. The manifest digest is taken as
/// given: the batch commitment binds it, so a wrong one leads to no anchored digest.
/// Proofs anchored by plain calldata (no registry) cannot be checked here: nothing on
/// chain holds them in state, so for them verify returns false.
/// verify never reverts on a tampered proof; it returns false.
contract ProvmintVerifier {
    /// @notice One record field, name and value as in the proof's product.record.
    struct Field {
        string name;
        string value;
    }

    /// @notice The parts of a proof the verifier recomputes everything from.
    struct Proof {
        Field[] record; // product.record, sorted by name (as provmint-record/1 encodes it)
        bytes32 tokenCommitment; // product.token_commitment
        uint64 leafIndex; // tree.leaf_index
        uint64 treeSize; // tree.size
        bytes32[] path; // tree.path, leaf side first
        string batchId; // batch.id
        bytes32 manifestDigest; // batch.manifest_digest
        uint64 anchorIndex; // anchor.tree.leaf_index
        uint64 anchorSize; // anchor.tree.size
        bytes32[] anchorPath; // anchor.tree.path, leaf side first
    }

    /// @notice The registry whose state says which digests an issuer anchored.
    IAnchorRegistry public immutable registry;

    // The limits of the formats. Beyond them the encodings' length prefixes would no
    // longer fit (or the value could never have been minted), so the bytes hashed
    // would not say unambiguously which fields they hold.
    uint256 private constant MAX_FIELDS = 64;
    uint256 private constant MAX_NAME_BYTES = 64;
    uint256 private constant MAX_VALUE_BYTES = 4096;
    uint256 private constant MAX_BATCH_ID_BYTES = 255;
    uint256 private constant MAX_PATH = 63;
    uint256 private constant MAX_ANCHOR_SIZE = 4096;

    constructor(IAnchorRegistry registry_) {
        require(address(registry_).code.length > 0, "registry has no code");
        registry = registry_;
    }

    /// @notice True if the product's record and token commitment are a leaf of a batch
    /// whose commitment is in an anchor that `issuer` anchored in the registry.
    /// @param issuer The issuer the caller trusts (the brand's address). Never take it from
    /// the proof or from whoever submits it: anyone can anchor digests of their own.
    function verify(Proof calldata p, address issuer) external view returns (bool) {
        (bool ok, bytes32 commitment) = _batchCommitment(p);
        if (!ok) return false;
        bytes32 digest;
        (ok, digest) = _anchorDigest(p, commitment);
        if (!ok) return false;
        return registry.anchoredAt(issuer, digest) != 0;
    }

    /// @dev leaf -> root -> SHA-256("PMB1" || u8 len(id) || id || u64 size || root || manifest digest)
    function _batchCommitment(Proof calldata p) private pure returns (bool, bytes32) {
        (bool ok, bytes32 leaf) = _leaf(p.record, p.tokenCommitment);
        if (!ok) return (false, 0);
        bytes32 root;
        (ok, root) = _root(leaf, p.leafIndex, p.treeSize, p.path);
        bytes calldata id = bytes(p.batchId);
        if (!ok || id.length == 0 || id.length > MAX_BATCH_ID_BYTES) return (false, 0);
        return (
            true,
            sha256(abi.encodePacked("PMB1", uint8(id.length), id, p.treeSize, root, p.manifestDigest))
        );
    }

    /// @dev commitment -> anchor leaf -> anchor root -> SHA-256("PMAD" || u64 size || root)
    function _anchorDigest(Proof calldata p, bytes32 commitment) private pure returns (bool, bytes32) {
        if (p.anchorSize > MAX_ANCHOR_SIZE) return (false, 0);
        bytes32 leaf = sha256(abi.encodePacked(bytes1(0x00), "PMAL", commitment));
        (bool ok, bytes32 root) = _root(leaf, p.anchorIndex, p.anchorSize, p.anchorPath);
        if (!ok) return (false, 0);
        return (true, sha256(abi.encodePacked("PMAD", p.anchorSize, root)));
    }

    /// @dev SHA-256(0x00 || provmint-record/1 bytes || token commitment), written into one
    /// buffer sized in a first pass (appending field by field would copy it n times).
    function _leaf(Field[] calldata record, bytes32 tokenCommitment) private pure returns (bool, bytes32) {
        uint256 n = record.length;
        if (n > MAX_FIELDS) return (false, 0);
        uint256 size = 1 + 4 + 2 + 32;
        for (uint256 i = 0; i < n; ++i) {
            uint256 nameBytes = bytes(record[i].name).length;
            uint256 valueBytes = bytes(record[i].value).length;
            if (nameBytes == 0 || nameBytes > MAX_NAME_BYTES || valueBytes > MAX_VALUE_BYTES) {
                return (false, 0);
            }
            size += 1 + nameBytes + 4 + valueBytes;
        }
        bytes memory data = new bytes(size);
        uint256 ptr;
        assembly {
            ptr := add(data, 32)
        }
        ptr = _put(ptr, (uint256(0x00504d5231) << 16) | n, 7); // 0x00 || "PMR1" || u16 n
        for (uint256 i = 0; i < n; ++i) {
            bytes calldata name = bytes(record[i].name);
            bytes calldata value = bytes(record[i].value);
            ptr = _copy(_put(ptr, name.length, 1), name);
            ptr = _copy(_put(ptr, value.length, 4), value);
        }
        _put(ptr, uint256(tokenCommitment), 32);
        return (true, sha256(data));
    }

    /// @dev Writes the low `width` bytes of `value`, big-endian, at memory `ptr`. The 32-byte
    /// store may spill past them: only into bytes written next, or past the buffer's end
    /// into unallocated memory (the buffer is the last allocation).
    function _put(uint256 ptr, uint256 value, uint256 width) private pure returns (uint256) {
        assembly {
            mstore(ptr, shl(mul(8, sub(32, width)), value))
        }
        return ptr + width;
    }

    /// @dev Copies calldata bytes to memory `ptr`.
    function _copy(uint256 ptr, bytes calldata src) private pure returns (uint256) {
        assembly {
            calldatacopy(ptr, src.offset, src.length)
        }
        return ptr + src.length;
    }

    /// @dev The root that `path` leads to from leaf `index` of a tree of `size` leaves
    /// (RFC 9162 section 2.1.3.2); false for an index out of range or a path too long or
    /// too short for the tree.
    function _root(bytes32 leaf, uint256 index, uint256 size, bytes32[] calldata path)
        private
        pure
        returns (bool, bytes32)
    {
        if (index >= size || path.length > MAX_PATH) return (false, 0);
        uint256 fn = index;
        uint256 sn = size - 1;
        bytes32 r = leaf;
        for (uint256 i = 0; i < path.length; ++i) {
            if (sn == 0) return (false, 0);
            if (fn & 1 == 1 || fn == sn) {
                r = _node(path[i], r);
                // skip the levels at which the node is promoted (it has no sibling there)
                while (fn & 1 == 0 && fn != 0) {
                    fn >>= 1;
                    sn >>= 1;
                }
            } else {
                r = _node(r, path[i]);
            }
            fn >>= 1;
            sn >>= 1;
        }
        return (sn == 0, r);
    }

    function _node(bytes32 left, bytes32 right) private pure returns (bytes32) {
        return sha256(abi.encodePacked(bytes1(0x01), left, right));
    }
}
