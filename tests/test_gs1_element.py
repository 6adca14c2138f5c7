"""GS1 element strings and their human-readable text: known answers from the GS1
General Specifications' rules (fixed-length AIs first, a group separator after every
variable-length AI that is not last, HRI in the symbol's order)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provmint import gs1

GTIN = "09520123450014"


@pytest.mark.parametrize(
    ("serial", "lot", "expiry", "element", "hri"),
    [
        (
            "SER1",
            "LOT1",
            "261231",
            "01" + GTIN + "17261231" + "10LOT1\x1d" + "21SER1",
            f"(01) {GTIN} (17) 261231 (10) LOT1 (21) SER1",
        ),
        (
            "SER1",
            "LOT1",
            "2026-12-31",  # ISO in the store: AI (17) carries YYMMDD
            "01" + GTIN + "17261231" + "10LOT1\x1d" + "21SER1",
            f"(01) {GTIN} (17) 261231 (10) LOT1 (21) SER1",
        ),
        ("A/1", None, None, "01" + GTIN + "21A/1", f"(01) {GTIN} (21) A/1"),
        ("A", "", "", "01" + GTIN + "21A", f"(01) {GTIN} (21) A"),
        ("7", "L", None, "01" + GTIN + "10L\x1d" + "217", f"(01) {GTIN} (10) L (21) 7"),
        (
            "S",
            None,
            "270200",  # day 00: last day of the month, kept as written
            "01" + GTIN + "17270200" + "21S",
            f"(01) {GTIN} (17) 270200 (21) S",
        ),
    ],
)
def test_known_answers(
    serial: str, lot: str | None, expiry: str | None, element: str, hri: str
) -> None:
    assert gs1.element_string(GTIN, serial, lot, expiry) == element
    assert gs1.human_readable(GTIN, serial, lot, expiry) == hri


def test_bad_expiry_is_refused() -> None:
    with pytest.raises(ValueError, match="neither"):
        gs1.element_string(GTIN, "S", None, "31/12/2026")


_X20 = st.text(alphabet="ABCxyz0189!\"%&'()*+,-./:;<=>?_", min_size=1, max_size=20)


def _split(element: str) -> list[tuple[str, str]]:
    """Parse an element string back into (AI, value) pairs, as a scanner does."""
    out = []
    rest = element
    while rest:
        ai, rest = rest[:2], rest[2:]
        if ai in ("01", "17"):
            size = 14 if ai == "01" else 6
            out.append((ai, rest[:size]))
            rest = rest[size:]
        else:
            value, _, rest = rest.partition(gs1.GS)
            out.append((ai, value))
    return out


@settings(max_examples=300, deadline=None)
@given(
    serial=_X20,
    lot=st.one_of(st.none(), st.just(""), _X20),
    expiry=st.one_of(
        st.none(), st.dates().map(lambda d: d.isoformat() if d.year >= 1000 else None)
    ),
)
def test_element_string_round_trips(serial: str, lot: str | None, expiry: str | None) -> None:
    """Any CSET 82 serial and lot come back out of the element string unchanged, in the
    recommended order, and the HRI shows the same pairs."""
    pairs = _split(gs1.element_string(GTIN, serial, lot, expiry))
    expected = [("01", GTIN)]
    if expiry:
        expected.append(("17", expiry[2:4] + expiry[5:7] + expiry[8:10]))
    if lot:
        expected.append(("10", lot))
    expected.append(("21", serial))
    assert pairs == expected
    assert gs1.human_readable(GTIN, serial, lot, expiry) == " ".join(
        f"({ai}) {value}" for ai, value in expected
    )
