"""``provmint devchain``: a real anvil started, used and stopped as a user would, from
the printed export lines; a busy port, a missing anvil, and a node that is not anvil's
dev chain (whose key is then never printed)."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Anvil, dev_key, free_port, run_provmint
from helpers import mint_example, status_json

from provmint import devchain
from provmint.errors import AnchorError, ConfigError


class DevChainProcess:
    """``provmint devchain ARGS`` as a real process, with its output read as it comes."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "provmint", "devchain", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.out: queue.Queue[str | None] = queue.Queue()
        self.err: queue.Queue[str | None] = queue.Queue()
        self.readers = [
            threading.Thread(target=self._read, args=(stream, lines), daemon=True)
            for stream, lines in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))
        ]
        for reader in self.readers:
            reader.start()

    @staticmethod
    def _read(stream: Any, lines: queue.Queue[str | None]) -> None:
        for line in stream:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    def line(self, lines: queue.Queue[str | None], timeout: float = 60) -> str:
        found = lines.get(timeout=timeout)
        assert found is not None, f"devchain ended: {self.proc.wait()}"
        return found

    def err_until(self, needle: str) -> list[str]:
        seen = []
        while needle not in (line := self.line(self.err)):
            seen.append(line)
        return [*seen, line]

    def stop(self, signum: int) -> tuple[int, list[str]]:
        self.proc.send_signal(signum)
        code = self.proc.wait(30)
        rest = []
        while (line := self.err.get(timeout=10)) is not None:
            rest.append(line)
        return code, rest

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for reader in self.readers:
            reader.join(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def devchains() -> Iterator[Any]:
    started: list[DevChainProcess] = []

    def start(*args: str) -> DevChainProcess:
        process = DevChainProcess(*args)
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()


def rpc(url: str, method: str, *params: object) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
    request = urllib.request.Request(url, body.encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())["result"]


def assert_gone(pid: int, url: str) -> None:
    """anvil and everything it started have exited; nothing listens any more."""
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
    with pytest.raises(OSError):
        rpc(url, "eth_chainId")


@pytest.mark.chain
@pytest.mark.slow
def test_devchain_exports_work_for_anchoring_and_ctrl_c_stops_it(
    cli, keyed, devchains, monkeypatch
) -> None:
    chain = devchains()
    exports = [chain.line(chain.out), chain.line(chain.out)]
    found = [re.fullmatch(r"export (PROVMINT_[A-Z_]+)=(\S+)", line) for line in exports]
    assert all(found), exports
    env = dict(f.groups() for f in found if f)
    assert list(env) == ["PROVMINT_RPC_URL", "PROVMINT_CHAIN_KEY"]
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", env["PROVMINT_RPC_URL"])
    assert env["PROVMINT_CHAIN_KEY"] == dev_key(0)[1]
    notice = "\n".join(chain.err_until("Ctrl-C stops"))
    assert "public" in notice and dev_key(0)[0] in notice and "chain 31337" in notice
    assert dev_key(0)[1] not in notice  # the key goes to stdout only
    pid = int(re.search(r"anvil \(pid (\d+)\)", notice).group(1))  # type: ignore[union-attr]
    assert int(rpc(env["PROVMINT_RPC_URL"], "eth_chainId"), 16) == 31337

    # What a user does next: the two variables, a batch, an anchor, a proof on chain.
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    batch_id = mint_example(cli)
    anchored = run_provmint("anchor", "--json")
    assert anchored.returncode == 0, anchored.stderr
    anchor = json.loads(anchored.stdout)["anchor"]
    assert anchor["state"] == "confirmed" and anchor["sender"] == dev_key(0)[0]
    assert status_json(cli)["pending_batches"] == []
    gtin, serial = "09520123450014", "546CAWQDCR56"
    r = cli("proof", "export", "--gtin", gtin, "--serial", serial, "-o", "p.json")
    assert r.exit_code == 0, r.output
    r = cli("verify", "p.json", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["batch_id"] == batch_id, r.output

    code, rest = chain.stop(signal.SIGINT)
    assert code == 0 and rest == ["anvil stopped on SIGINT"], rest
    assert_gone(pid, env["PROVMINT_RPC_URL"])


@pytest.mark.chain
def test_devchain_json_on_a_chosen_port_with_a_block_time(devchains) -> None:
    port = free_port()
    chain = devchains("--json", "--port", str(port), "--block-time", "0.5")
    document = json.loads(chain.line(chain.out))
    assert document["rpc_url"] == f"http://127.0.0.1:{port}"
    assert document["chain_id"] == 31337 and document["public_test_key"] is True
    assert document["address"] == dev_key(0)[0]
    assert document["private_key"] == dev_key(0)[1]
    assert document["env"] == {
        "PROVMINT_RPC_URL": document["rpc_url"],
        "PROVMINT_CHAIN_KEY": dev_key(0)[1],
    }
    first = int(rpc(document["rpc_url"], "eth_blockNumber"), 16)
    time.sleep(1.6)
    assert int(rpc(document["rpc_url"], "eth_blockNumber"), 16) >= first + 2  # it mines alone
    code, rest = chain.stop(signal.SIGTERM)
    assert code == 0 and rest[-1] == "anvil stopped on SIGTERM", rest
    assert_gone(document["pid"], document["rpc_url"])


@pytest.mark.chain
def test_devchain_on_a_busy_port_says_so() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = run_provmint("devchain", "--port", port, timeout=60)
    assert r.returncode == 10, r.stderr
    assert "Address already in use" in r.stderr and "hint: choose another --port" in r.stderr
    assert r.stdout == ""


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["--anvil", "/nonexistent/anvil"], 7, "anvil not found: /nonexistent/anvil"),
        (["--port", "0"], 2, "--port"),
        (["--port", "70000"], 2, "--port"),
        (["--block-time", "0"], 2, "--block-time"),
        (["--block-time", "nan"], 2, "--block-time"),
    ],
)
def test_devchain_refusals(cli, args: list[str], code: int, needle: str) -> None:
    r = cli("devchain", *args)
    assert r.exit_code == code, r.output
    assert needle in r.stderr and r.stdout == ""


def test_devchain_help_has_an_example(cli) -> None:
    r = cli("devchain", "--help")
    assert r.exit_code == 0 and "provmint devchain --block-time 2" in r.output


def test_no_anvil_anywhere_gives_a_hint(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(devchain, "__file__", str(tmp_path / "a" / "b" / "devchain.py"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError) as raised:
        devchain.find_anvil()
    assert "npm ci" in (raised.value.hint or "") and "--anvil" in (raised.value.hint or "")
    fake = tmp_path / "anvil"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert devchain.find_anvil() == fake  # then PATH's


def test_the_project_anvil_comes_first() -> None:
    found = devchain.find_anvil()
    assert found == Path(devchain.__file__).resolve().parents[2] / "node_modules/.bin/anvil"


FAKE_NODE = r"""#!{python}
# A node that is not anvil's dev chain: it answers every call as chain {chain_id}.
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        result = {{"eth_chainId": hex({chain_id}), "eth_accounts": {accounts!r}}}
        body = json.dumps({{"jsonrpc": "2.0", "id": 1,
                           "result": result.get(request["method"])}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = HTTPServer(("127.0.0.1", int(sys.argv[sys.argv.index("--port") + 1])), Handler)
print(f"Listening on 127.0.0.1:{{server.server_port}}", flush=True)
server.serve_forever()
"""


@pytest.mark.parametrize(
    ("chain_id", "accounts", "needle"),
    [
        (1, [dev_key(0)[0]], "serves chain 1, not anvil's 31337"),
        (31337, [dev_key(5)[0]], "does not hold anvil's dev account"),
        (31337, [], "does not hold anvil's dev account"),
    ],
)
def test_the_key_is_never_printed_for_another_chain(
    cli, tmp_path: Path, chain_id: int, accounts: list[str], needle: str
) -> None:
    fake = tmp_path / "fake-anvil"
    fake.write_text(FAKE_NODE.format(python=sys.executable, chain_id=chain_id, accounts=accounts))
    fake.chmod(0o755)
    r = run_provmint("devchain", "--anvil", fake, timeout=60)
    assert r.returncode == 10 and needle in r.stderr, r.stderr
    assert r.stdout == ""
    assert dev_key(0)[1][2:] not in r.stdout + r.stderr


@pytest.mark.chain
def test_check_refuses_a_real_anvil_on_another_chain_id(anvil_chain_5: Anvil) -> None:
    chain = devchain.DevChain(anvil_chain_5.proc, Path("anvil"), anvil_chain_5.port, None)
    with pytest.raises(AnchorError, match="serves chain 5"):
        devchain._check_node(chain, time.monotonic() + 10)


@pytest.fixture
def anvil_chain_5() -> Iterator[Anvil]:
    node = Anvil("--chain-id", "5")
    yield node
    node.stop()
