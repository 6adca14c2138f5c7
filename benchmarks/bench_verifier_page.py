#!/usr/bin/env python3
"""Benchmark the browser verifier (``verify.html``): how long headless Chromium takes to
verify one proof offline (parse strictly, record, leaf, inclusion path, manifest digest
by RFC 8785, commitment), with WebCrypto, in one page.

Mints the example batch in a temporary store, exports one proof with ``provmint proof
export``, writes the page with ``provmint verifier-page``, and has
tests/browser/verify_proofs.mjs verify it N times in one page session (the time is
measured in the page, launch excluded), then compares with ``provmint verify``'s
library call on the same proof.

    python benchmarks/bench_verifier_page.py              # 2,000 verifications
    python benchmarks/bench_verifier_page.py --count 10000 --json
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def provmint(env: dict[str, str], *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "provmint", *args],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    node = shutil.which("node")
    if node is None:
        sys.exit("node is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        (base / "none.toml").write_text("")
        env = {
            **os.environ,
            "PROVMINT_STORE": str(base / "store"),
            "PROVMINT_KEY_FILE": str(base / "keys.json"),
            "PROVMINT_CONFIG": str(base / "none.toml"),
        }
        provmint(env, "keys", "init")
        provmint(env, "batch", "create", str(ROOT / "examples" / "products.csv"))
        proof = base / "proof.json"
        provmint(
            env,
            "proof",
            "export",
            "--gtin",
            "09520123450014",
            "--serial",
            "546CAWQDCR56",
            "-o",
            str(proof),
        )
        page = base / "verify.html"
        provmint(env, "verifier-page", "-o", str(page))
        data = proof.read_bytes()
        encoded = base64.b64encode(data).decode()
        spec = {
            "url": page.as_uri(),
            "cases": [{"name": str(n), "proof": encoded, "options": {}} for n in range(args.count)],
        }
        (base / "spec.json").write_text(json.dumps(spec))
        started = time.perf_counter()
        done = subprocess.run(
            [node, str(ROOT / "tests" / "browser" / "verify_proofs.mjs"), str(base / "spec.json")],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        )
        wall = time.perf_counter() - started
        lines = [json.loads(line) for line in done.stdout.splitlines()]
        elapsed = next(line["elapsedMs"] for line in lines if "elapsedMs" in line) / 1000
        verdicts = {json.loads(line["result"])["verdict"] for line in lines if "result" in line}
        assert verdicts == {"pending"}, verdicts

        from provmint.verify import verify_proof

        started = time.perf_counter()
        for _ in range(args.count):
            verify_proof(data)
        python = time.perf_counter() - started
    figures = {
        "proofs": args.count,
        "proof_bytes": len(data),
        "page_seconds": round(elapsed, 3),
        "page_ms_per_proof": round(1000 * elapsed / args.count, 3),
        "node_process_seconds": round(wall, 2),
        "python_ms_per_proof": round(1000 * python / args.count, 3),
    }
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:22} {value}")


if __name__ == "__main__":
    main()
