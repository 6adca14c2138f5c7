"""provmint: offline batch minting of product-authenticity records.

Mint a products CSV into tokens, verification URLs and a Merkle tree; export a
self-contained proof per product; verify it offline. The command line (``provmint``) is a
thin layer over these functions::

    from pathlib import Path
    import provmint

    settings = provmint.resolve_settings(store="store", key_file="keys.json")
    provmint.init_keyring(settings.key_file)
    summary = provmint.mint_batch(Path("examples/products.csv"), settings=settings)
    proof = provmint.export_proof(settings, gtin="09520123450014", serial="546CAWQDCR56")
    print(summary.batch_id, provmint.verify_proof(proof).verdict)

Anchoring (``anchor_batches``, ``check_anchor_on_chain``...), scanning, labels and the
verification service are here too. Names are loaded on first use, so ``import provmint``
stays cheap (no pyarrow, duckdb or web3 until a function needs them).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "resolve_settings": "provmint.config",
    "Settings": "provmint.config",
    "init_keyring": "provmint.keys",
    "load_keyring": "provmint.keys",
    "rotate_key": "provmint.keys",
    "mint_batch": "provmint.batch",
    "MintSummary": "provmint.batch",
    "list_batches": "provmint.products",
    "show_batch": "provmint.products",
    "find_product": "provmint.products",
    "export_proof": "provmint.products",
    "export_batch_proofs": "provmint.products",
    "export_labels": "provmint.products",
    "verify_token": "provmint.products",
    "verify_proof": "provmint.verify",
    "Verdict": "provmint.verify",
    "VerificationReport": "provmint.verify",
    "parse_proof": "provmint.proofs",
    "ProvmintError": "provmint.errors",
    "Reject": "provmint.errors",
    "resolve_chain": "provmint.config",
    "anchor_batches": "provmint.anchor",
    "anchor_status": "provmint.anchor",
    "deploy_registry": "provmint.anchor",
    "load_chain_key": "provmint.chain",
    "check_anchor_on_chain": "provmint.anchor",
    "audit_batch": "provmint.audit",
    "scan_code": "provmint.scan",
    "render_labels": "provmint.labels",
    "create_app": "provmint.server",
}

__all__ = [
    "MintSummary",
    "ProvmintError",
    "Reject",
    "Settings",
    "Verdict",
    "VerificationReport",
    "__version__",
    "anchor_batches",
    "anchor_status",
    "audit_batch",
    "check_anchor_on_chain",
    "create_app",
    "deploy_registry",
    "export_batch_proofs",
    "export_labels",
    "export_proof",
    "find_product",
    "init_keyring",
    "list_batches",
    "load_chain_key",
    "load_keyring",
    "merkle",
    "mint_batch",
    "parse_proof",
    "render_labels",
    "resolve_chain",
    "resolve_settings",
    "rotate_key",
    "scan_code",
    "show_batch",
    "verify_proof",
    "verify_token",
]

if TYPE_CHECKING:
    from provmint import merkle
    from provmint.anchor import (
        anchor_batches,
        anchor_status,
        check_anchor_on_chain,
        deploy_registry,
    )
    from provmint.audit import audit_batch
    from provmint.batch import MintSummary, mint_batch
    from provmint.chain import load_chain_key
    from provmint.config import Settings, resolve_chain, resolve_settings
    from provmint.errors import ProvmintError, Reject
    from provmint.keys import init_keyring, load_keyring, rotate_key
    from provmint.labels import render_labels
    from provmint.products import (
        export_batch_proofs,
        export_labels,
        export_proof,
        find_product,
        list_batches,
        show_batch,
        verify_token,
    )
    from provmint.proofs import parse_proof
    from provmint.scan import scan_code
    from provmint.server import create_app
    from provmint.verify import Verdict, VerificationReport, verify_proof


def __getattr__(name: str) -> Any:
    if name == "merkle":
        return importlib.import_module("provmint.merkle")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'provmint' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
