"""``provmint scan``: what a scanned code means, as the factory or the support desk sees it.

A code is a GS1 Digital Link verification URL (or a bare token). The product is looked
up in the store, the token checked against the issuer key of its batch (constant time),
the scan logged, and the verdict given:

=============  ====  ============================================================
genuine        0     known product, token matches, batch anchored
pending        4     known product, token matches, batch not anchored yet
forged         3     known product, but the token (or the lot) does not match
unknown        7     no such product in the store
suspect        11    a genuine code seen by too many clients, or from several
                     places by several clients, lately: possibly a copied label
=============  ====  ============================================================

The copy signal (:func:`suspicious`) counts *clients* (a salted hash of the network
prefix and the user agent; ``provmint scan`` is one client per machine) within the
``[copy_signal]`` window, never page loads: one consumer reloading a page or scanning
from two places never flags a code. :func:`copy_signal` shows an operator what a code's
signal rests on, :func:`clear_copy_signal` clears it.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, NamedTuple

from provmint import gs1
from provmint.config import CopySignalSettings, Settings
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
from provmint.store.scanlog import (
    GOOD_VERDICTS,
    LISTED_PLACES,
    CopyEvidence,
    LoggedScan,
    ScanQuery,
    ScanStats,
    open_scan_log,
)
from provmint.store.scanlog.clients import cli_client
from provmint.tokens import make_token, parse_token

__all__ = [
    "DEFAULT_CLONE_SCANS",
    "CopySignal",
    "Judgement",
    "ScanResult",
    "Verdict",
    "clear_copy_signal",
    "copy_rule",
    "copy_signal",
    "judge",
    "list_scans",
    "scan_code",
    "suspicious",
]

DEFAULT_CLONE_SCANS = CopySignalSettings().max_clients
"""A genuine code seen by more distinct clients than this within the copy signal's
window is flagged as a possible copy (``[copy_signal] max_clients``)."""


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


def copy_rule(settings: Settings, clone_threshold: int | None = None) -> CopySignalSettings:
    """The copy signal's rule: the settings' ``[copy_signal]``, with ``max_clients``
    replaced by ``clone_threshold`` when one is given (``--clone-threshold``)."""
    rule = settings.copy_signal
    return rule if clone_threshold is None else replace(rule, max_clients=clone_threshold)


def describe_window(window: timedelta) -> str:
    """A window in words: ``7 days``, ``36 hours``."""
    days, rest = divmod(window, timedelta(days=1))
    if not rest:
        return f"{days} day" + ("s" if days != 1 else "")
    hours = int(window / timedelta(hours=1))
    return f"{hours} hour" + ("s" if hours != 1 else "")


def suspicious(evidence: ScanStats | CopyEvidence, rule: CopySignalSettings) -> str | None:
    """Why a genuine code looks copied under ``rule``, or None. The rule, over the
    evidence since the window's start (or the operator's last clear, if later):

    - more than ``max_clients`` distinct clients saw the code (with its real token;
      link-preview bots and crawlers do not count, and each client counts once however
      often it loads the page); or
    - more than ``max_places`` distinct places were given for it, by more than
      ``max_places`` distinct clients (with the default 1: two places, from two clients).

    The reason names the places: it is for the operator, never for the public page."""
    within = f"within {describe_window(rule.window)}"
    # A scan's counts stop one past each threshold (the operator's evidence does not).
    capped = isinstance(evidence, ScanStats)
    if evidence.clients > rule.max_clients:
        many = f"more than {rule.max_clients}" if capped else str(evidence.clients)
        return f"seen by {many} different clients {within}"
    if evidence.window_places > rule.max_places and evidence.placing_clients > rule.max_places:
        names = evidence.window_locations
        if capped:
            places = f"{len(names)}{'+' if len(names) >= LISTED_PLACES else ''} places"
            return f"seen from {places} by different clients {within}: {', '.join(names)}"
        more = evidence.window_places - len(names)
        listed = ", ".join(names) + (f" and {more} more" if more > 0 else "")
        return (
            f"seen from {evidence.window_places} places by {evidence.placing_clients} "
            f"different clients {within}: {listed}"
        )
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
        """JSON-ready form (never the token): the verdict object of
        ``docs/schemas/verdict.schema.json``, as ``provmint serve`` answers it too, with
        the operator's detail in ``scans`` (the service gives only its ``count``)."""
        return {
            "verdict": self.verdict,
            "reason": self.reason,
            "record": self.record,
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
                "window": {
                    "since": self.stats.since,
                    "clients": self.stats.clients,
                    "places": self.stats.window_places,
                    "placing_clients": self.stats.placing_clients,
                },
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
    clone_threshold: int | None = None,
    source: str = "cli",
) -> ScanResult:
    """Check a scanned Digital Link URL or bare token; log the scan; return the verdict.

    The scan goes to the log the settings name (:func:`open_scan_log`), as this
    machine's client (:func:`~provmint.store.scanlog.clients.cli_client`); the copy
    signal is the settings' ``[copy_signal]`` rule (``clone_threshold`` replaces its
    ``max_clients``). When the scan cannot be logged (a read-only store, PostgreSQL
    down) this raises :class:`~provmint.store.scanlog.ScanLogError` rather than answer
    without the copy check."""
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
        rule = copy_rule(settings, clone_threshold)
        address, agent = cli_client()
        with open_scan_log(replace(settings, copy_signal=rule), pool_size=0) as log:
            stats = log.record(
                product.record["gtin"],
                product.record["serial"],
                verdict,
                location=location,
                source=source,
                address=address,
                user_agent=agent,
            )
        why = suspicious(stats, rule) if verdict.shows_real_token else None
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


@dataclass(frozen=True, slots=True)
class CopySignal:
    """One code's copy signal as the operator sees it (``provmint scans show`` and
    ``clear``): the rule, the evidence it rests on, and whether it flags the code."""

    gtin: str
    serial: str
    rule: CopySignalSettings
    evidence: CopyEvidence | None
    """None: the scan log has no scan of this code."""
    reason: str | None
    """Why the code is flagged now (None: it is not)."""
    cleared_at: str | None = None
    """Set by :func:`clear_copy_signal`: the time of this clear."""

    @property
    def code(self) -> str:
        """The code as a Digital Link path, without its token."""
        return f"01/{self.gtin}/21/{self.serial}"

    @property
    def flagged(self) -> bool:
        """Whether the code is flagged as a possible copy."""
        return self.reason is not None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form (for the operator: it lists places)."""
        out: dict[str, Any] = {
            "code": self.code,
            "gtin": self.gtin,
            "serial": self.serial,
            "flagged": self.flagged,
            "reason": self.reason,
            "rule": {
                "window": describe_window(self.rule.window),
                "window_seconds": int(self.rule.window.total_seconds()),
                "max_clients": self.rule.max_clients,
                "max_places": self.rule.max_places,
            },
            "evidence": None if self.evidence is None else self.evidence.to_json(),
        }
        if self.cleared_at is not None:
            out["cleared"] = self.cleared_at
        return out


def code_identity(settings: Settings, code: str) -> tuple[str, str]:
    """The (GTIN-14, serial) of a code as ``provmint scan`` reads it: a Digital Link URL
    or path (nothing is looked up) or a bare token (found in the store)."""
    from provmint.products import locate_product

    link, token = _parse(code)
    if link is not None:
        return link.gtin14, link.serial
    if not token:
        raise ConfigError("give a code: a verification URL, its path, or a token")
    product, _ = locate_product(settings, token=token)
    return product.record["gtin"], product.record["serial"]


def copy_signal(
    settings: Settings,
    code: str,
    *,
    clone_threshold: int | None = None,
    at: datetime | None = None,
) -> CopySignal:
    """Why a code is, or is not, flagged as a possible copy at ``at`` (now)."""
    gtin, serial = code_identity(settings, code)
    rule = copy_rule(settings, clone_threshold)
    with open_scan_log(replace(settings, copy_signal=rule), pool_size=0) as log:
        evidence = log.evidence(gtin, serial, at=at)
    reason = suspicious(evidence, rule) if evidence is not None else None
    return CopySignal(gtin, serial, rule, evidence, reason)


def list_scans(
    settings: Settings,
    *,
    code: str | None = None,
    verdict: Verdict | None = None,
    since: datetime | None = None,
    limit: int = 50,
) -> list[LoggedScan]:
    """The newest scans in the log (at most ``limit``, newest first): of one code (a
    Digital Link URL or path, or a bare token looked up in the store), with one
    verdict, since a time."""
    gtin, serial = code_identity(settings, code) if code is not None else (None, None)
    query = ScanQuery(gtin, serial, None if verdict is None else str(verdict), since, limit)
    with open_scan_log(settings, pool_size=0) as log:
        return log.list_scans(query)


def clear_copy_signal(
    settings: Settings,
    code: str,
    *,
    clone_threshold: int | None = None,
    at: datetime | None = None,
) -> CopySignal:
    """Clear a code's copy signal at ``at`` (now): the evidence before then stops
    counting, for ``provmint serve`` and ``provmint scan`` alike. Returns the signal as
    it was just before (what was cleared). Raises NotFoundError (exit 7) when the scan
    log has no scan of the code."""
    gtin, serial = code_identity(settings, code)
    rule = copy_rule(settings, clone_threshold)
    with open_scan_log(replace(settings, copy_signal=rule), pool_size=0) as log:
        evidence = log.clear(gtin, serial, at=at)
        where = log.where
    if evidence is None:
        raise NotFoundError(
            f"the scan log {where} has no scans of 01/{gtin}/21/{serial}: nothing to clear"
        )
    reason = suspicious(evidence, rule)
    return CopySignal(gtin, serial, rule, evidence, reason, cleared_at=evidence.at)
