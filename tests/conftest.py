"""Shared fixtures: an isolated store and key file per test, a CLI runner, CSV helpers.

Every test gets its own ``PROVMINT_STORE``, ``PROVMINT_KEY_FILE`` and ``PROVMINT_CONFIG``
under ``tmp_path`` (the user's real config and keys are never touched) and runs in
``tmp_path`` as its working directory (rejects files land there).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from provmint.cli import app
from provmint.config import Settings, resolve_settings
from provmint.keys import init_keyring

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_CSV = ROOT / "examples" / "products.csv"
VECTORS = Path(__file__).parent / "vectors" / "rfc6962"  # copied from ../shared/vectors
LOCAL_VECTORS = Path(__file__).parent / "vectors"

HEADER = "gtin,serial,lot,expiry,product_name\n"

# Markers for the tests that need a real outside part, so that a contributor without one
# can leave them out: pytest -m "not chain", -m "not postgres", -m "not browser".
NEEDS: dict[str, set[str]] = {
    # an anvil node
    "chain": {"anvil", "chain_env", "chain_node", "quiet_node", "world", "verifier_world"},
    "postgres": {"postgres", "pg_url", "own_postgres"},  # a PostgreSQL server
}
BROWSER_MODULES = {"test_browser.py"}  # headless Chromium through Node


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test by the outside parts its fixtures (or its module) start."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        for marker, names in NEEDS.items():
            if fixtures & names:
                item.add_marker(marker)
        if item.path.name in BROWSER_MODULES:
            item.add_marker("browser")
        callspec = getattr(item, "callspec", None)  # test_scanlog_pg's backend fixture
        if callspec is not None and callspec.params.get("backend") == "postgresql":
            item.add_marker("postgres")


_RUNNING: list[pytest.Item] = []


@pytest.fixture(autouse=True)
def _running(request: pytest.FixtureRequest) -> Iterator[None]:
    """The test being run, for :func:`require_marker`."""
    _RUNNING.append(request.node)
    yield
    _RUNNING.pop()


def require_marker(marker: str) -> None:
    """Fail a test that starts an outside part without carrying its marker (so that
    ``-m "not chain"`` and the like leave out every test that needs one)."""
    if _RUNNING and _RUNNING[-1].get_closest_marker(marker) is None:
        pytest.fail(
            f"{_RUNNING[-1].nodeid} starts a {marker} part: add its fixture to "
            f"conftest.NEEDS or mark it @pytest.mark.{marker}",
            pytrace=False,
        )


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point every provmint location at the test's temporary directory."""
    monkeypatch.setenv("PROVMINT_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("PROVMINT_KEY_FILE", str(tmp_path / "keys" / "keys.json"))
    monkeypatch.setenv("PROVMINT_CONFIG", str(tmp_path / "no-config.toml"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    for name in (
        "PROVMINT_URL_BASE",
        "PROVMINT_WORKERS",
        "PROVMINT_LOCK_TIMEOUT",
        "PROVMINT_RPC_URL",
        "PROVMINT_CHAIN_KEY",
        "PROVMINT_CHAIN",
        "PROVMINT_KEYSTORE",
        "PROVMINT_KEYSTORE_PASSWORD",
        "PROVMINT_REGISTRY",
        "PROVMINT_SCAN_LOG",
    ):
        monkeypatch.delenv(name, raising=False)
    # No rate limit by default in tests: they make hundreds of requests from one address
    # (tests/test_serve_edges.py configures and checks it).
    (tmp_path / "no-config.toml").write_text("[serve]\nrate_limit = 0\n")
    monkeypatch.chdir(tmp_path)
    yield tmp_path


@pytest.fixture
def settings(isolated: Path) -> Settings:
    """Resolved settings for the isolated locations (no key created yet)."""
    return resolve_settings()


@pytest.fixture
def keyed(settings: Settings) -> Settings:
    """Settings with an issuer key file already created."""
    init_keyring(settings.key_file)
    return settings


@pytest.fixture
def runner() -> CliRunner:
    """Typer's CLI runner."""
    return CliRunner()


@pytest.fixture
def cli(runner: CliRunner) -> Callable[..., object]:
    """Invoke the CLI in-process: ``cli("batch", "create", path)`` -> click Result."""

    def invoke(*args: object, input: str | None = None) -> object:
        return runner.invoke(app, [str(a) for a in args], input=input)

    return invoke


@pytest.fixture
def write_csv(tmp_path: Path) -> Callable[..., Path]:
    """Write a CSV file from text or bytes: ``write_csv("name.csv", text)``."""

    def write(name: str, content: str | bytes) -> Path:
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    return write


def run_provmint(
    *args: object, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run provmint as a real subprocess (``python -m provmint``) with the test's env."""
    return subprocess.run(
        [sys.executable, "-m", "provmint", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


# --------------------------------------------------------------------------- local chain

ANVIL_MNEMONIC = "test test test test test test test test test test test junk"


def dev_key(index: int = 0) -> tuple[str, str]:
    """(address, hex private key) of anvil's well-known dev account ``index``."""
    from eth_account import Account

    Account.enable_unaudited_hdwallet_features()
    account = Account.from_mnemonic(ANVIL_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")
    return account.address, "0x" + bytes(account.key).hex()


def anvil_binary() -> str:
    """The pinned anvil from ``npm ci`` (or $ANVIL_BIN). Chain tests fail, never skip,
    without it."""
    candidate = os.environ.get("ANVIL_BIN") or str(ROOT / "node_modules" / ".bin" / "anvil")
    if not Path(candidate).exists():
        pytest.fail(f"anvil not found at {candidate}: run `npm ci` in {ROOT}", pytrace=False)
    return candidate


class Anvil:
    """A real anvil node on 127.0.0.1 and a free port, started for one test."""

    def __init__(self, *args: str, port: int = 0) -> None:
        import re
        import threading

        require_marker("chain")
        self.args = args
        self.proc = subprocess.Popen(
            [anvil_binary(), "--host", "127.0.0.1", "--port", str(port), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            found = re.search(r"Listening on 127\.0\.0\.1:(\d+)", line)
            if found:
                self.port = int(found.group(1))
                break
        else:
            raise RuntimeError("anvil exited before listening")
        self.url = f"http://127.0.0.1:{self.port}"
        stdout = self.proc.stdout
        threading.Thread(target=lambda: [None for _ in stdout], daemon=True).start()

    def rpc(self, method: str, *params: object) -> object:
        """One JSON-RPC call."""
        import json
        import urllib.request

        body = json.dumps(
            {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
        ).encode()
        request = urllib.request.Request(self.url, body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.loads(response.read())
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer["result"]

    def mine(self, blocks: int = 1) -> None:
        """Mine ``blocks`` empty blocks."""
        self.rpc("anvil_mine", hex(blocks))

    def stop(self) -> None:
        """Stop the node (SIGTERM; anvil writes --dump-state on the way out)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def anvil() -> Iterator[Anvil]:
    """A fresh local chain for this test (instant mining, chain id 31337)."""
    node = Anvil()
    yield node
    node.stop()


@pytest.fixture
def chain_env(anvil: Anvil, monkeypatch: pytest.MonkeyPatch) -> Anvil:
    """Point provmint at the test's node with dev account 0 as the chain key."""
    monkeypatch.setenv("PROVMINT_RPC_URL", anvil.url)
    monkeypatch.setenv("PROVMINT_CHAIN_KEY", dev_key(0)[1])
    for name in (
        "PROVMINT_CHAIN",
        "PROVMINT_KEYSTORE",
        "PROVMINT_KEYSTORE_PASSWORD",
        "PROVMINT_REGISTRY",
    ):
        monkeypatch.delenv(name, raising=False)
    return anvil


# --------------------------------------------------------------------------- verification service


class Server:
    """A real ``provmint serve --port 0 ARGS`` process on 127.0.0.1, started and read up
    to its ready lines (the public URL; with ``metrics``, the metrics URL too); the rest
    of its standard error is read as it comes (:attr:`lines`). One worker process unless
    ``--workers`` is given or ``one_worker`` is false (tests/test_serve_workers.py covers
    several). Unless ``must_start``, a service that ends before it is ready is no error
    (a test of why it ended reads :attr:`lines`)."""

    def __init__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        one_worker: bool = True,
        metrics: bool = False,
        must_start: bool = True,
    ) -> None:
        import re
        import threading

        if one_worker and "--workers" not in args and "-j" not in args:
            args = (*args, "--workers", "1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "provmint", "serve", "--port", "0", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "COLUMNS": "1000", **(env or {})},
        )
        assert self.proc.stderr is not None
        self.lines: list[str] = []
        self.url = self.metrics_url = ""
        for line in self.proc.stderr:
            self.lines.append(line)
            if found := re.search(r"on (http://127\.0\.0\.1:\d+)", line):
                self.url = found.group(1)
            elif line.startswith("Metrics at "):
                self.metrics_url = line.split()[2]
            if self.url and (self.metrics_url or not metrics):
                break
        if not self.url and must_start:
            self.proc.wait(30)
            self.proc.stderr.close()
            raise RuntimeError(f"provmint serve did not start: {''.join(self.lines)}")
        self._ready = len(self.lines)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    @property
    def stderr(self) -> str:
        """What the service wrote to standard error so far."""
        return "".join(self.lines)

    def workers(self) -> list[Any]:
        """The worker processes (children of the serve process, as psutil sees them)."""
        import psutil

        return list(psutil.Process(self.proc.pid).children())

    def wait(self, timeout: float = 30) -> int:
        """Wait for the process to end; its exit status."""
        code = self.proc.wait(timeout)
        self._reader.join(10)
        if self.proc.stderr is not None and not self._reader.is_alive():
            self.proc.stderr.close()
        return code

    def stop(self) -> str:
        """Stop the service (SIGTERM, then SIGKILL after 30 s); what it wrote to standard
        error after its ready lines."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.wait(10)
        return "".join(self.lines[self._ready :])


@pytest.fixture
def serve_store() -> Iterator[Callable[..., Server]]:
    """Start ``provmint serve`` over the test's store: ``server = serve_store()``."""
    started: list[Server] = []

    def start(*args: str) -> Server:
        server = Server(*args)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()  # also closes the pipe of one that ended already


# --------------------------------------------------------------------------- PostgreSQL


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def postgres_bin() -> Path:
    """The newest PostgreSQL server binaries (Debian's ``postgresql`` package puts them
    in /usr/lib/postgresql/N/bin; $PG_BIN overrides). Tests fail, never skip, without
    them: CI installs them (scripts/setup)."""
    if os.environ.get("PG_BIN"):
        found = [Path(os.environ["PG_BIN"])]
    else:
        found = sorted(
            Path("/usr/lib/postgresql").glob("*/bin"),
            key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        )
    if not found or not (found[-1] / "initdb").exists():
        pytest.fail(
            "PostgreSQL server binaries not found (no /usr/lib/postgresql/*/bin/initdb):"
            " install Debian's postgresql package (scripts/setup does)",
            pytrace=False,
        )
    return found[-1]


class Postgres:
    """A throwaway PostgreSQL server: ``initdb`` in a temporary directory, ``pg_ctl``
    on a free port on 127.0.0.1, trust authentication, no fsync. initdb refuses root, so
    as root the server runs as the ``postgres`` user (``runuser``)."""

    def __init__(self) -> None:
        import shutil
        import tempfile

        self.bin = postgres_bin()
        self.dir = Path(tempfile.mkdtemp(prefix="provmint-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.user: list[str] = []
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                pytest.fail(
                    "running as root needs runuser (util-linux) to start PostgreSQL", pytrace=False
                )
            shutil.chown(self.dir, "postgres", "postgres")
            self.user = ["runuser", "-u", "postgres", "--"]
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run(
            [*self.user, str(self.bin / tool), *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=self.dir,
        )
        if done.returncode != 0:
            log = self.dir / "log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            pytest.fail(f"{tool} failed: {done.stdout}{done.stderr}{tail}", pytrace=False)

    def start(self) -> None:
        """Start the server (again) on the same port and data."""
        require_marker("postgres")
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off -c synchronous_commit=off"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.dir / "log"),
            "-w",
            "-t",
            "60",
            "-o",
            options,
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: disconnect everyone; ``immediate``: as if it crashed)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def url(self, database: str = "postgres") -> str:
        """A connection URL for ``database``."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create an empty database; return its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as con:
            con.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def destroy(self) -> None:
        """Stop the server and remove its directory."""
        import shutil

        pid_file = self.data / "postmaster.pid"
        if pid_file.exists():
            subprocess.run(
                [
                    *self.user,
                    str(self.bin / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ],
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """One PostgreSQL server for the whole test session (each test takes a database of
    its own with ``pg_url``)."""
    server = Postgres()
    yield server
    server.destroy()


@pytest.fixture
def pg_url(postgres: Postgres, request: pytest.FixtureRequest) -> str:
    """The URL of a fresh, empty database on the session's PostgreSQL server."""
    import re

    name = (
        "t_"
        + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:40]
        + "_"
        + os.urandom(3).hex()
    )
    return postgres.create_database(name)


@pytest.fixture
def own_postgres() -> Iterator[Postgres]:
    """A PostgreSQL server for this test alone (for tests that stop and start it)."""
    server = Postgres()
    yield server
    server.destroy()
