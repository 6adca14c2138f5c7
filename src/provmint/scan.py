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
from enum import StrEnum
from typing import Any, NamedTuple

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
from provmint.store.scanlog import GOOD_VERDICTS, ScanStats, open_scan_log
from provmint.tokens import make_token, parse_token

__all__ = ["DEFAULT_CLONE_SCANS", "Judgement", "ScanResult", "Verdict", "judge", "scan_code"]

DEFAULT_CLONE_SCANS = 5
"""A genuine code scanned more often than this is flagged as a possible copy."""


class Verdict(StrEnum):
    """What a scanned code turned out to be (its value is what logs and JSON say)."""

    GENUINE = "genuine"
    PENDING = "pending"
    FORGED = "forged"
    UNKNOWN = "unknown"
    SUSPECT = "suspect"

    @property
    def exit_code(self) -> int:
        """The exit code ``provmint scan`` gives for this verdict."""
        return _EXIT[self]

    @property
    def shows_real_token(self) -> bool:
        """Did the scan show the code's real token (so it counts towards copies)?"""
        return self in GOOD_VERDICTS  # the scan log's definition, which its counters use


_EXIT = {
    Verdict.GENUINE: EXIT_OK,
    Verdict.PENDING: EXIT_PENDING,
    Verdict.FORGED: EXIT_INVALID,
    Verdict.UNKNOWN: EXIT_NOT_FOUND,
    Verdict.SUSPECT: EXIT_SUSPECT,
}


class Judgement(NamedTuple):
    """The verdict on one scanned code, and why (in words for people)."""

    verdict: Verdict
    reason: str


def judge(
    record: dict[str, str] | None,
    key_id: str | None,
    keyring: Keyring,
    token: str | None,
    lot: str | None,
    anchored: bool,
) -> Judgement:
    """The verdict on one scanned code (before clone detection) and its reason."""
    if record is None or key_id is None:
        return Judgement(Verdict.UNKNOWN, "no product with this code was minted by this issuer")
    if token is None:
        return Judgement(Verdict.FORGED, "the code carries no token")
    try:
        raw = parse_token(token)
        secret = keyring.get(key_id).secret.reveal()
    except ValueError:
        return Judgement(Verdict.FORGED, "the token is malformed")
    except KeyringError:
        return Judgement(Verdict.FORGED, f"the batch's key {key_id} is not in this key file")
    expected = make_token(secret, record["gtin"], record["serial"])
    if not hmac.compare_digest(expected, raw):
        return Judgement(
            Verdict.FORGED, "the token does not match this product (possible counterfeit)"
        )
    if lot and lot != record.get("lot", ""):
        return Judgement(Verdict.FORGED, "the lot on the code differs from the minted record")
    if not anchored:
        return Judgement(Verdict.PENDING, "genuine record; its batch is not anchored on chain yet")
    return Judgement(Verdict.GENUINE, "genuine product")


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

    verdict: Verdict
    reason: str
    record: dict[str, str] | None
    batch_id: str | None
    anchor: dict[str, Any] | None
    stats: ScanStats | None

    @property
    def exit_code(self) -> int:
        """Process exit code of the verdict."""
        return self.verdict.exit_code

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
        why = suspicious(stats, clone_threshold) if verdict.shows_real_token else None
        if why is not None:
            verdict, reason = Verdict.SUSPECT, f"possible copied label: {why}"
    return ScanResult(
        verdict=verdict,
        reason=reason,
        record=product.record if product else None,
        batch_id=product.batch.batch_id if product else None,
        anchor=anchor,
        stats=stats,
    )
