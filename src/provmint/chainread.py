"""What verification asks an EVM node, over plain JSON-RPC (standard library only).

Checking an anchor only reads from the chain: the chain id, a transaction, its receipt,
its block, the latest block number, a contract's code and one ``eth_call``. Loading
web3 for that took most of a one-proof ``provmint verify`` (about 1.3 s of 1.85 s);
:class:`RpcReader` does the same reads with ``urllib``, answers in the shapes
:mod:`provmint.anchor.check` reads (hashes and data as bytes, numbers as ints), and
maps every failure into the provmint error tree once, like :class:`provmint.chain.Node`.

The node is a stranger too: each answer is bounded in size, parsed strictly (a field of
the wrong type is a bad answer, not a crash), and its error text is cleaned before it is
shown.
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

from provmint.chain import clean_remote_text, mask_url
from provmint.errors import AnchorError, NodeUnreachableError

__all__ = ["MAX_ANSWER_BYTES", "RpcReader"]

MAX_ANSWER_BYTES = 8 << 20
"""The largest node answer read (a block header with its transaction hashes is far
smaller; contract code is at most 24 KiB)."""

_QUANTITY = re.compile(r"0x(0|[1-9a-f][0-9a-f]{0,63})")
_DATA = re.compile(r"0x(?:[0-9a-f]{2})*")
_ADDRESS = re.compile(r"0x[0-9a-f]{40}")


class RpcReader:
    """A read-only JSON-RPC client of one node (HTTP or HTTPS)."""

    def __init__(self, rpc_url: str, *, timeout: float = 10.0) -> None:
        self._rpc_url = rpc_url
        self.url = mask_url(rpc_url)
        """The node's URL as it may be shown (no credentials, path or query)."""
        self._timeout = timeout
        self._ids = itertools.count(1)
        self._chain_id: int | None = None

    def _request(self, method: str, *params: Any) -> Any:
        """One call's ``result``; NodeUnreachableError when the node does not answer
        well, AnchorError when it refuses."""
        import urllib.error
        import urllib.request

        body = json.dumps(
            {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": list(params)}
        ).encode()
        request = urllib.request.Request(
            self._rpc_url, data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                raw = response.read(MAX_ANSWER_BYTES + 1)
        except urllib.error.HTTPError as exc:
            exc.close()  # it holds the answer's connection open until closed
            raise NodeUnreachableError(
                f"cannot reach the node at {self.url} ({method}): HTTP {exc.code}",
                hint="check --rpc-url / PROVMINT_RPC_URL and that the node is running",
            ) from None
        except (OSError, ValueError, urllib.error.URLError) as exc:
            # Only the exception's kind: its text may repeat the URL's path (API keys).
            raise NodeUnreachableError(
                f"cannot reach the node at {self.url} ({method}): {type(exc).__name__}",
                hint="check --rpc-url / PROVMINT_RPC_URL and that the node is running",
            ) from None
        return self._result(method, raw)

    def _result(self, method: str, raw: bytes) -> Any:
        if len(raw) > MAX_ANSWER_BYTES:
            raise self._bad(method, "answer too large")
        try:
            answer = json.loads(raw)
        except (ValueError, RecursionError):
            raise self._bad(method, "not JSON") from None
        if not isinstance(answer, dict):
            raise self._bad(method, "not a JSON-RPC answer")
        error = answer.get("error")
        if error is not None:
            message = error.get("message", "") if isinstance(error, dict) else error
            raise AnchorError(f"the node refused {method}: {clean_remote_text(message)}")
        if "result" not in answer:
            raise self._bad(method, "no result")
        return answer["result"]

    def _bad(self, method: str, why: str) -> NodeUnreachableError:
        return NodeUnreachableError(f"the node at {self.url} answered {method} badly: {why}")

    def _quantity(self, method: str, value: Any) -> int:
        if not isinstance(value, str) or not _QUANTITY.fullmatch(value.lower()):
            raise self._bad(method, "a number is not a hex quantity")
        return int(value, 16)

    def _data(self, method: str, value: Any) -> bytes:
        if not isinstance(value, str) or not _DATA.fullmatch(value.lower()):
            raise self._bad(method, "data is not hex bytes")
        return bytes.fromhex(value[2:])

    def _hash(self, method: str, value: Any) -> bytes:
        data = self._data(method, value)
        if len(data) != 32:
            raise self._bad(method, "a hash is not 32 bytes")
        return data

    def _address(self, method: str, value: Any) -> str:
        if not isinstance(value, str) or not _ADDRESS.fullmatch(value.lower()):
            raise self._bad(method, "an address is not 20 hex bytes")
        return value

    def _object(self, method: str, value: Any) -> dict[str, Any] | None:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self._bad(method, "not an object")
        return value

    # ----------------------------------------------------------------- the reads

    def chain_id(self) -> int:
        """The node's chain id (asked once: it does not change under a reader)."""
        if self._chain_id is None:
            self._chain_id = self._quantity("eth_chainId", self._request("eth_chainId"))
        return self._chain_id

    def block_number(self) -> int:
        """Number of the latest block."""
        return self._quantity("eth_blockNumber", self._request("eth_blockNumber"))

    def block(self, number: int) -> dict[str, Any] | None:
        """A block's ``hash`` (bytes) and ``timestamp`` (int); None if the node has no
        such block."""
        method = "eth_getBlockByNumber"
        found = self._object(method, self._request(method, hex(number), False))
        if found is None:
            return None
        return {
            "hash": self._hash(method, found.get("hash")),
            "timestamp": self._quantity(method, found.get("timestamp")),
        }

    def receipt(self, tx_hash: str) -> dict[str, Any] | None:
        """A mined transaction's ``status``, ``blockNumber`` and ``blockHash``; None if
        it is not (or no longer) mined."""
        method = "eth_getTransactionReceipt"
        found = self._object(method, self._request(method, tx_hash))
        if found is None or found.get("blockNumber") is None:
            return None
        return {
            "status": self._quantity(method, found.get("status")),
            "blockNumber": self._quantity(method, found.get("blockNumber")),
            "blockHash": self._hash(method, found.get("blockHash")),
        }

    def transaction(self, tx_hash: str) -> dict[str, Any] | None:
        """A transaction's ``from``, ``to``, ``input`` and ``blockNumber`` (None while
        pending); None if the node does not know it."""
        method = "eth_getTransactionByHash"
        found = self._object(method, self._request(method, tx_hash))
        if found is None:
            return None
        number = found.get("blockNumber")
        to = found.get("to")
        return {
            "from": self._address(method, found.get("from")),
            "to": None if to is None else self._address(method, to),
            "input": self._data(method, found.get("input")),
            "blockNumber": None if number is None else self._quantity(method, number),
        }

    def call(self, to: str, data: str) -> bytes:
        """``eth_call`` at the latest block."""
        return self._data("eth_call", self._request("eth_call", {"to": to, "data": data}, "latest"))

    def code(self, address: str) -> bytes:
        """Deployed code at ``address`` (empty if none)."""
        return self._data("eth_getCode", self._request("eth_getCode", address, "latest"))
