"""``provmint scan``: what a scanned code means, as the factory or the support desk sees it.

A code is a GS1 Digital Link verification URL (or a bare token). The product is looked
up in the store, the token checked against the issuer key of its batch (constant time),
the scan logged, and the verdict given:

=============  ====  ============================================================
genuine        0     known product, token matches, batch anchored
pending        4     known product, token matches, batch not anchored yet
forged         3     known product, but the token (or the lot) does not match
unknown        7     no such product in the store
suspect        11    a genuine code scanned too often or from several places:
                     possibly a copied label
=============  ====  ============================================================
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

from provmint import gs1
from provmint.config import Settings
from provmint.errors import (
    EXIT_INVALID,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_PENDING,
    EXIT_SUSPECT,
    ConfigError,
    KeyringError,
    NotFoundError,
)
from provmint.keys import Keyring, load_keyring
from provmint.store.scanlog import ScanStats, open_scan_log
from provmint.tokens import make_token, parse_token

__all__ = ["DEFAULT_CLONE_SCANS", "ScanResult", "judge", "scan_code"]

DEFAULT_CLONE_SCANS = 5
"""A genuine code scanned more often than this is flagged as a possible copy."""

_EXIT = {
    "genuine": EXIT_OK,
    "pending": EXIT_PENDING,
    "forged": EXIT_INVALID,
    "unknown": EXIT_NOT_FOUND,
    "suspect": EXIT_SUSPECT,
}


def judge(
    record: dict[str, str] | None,
    key_id: str | None,
    keyring: Keyring,
    token: str | None,
    lot: str | None,
    anchored: bool,
) -> tuple[str, str]:
    """The verdict on one scanned code (before clone detection) and its reason."""
    if record is None or key_id is None:
        return "unknown", "no product with this code was minted by this issuer"
    if token is None:
        return "forged", "the code carries no token"
    try:
        raw = parse_token(token)
        secret = keyring.get(key_id).secret.reveal()
    except ValueError:
        return "forged", "the token is malformed"
    except KeyringError:
        return "forged", f"the batch's key {key_id} is not in this key file"
    expected = make_token(secret, record["gtin"], record["serial"])
    if not hmac.compare_digest(expected, raw):
        return "forged", "the token does not match this product (possible counterfeit)"
    if lot and lot != record.get("lot", ""):
        return "forged", "the lot on the code differs from the minted record"
    if not anchored:
        return "pending", "genuine record; its batch is not anchored on chain yet"
    return "genuine", "genuine product"


def suspicious(stats: ScanStats, threshold: int) -> str | None:
    """Why a genuine code looks copied, or None."""
    places = max(stats.places, len(stats.locations))
    if places > 1:
        more = places - len(stats.locations)
        listed = ", ".join(stats.locations) + (f" and {more} more" if more > 0 else "")
        return f"scanned from {places} places: {listed}"
    if stats.count > threshold:
        return f"scanned {stats.count} times (more than {threshold})"
    return None


@dataclass(frozen=True, slots=True)
class ScanResult:
    """What a scan found."""

    verdict: str
    reason: str
    record: dict[str, str] | None
    batch_id: str | None
    anchor: dict[str, Any] | None
    stats: ScanStats | None

    @property
    def exit_code(self) -> int:
        """Process exit code of the verdict."""
        return _EXIT[self.verdict]

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form (never the token)."""
        return {
            "verdict": self.verdict,
            "reason": self.reason,
            "product": self.record,
            "batch_id": self.batch_id,
            "anchor": self.anchor,
            "scans": None
            if self.stats is None
            else {
                "count": self.stats.count,
                "all": self.stats.all_scans,
                "places": self.stats.places,
                "locations": list(self.stats.locations),
                "first_seen": self.stats.first_seen,
                "recent": [s.to_json() for s in self.stats.recent],
            },
        }


def _parse(code: str) -> tuple[gs1.DigitalLink | None, str | None]:
    text = code.strip()
    if "/01/" in text or text.startswith("01/"):
        try:
            link = gs1.parse_digital_link(text if "/01/" in text else "/" + text)
        except gs1.DigitalLinkError as exc:
            raise ConfigError(f"not a verification code: {exc}") from None
        return link, link.token
    return None, text


def scan_code(
    settings: Settings,
    code: str,
    *,
    location: str | None = None,
    clone_threshold: int = DEFAULT_CLONE_SCANS,
    source: str = "cli",
) -> ScanResult:
    """Check a scanned Digital Link URL or bare token; log the scan; return the verdict.

    The scan goes to the log the settings name (:func:`open_scan_log`); when it cannot
    be logged (a read-only store, PostgreSQL down) this raises
    :class:`~provmint.store.scanlog.ScanLogError` rather than answer without the clone
    check."""
    from provmint.products import ProductRecord, locate_product

    link, token = _parse(code)
    keyring = load_keyring(settings.key_file)
    product: ProductRecord | None = None
    anchor: dict[str, Any] | None = None
    try:
        if link is not None:
            product, anchor = locate_product(settings, gtin=link.gtin14, serial=link.serial)
        else:
            product, anchor = locate_product(settings, token=token)
    except NotFoundError:
        pass
    except ConfigError:
        if link is not None:
            raise
        # not even a well-formed token: an unknown code
    verdict, reason = judge(
        product.record if product else None,
        product.batch.key_id if product else None,
        keyring,
        token,
        link.lot if link else None,
        anchor is not None,
    )
    stats = None
    if product is not None:
        with open_scan_log(settings, pool_size=0) as log:
            stats = log.record(
                product.record["gtin"],
                product.record["serial"],
                verdict,
                location=location,
                source=source,
            )
        why = suspicious(stats, clone_threshold) if verdict in ("genuine", "pending") else None
        if why is not None:
            verdict, reason = "suspect", f"possible copied label: {why}"
    return ScanResult(
        verdict=verdict,
        reason=reason,
        record=product.record if product else None,
        batch_id=product.batch.batch_id if product else None,
        anchor=anchor,
        stats=stats,
    )
