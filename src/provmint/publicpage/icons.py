"""The verdicts' icons: inline SVG (the page loads no file), drawn in the text colour
(``currentColor``), hidden from screen readers (the heading says the same in words)."""

from __future__ import annotations

__all__ = ["ICONS", "icon"]

_SVG = (
    '<svg class="icon" viewBox="0 0 24 24" width="40" height="40" fill="none" '
    'stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round" '
    'aria-hidden="true" focusable="false">{}</svg>'
)
_CIRCLE = '<circle cx="12" cy="12" r="10"/>'

ICONS = {
    # a tick in a circle
    "genuine": _CIRCLE + '<path d="M7 12.5l3.2 3.2L17 9"/>',
    # a clock: registered, not yet sealed
    "pending": _CIRCLE + '<path d="M12 6.5V12l3.5 2.2"/>',
    # a warning triangle
    "suspect": '<path d="M12 3 2.5 20h19z"/><path d="M12 9.5v4.5M12 17h.01"/>',
    # a cross in a circle
    "unknown": _CIRCLE + '<path d="M8.5 8.5l7 7M15.5 8.5l-7 7"/>',
    # a bar in a circle: no answer now
    "unavailable": _CIRCLE + '<path d="M7.5 12h9"/>',
    # a question mark in a circle: the address itself is wrong
    "error": _CIRCLE + '<path d="M9.6 9.3a2.5 2.5 0 1 1 3.4 2.4c-.6.3-1 .8-1 1.5v.5M12 17h.01"/>',
}
"""The drawing of each verdict's icon (and of error pages')."""
ICONS["forged"] = ICONS["unknown"]  # the public cannot tell them apart, on purpose


def icon(kind: str) -> str:
    """The inline SVG of a verdict (or ``"error"``)."""
    return _SVG.format(ICONS[kind])
