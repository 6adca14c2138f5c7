"""``provmint anchor --every`` (the schedule) and ``anchor --dry-run --from``.

The loop's timing, errors and lines are tested with a fake clock; then the real command,
as a user runs it (a subprocess), against real anvil nodes: periods that anchor what was
minted meanwhile, a node that is down and comes back, SIGTERM between runs and in the
middle of an anchor (the next ``provmint anchor`` finishes it), configuration errors
that end it at once. The systemd examples are checked against the real command line.
"""

from __future__ import annotations

import configparser
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, Anvil, dev_key, free_port, run_provmint
from helpers import anchor_json, mint_example, status_json
from hypothesis import given
from hypothesis import strategies as st

from provmint.anchor.run import AnchorRun
from provmint.anchor.schedule import (
    MAX_EVERY,
    MIN_EVERY,
    ScheduledRun,
    anchor_every,
    format_every,
    is_fatal,
    parse_every,
    run_every,
)
from provmint.config import resolve_chain
from provmint.errors import (
    AnchorError,
    ChainMismatchError,
    ConfigError,
    InsufficientFundsError,
    NodeUnreachableError,
    StoreBusyError,
    StoreCorruptError,
)
from provmint.store.anchors import AnchorRecord, AnchorState

sys.path.insert(0, str(ROOT / "scripts"))
from make_products import write_csv as write_products

SYSTEMD = ROOT / "examples" / "systemd"
TX = re.compile(r"0x[0-9a-f]{64}")


# --------------------------------------------------------------------------- --every parsing


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2s", 2),
        ("90s", 90),
        ("30m", 1800),
        ("1h", 3600),
        ("1h30m", 5400),
        ("1d12h", 129600),
        ("2m0s", 120),
        ("168h", 604800),
        ("7d", 604800),
        ("604800s", 604800),
    ],
)
def test_parse_every_accepts(text: str, seconds: int) -> None:
    assert parse_every(text) == seconds
    assert parse_every(format_every(seconds)) == seconds


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1",  # no unit
        "3600",
        "1.5h",  # no fractions
        "-1h",
        "+1h",
        "1H",
        " 1h",
        "1h ",
        "1 h",
        "1h\n",
        "1m1h",  # units out of order
        "1h1h",
        "01h",
        "1e3s",
        "h",
        "1w",
        "\u0661h",  # ARABIC-INDIC DIGIT ONE: a digit to str.isdigit, not to the parser
        "１h",  # FULLWIDTH DIGIT ONE
        "99999999s",
        "0s",
        "1s",  # below the minimum
        "8d",  # above a week
        "604801s",
        "1h\x1b[31m",
    ],
)
def test_parse_every_rejects(text: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_every(text)
    assert raised.value.hint and "90s" in raised.value.hint
    assert "\x1b" not in str(raised.value) and "\n" not in str(raised.value)


@given(st.text(max_size=30))
def test_parse_every_never_accepts_out_of_bounds_or_raises_otherwise(text: str) -> None:
    try:
        seconds = parse_every(text)
    except ConfigError:
        return
    assert MIN_EVERY <= seconds <= MAX_EVERY
    assert re.fullmatch(r"[0-9dhms]+", text)


def test_format_every() -> None:
    assert [format_every(s) for s in (2, 90, 3600, 5400, 86400 + 61)] == [
        "2s",
        "1m30s",
        "1h",
        "1h30m",
        "1d1m1s",
    ]


# --------------------------------------------------------------------------- the loop


class FakeTime:
    """A clock that moves only when slept on, or when a run takes time."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def wall(self) -> datetime:
        return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=self.now)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def run_result(anchor: AnchorRecord | None = None, remaining: int = 0, *resumed: Any) -> AnchorRun:
    return AnchorRun(31337, None, anchor, tuple(resumed), remaining, False, 0.1)


def record(anchor_id: int, state: AnchorState, **fields: Any) -> AnchorRecord:
    values: dict[str, Any] = {
        "anchor_id": anchor_id,
        "created_at": "",
        "updated_at": "",
        "chain_id": 31337,
        "method": "calldata",
        "contract": None,
        "sender": dev_key(0)[0],
        "tree_size": 2,
        "tree_root": "00" * 32,
        "digest": "11" * 32,
        "state": state,
        "confirmations": 1,
        "tx_hash": "0x" + "ab" * 32,
        "block_number": 7 if state.in_block else None,
        "block_hash": None,
        "block_time": None,
        "gas_used": None,
        "fee_wei": None,
        "error": None,
    }
    values.update(fields)
    return AnchorRecord(**values)


def test_run_every_keeps_a_fixed_grid_and_stops() -> None:
    fake = FakeTime()
    stop = threading.Event()
    started: list[float] = []
    done: list[ScheduledRun] = []

    def job() -> AnchorRun:
        started.append(fake.now)
        fake.now += 3  # each run takes 3 s
        if len(started) == 4:
            stop.set()
        return run_result()

    runs = run_every(
        60, job, stop=stop, on_run=done.append, clock=fake.clock, now=fake.wall, sleep=fake.sleep
    )
    assert runs == 4 and [d.number for d in done] == [1, 2, 3, 4]
    assert started == [1000, 1060, 1120, 1180]  # not 1000, 1063, 1126...
    assert fake.sleeps == [57, 57, 57]  # no sleep after the stop
    assert all(d.elapsed == 3 for d in done)
    assert done[-1].stopping and not done[0].stopping
    assert done[0].line() == "2026-01-01T00:16:40Z anchor run 1: nothing pending (3.0 s)"


def test_a_run_longer_than_the_period_skips_the_slots_it_overran() -> None:
    fake = FakeTime()
    stop = threading.Event()
    started: list[float] = []

    def job() -> AnchorRun:
        started.append(fake.now)
        fake.now += 150 if len(started) == 1 else 1
        return run_result()

    run_every(
        60,
        job,
        stop=stop,
        on_run=lambda done: None,
        clock=fake.clock,
        now=fake.wall,
        sleep=fake.sleep,
        max_runs=3,
    )
    assert started == [1000, 1180, 1240]  # 1060 and 1120 were missed, not run late


def test_errors_are_a_runs_outcome_and_the_loop_goes_on() -> None:
    fake = FakeTime()
    errors: list[Exception] = [
        NodeUnreachableError("cannot reach the node at http://127.0.0.1:1 (eth_chainId)"),
        InsufficientFundsError("0xabc needs 1 ETH, has 0", hint="fund 0xabc on chain 1"),
        StoreBusyError("the store is busy"),
        AnchorError("fees are 900 gwei now, above the cap of 50 gwei"),
    ]
    done: list[ScheduledRun] = []

    def job() -> AnchorRun:
        if errors:
            raise errors.pop(0)
        return run_result()

    runs = run_every(
        10,
        job,
        stop=threading.Event(),
        on_run=done.append,
        clock=fake.clock,
        now=fake.wall,
        sleep=fake.sleep,
        max_runs=5,
    )
    assert runs == 5
    summaries = [d.summary() for d in done]
    assert summaries[0] == "error: cannot reach the node at http://127.0.0.1:1 (eth_chainId)"
    assert summaries[1] == "error: 0xabc needs 1 ETH, has 0 (hint: fund 0xabc on chain 1)"
    assert summaries[4] == "nothing pending"
    first = done[0].to_json()
    assert first["error"] == {
        "code": "node_unreachable",
        "exit": 10,
        "message": "cannot reach the node at http://127.0.0.1:1 (eth_chainId)",
        "hint": None,
    }
    assert first["result"] is None and first["run"] == 1
    assert done[4].to_json()["result"]["chain_id"] == 31337


@pytest.mark.parametrize(
    "error",
    [
        ConfigError("the registry method needs the registry's address"),
        ChainMismatchError("the node serves chain 1, but the profile expects chain 5"),
        StoreCorruptError("the catalog names a batch that is not there"),
    ],
)
def test_configuration_errors_end_the_loop_at_once(error: Exception) -> None:
    fake = FakeTime()
    done: list[ScheduledRun] = []
    calls = []

    def job() -> AnchorRun:
        calls.append(1)
        if len(calls) == 2:
            raise error
        return run_result()

    with pytest.raises(type(error)):
        run_every(
            10,
            job,
            stop=threading.Event(),
            on_run=done.append,
            clock=fake.clock,
            now=fake.wall,
            sleep=fake.sleep,
        )
    assert len(calls) == 2 and len(done) == 1
    assert is_fatal(error)  # type: ignore[arg-type]


def test_a_bug_is_not_swallowed() -> None:
    def job() -> AnchorRun:
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        run_every(10, job, stop=threading.Event(), on_run=lambda done: None)


def test_a_stop_between_runs_ends_the_real_sleep_at_once() -> None:
    stop = threading.Event()
    done: list[ScheduledRun] = []
    threading.Timer(0.3, stop.set).start()
    began = time.monotonic()
    runs = run_every(3600, run_result, stop=stop, on_run=done.append)
    assert runs == 1 and time.monotonic() - began < 5


def test_a_stop_before_the_start_runs_nothing() -> None:
    stop = threading.Event()
    stop.set()
    assert run_every(10, run_result, stop=stop, on_run=lambda done: None) == 0


def test_anchor_every_checks_its_bounds(settings: Any) -> None:
    for seconds in (1.0, MAX_EVERY + 1, 0.0, -5.0):
        with pytest.raises(ConfigError, match="from 2s to 7d"):
            anchor_every(
                settings,
                resolve_chain(),
                None,  # type: ignore[arg-type]
                seconds,
                stop=threading.Event(),
                on_run=lambda done: None,
            )


def test_run_lines_say_what_happened() -> None:
    at = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    tx = "0x" + "ab" * 32

    def line(run: AnchorRun, stopping: bool = False) -> str:
        return ScheduledRun(3, at, 1.25, run, None, stopping).line()

    confirmed = record(4, AnchorState.CONFIRMED)
    assert line(run_result(confirmed)) == (
        f"2026-03-04T05:06:07Z anchor run 3: anchored 2 batch(es) in tx {tx} "
        "(anchor #4, confirmed in block 7) (1.2 s)"
    )
    resumed = record(2, AnchorState.CONFIRMED, tree_size=1)
    assert "resumed anchor #2 (confirmed in block 7); nothing" not in line(
        run_result(None, 0, resumed)
    )
    assert line(run_result(None, 0, resumed)).endswith(
        "anchor run 3: resumed anchor #2 (confirmed in block 7) (1.2 s)"
    )
    both = line(run_result(confirmed, 5, resumed))
    assert "resumed anchor #2 (confirmed in block 7); anchored 2 batch(es)" in both
    assert "; 5 batch(es) still pending" in both
    left = line(run_result(record(4, AnchorState.BROADCAST)), stopping=True)
    assert f"in tx {tx} (anchor #4, broadcast, stopping; the next run finishes it)" in left
    assert "stopping before a new anchor; 3 batch(es) still pending" in line(
        run_result(None, 3), stopping=True
    )
    failed = record(5, AnchorState.FAILED, error="the anchor transaction reverted")
    assert "(anchor #5, failed: the anchor transaction reverted)" in line(run_result(failed))


# --------------------------------------------------------------------------- options (no node)


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["--every", "1h", "--dry-run"], 2, "--dry-run"),
        (["--every", "1h", "--batch", "20260101-0001"], 2, "--batch"),
        (["--every", "90"], 2, "not a duration"),
        (["--every", "1s"], 2, "from 2s to 7d"),
        (["--every", "1h"], 10, "no chain key"),  # at once, before any run
        (["--dry-run"], 2, "--from"),
        (["--dry-run", "--from", "0x1234"], 2, "not an account address"),
        (["--dry-run", "--from", "f39Fd6e51aad88F6F4ce6aB8827279cffFb92266"], 2, "address"),
        (
            ["--dry-run", "--from", "0xF39fd6e51aad88F6F4ce6aB8827279cffFb92266"],
            2,
            "checksum",
        ),
        (["--from", dev_key(0)[0]], 10, "no chain key"),  # sending needs the key
    ],
)
def test_option_refusals(cli, keyed, args: list[str], code: int, needle: str) -> None:
    r = cli("anchor", *args, "--rpc-url", f"http://127.0.0.1:{free_port()}")
    assert r.exit_code == code, r.output
    assert needle in r.stderr, r.stderr
    assert "Traceback" not in r.output


def test_from_must_be_the_keys_address(cli, keyed, monkeypatch) -> None:
    monkeypatch.setenv("PROVMINT_CHAIN_KEY", dev_key(0)[1])
    r = cli("anchor", "--dry-run", "--from", dev_key(1)[0])
    assert r.exit_code == 2 and "is not the chain key's address" in r.stderr, r.output
    assert dev_key(0)[1][2:] not in r.output
    r = cli("anchor", "--from", dev_key(1)[0])
    assert r.exit_code == 2 and dev_key(0)[0] in r.stderr, r.output


# --------------------------------------------------------------------------- dry run --from


@pytest.mark.chain
def test_dry_run_needs_only_the_senders_address(
    cli, keyed, anvil: Anvil, monkeypatch, tmp_path: Path
) -> None:
    from eth_account import Account

    monkeypatch.setenv("PROVMINT_RPC_URL", anvil.url)
    batch_id = mint_example(cli)
    sender = dev_key(2)[0]

    run = anchor_json(cli, "--dry-run", "--from", sender.lower())
    plan = run["plan"]
    assert plan["sender"] == sender and plan["batches"] == [batch_id]
    assert plan["transaction"]["to"] == sender  # calldata: to the sender itself
    assert plan["transaction"]["gas"] > 21_000
    assert plan["balance_wei"] == int(str(anvil.rpc("eth_getBalance", sender, "latest")), 16)
    r = cli("anchor", "--dry-run", "--from", sender)
    assert r.exit_code == 0 and f"from {sender}" in r.stdout, r.output

    # The funds check is the sender's.
    poor = Account.create().address
    r = cli("anchor", "--dry-run", "--from", poor)
    assert r.exit_code == 10 and poor in r.stderr and "has 0.00000000 ETH" in r.stderr, r.output

    # With a key: --from may repeat its address (any case), not name another.
    monkeypatch.setenv("PROVMINT_CHAIN_KEY", dev_key(0)[1])
    assert (
        anchor_json(cli, "--dry-run", "--from", dev_key(0)[0].lower())["plan"]["sender"]
        == (dev_key(0)[0])
    )
    assert anchor_json(cli, "--dry-run")["plan"]["sender"] == dev_key(0)[0]

    # A keystore is not decrypted for a dry run with --from: its public address field
    # is compared instead.
    monkeypatch.delenv("PROVMINT_CHAIN_KEY")
    keystore = tmp_path / "issuer.keystore.json"
    keystore.write_text(json.dumps(Account.encrypt(dev_key(1)[1], "pw", iterations=2)))
    run = anchor_json(cli, "--dry-run", "--keystore", keystore, "--from", dev_key(1)[0])
    assert run["plan"]["sender"] == dev_key(1)[0]
    r = cli("anchor", "--dry-run", "--keystore", keystore, "--from", sender)
    assert r.exit_code == 2 and "keystore" in r.stderr, r.output

    # Nothing was sent or recorded by any of it.
    report = status_json(cli)
    assert report["anchors"] == [] and report["pending_batches"] == [batch_id]
    for index in range(3):
        assert anvil.rpc("eth_getTransactionCount", dev_key(index)[0], "latest") == "0x0"


# --------------------------------------------------------------------------- the real loop


class Loop:
    """``provmint anchor --every ...`` as a real process; its stderr lines, as they come."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "provmint", "anchor", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        stream = self.proc.stderr
        assert stream is not None

        def read() -> None:
            for line in stream:
                self.lines.put(line.rstrip("\n"))
            self.lines.put(None)

        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()

    def next_run(self, timeout: float = 90) -> str:
        """The next ``anchor run N:`` line."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no run line within {timeout} s; seen: {self.seen}")
            if line is None:
                pytest.fail(f"the loop ended ({self.proc.wait()}); seen: {self.seen}")
            self.seen.append(line)
            if " anchor run " in line:
                return line

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30) -> tuple[int, list[str]]:
        """Send ``signum``; the exit status and the lines written after it."""
        self.proc.send_signal(signum)
        code = self.proc.wait(timeout)
        rest = []
        while (line := self.lines.get(timeout=10)) is not None:
            rest.append(line)
        self.seen += rest
        return code, rest

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def loops() -> Iterator[Any]:
    started: list[Loop] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Loop:
        loop = Loop(*args, env=env)
        started.append(loop)
        return loop

    yield start
    for loop in started:
        loop.kill()


def mint_one(settings: Any, tmp_path: Path, seed: int) -> str:
    from provmint.batch import mint_batch

    path = tmp_path / f"products-{seed}.csv"
    write_products(path, 3, seed=seed)
    return mint_batch(path, settings=replace(settings, workers=1)).batch_id


def anchored_batches(line: str) -> int:
    found = re.search(r"anchored (\d+) batch\(es\) in tx (0x[0-9a-f]{64})", line)
    assert found, line
    return int(found.group(1))


def nonce(node: Anvil, address: str) -> int:
    return int(str(node.rpc("eth_getTransactionCount", address, "latest")), 16)


@pytest.mark.slow
def test_every_period_anchors_what_became_pending(
    cli, keyed, chain_env: Anvil, tmp_path: Path, loops
) -> None:
    minted = [mint_one(keyed, tmp_path, 1)]
    loop = loops("--every", "2s")
    first = loop.next_run()
    assert re.search(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ anchor run 1: ", first), first
    assert anchored_batches(first) == 1 and "confirmed in block" in first
    assert "anchoring every 2s from " + dev_key(0)[0] in loop.seen[0]
    quiet = loop.next_run()
    assert "anchor run 2: nothing pending" in quiet, quiet

    for seed in (2, 3):
        minted.append(mint_one(keyed, tmp_path, seed))
        line = loop.next_run()
        while "nothing pending" in line:  # the mint ended just after a run began
            line = loop.next_run()
        assert anchored_batches(line) == 1 and "confirmed in block" in line, line

    code, rest = loop.stop()
    assert code == 0, loop.seen
    assert rest[-1].startswith("stopped on SIGTERM after ") and rest[-1].endswith(" run(s)")
    assert not any("Traceback" in line for line in loop.seen)

    report = status_json(cli)
    assert report["pending_batches"] == []
    anchors = report["anchors"]
    assert [a["state"] for a in anchors] == ["confirmed"] * 3
    assert [a["tree_size"] for a in anchors] == [1, 1, 1]
    assert nonce(chain_env, dev_key(0)[0]) == 3
    tx_in_lines = TX.findall("\n".join(loop.seen))
    assert tx_in_lines == [a["tx_hash"] for a in anchors]
    for anchor, batch_id in zip(anchors, minted, strict=True):
        show = cli("batch", "show", batch_id, "--json")
        assert show.exit_code == 0, show.output
        assert json.loads(show.stdout)["anchor"]["tx_hash"] == anchor["tx_hash"]


@pytest.mark.slow
@pytest.mark.chain
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_between_runs_stops_at_once(
    cli, keyed, chain_env: Anvil, loops, signum: int
) -> None:
    mint_example(cli)
    loop = loops("--every", "1h", "--json")
    assert anchored_batches(loop.next_run()) == 1
    began = time.monotonic()
    code, rest = loop.stop(signum)
    assert code == 0 and time.monotonic() - began < 5, loop.seen
    assert rest == [f"stopped on {signal.Signals(signum).name} after 1 run(s)"]
    out = loop.proc.stdout.read() if loop.proc.stdout else ""
    (document,) = [json.loads(line) for line in out.splitlines()]  # one JSON line per run
    assert document["run"] == 1 and document["error"] is None
    assert document["result"]["anchor"]["state"] == "confirmed"


@pytest.mark.slow
@pytest.mark.chain
@pytest.mark.parametrize(
    ("anvil_args", "anchor_args", "left_in"),
    [
        (("--no-mining",), (), "broadcast"),  # waiting for a block
        ((), ("--confirmations", "3"), "included"),  # waiting for confirmations
    ],
)
def test_sigterm_mid_anchor_then_the_next_run_finishes_it(
    cli,
    keyed,
    monkeypatch,
    loops,
    tmp_path: Path,
    anvil_args: tuple[str, ...],
    anchor_args: tuple[str, ...],
    left_in: str,
) -> None:
    node = Anvil(*anvil_args)
    try:
        monkeypatch.setenv("PROVMINT_RPC_URL", node.url)
        monkeypatch.setenv("PROVMINT_CHAIN_KEY", dev_key(0)[1])
        batch_id = mint_example(cli)
        loop = loops("--every", "1h", *anchor_args)
        # Wait until the anchor is out there and the run waits on the chain.
        deadline = time.monotonic() + 60
        while True:
            with monkeypatch.context() as m:
                m.delenv("PROVMINT_RPC_URL")
                anchors = status_json(cli)["anchors"]
            if anchors and anchors[0]["state"] == left_in:
                break
            assert time.monotonic() < deadline, anchors
            assert loop.proc.poll() is None, loop.seen
            time.sleep(0.2)
        time.sleep(0.5)  # well into its waiting
        began = time.monotonic()
        code, rest = loop.stop(signal.SIGTERM)
        assert code == 0 and time.monotonic() - began < 10, loop.seen
        (run_line,) = [line for line in loop.seen if " anchor run " in line]
        assert f"(anchor #1, {left_in}, stopping; the next run finishes it)" in run_line
        assert rest[-1] == "stopped on SIGTERM after 1 run(s)"

        with monkeypatch.context() as m:
            m.delenv("PROVMINT_RPC_URL")
            (left,) = status_json(cli)["anchors"]
        assert left["state"] == left_in and len(left["attempts"]) == 1
        assert status_json(cli)["pending_batches"] == []  # being anchored, not pending

        node.mine(3)  # the block (or the confirmations) it was waiting for
        run = json.loads(run_provmint("anchor", "--json").stdout)
        assert run["plan"] is None and run["anchor"] is None
        (resumed,) = run["resumed"]
        assert resumed["state"] == "confirmed" and resumed["anchor_id"] == 1
        assert resumed["tx_hash"] == left["attempts"][0]  # the very transaction sent
        assert nonce(node, dev_key(0)[0]) == 1
        shown = json.loads(cli("batch", "show", batch_id, "--json").stdout)
        assert shown["anchor"]["tx_hash"] == resumed["tx_hash"]
    finally:
        node.stop()


@pytest.mark.slow
@pytest.mark.chain
def test_a_node_that_is_down_is_an_error_line_then_the_next_period_anchors(
    cli, keyed, monkeypatch, loops
) -> None:
    port = free_port()
    monkeypatch.setenv("PROVMINT_RPC_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("PROVMINT_CHAIN_KEY", dev_key(0)[1])
    mint_example(cli)
    loop = loops("--every", "2s")
    for number in (1, 2):
        line = loop.next_run()
        assert f"anchor run {number}: error: cannot reach the node at http://127.0.0.1:{port}" in (
            line
        ), line
        assert "(hint: check --rpc-url" in line
    node = Anvil(port=port)
    try:
        line = loop.next_run()
        while "error:" in line:
            line = loop.next_run()
        assert anchored_batches(line) == 1 and "confirmed" in line
        code, _ = loop.stop()
        assert code == 0
        assert status_json(cli)["anchors"][0]["state"] == "confirmed"
    finally:
        node.stop()


@pytest.mark.slow
def test_configuration_errors_end_the_real_loop_at_once(cli, keyed, chain_env: Anvil) -> None:
    mint_example(cli)
    began = time.monotonic()
    r = run_provmint("anchor", "--every", "2s", "--method", "registry", timeout=60)
    assert r.returncode == 2, r.stderr
    assert "error: the registry method needs the registry's address" in r.stderr
    assert "hint: deploy it with" in r.stderr
    no_key = {k: v for k, v in os.environ.items() if k != "PROVMINT_CHAIN_KEY"}
    r = subprocess.run(
        [sys.executable, "-m", "provmint", "anchor", "--every", "2s"],
        capture_output=True,
        text=True,
        timeout=60,
        env=no_key,
    )
    assert r.returncode == 10 and "error: no chain key" in r.stderr, r.stderr
    assert time.monotonic() - began < 30
    assert status_json(cli)["anchors"] == []


# --------------------------------------------------------------------------- systemd examples


def units() -> dict[str, configparser.ConfigParser]:
    parsed = {}
    for path in sorted(SYSTEMD.glob("*.service")) + sorted(SYSTEMD.glob("*.timer")):
        parser = configparser.ConfigParser(strict=True, interpolation=None, delimiters=("=",))
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        parser.read_string(path.read_text(), source=str(path))
        parsed[path.name] = parser
    return parsed


def test_systemd_examples_parse_and_name_a_real_command_line(cli) -> None:
    found = units()
    assert set(found) == {
        "provmint-anchor.service",
        "provmint-anchor-once.service",
        "provmint-anchor.timer",
    }
    loop, once = found["provmint-anchor.service"], found["provmint-anchor-once.service"]
    timer = found["provmint-anchor.timer"]
    assert loop["Service"]["Type"] == "exec" and once["Service"]["Type"] == "oneshot"
    assert timer["Timer"]["Unit"] == "provmint-anchor-once.service"
    assert timer["Timer"]["OnCalendar"] and timer["Install"]["WantedBy"] == "timers.target"
    assert loop["Install"]["WantedBy"] == "multi-user.target"
    for unit in (loop, once):
        service = unit["Service"]
        assert service["EnvironmentFile"].startswith("/etc/provmint/")
        assert service["NoNewPrivileges"] == "yes"
        assert service["ProtectSystem"] == "strict"
        assert service["User"] == "provmint"
        store = service["Environment"].split("PROVMINT_STORE=")[1].split()[0]
        assert store in service["ReadWritePaths"].split()
        command = service["ExecStart"].split()
        assert command[0].endswith("/provmint") and command[1] == "anchor"
        # Every option the unit passes is one the command takes.
        r = cli(*command[1:], "--help")
        assert r.exit_code == 0, r.output
        for option in (word.split("=")[0] for word in command if word.startswith("--")):
            assert re.search(rf"\s{re.escape(option)}[\s,]", r.output), option
    assert "--every" in loop["Service"]["ExecStart"]
    assert parse_every(loop["Service"]["ExecStart"].split("--every")[1].split()[0]) >= 60
    assert "--every" not in once["Service"]["ExecStart"]
    # SIGTERM is how systemd stops the loop; a run may need a while to stop waiting.
    assert loop["Service"]["KillSignal"] == "SIGTERM"
    assert int(loop["Service"]["TimeoutStopSec"]) >= 30
    env_file = (SYSTEMD / "provmint-anchor.env").read_text()
    assert "PROVMINT_CHAIN_KEY=" in env_file and "0600" in env_file


def test_systemd_accepts_the_examples(tmp_path: Path) -> None:
    """``systemd-analyze verify`` on the units, with ExecStart pointing at this provmint."""
    import shutil

    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    provmint = Path(sys.executable).with_name("provmint")
    assert provmint.exists()
    folder = tmp_path / "units"
    folder.mkdir()
    for path in [*SYSTEMD.glob("*.service"), *SYSTEMD.glob("*.timer")]:
        text = path.read_text().replace("/opt/provmint/venv/bin/provmint", str(provmint))
        (folder / path.name).write_text(text)
    names = sorted(str(p) for p in folder.iterdir())
    done = subprocess.run(
        [analyze, "verify", "--man=no", *names], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr
