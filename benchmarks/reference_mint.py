#!/usr/bin/env python3
"""The issue's reference: a plain single-process Python mint that does only the
unavoidable work and stores nothing.

Reads the CSV with pyarrow, computes per row ``hmac.digest`` of a token and SHA-256 of a
leaf, reduces the leaves to an RFC 6962 root. Prints one JSON line: wall seconds, peak
RSS (MB) and the root.

    python benchmarks/reference_mint.py products.csv
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import resource
import sys
import time


def main(path: str) -> None:
    started = time.perf_counter()
    import pyarrow as pa
    import pyarrow.csv as pacsv

    table = pacsv.read_csv(
        path,
        convert_options=pacsv.ConvertOptions(
            column_types={
                "gtin": pa.string(),
                "serial": pa.string(),
                "lot": pa.string(),
                "expiry": pa.string(),
                "product_name": pa.string(),
                "production_date": pa.string(),
            }
        ),
    )
    key = os.urandom(32)
    columns = [table.column(name).to_pylist() for name in table.column_names]
    leaves = []
    sha256 = hashlib.sha256
    for row in zip(*columns, strict=True):
        token = hmac.digest(key, (row[0] + row[1]).encode(), "sha256")
        leaves.append(sha256(b"\x00" + "\x1f".join(row).encode() + token).digest())
    level = leaves
    while len(level) > 1:
        nxt = [
            sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)
        ]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    wall = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "rows": table.num_rows,
                "wall_s": round(wall, 3),
                "peak_rss_mb": round(peak, 1),
                "root": level[0].hex(),
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
