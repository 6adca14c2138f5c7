#!/usr/bin/env python3
"""Benchmark anchoring on a local chain (anvil from ``npm ci``).

Mints N small batches and one of ``--proofs`` products, then times one ``provmint
anchor`` of all of them end to end (a whole process: start-up, node round trips,
signing, receipt) and reports its gas; then times ``provmint verify`` as a whole
process: one anchored proof, offline and on chain (target 0.5 s), and every proof of
the large batch on chain from ``proof export --all`` (target: 10,000 in 10 s).

    python benchmarks/bench_anchor.py            # 100 batches, both methods, 10,000 proofs
    python benchmarks/bench_anchor.py --batches 50 --proofs 1000 --json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from make_products import write_csv  # noqa: E402

MNEMONIC = "test test test test test test test test test test test junk"
"""anvil's well-known dev mnemonic: local chains only."""


def dev_key() -> str:
    """Hex private key of anvil's dev account 0."""
    from eth_account import Account

    Account.enable_unaudited_hdwallet_features()
    return "0x" + bytes(Account.from_mnemonic(MNEMONIC, account_path="m/44'/60'/0'/0/0").key).hex()


def start_anvil() -> tuple[subprocess.Popen[str], str]:
    binary = os.environ.get("ANVIL_BIN") or str(ROOT / "node_modules" / ".bin" / "anvil")
    proc = subprocess.Popen(
        [binary, "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        found = re.search(r"Listening on (127\.0\.0\.1:\d+)", line)
        if found:
            threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep draining
            return proc, "http://" + found.group(1)
    raise SystemExit("anvil did not start")


def provmint(*args: str, env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "provmint", *args], env=env, capture_output=True, text=True
    )
    return time.perf_counter() - started, done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--proofs", type=int, default=10_000, help="products of the big batch")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="provmint-anchor-bench-"))
    node, url = start_anvil()
    figures: dict[str, object] = {"batches": args.batches}
    try:
        env = {
            **os.environ,
            "PROVMINT_KEY_FILE": str(work / "keys.json"),
            "PROVMINT_CONFIG": str(work / "none.toml"),
            "PROVMINT_CHAIN_KEY": dev_key(),
        }
        (work / "none.toml").write_text("")
        provmint("keys", "init", env=env)
        for method in ("calldata", "registry"):
            store = work / f"store-{method}"
            menv = {**env, "PROVMINT_STORE": str(store)}
            from provmint.batch import mint_batch
            from provmint.config import resolve_settings

            cfg = resolve_settings(store=store, key_file=work / "keys.json", workers=1)
            for i in range(args.batches):
                csv = work / f"b{i}.csv"
                write_csv(csv, 5, seed=1000 * (method == "registry") + i + 1)
                mint_batch(csv, settings=cfg)
            if method == "calldata":
                write_csv(work / "big.csv", args.proofs, seed=99)
                big = mint_batch(work / "big.csv", settings=cfg).batch_id
            extra = []
            if method == "registry":
                _, out = provmint("anchor", "deploy-registry", "--rpc-url", url, "--json", env=menv)
                extra = ["--method", "registry", "--registry", json.loads(out.stdout)["address"]]
            wall, out = provmint("anchor", "--rpc-url", url, "--json", *extra, env=menv)
            if out.returncode != 0:
                raise SystemExit(out.stderr)
            run = json.loads(out.stdout)
            figures[method] = {
                "wall_s": round(wall, 3),
                "gas_used": run["anchor"]["gas_used"],
                "tree_size": run["anchor"]["tree_size"],
                "state": run["anchor"]["state"],
            }
            if method == "calldata":
                first = (work / "b0.csv").read_text().splitlines()[1].split(",")
                provmint(
                    "proof",
                    "export",
                    "--gtin",
                    first[0],
                    "--serial",
                    first[1],
                    "-o",
                    str(work / "p.json"),
                    env=menv,
                )
                offline = [provmint("verify", str(work / "p.json"), env=menv) for _ in range(10)]
                online = [
                    provmint("verify", str(work / "p.json"), "--rpc-url", url, env=menv)
                    for _ in range(5)
                ]
                codes = {o.returncode for _, o in offline}, {o.returncode for _, o in online}
                if codes != ({5}, {0}):
                    raise SystemExit(f"unexpected verify exit codes {codes}")
                figures["verify_offline_s"] = round(statistics.median(w for w, _ in offline), 3)
                figures["verify_on_chain_s"] = round(statistics.median(w for w, _ in online), 3)
                many = work / "all.jsonl"
                provmint("proof", "export", "--batch", big, "--all", "-o", str(many), env=menv)
                wall, out = provmint("verify", str(many), "--rpc-url", url, "--json", env=menv)
                summary = json.loads(out.stdout)["summary"]
                if out.returncode != 0 or summary != {"proofs": args.proofs, "valid": args.proofs}:
                    raise SystemExit(f"verify of {many} gave {out.returncode}: {summary}")
                figures["verify_many_s"] = round(wall, 3)
    finally:
        node.terminate()
        node.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        for method in ("calldata", "registry"):
            f = figures[method]
            assert isinstance(f, dict)
            print(
                f"anchor {args.batches} batches ({method}): {f['wall_s']:.2f} s end to end, "
                f"{f['gas_used']:,} gas, {f['state']}"
            )
        print(f"provmint verify (offline, whole process): {figures['verify_offline_s']:.3f} s")
        print(f"provmint verify (on chain, whole process): {figures['verify_on_chain_s']:.3f} s")
        wall = figures["verify_many_s"]
        assert isinstance(wall, float)
        print(
            f"provmint verify of {args.proofs:,} proofs (on chain, whole process): "
            f"{wall:.2f} s, {args.proofs / wall:,.0f} proofs/s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
