"""provmint: offline batch minting of product-authenticity records.

Mint a products CSV into tokens, verification URLs and a Merkle tree; export a
self-contained proof per product; verify it offline. The command line (``provmint``) is a
thin layer over these functions::

    from pathlib import Path
    import provmint

    settings = provmint.resolve_settings(store="store", key_file="keys.json")
    provmint.init_keyring(settings.key_file)
    summary = provmint.mint_batch(Path("products.csv"), settings=settings)
    proof = provmint.export_proof(settings, gtin="09520123450014", serial="546CAWQDCR56")
    print(provmint.verify_proof(proof).verdict)

Heavy dependencies (pyarrow, duckdb) load only when a function needs them.
"""

from __future__ import annotations

__version__ = "0.1.0"
