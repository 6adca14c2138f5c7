"""``provmint devchain``: a local development chain (anvil) in one command.

Starts anvil on 127.0.0.1 (a free port unless one is asked for), in a process group of
its own, waits until it answers JSON-RPC, and checks that it is what it claims to be:
chain id 31337 and anvil's first well-known dev account, funded. Only then does it hand
out that account's private key, which is *public*: it is printed by anvil itself and in
Foundry's documentation, and holds value on no real chain. It is never handed out for
any other chain id.

The anvil comes from the npm tools of the project provmint runs from
(``node_modules/.bin/anvil`` in the checkout, what ``npm ci`` installs for the tests),
else from ``PATH`` (a Foundry install), or from the path the caller names.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from provmint.errors import AnchorError, ConfigError, MissingFileError, ProvmintError

__all__ = [
    "ANVIL_CHAIN_ID",
    "DEV_ADDRESS",
    "DEV_KEY",
    "DevChain",
    "find_anvil",
    "start_devchain",
]

ANVIL_CHAIN_ID = 31337
"""anvil's default chain id: the only chain the dev key is handed out for."""
DEV_ADDRESS = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
"""anvil's first dev account (mnemonic "test test ... junk", m/44'/60'/0'/0/0)."""
DEV_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
"""Its private key: public knowledge, for local test chains only."""

START_SECONDS = 30.0
"""How long anvil may take to listen and answer."""
STOP_SECONDS = 10.0
"""How long anvil may take to stop after SIGTERM before it is killed."""
_LISTENING = re.compile(r"Listening on 127\.0\.0\.1:(\d+)")


def find_anvil(explicit: Path | None = None) -> Path:
    """The anvil to run: ``explicit``; else ``node_modules/.bin/anvil`` in the project
    provmint runs from (or a directory above it, as npm looks); else ``anvil`` on PATH."""
    if explicit is not None:
        if not explicit.is_file():
            raise MissingFileError(explicit, "anvil", hint="pass the path of an anvil binary")
        return explicit
    here = Path(__file__).resolve().parent
    for folder in here.parents:
        candidate = folder / "node_modules" / ".bin" / "anvil"
        if candidate.is_file():
            return candidate
    found = shutil.which("anvil")
    if found:
        return Path(found)
    raise ConfigError(
        "anvil not found: not in the project's node_modules/.bin, nor on PATH",
        hint="run `npm ci` in the provmint checkout, install Foundry "
        "(https://getfoundry.sh), or pass --anvil PATH",
    )


def _die_with_parent() -> None:  # pragma: no cover - runs in the child, before exec
    """Linux: the node gets SIGTERM if provmint dies without stopping it (kill -9)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _rpc(url: str, method: str, *params: Any, timeout: float = 2.0) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
    request = urllib.request.Request(
        url, body.encode(), {"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        answer = json.loads(response.read(1 << 20))
    if not isinstance(answer, dict) or "result" not in answer:
        raise AnchorError(f"the node at {url} gave no answer to {method}")
    return answer["result"]


@dataclass(slots=True)
class DevChain:
    """A running anvil: its URL, chain id, the funded dev account and its key. Use it
    as a context manager (or call :meth:`stop`): leaving stops the node."""

    process: subprocess.Popen[str]
    anvil: Path
    port: int
    block_time: float | None
    chain_id: int = ANVIL_CHAIN_ID
    address: str = DEV_ADDRESS
    private_key: str = DEV_KEY
    output: deque[str] = field(default_factory=lambda: deque(maxlen=20))

    @property
    def url(self) -> str:
        """The node's JSON-RPC URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The process id of anvil (also its process group's id)."""
        return self.process.pid

    @property
    def environment(self) -> dict[str, str]:
        """The variables that point provmint at this node with the dev key."""
        return {"PROVMINT_RPC_URL": self.url, "PROVMINT_CHAIN_KEY": self.private_key}

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form (the key included: it is anvil's public dev key)."""
        return {
            "rpc_url": self.url,
            "chain_id": self.chain_id,
            "address": self.address,
            "private_key": self.private_key,
            "public_test_key": True,
            "block_time": self.block_time,
            "pid": self.pid,
            "anvil": str(self.anvil),
            "env": self.environment,
        }

    def last_output(self) -> str:
        """anvil's last lines, cleaned, for an error message."""
        from provmint.chain import clean_remote_text

        lines = [clean_remote_text(line) for line in self.output if line.strip()]
        return " | ".join(lines[-3:]) or "no output"

    def wait(self, stop: threading.Event, poll: float = 0.5) -> None:
        """Return once ``stop`` is set; raise if anvil exits first."""
        while not stop.wait(poll):
            code = self.process.poll()
            if code is not None:
                raise AnchorError(f"anvil exited on its own (status {code}): {self.last_output()}")

    def stop(self) -> None:
        """Stop anvil and everything it started (SIGTERM to its process group, SIGKILL
        after :data:`STOP_SECONDS`), and wait until they are gone."""
        group = self.process.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
        try:
            self.process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
            self.process.wait()
        deadline = time.monotonic() + STOP_SECONDS
        while _group_alive(group):  # the wrapper's child (the real anvil) may linger
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, signal.SIGKILL)
                deadline = time.monotonic() + STOP_SECONDS
            time.sleep(0.05)

    def __enter__(self) -> DevChain:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - a reused id of someone else's group
        return False
    return True


def start_devchain(
    *,
    port: int | None = None,
    block_time: float | None = None,
    anvil: Path | None = None,
    timeout: float = START_SECONDS,
) -> DevChain:
    """Start anvil on 127.0.0.1 (``port``, or a free one), mining on each transaction
    or every ``block_time`` seconds; return once it answers JSON-RPC as chain 31337 with
    the funded dev account. Raises (with anvil stopped) otherwise."""
    if port is not None and not 1 <= port <= 65535:
        raise ConfigError(f"--port {port} is not a TCP port (1 to 65535)")
    if block_time is not None and not 0 < block_time <= 3600:
        raise ConfigError("--block-time must be more than 0 and at most 3600 seconds")
    binary = find_anvil(anvil)
    command = [str(binary), "--host", "127.0.0.1", "--port", str(port or 0)]
    command += ["--chain-id", str(ANVIL_CHAIN_ID)]
    if block_time is not None:
        command += ["--block-time", f"{block_time:g}"]
    try:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,  # Ctrl-C reaches provmint, which stops the group
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
    except OSError as exc:
        raise ConfigError(
            f"cannot run {binary}: {exc.strerror or type(exc).__name__}",
            hint="check that it is an executable anvil (Node.js is needed for the npm one)",
        ) from None
    chain = DevChain(process, binary, port or 0, block_time)
    try:
        chain.port = _await_listening(chain, timeout)
        _check_node(chain, time.monotonic() + timeout)
    except BaseException:
        chain.stop()
        raise
    return chain


def _await_listening(chain: DevChain, timeout: float) -> int:
    """Read anvil's output until it says where it listens; keep draining it after."""
    lines: queue.Queue[str | None] = queue.Queue()
    stream = chain.process.stdout
    assert stream is not None

    def drain() -> None:
        with contextlib.suppress(ValueError, OSError):
            for line in stream:
                chain.output.append(line.rstrip("\n"))
                lines.put(line)
        lines.put(None)

    threading.Thread(target=drain, name="anvil-output", daemon=True).start()
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AnchorError(f"anvil did not start listening within {timeout:g} s")
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            continue
        if line is None:
            chain.process.wait()
            output = chain.last_output()
            hint = None
            if "in use" in output.lower():
                hint = "choose another --port, or leave it out for a free one"
            raise AnchorError(
                f"anvil exited before listening (status {chain.process.returncode}): {output}",
                hint=hint,
            )
        found = _LISTENING.search(line)
        if found:
            return int(found.group(1))


def _check_node(chain: DevChain, deadline: float) -> None:
    """Wait until the node answers; refuse a chain other than anvil's dev chain."""
    while True:
        try:
            chain_id = int(str(_rpc(chain.url, "eth_chainId")), 16)
            accounts = _rpc(chain.url, "eth_accounts")
            break
        except (OSError, ValueError, ProvmintError):
            if time.monotonic() > deadline or chain.process.poll() is not None:
                raise AnchorError(
                    f"anvil at {chain.url} does not answer JSON-RPC: {chain.last_output()}"
                ) from None
            time.sleep(0.1)
    if chain_id != ANVIL_CHAIN_ID:
        raise AnchorError(
            f"the node at {chain.url} serves chain {chain_id}, not anvil's {ANVIL_CHAIN_ID}: "
            "the dev key is only handed out for a local anvil chain"
        )
    first = accounts[0] if isinstance(accounts, list) and accounts else None
    if not isinstance(first, str) or first.lower() != DEV_ADDRESS.lower():
        raise AnchorError(
            f"the node at {chain.url} does not hold anvil's dev account {DEV_ADDRESS}",
            hint="run a stock anvil (default mnemonic)",
        )
