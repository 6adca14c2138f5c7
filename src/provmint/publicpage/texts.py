"""What the page says, in English: the catalogs' message ids. Each is marked with
:func:`~provmint.publicpage.i18n.N_` so that Babel finds it (``scripts/catalogs``), and
translated once per language when the page's parts are built.

Placeholders are ``{name}`` and are filled with ``str.replace`` (a translation with a
stray brace cannot break the page); a test checks every translation keeps them.
"""

from __future__ import annotations

from dataclasses import dataclass

from provmint.publicpage.i18n import N_

__all__ = ["ERRORS", "FIELD_LABELS", "VERDICTS", "Page", "Wording", "field_label"]


@dataclass(frozen=True, slots=True)
class Wording:
    """A verdict's (or an error page's) heading, what it means, and what to do next."""

    title: str
    meaning: str
    steps: tuple[str, ...] = ()
    warning: bool = False
    """Whether the next step is "do not use this product", and report it."""


VERDICTS = {
    "genuine": Wording(
        N_("Genuine product"),
        N_(
            "This code matches a product we made, and its record is sealed on a public "
            "ledger that anyone can check."
        ),
        (N_("You can use this product as intended."),),
    ),
    "pending": Wording(
        N_("Genuine, being registered"),
        N_(
            "This code matches a product we made. Its record is still being added to a "
            "public ledger, which takes a short while after the product is made."
        ),
        (N_("You can use this product as intended. The registration needs nothing from you."),),
    ),
    "suspect": Wording(
        N_("Possible copy"),
        N_(
            "This code belongs to one of our products, but it has been checked more often, "
            "or in more places, than one label would be. The label may have been copied."
        ),
        warning=True,
    ),
    "unknown": Wording(
        N_("Not recognised"),
        N_("This code does not match any product we made."),
        warning=True,
    ),
    "unavailable": Wording(
        N_("Cannot check now"),
        N_(
            "We could not look this code up just now. The problem is on our side: it says "
            "nothing about your product."
        ),
        (N_("Please scan the code again in a few minutes."),),
    ),
}
"""The wording of each verdict the page shows (a forged code is shown as unknown)."""
VERDICTS["forged"] = VERDICTS["unknown"]

ERRORS = {
    404: Wording(
        N_("Not recognised"),
        N_("This address is not a product code."),
        (N_("Scan the code on the product again, or type the address exactly as printed."),),
    ),
    400: Wording(
        N_("Invalid link"),
        N_("This link is damaged or incomplete, so it cannot be checked."),
        (
            N_(
                "Scan the code on the product again. If this page comes back, do not use "
                "the product."
            ),
        ),
    ),
    405: Wording(N_("Not allowed"), N_("This address can only be opened as a page.")),
    429: Wording(
        N_("Too many requests"),
        N_("Many checks have come from your network in a short time."),
        (N_("Please wait a minute, then scan the code again."),),
    ),
    431: Wording(
        N_("Request too large"),
        N_("Your browser sent more than this service accepts."),
        (N_("Please open the link again, or try another browser."),),
    ),
    503: Wording(
        N_("Busy, try again"),
        N_("This service has too much to do right now."),
        (N_("Please wait a moment, then scan the code again."),),
    ),
}
"""The wording of an error page by status (400's for any other status)."""


@dataclass(frozen=True, slots=True)
class Page:
    """The page's other words."""

    product: str = N_("Product")
    """The headline when the record has no product name."""
    what_to_do: str = N_("What to do")
    details: str = N_("Product details")
    do_not_use: str = N_("Do not use this product.")
    report_to_us: str = N_(
        "Keep it and its packaging, and report it to us so that we can look into it."
    )
    report_to_seller: str = N_("Keep it and its packaging, and tell the shop that sold it to you.")
    report_button: str = N_("Report this product")
    mail_subject: str = N_("Product check: {verdict}")
    mail_body: str = N_(
        "I checked a product code and the page said: {verdict}.\n\n"
        "Code: {code}\n"
        "Where I bought it:\n"
        "When I bought it:\n"
    )
    not_logged: str = N_(
        "This scan could not be recorded, so we could not check whether this label has "
        "been copied. Please scan it again later."
    )
    checked: str = N_("Checked {time}.")
    proof: str = N_("Proof for independent checking")
    verify: str = N_("Check the proof in your browser")
    detail: str = N_("Details: {detail}")
    logo: str = N_("Logo")
    ledger_entry: str = N_("block {block} of chain {chain}")


FIELD_LABELS = {
    "gtin": N_("Product number (GTIN)"),
    "serial": N_("Serial number"),
    "lot": N_("Batch / lot"),
    "expiry": N_("Expiry date"),
    "production_date": N_("Production date"),
    "product_name": N_("Product name"),
    # Rows the page adds after the record's own.
    "batch": N_("Registration batch"),
    "registered": N_("Registered"),
    "ledger": N_("Ledger entry"),
    "transaction": N_("Transaction"),
    "scans": N_("Scans of this code"),
}
"""Human labels of the record's known columns (and of the rows the page adds)."""


def field_label(column: str) -> str:
    """The label of a column without one: its name in words (``best_before`` ->
    "Best before"). Column names are the brand's own, so they are not translated."""
    words = column.replace("_", " ").strip()
    return words[:1].upper() + words[1:] if words else column
