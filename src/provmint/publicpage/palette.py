"""Every colour the page uses, in one table, and the text/background pairs it puts them
in: ``tests/test_public_page.py`` computes each pair's contrast ratio (WCAG AA wants at
least 4.5:1 for text), so a colour cannot be changed into an unreadable one unnoticed.

Each verdict has its own tone, told apart by hue and by icon, never by colour alone:
genuine green, pending ("genuine, being registered") blue, possible copy orange, not
recognised red, cannot check grey. White text and icons sit on each tone.
"""

from __future__ import annotations

__all__ = ["COLOURS", "ERROR_TONES", "PAIRS", "TONES", "VERDICT_TONES", "brand_pairs"]

COLOURS = {
    "text": "#1f2328",
    "muted": "#57606a",
    "page": "#f6f7f9",
    "card": "#ffffff",
    "rule": "#d0d7de",
    "link": "#0550ae",
    "stop": "#b42318",
    "notice": "#fff8c5",
    "notice_rule": "#9a6700",
    "on_tone": "#ffffff",
}
"""The page's fixed colours by role."""

TONES = {
    "green": "#1a7f37",
    "blue": "#0550ae",
    "orange": "#bc4c00",
    "red": "#b42318",
    "grey": "#57606a",
}
"""The verdict block's background by tone (white text on each)."""

VERDICT_TONES = {
    "genuine": "green",
    "pending": "blue",
    "suspect": "orange",
    "forged": "red",
    "unknown": "red",
    "unavailable": "grey",
}
"""The tone of each verdict."""

ERROR_TONES = {404: "red"}
"""The tone of an error page by status (grey otherwise)."""

PAIRS: tuple[tuple[str, str, str], ...] = (
    ("body text on the page", COLOURS["text"], COLOURS["page"]),
    ("body text on a card", COLOURS["text"], COLOURS["card"]),
    ("muted text on the page (footer)", COLOURS["muted"], COLOURS["page"]),
    ("muted text on a card (labels)", COLOURS["muted"], COLOURS["card"]),
    ("links on the page", COLOURS["link"], COLOURS["page"]),
    ("links on a card", COLOURS["link"], COLOURS["card"]),
    ("'do not use' on a card", COLOURS["stop"], COLOURS["card"]),
    ("notice text", COLOURS["text"], COLOURS["notice"]),
    *((f"verdict text on {name}", COLOURS["on_tone"], tone) for name, tone in TONES.items()),
)
"""(where, text colour, background colour) of every pair of colours the page shows text in,
but the brand's accent (:func:`brand_pairs`)."""


def brand_pairs(accent: str) -> tuple[tuple[str, str, str], ...]:
    """The pairs the brand's accent colour is shown in: as the brand's name on the white
    header, and behind the white text of the report button."""
    return (
        ("brand name on the header", accent, COLOURS["card"]),
        ("report button", COLOURS["on_tone"], accent),
    )
