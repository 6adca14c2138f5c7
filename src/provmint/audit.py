"""``verify --batch``: recompute a stored batch from its Parquet files and check it
against its manifest, its tree file, its commitment and its anchor (the audit of a whole
batch, the store itself treated as untrusted)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from provmint import anchoring, merkle
from provmint.canonical import batch_commitment, manifest_digest, token_commitment
from provmint.config import Settings
from provmint.store import Store
from provmint.tokens import make_token, parse_token, tokens_equal
from provmint.verify import AnchorChecker, Check, Verdict, on_chain_verdict

__all__ = ["AuditReport", "audit_batch"]


@dataclass(frozen=True, slots=True)
class AuditReport:
    """The result of auditing one batch."""

    batch_id: str
    products: int
    verdict: Verdict
    reason: str
    checks: tuple[Check, ...]
    chain: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "batch_id": self.batch_id,
            "products": self.products,
            "verdict": self.verdict.value,
            "reason": self.reason,
            "chain": self.chain,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
        }


def audit_batch(
    settings: Settings,
    ref: str,
    *,
    anchor_checker: AnchorChecker | None = None,
    check_tokens: bool = False,
) -> AuditReport:
    """Recompute every leaf of a batch from its Parquet parts and check root, tree file,
    manifest, commitment and anchor. ``check_tokens`` also re-derives every token with
    the issuer key (needs the key file)."""
    import pyarrow.parquet as pq

    from provmint.engine import record_bytes_column
    from provmint.keys import load_keyring
    from provmint.products import batch_anchor_section, read_catalog

    with read_catalog(settings) as (store, con):
        batch = store.batch(con, ref)
        anchor = batch_anchor_section(con, batch)
    checks: list[Check] = []
    store = Store.open(settings.store)
    tree = store.tree(batch)
    secret = None
    if check_tokens:
        keyring = load_keyring(settings.key_file)
        if any(k.id == batch.key_id for k in keyring.keys):
            secret = keyring.get(batch.key_id).secret.reveal()
        else:
            checks.append(
                Check(
                    "tokens", True, f"not checked: key {batch.key_id} is not in {settings.key_file}"
                )
            )
    leaves = bytearray()
    bad_tokens = 0
    malformed = 0
    count = 0
    leaf_hash = merkle.leaf_hash
    for part in store.part_files(batch):
        table = pq.read_table(part)
        record_columns = [c for c in table.column_names if c not in ("leaf_index", "token", "url")]
        records = record_bytes_column(table.select(record_columns)).to_pylist()
        tokens = []
        for text in table.column("token").to_pylist():
            try:
                tokens.append(parse_token(text))
            except (ValueError, TypeError):
                malformed += 1
                tokens.append(b"\0" * 16)  # cannot match any leaf or key: fails below
        indexes = table.column("leaf_index").to_pylist()
        if indexes != list(range(count, count + len(indexes))):
            checks.append(Check("leaf order", False, f"part {part.name} is out of leaf order"))
        for record, token in zip(records, tokens, strict=True):
            # The pure core's definitions, not the minting engine's inlined copy: an audit
            # recomputes from the specification.
            leaves += leaf_hash(record + token_commitment(token))
        if secret is not None:
            gtins = table.column("gtin").to_pylist()
            serials = table.column("serial").to_pylist()
            bad_tokens += sum(
                not tokens_equal(make_token(secret, g, s), t)
                for g, s, t in zip(gtins, serials, tokens, strict=True)
            )
        count += len(indexes)
    checks.append(
        Check(
            "products",
            count == batch.tree_size,
            f"{count} stored products, manifest says {batch.tree_size}",
        )
    )
    if malformed:
        checks.append(Check("tokens", False, f"{malformed} stored tokens are malformed"))
    levels = merkle.build_levels(bytes(leaves)) if leaves else [b""]
    root = levels[-1]
    checks.append(
        Check(
            "root",
            root.hex() == batch.root,
            f"recomputed root {root.hex()[:16]}…, manifest {batch.root[:16]}…",
        )
    )
    differing = next(
        (i for i, level in enumerate(levels) if i >= tree.level_count or tree.level(i) != level),
        None,
    )
    checks.append(
        Check(
            "tree file",
            differing is None and len(levels) == tree.level_count,
            "every level of the stored tree matches the recomputed one"
            if differing is None
            else f"level {differing} of the stored tree differs from the recomputed one",
        )
    )
    digest = manifest_digest(batch.manifest)
    checks.append(
        Check(
            "manifest", digest.hex() == batch.manifest_digest, "manifest digest matches the catalog"
        )
    )
    commitment = batch_commitment(
        batch.batch_id, batch.tree_size, bytes.fromhex(batch.root), digest
    )
    checks.append(
        Check(
            "batch commitment",
            commitment.hex() == batch.commitment,
            "binds batch id, size, root and manifest",
        )
    )
    if secret is not None:
        checks.append(
            Check("tokens", bad_tokens == 0, f"{bad_tokens} tokens do not match the issuer key")
        )

    def report(verdict: Verdict, reason: str, chain: dict[str, Any] | None = None) -> AuditReport:
        return AuditReport(batch.batch_id, count, verdict, reason, tuple(checks), chain)

    failure = next((f"{c.name}: {c.detail}" for c in checks if not c.ok), "")
    if failure:
        return report(Verdict.INVALID, failure)
    if anchor is None:
        return report(Verdict.PENDING, "the stored batch is intact; it is not anchored yet")
    section = anchoring.parse_anchor_section(anchor)
    ok, detail = section.check_offline(commitment)
    checks.append(Check("anchor tree", ok, detail))
    if not ok:
        return report(Verdict.INVALID, detail)
    if anchor_checker is None:
        return report(Verdict.UNCHECKED, "the stored batch is intact; anchor not checked")
    verdict, reason, chain = on_chain_verdict(
        section, anchor_checker, lambda n, o, d: checks.append(Check(n, o, d))
    )
    return report(verdict, reason, chain)
