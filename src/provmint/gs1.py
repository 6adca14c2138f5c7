"""GS1 rules provmint relies on: GTIN check digits, the CSET 82 serial alphabet, expiry
dates, and the GS1 Digital Link form of a verification URL.

Pure functions, no I/O. The vectorized validators in :mod:`provmint.ingest` implement the
same rules over whole columns; tests pin the two against each other.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from urllib.parse import quote

__all__ = [
    "CSET82_PATTERN",
    "GTIN_LENGTHS",
    "SERIAL_MAX",
    "DigitalLink",
    "DigitalLinkError",
    "FieldProblem",
    "check_expiry",
    "check_lot",
    "check_serial",
    "digital_link",
    "element_string",
    "expiry_yymmdd",
    "gtin_check_digit",
    "human_readable",
    "normalize_gtin",
    "parse_digital_link",
    "percent_encode",
]

GS = "\x1d"
"""ASCII group separator: ends a variable-length element string that is not the last."""

GTIN_LENGTHS = (8, 12, 13, 14)
"""GTIN-8, GTIN-12 (UPC-A), GTIN-13 (EAN-13) and GTIN-14; all are carried as 14 digits."""

SERIAL_MAX = 20
"""AI (21) serial and AI (10) lot are X..20: 1 to 20 characters of CSET 82."""

_CSET82_CLASS = "!\"%&'()*+,\\-./0-9:;<=>?A-Z_a-z"
CSET82_PATTERN = f"^[{_CSET82_CLASS}]{{1,{SERIAL_MAX}}}$"
"""RE2/Python pattern of a valid serial or lot (GS1 AI encodable character set 82)."""

_CSET82_CHAR = re.compile(f"[{_CSET82_CLASS}]")
_CSET82_RUN = re.compile(f"[{_CSET82_CLASS}]*")
_SCIENTIFIC = re.compile(r"^[0-9](\.[0-9]+)?[eE][+-]?[0-9]+$")
_ISO_DATE = re.compile(r"^([0-9]{4})-([0-9]{2})-([0-9]{2})$")
_GS1_DATE = re.compile(r"^([0-9]{2})([0-9]{2})([0-9]{2})$")


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """Why one value is invalid: a stable machine code and a human reason."""

    code: str
    reason: str


def gtin_check_digit(body: str) -> int:
    """GS1 mod-10 check digit of ``body`` (all digits except the check digit).

    Weights 3, 1, 3, ... run from the rightmost digit, so one routine serves every length.

    >>> gtin_check_digit("0952012345001")
    4
    """
    digits = [int(c) for c in body]
    total = 3 * sum(digits[-1::-2]) + sum(digits[-2::-2])
    return (10 - total % 10) % 10


def normalize_gtin(value: str) -> str | FieldProblem:
    """Return the 14-digit form of a GTIN-8/12/13/14, or the problem with it.

    Surrounding whitespace is ignored (spreadsheet damage); anything else is reported.
    """
    text = value.strip()
    if not text:
        return FieldProblem("gtin_empty", "GTIN is empty")
    if _SCIENTIFIC.match(text):
        return FieldProblem(
            "gtin_scientific",
            "GTIN is in scientific notation (a spreadsheet converted it to a number); "
            "export the column as text",
        )
    if not text.isascii() or not text.isdigit():
        return FieldProblem("gtin_not_digits", "GTIN must contain digits only")
    if len(text) not in GTIN_LENGTHS:
        return FieldProblem("gtin_length", f"GTIN has {len(text)} digits; expected 8, 12, 13 or 14")
    padded = text.rjust(14, "0")
    expected = gtin_check_digit(padded[:13])
    if int(padded[13]) != expected:
        return FieldProblem(
            "gtin_check_digit", f"GTIN check digit is {padded[13]}, expected {expected}"
        )
    return padded


def _first_bad_char(value: str) -> str:
    if _CSET82_RUN.fullmatch(value):  # the usual case: one regex call, not one per char
        return ""
    for ch in value:
        if not _CSET82_CHAR.fullmatch(ch):
            return ch
    return ""


def _describe_char(ch: str) -> str:
    names = {" ": "a space", "\t": "a tab", "\u00a0": "a no-break space"}
    if ch in names:
        return names[ch]
    if ord(ch) < 32 or ord(ch) == 127:
        return f"control character U+{ord(ch):04X}"
    return f"{ch!r} (U+{ord(ch):04X})"


def _check_x20(value: str, what: str, code: str) -> FieldProblem | None:
    if not value:
        return FieldProblem(f"{code}_empty", f"{what} is empty")
    if len(value) > SERIAL_MAX:
        return FieldProblem(
            f"{code}_too_long", f"{what} has {len(value)} characters; at most {SERIAL_MAX}"
        )
    bad = _first_bad_char(value)
    if bad:
        return FieldProblem(
            f"{code}_charset",
            f"{what} contains {_describe_char(bad)}, not allowed in GS1 CSET 82",
        )
    return None


def check_serial(value: str) -> FieldProblem | None:
    """Problem with a serial (AI 21: 1-20 characters of CSET 82), or None if valid."""
    return _check_x20(value, "serial", "serial")


def check_lot(value: str) -> FieldProblem | None:
    """Problem with a non-empty lot (AI 10: 1-20 characters of CSET 82), or None."""
    return _check_x20(value, "lot", "lot") if value else None


def check_expiry(value: str) -> FieldProblem | None:
    """Problem with a non-empty expiry date, or None.

    Accepted: ISO ``YYYY-MM-DD`` and GS1 ``YYMMDD``. A day of ``00`` means the last day
    of the month (GS1 AI 17). The value is committed as given; this only checks it is a
    real date.
    """
    if not value:
        return None
    m = _ISO_DATE.match(value)
    if m:
        year = int(m.group(1))
    else:
        m = _GS1_DATE.match(value)
        if not m:
            return FieldProblem("expiry_format", "expiry must be YYYY-MM-DD or GS1 YYMMDD")
        year = 2000 + int(m.group(1))
    month, day = int(m.group(2)), int(m.group(3))
    if not 1 <= month <= 12:
        return FieldProblem("expiry_date", f"expiry month {month:02d} does not exist")
    if day > calendar.monthrange(year, month)[1]:
        return FieldProblem("expiry_date", f"expiry day {day:02d} does not exist in that month")
    return None


def percent_encode(value: str) -> str:
    """Percent-encode a Digital Link path or query value (everything but RFC 3986
    unreserved characters, so ``/`` inside a serial cannot split the path)."""
    return quote(value, safe="")


def digital_link(base: str, gtin14: str, serial: str, lot: str, token: str) -> str:
    """The verification URL of one product, in GS1 Digital Link form.

    ``{base}/01/{gtin14}/10/{lot}/21/{serial}?t={token}``; the lot segment only when the
    lot is not empty. Qualifiers keep GS1's fixed order (22, 10, 21).
    """
    lot_part = f"/10/{percent_encode(lot)}" if lot else ""
    return (
        f"{base.rstrip('/')}/01/{gtin14}{lot_part}/21/{percent_encode(serial)}"
        f"?t={percent_encode(token)}"
    )


def expiry_yymmdd(expiry: str) -> str:
    """The AI (17) form ``YYMMDD`` of an expiry as the store holds it.

    The store keeps the value as it was given (ISO ``YYYY-MM-DD`` or GS1 ``YYMMDD``, see
    :func:`check_expiry`); an ISO date loses its century, which AI (17) does not carry.

    >>> expiry_yymmdd("2026-12-31"), expiry_yymmdd("261200")
    ('261231', '261200')
    """
    m = _ISO_DATE.match(expiry)
    if m:
        return f"{m.group(1)[2:]}{m.group(2)}{m.group(3)}"
    if _GS1_DATE.match(expiry):
        return expiry
    raise ValueError(f"expiry {expiry!r} is neither YYYY-MM-DD nor YYMMDD")


def _elements(
    gtin14: str, serial: str, lot: str | None, expiry: str | None
) -> list[tuple[str, str]]:
    """(AI, value) pairs in GS1's recommended order: the fixed-length AIs (01) and (17)
    first, then the variable-length (10) and (21); empty lot or expiry left out."""
    pairs = [("01", gtin14)]
    if expiry:
        pairs.append(("17", expiry_yymmdd(expiry)))
    if lot:
        pairs.append(("10", lot))
    pairs.append(("21", serial))
    return pairs


_FIXED_LENGTH = frozenset({"01", "17"})


def element_string(gtin14: str, serial: str, lot: str | None, expiry: str | None) -> str:
    r"""The GS1 element string of a product, as it is encoded in a GS1 DataMatrix or GS1 QR.

    AIs are written without parentheses; the fixed-length AIs (01) and (17) come first
    and need no separator; a variable-length AI (10, 21) that is not last is ended by the
    group separator :data:`GS` (``\x1d``). The leading FNC1 that marks the symbol as GS1
    is not part of the string: each symbology writes it its own way (see
    :mod:`provmint.labels`).

    >>> element_string("09520123450014", "SER1", "LOT1", "2026-12-31")
    '01095201234500141726123110LOT1\x1d21SER1'
    >>> element_string("09520123450014", "SER1", "", None)
    '010952012345001421SER1'
    """
    pairs = _elements(gtin14, serial, lot, expiry)
    return "".join(
        ai + value + (GS if ai not in _FIXED_LENGTH and i < len(pairs) - 1 else "")
        for i, (ai, value) in enumerate(pairs)
    )


def human_readable(gtin14: str, serial: str, lot: str | None, expiry: str | None) -> str:
    """The human-readable interpretation (HRI) printed next to a GS1 symbol.

    Each AI in parentheses followed by its value, in the order the symbol carries them
    (GS1 General Specifications 4.15); no separators, which are not shown.

    >>> human_readable("09520123450014", "SER1", "LOT1", "261231")
    '(01) 09520123450014 (17) 261231 (10) LOT1 (21) SER1'
    """
    return " ".join(f"({ai}) {value}" for ai, value in _elements(gtin14, serial, lot, expiry))


@dataclass(frozen=True, slots=True)
class DigitalLink:
    """The parts of a GS1 Digital Link verification URL that provmint uses."""

    gtin14: str
    serial: str
    lot: str
    token: str | None


class DigitalLinkError(ValueError):
    """A string is not a GS1 Digital Link of a serialized product."""


_MAX_LINK = 2048
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


_PLAIN = "!\"&'()*+,\\-.0-9:;<=>A-Z_a-z"
"""CSET 82 less ``%``, ``/`` and ``?``: what a path segment holds without escapes."""
_PLAIN_LINK = re.compile(
    rf"/01/([0-9]{{14}})(?:/10/([{_PLAIN}]{{1,{SERIAL_MAX}}}))?/21/([{_PLAIN}]{{1,{SERIAL_MAX}}})"
    r"(?:\?t=([A-Za-z0-9_-]{1,64}))?"
)
"""The form the service is asked for nearly always: ``/01/{gtin}[/10/{lot}]/21/{serial}``
and an optional ``?t=token``, nothing escaped."""


def parse_digital_link(url: str) -> DigitalLink:
    """Parse ``[https://host[/prefix]]/01/{gtin}[/22/{cpv}][/10/{lot}]/21/{serial}[?t=token]``.

    The path is split on ``/`` before each segment is percent-decoded (so ``%2F`` inside
    a serial stays in the serial), qualifiers must keep GS1's order (22, 10, 21), query
    values are decoded with ``unquote`` (a ``+`` stays a ``+``). The GTIN is checked and
    returned as 14 digits; serial and lot must be CSET 82. Raises DigitalLinkError.
    """
    plain = _PLAIN_LINK.fullmatch(url) if isinstance(url, str) else None
    if plain is None:
        return _parse_link(url)
    # One regex call for the usual form; the answer is the one _parse_link gives it.
    gtin = normalize_gtin(plain[1])
    if isinstance(gtin, FieldProblem):
        raise DigitalLinkError(gtin.reason)
    return DigitalLink(gtin14=gtin, serial=plain[3], lot=plain[2] or "", token=plain[4])


def _parse_link(url: str) -> DigitalLink:
    """:func:`parse_digital_link` of any form."""
    from urllib.parse import unquote, urlsplit

    if not isinstance(url, str) or len(url) > _MAX_LINK:
        raise DigitalLinkError("not a Digital Link (too long)")
    if _BAD_ESCAPE.search(url):
        raise DigitalLinkError("a % is not followed by two hex digits")
    try:
        parts = urlsplit(url.strip())
    except ValueError as exc:
        raise DigitalLinkError(f"not a URL: {exc}") from None
    segments = parts.path.split("/")
    try:
        start = segments.index("01")
    except ValueError:
        raise DigitalLinkError("no /01/{gtin} in the path") from None
    pairs = segments[start:]
    if len(pairs) % 2:
        raise DigitalLinkError("the path must be /AI/value pairs")
    values: dict[str, str] = {}
    order = ["01", "22", "10", "21"]
    last = -1
    for ai, raw in zip(pairs[::2], pairs[1::2], strict=True):
        if ai not in order:
            raise DigitalLinkError(f"unexpected AI /{ai}/ in the path")
        if order.index(ai) <= last:
            raise DigitalLinkError("Digital Link qualifiers must come in the order 22, 10, 21")
        last = order.index(ai)
        try:
            values[ai] = unquote(raw, errors="strict")
        except UnicodeDecodeError:
            raise DigitalLinkError(f"/{ai}/ value is not valid percent-encoded UTF-8") from None
    if "21" not in values:
        raise DigitalLinkError("no serial (/21/) in the path")
    gtin = normalize_gtin(values["01"])
    if isinstance(gtin, FieldProblem):
        raise DigitalLinkError(gtin.reason)
    for ai, check in (("21", check_serial), ("10", check_lot)):
        problem = check(values.get(ai, ""))
        if problem is not None and (ai == "21" or values.get(ai)):
            raise DigitalLinkError(problem.reason)
    token = None
    for item in parts.query.split("&") if parts.query else []:
        key, _, value = item.partition("=")
        if key == "t":
            if token is not None:
                raise DigitalLinkError("more than one token (t=) in the query")
            try:
                token = unquote(value, errors="strict")
            except UnicodeDecodeError:
                raise DigitalLinkError("the token is not valid percent-encoded UTF-8") from None
    return DigitalLink(gtin14=gtin, serial=values["21"], lot=values.get("10", ""), token=token)
