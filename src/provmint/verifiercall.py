"""The call of the ProvmintVerifier contract (``contracts/ProvmintVerifier.sol``) that
checks one proof on chain: ``verify(Proof p, address issuer) returns (bool)``.

The contract recomputes everything from the proof's record, token commitment, paths,
indices, sizes, batch id and manifest digest, and reads the AnchorRegistry itself, so
only those go into the call: the proof's roots, commitment and digest are claims the
contract does not need. The encoding is the Solidity ABI's (head and tail, 32-byte
words), written out here with the standard library for the few types the call has;
``tests/test_verifier_contract.py`` compares it with eth_abi's.

A proof can be checked on chain only once its batch is anchored through the registry:
a pending proof, or one anchored by plain calldata (a transaction no contract can read),
raises :class:`~provmint.errors.NotOnChainError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from provmint.errors import ConfigError, NotOnChainError
from provmint.proofs import Proof

__all__ = ["VERIFY_SELECTOR", "VERIFY_SIGNATURE", "VerifierCall", "encode_verify", "verifier_call"]

VERIFY_SIGNATURE = (
    "verify(((string,string)[],bytes32,uint64,uint64,bytes32[],string,bytes32,uint64,uint64,"
    "bytes32[]),address)"
)
"""The function's canonical signature (its tuple is the contract's ``Proof`` struct)."""
VERIFY_SELECTOR = bytes.fromhex("f03fa743")
"""The first 4 bytes of the Keccak-256 of :data:`VERIFY_SIGNATURE` (the standard library
has no Keccak; a test recomputes it, and reads it from the compiled artifact's ABI)."""

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


@dataclass(frozen=True, slots=True)
class VerifierCall:
    """The encoded call for one proof, and what it asks."""

    data: bytes
    issuer: str
    to: str | None = None
    signature: str = VERIFY_SIGNATURE

    @property
    def data_hex(self) -> str:
        """The call data as ``0x`` and lowercase hex (for ``cast call`` and eth_call)."""
        return "0x" + self.data.hex()

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form: an eth_call's ``to`` and ``data``, with the signature."""
        return {
            "to": self.to,
            "data": self.data_hex,
            "signature": self.signature,
            "issuer": self.issuer,
        }


def verifier_call(
    proof: Proof, *, issuer: str | None = None, to: str | None = None
) -> VerifierCall:
    """The call that checks ``proof`` on chain, for ``issuer`` (by default the proof's
    anchor sender: give the issuer you trust to check that it is theirs). ``to`` is the
    verifier's address, when known. Raises NotOnChainError for a proof the contract
    cannot check, ConfigError for an address that is not one."""
    section = proof.anchor_section
    if section is None:
        raise NotOnChainError(
            "the proof's batch is not anchored yet: there is nothing to check on chain",
            hint="once the batch is anchored through a registry: provmint proof upgrade PROOF",
        )
    if section.method != "registry":
        raise NotOnChainError(
            f"the proof is anchored by {section.method}: the verifier contract reads the "
            "AnchorRegistry only, and no contract can read a transaction's data",
            hint="verify it with provmint verify --rpc-url URL, or anchor batches with "
            "--method registry",
        )
    who = _address(issuer, "--issuer") if issuer is not None else section.sender
    target = _address(to, "--verifier") if to is not None else None
    return VerifierCall(encode_verify(proof, who), who, target)


def _address(text: str, option: str) -> str:
    if not _ADDRESS.fullmatch(text):
        raise ConfigError(f"{option} must be 0x and 40 hex digits, not {text[:50]!r}")
    return text


def encode_verify(proof: Proof, issuer: str) -> bytes:
    """ABI-encoded ``verify(p, issuer)`` for the proof's parts, anchor section required.
    The record's fields go sorted by name, as provmint-record/1 orders them."""
    section = proof.anchor_section
    if section is None:
        raise NotOnChainError("the proof has no anchor section")
    fields = [
        _dynamic_tuple(_text(name.encode()), _text(proof.record[name].encode()))
        for name in sorted(proof.record)
    ]
    struct = _dynamic_tuple(
        _array(fields),
        _static(proof.token_commitment),
        _static(_word(proof.leaf_index)),
        _static(_word(proof.size)),
        _hashes(proof.path),
        _text(proof.batch_id.encode("ascii")),
        _static(proof.manifest_digest),
        _static(_word(section.leaf_index)),
        _static(_word(section.size)),
        _hashes(section.path),
    )
    address = _static(bytes(12) + bytes.fromhex(_address(issuer, "issuer")[2:]))
    return VERIFY_SELECTOR + _encode_tuple([struct, address])


# ----------------------------------------------------------------- the ABI, as far as used
# An encoded value is (dynamic, bytes). A tuple's head holds its static members in place
# and, for each dynamic one, the offset of its encoding in the tail, counted from the
# start of the tuple's head (the Solidity ABI specification, "Formal Specification").

_Encoded = tuple[bool, bytes]


def _word(n: int) -> bytes:
    return n.to_bytes(32, "big")


def _static(word: bytes) -> _Encoded:
    return False, word


def _text(data: bytes) -> _Encoded:
    """``string`` or ``bytes``: length, then the bytes padded to a whole word."""
    return True, _word(len(data)) + data + bytes(-len(data) % 32)


def _encode_tuple(members: list[_Encoded]) -> bytes:
    head_size = sum(32 if dynamic else len(enc) for dynamic, enc in members)
    head, tail = bytearray(), bytearray()
    for dynamic, enc in members:
        if dynamic:
            head += _word(head_size + len(tail))
            tail += enc
        else:
            head += enc
    return bytes(head + tail)


def _dynamic_tuple(*members: _Encoded) -> _Encoded:
    return True, _encode_tuple(list(members))


def _array(items: list[_Encoded]) -> _Encoded:
    """``T[]``: the count, then the items encoded as a tuple."""
    return True, _word(len(items)) + _encode_tuple(items)


def _hashes(hashes: tuple[bytes, ...]) -> _Encoded:
    return True, _word(len(hashes)) + b"".join(hashes)
