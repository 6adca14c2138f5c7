#!/usr/bin/env python3
"""Write a large, realistic products CSV for provmint: GS1 demo-range GTINs with valid
check digits, random 12-character Crockford base32 serials (EU FMD-style randomised),
lots, expiry and production dates, product names.

    python scripts/make_products.py 1000000 -o products-1m.csv [--seed 7] [--skus 40]

The same seed gives the same file. Serials are unique inside one file.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date, timedelta
from pathlib import Path

import numpy as np

CROCKFORD = np.frombuffer(b"0123456789ABCDEFGHJKMNPQRSTVWXYZ", dtype=np.uint8)
PRODUCTS = [
    "Aurora Serum 30 ml",
    "Aurora Cream 50 ml",
    "Borealis Tablets 20 x 500 mg",
    "Cirrus Eye Drops 10 ml",
    "Delta Syrup 100 ml",
    "Equinox Capsules 30 x 250 mg",
    "Fjord Nasal Spray 15 ml",
    "Glacier Gel 40 g",
    "Halo Lotion 200 ml",
    "Iris Patch x 7",
]


def check_digit(body: str) -> int:
    """GS1 mod-10 check digit (weights 3,1,... from the right)."""
    total = sum(int(c) * (3 if i % 2 == 0 else 1) for i, c in enumerate(reversed(body)))
    return (10 - total % 10) % 10


def gtins(count: int) -> list[str]:
    """``count`` GTIN-14s in the GS1 demo range 952 (never real products)."""
    out = []
    for item in range(count):
        body = f"0952012345{item:03d}"
        out.append(body + str(check_digit(body)))
    return out


def serials(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` distinct 12-character Crockford base32 serials as a (n, 12) byte matrix."""
    while True:
        picks = rng.integers(0, 32, size=(n, 12), dtype=np.uint8)
        as_int = picks.astype(np.uint64) @ (np.uint64(32) ** np.arange(12, dtype=np.uint64))
        if np.unique(as_int).size == n:
            return CROCKFORD[picks]


def write_csv(path: Path, n: int, seed: int = 7, skus: int = 40) -> None:
    """Write ``n`` product rows to ``path``."""
    rng = np.random.default_rng(seed)
    sku_gtins = gtins(skus)
    names = [PRODUCTS[s % len(PRODUCTS)] for s in range(skus)]
    sku = rng.integers(0, skus, size=n).tolist()
    serial = serials(rng, n).view("S12").ravel().astype("U12").tolist()
    lots = rng.integers(0, 60, size=n).tolist()
    start = date(2026, 1, 1)
    lot_text = []
    for lot in range(60):
        made = start + timedelta(days=7 * lot)
        expiry = made + timedelta(days=730)
        lot_text.append(
            (f"L{made:%y%m}{chr(65 + lot % 26)}", f"{expiry:%Y-%m-%d}", f"{made:%Y-%m-%d}")
        )
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write("gtin,serial,lot,expiry,product_name,production_date\n")
        block = 200_000
        for lo in range(0, n, block):
            hi = min(n, lo + block)
            fh.write(
                "".join(
                    f"{sku_gtins[s]},{ser},{lt[0]},{lt[1]},{names[s]},{lt[2]}\n"
                    for s, ser, lt in zip(
                        sku[lo:hi], serial[lo:hi], (lot_text[x] for x in lots[lo:hi]), strict=True
                    )
                )
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rows", type=int, help="number of product rows")
    parser.add_argument("-o", "--out", type=Path, required=True, help="CSV file to write")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    parser.add_argument("--skus", type=int, default=40, help="distinct GTINs (default 40)")
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error("rows must be at least 1")
    write_csv(args.out, args.rows, args.seed, args.skus)
    print(f"wrote {args.rows} rows to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
