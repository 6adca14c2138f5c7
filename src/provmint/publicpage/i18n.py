"""The page's languages: gettext catalogs and the choice of one per request.

The catalogs are ``locale/<lang>/LC_MESSAGES/provmint.mo`` beside this module, compiled
from the ``.po`` files next to them (``scripts/catalogs`` extracts, updates and compiles
them with Babel, a tool for developers; the service reads them with the standard
library's :mod:`gettext` only). ``tests/test_public_page.py`` checks that every message
is translated in every language and that each ``.mo`` is what its ``.po`` compiles to.
"""

from __future__ import annotations

import gettext
import re
from functools import lru_cache
from importlib import resources

__all__ = [
    "DEFAULT_LANGUAGE",
    "DOMAIN",
    "LANGUAGES",
    "N_",
    "accepted_language",
    "choose_language",
    "translations",
]

DOMAIN = "provmint"
"""The catalogs' gettext domain (their file name)."""
LANGUAGES = ("en", "pt", "es", "fr", "de")
"""The languages the page is written in; the first is the fallback."""
DEFAULT_LANGUAGE = LANGUAGES[0]
MAX_LANGUAGE_RANGES = 16
"""Entries of an Accept-Language header looked at; the rest is ignored (a header is a
stranger's text: its cost stays bounded)."""

_RANGE = re.compile(r"([A-Za-z]{1,8})(?:-[A-Za-z0-9]{1,8})*|\*")
_QUALITY = re.compile(r"[qQ]=(0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)")


def N_(message: str) -> str:
    """Mark ``message`` for the catalogs without translating it (it is translated when
    each language's page parts are built)."""
    return message


def translations(language: str) -> gettext.GNUTranslations:
    """The compiled catalog of ``language`` (one of :data:`LANGUAGES`)."""
    if language not in LANGUAGES:
        raise ValueError(f"no catalog for language {language!r}")
    mo = resources.files(__package__) / "locale" / language / "LC_MESSAGES" / f"{DOMAIN}.mo"
    with mo.open("rb") as fh:
        return gettext.GNUTranslations(fh)


@lru_cache(maxsize=512)
def accepted_language(header: str) -> str | None:
    """The best of :data:`LANGUAGES` an ``Accept-Language`` header asks for (by quality,
    then order), or None. Malformed entries are skipped, never an error; only the first
    :data:`MAX_LANGUAGE_RANGES` entries count. Cached: phones send few distinct headers."""
    best: tuple[float, int] | None = None
    chosen = None
    for position, entry in enumerate(header.split(",", MAX_LANGUAGE_RANGES)[:MAX_LANGUAGE_RANGES]):
        tag, _, params = entry.strip().partition(";")
        found = _RANGE.fullmatch(tag.strip())
        if found is None or found.group(1) is None:
            continue  # garbage, or "*" (which adds nothing to the fallback)
        quality = 1.0
        if params:
            q = _QUALITY.fullmatch(params.strip())
            if q is None:
                continue
            quality = float(q.group(1))
        language = found.group(1).lower()
        if quality <= 0 or language not in LANGUAGES:
            continue
        if best is None or quality > best[0]:
            best, chosen = (quality, position), language
    return chosen


def choose_language(asked: str | None, accept_language: str) -> str:
    """The page's language: ``asked`` (the ``lang`` query parameter) when it names one of
    :data:`LANGUAGES` exactly, else the best the ``Accept-Language`` header accepts,
    else English."""
    if asked is not None and asked in LANGUAGES:
        return asked
    return accepted_language(accept_language) or DEFAULT_LANGUAGE
