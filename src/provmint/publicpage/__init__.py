"""The public verification page: what a consumer sees after scanning a printed code.

:class:`PublicPages` renders a code's answer (:class:`VerdictView`) and the service's
error pages for one brand (:class:`~provmint.config.BrandSettings`: name, logo, accent
colour, report contact, headline column, block explorer) in the language the visitor
asks for (:func:`choose_language`: ``?lang=`` or ``Accept-Language``; English, Portuguese,
Spanish, French and German from gettext catalogs). The words are in :mod:`.texts`, the
colours in :mod:`.palette`, the icons in :mod:`.icons`.
"""

from __future__ import annotations

from provmint.publicpage.i18n import LANGUAGES, choose_language
from provmint.publicpage.render import LOGO_PATH, PublicPages, VerdictView, short_hash

__all__ = ["LANGUAGES", "LOGO_PATH", "PublicPages", "VerdictView", "choose_language", "short_hash"]
