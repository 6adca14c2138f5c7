"""The EVM edge: a node connection and a chain key, with every web3 error translated.

web3 is imported only when a :class:`Node` or :class:`ChainKey` is made (``import web3``
costs about 1.5 s), so offline commands never pay for it. Messages from the node are
untrusted text: they are cleaned (control characters removed, length capped) before
they reach an error message. RPC URLs are shown without path or query (API keys live
there). The chain key never leaves this module: not in reprs, errors, logs or the store.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol
from urllib.parse import urlsplit

from provmint.config import ChainSettings, Secret
from provmint.errors import (
    AnchorError,
    ChainMismatchError,
    ConfigError,
    InsufficientFundsError,
    MissingFileError,
    NodeUnreachableError,
)
from provmint.store.files import load_json

__all__ = [
    "ChainKey",
    "Connection",
    "FeeMarket",
    "Node",
    "SignedTx",
    "TxSent",
    "chain_sender",
    "checksum_address",
    "clean_remote_text",
    "connect",
    "keystore_address",
    "load_chain_key",
    "mask_url",
    "registry_anchor_data",
    "registry_anchored_at",
    "registry_artifact",
]


def clean_remote_text(text: object, limit: int = 200) -> str:
    """Node-supplied text made safe to print: one line, printable, at most ``limit``."""
    cleaned = re.sub(r"[^\x20-\x7e]+", " ", str(text)).strip()
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def mask_url(url: str) -> str:
    """An RPC URL without credentials, path or query (they often hold API keys)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<rpc url>"
    suffix = "/…" if parts.path.strip("/") or parts.query else ""
    return f"{parts.scheme}://{host}{port}{suffix}"


def _rpc_message(exc: BaseException) -> str:
    response = getattr(exc, "rpc_response", None)
    if isinstance(response, dict) and isinstance(response.get("error"), dict):
        return clean_remote_text(response["error"].get("message", ""))
    return clean_remote_text(getattr(exc, "message", None) or exc)


@dataclass(frozen=True, slots=True)
class TxSent:
    """The outcome of broadcasting a signed transaction."""

    tx_hash: str
    already_known: bool = False
    nonce_used: bool = False


class FeeMarket(NamedTuple):
    """The EIP-1559 fee market at the latest block, in wei."""

    base: int
    """The latest block's base fee per gas."""
    tip: int
    """The node's suggested priority fee per gas."""


class SignedTx(NamedTuple):
    """A signed transaction."""

    raw: bytes
    tx_hash: str
    """``0x`` and 64 hex digits."""


class Node:
    """A JSON-RPC connection to an EVM node (HTTP)."""

    def __init__(self, rpc_url: str, *, poa: bool = False, timeout: float = 10.0) -> None:
        from web3 import Web3
        from web3.middleware import ExtraDataToPOAMiddleware

        self.url = mask_url(rpc_url)
        self.w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": timeout}))
        if poa:
            self.w3.middleware_onion.inject(ExtraDataToPOAMiddleware, layer=0)

    @contextmanager
    def _mapped(self, what: str) -> Iterator[None]:
        """Translate what web3 and requests raise while doing ``what`` into the provmint
        error tree: the one place it happens. Nothing is retried."""
        import requests
        from web3 import exceptions as web3_errors

        try:
            yield
        except requests.RequestException as exc:
            # Only the exception's kind: its text repeats the URL's path (API keys live there).
            raise NodeUnreachableError(
                f"cannot reach the node at {self.url} ({what}): {type(exc).__name__}",
                hint="check --rpc-url / PROVMINT_RPC_URL and that the node is running",
            ) from None
        except web3_errors.ExtraDataLengthError:
            raise AnchorError(
                f"the node at {self.url} serves a proof-of-authority chain",
                hint="set poa = true in the chain profile",
            ) from None
        except web3_errors.Web3RPCError as exc:
            raise AnchorError(f"the node refused {what}: {_rpc_message(exc)}") from None
        except (web3_errors.Web3Exception, ValueError, TypeError) as exc:
            raise AnchorError(f"{what} failed at {self.url}: {_rpc_message(exc)}") from None

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        with self._mapped(what):
            return fn(*args, **kwargs)

    def chain_id(self) -> int:
        """The node's chain id (eth_chainId)."""
        return int(self._call("eth_chainId", lambda: self.w3.eth.chain_id))

    def block_number(self) -> int:
        """Number of the latest block."""
        return int(self._call("eth_blockNumber", lambda: self.w3.eth.block_number))

    def block(self, number: int | str) -> dict[str, Any] | None:
        """A block header as a dict, or None if the node has no such block."""
        from web3.exceptions import BlockNotFound

        with self._mapped("eth_getBlockByNumber"):
            try:
                block = self.w3.eth.get_block(number)  # type: ignore[arg-type]
            except BlockNotFound:
                return None
        return dict(block) if block is not None else None

    def balance(self, address: str) -> int:
        """Balance in wei."""
        return int(self._call("eth_getBalance", self.w3.eth.get_balance, address))

    def nonce(self, address: str, block: str = "pending") -> int:
        """Transaction count of ``address`` at ``block`` (``latest`` or ``pending``)."""
        return int(
            self._call("eth_getTransactionCount", self.w3.eth.get_transaction_count, address, block)
        )

    def fees(self) -> FeeMarket:
        """The EIP-1559 fee market now."""
        latest = self.block("latest") or {}
        base = int(latest.get("baseFeePerGas") or 0)
        tip = int(self._call("eth_maxPriorityFeePerGas", lambda: self.w3.eth.max_priority_fee))
        return FeeMarket(base, tip)

    def estimate_gas(self, tx: dict[str, Any]) -> int:
        """Gas the node estimates for ``tx`` (never hard-coded: EIP-7623 floors change it)."""
        from web3.exceptions import ContractLogicError

        with self._mapped("eth_estimateGas"):
            try:
                return int(self.w3.eth.estimate_gas(tx))  # type: ignore[arg-type]
            except ContractLogicError as exc:
                raise AnchorError(f"the transaction would revert: {_rpc_message(exc)}") from None

    def send_raw(self, raw: bytes, tx_hash: str) -> TxSent:
        """Broadcast signed bytes. "Already known" and "nonce too low" are not errors
        here: the caller checks the receipt (the same bytes may have been sent before)."""
        from web3.exceptions import Web3RPCError

        with self._mapped("eth_sendRawTransaction"):
            try:
                sent = self.w3.eth.send_raw_transaction(raw)
                return TxSent("0x" + bytes(sent).hex())
            except Web3RPCError as exc:
                message = _rpc_message(exc).lower()
                if "already known" in message or "already imported" in message:
                    return TxSent(tx_hash, already_known=True)
                if "nonce too low" in message or "nonce is too low" in message:
                    return TxSent(tx_hash, nonce_used=True)
                if "insufficient funds" in message:
                    raise InsufficientFundsError(
                        f"the node refused the transaction: {message}"
                    ) from None
                raise AnchorError(
                    f"the node refused the transaction: {_rpc_message(exc)}"
                ) from None

    def receipt(self, tx_hash: str) -> dict[str, Any] | None:
        """The receipt of a mined transaction, or None if it is not (or no longer) mined."""
        from web3.exceptions import TransactionNotFound

        with self._mapped("eth_getTransactionReceipt"):
            try:
                receipt = self.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
            except TransactionNotFound:
                return None
        return dict(receipt) if receipt is not None else None

    def transaction(self, tx_hash: str) -> dict[str, Any] | None:
        """A transaction by hash, or None if the node does not know it."""
        from web3.exceptions import TransactionNotFound

        with self._mapped("eth_getTransactionByHash"):
            try:
                tx = self.w3.eth.get_transaction(tx_hash)  # type: ignore[arg-type]
            except TransactionNotFound:
                return None
        return dict(tx) if tx is not None else None

    def call(self, to: str, data: str) -> bytes:
        """eth_call at the latest block (``to`` in any case)."""
        target = self._checksummed(to)
        return bytes(self._call("eth_call", self.w3.eth.call, {"to": target, "data": data}))

    def code(self, address: str) -> bytes:
        """Deployed code at ``address`` (any case; empty if none)."""
        target = self._checksummed(address)
        return bytes(self._call("eth_getCode", self.w3.eth.get_code, target))

    @staticmethod
    def _checksummed(address: str) -> Any:
        """web3 takes only checksummed addresses, and a proof may write one in either
        case (docs/FORMATS.md)."""
        from web3 import Web3

        try:
            return Web3.to_checksum_address(address)
        except ValueError:
            raise AnchorError(f"{clean_remote_text(address, 60)} is not an address") from None


class Connection(NamedTuple):
    """A node, and the chain id it serves (checked against the settings)."""

    node: Node
    chain_id: int


class ChainKey:
    """The issuer's chain signing key (separate from the token key).

    Loaded from an encrypted keystore JSON (password from an environment variable or a
    callback) or from a hex private key in an environment variable. Its repr never shows
    the key.
    """

    def __init__(self, private_key: bytes) -> None:
        from eth_account import Account

        self._key = Secret(private_key)
        self.address: str = Account.from_key(private_key).address

    def __repr__(self) -> str:
        return f"ChainKey(address={self.address})"

    @classmethod
    def from_hex(cls, text: str, source: str) -> ChainKey:
        """A key from hex text (``0x`` optional)."""
        raw = text.strip().removeprefix("0x")
        if not re.fullmatch(r"[0-9a-fA-F]{64}", raw):
            raise AnchorError(f"{source} is not a private key (64 hex digits)")
        try:
            return cls(bytes.fromhex(raw))
        except Exception:
            raise AnchorError(f"{source} is not a valid secp256k1 private key") from None

    @classmethod
    def from_keystore(cls, path: Path, password: str) -> ChainKey:
        """A key from an encrypted keystore file (Ethereum keystore v3 JSON)."""
        from eth_account import Account

        try:
            document = load_json(path.read_text())
        except FileNotFoundError:
            raise MissingFileError(path, "keystore file") from None
        except (OSError, ValueError) as exc:
            raise AnchorError(f"{path}: not a readable keystore file") from exc
        try:
            key = Account.decrypt(document, password)
        except ValueError:
            raise AnchorError(f"{path}: wrong keystore password") from None
        except Exception as exc:
            raise AnchorError(f"{path}: not a valid keystore ({type(exc).__name__})") from None
        return cls(bytes(key))

    def sign(self, tx: dict[str, Any]) -> SignedTx:
        """Sign a transaction dict."""
        from eth_account import Account

        try:
            signed = Account.sign_transaction(tx, self._key.reveal())
        except Exception as exc:
            raise AnchorError(f"cannot sign the transaction ({type(exc).__name__})") from None
        return SignedTx(bytes(signed.raw_transaction), "0x" + bytes(signed.hash).hex())


def registry_artifact() -> dict[str, Any]:
    """The compiled AnchorRegistry (ABI and bytecode) shipped with provmint."""
    from importlib.resources import files

    data: dict[str, Any] = json.loads(
        files("provmint").joinpath("contracts/AnchorRegistry.json").read_text()
    )
    return data


# The registry's function selectors (the first 4 bytes of the Keccak-256 of each
# signature; the standard library has no Keccak, and tests check them against web3).
ANCHOR_SELECTOR = bytes.fromhex("eecdf927")
"""``anchor(bytes32)``."""
ANCHORED_AT_SELECTOR = bytes.fromhex("f8c2919d")
"""``anchoredAt(address,bytes32)``."""


class ContractReader(Protocol):
    """A node that can run a read-only call (:class:`Node`, or the stdlib
    :class:`provmint.chainread.RpcReader`)."""

    def call(self, to: str, data: str) -> bytes:
        """``eth_call`` at the latest block."""
        ...


def registry_anchor_data(digest: bytes) -> str:
    """Call data of ``AnchorRegistry.anchor(digest)``."""
    return "0x" + (ANCHOR_SELECTOR + digest).hex()


def registry_anchored_at(node: ContractReader, registry: str, issuer: str, digest: bytes) -> int:
    """``AnchorRegistry.anchoredAt(issuer, digest)``: block time of the anchor, 0 if none."""
    data = ANCHORED_AT_SELECTOR + bytes(12) + bytes.fromhex(issuer[2:]) + digest
    return int.from_bytes(node.call(registry, "0x" + data.hex()) or b"\0", "big")


def connect(chain: ChainSettings) -> Connection:
    """A node for these settings, its chain id checked against the expected one."""
    if not chain.rpc_url:
        raise ConfigError(
            "no node to talk to",
            hint="pass --rpc-url URL, set PROVMINT_RPC_URL, or choose a chain profile (--chain)",
        )
    node = Node(chain.rpc_url, poa=chain.poa)
    chain_id = node.chain_id()
    if chain.chain_id is not None and chain_id != chain.chain_id:
        raise ChainMismatchError(
            f"the node at {mask_url(chain.rpc_url)} serves chain {chain_id}, "
            f"but the profile expects chain {chain.chain_id}",
            hint="check --rpc-url or the chain profile's chain_id",
        )
    return Connection(node, chain_id)


def load_chain_key(chain: ChainSettings, ask_password: Callable[[], str] | None = None) -> ChainKey:
    """The issuer's chain key: ``PROVMINT_CHAIN_KEY``, or the keystore with its password
    from ``PROVMINT_KEYSTORE_PASSWORD`` or ``ask_password``."""
    if chain.chain_key is not None:
        return ChainKey.from_hex(chain.chain_key.reveal().decode(), "PROVMINT_CHAIN_KEY")
    if chain.keystore is not None:
        if not chain.keystore.exists():  # before asking for its password
            raise MissingFileError(
                chain.keystore,
                "keystore file",
                hint="it is named by --keystore, PROVMINT_KEYSTORE or the chain profile",
            )
        if chain.keystore_password is not None:
            password = chain.keystore_password.reveal().decode()
        elif ask_password is not None:
            password = ask_password()
        else:
            raise AnchorError(
                f"the keystore {chain.keystore} needs a password",
                hint="set PROVMINT_KEYSTORE_PASSWORD or run interactively",
            )
        return ChainKey.from_keystore(chain.keystore, password)
    raise AnchorError(
        "no chain key",
        hint="set PROVMINT_CHAIN_KEY (hex) or --keystore FILE (encrypted JSON keystore)",
    )


_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


def checksum_address(text: str, source: str) -> str:
    """An account address given by a person (``source`` names where: ``--from``), in its
    EIP-55 form. ``0x`` and 40 hex digits; in mixed case the checksum must hold (a typo
    in one digit is caught), all lower or all upper case is taken as is."""
    if not _ADDRESS.fullmatch(text):
        raise ConfigError(
            f"{source} is not an account address",
            hint="an address is 0x and 40 hex digits (20 bytes)",
        )
    from web3 import Web3

    digits = text[2:]
    if digits not in (digits.lower(), digits.upper()) and not Web3.is_checksum_address(text):
        raise ConfigError(
            f"{source} {text} fails its EIP-55 checksum (a mistyped digit?)",
            hint="copy the address again, or write it all in lower case to skip the check",
        )
    return str(Web3.to_checksum_address(text))


def keystore_address(path: Path) -> str | None:
    """The address an encrypted keystore says it holds (its public ``address`` field,
    read without the password), or None when it does not say."""
    try:
        document = load_json(path.read_text())
    except FileNotFoundError:
        raise MissingFileError(path, "keystore file") from None
    except (OSError, ValueError) as exc:
        raise AnchorError(f"{path}: not a readable keystore file") from exc
    listed = document.get("address") if isinstance(document, dict) else None
    if not isinstance(listed, str):
        return None
    listed = listed if listed.startswith("0x") else "0x" + listed
    if not _ADDRESS.fullmatch(listed):
        return None
    return checksum_address(listed.lower(), f"{path}'s address")


def chain_sender(
    chain: ChainSettings,
    from_address: str | None,
    *,
    signing: bool,
    ask_password: Callable[[], str] | None = None,
) -> tuple[ChainKey | None, str]:
    """The chain key (None when none is needed) and the sender's address.

    A run that signs needs the key, and ``from_address`` (``--from``), when given, must
    be its address. A run that only estimates (``--dry-run``) needs just an address:
    ``from_address``, or the key's. A hex key in the environment is still loaded to
    check ``from_address`` against it; an encrypted keystore is not decrypted for that,
    its public ``address`` field is compared instead.
    """
    wanted = None if from_address is None else checksum_address(from_address, "--from")
    key: ChainKey | None = None
    if signing or (wanted is None and chain.keystore is not None):
        key = load_chain_key(chain, ask_password)
    elif chain.chain_key is not None:
        key = load_chain_key(chain)
    elif wanted is None:
        raise ConfigError(
            "a dry run needs the sender's address",
            hint="pass --from ADDRESS (no key needed), or a chain key: PROVMINT_CHAIN_KEY "
            "or --keystore FILE",
        )
    elif chain.keystore is not None:
        listed = keystore_address(chain.keystore)
        if listed is not None and listed != wanted:
            raise ConfigError(
                f"--from {wanted} is not the address of the keystore {chain.keystore} ({listed})",
                hint="drop --from, or name the keystore of that address",
            )
    if key is not None and wanted is not None and key.address != wanted:
        raise ConfigError(
            f"--from {wanted} is not the chain key's address ({key.address})",
            hint="drop --from, or use the key of that address",
        )
    if key is not None:
        return key, key.address
    assert wanted is not None  # every branch without a key had an address
    return None, wanted
