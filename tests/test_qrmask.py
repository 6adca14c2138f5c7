"""provmint.qrmask picks the same data mask as segno itself, module for module."""

from __future__ import annotations

import segno
from hypothesis import given, settings
from hypothesis import strategies as st

from provmint import qrmask

URL_CHARS = st.characters(codec="ascii", min_codepoint=33, max_codepoint=126)


def _symbol(text: str, level: str) -> tuple[int, tuple[bytes, ...]]:
    code = segno.make(text, error=level, micro=False, boost_error=False)
    return code.mask, tuple(bytes(row) for row in code.matrix)


@settings(max_examples=150, deadline=None)
@given(text=st.text(URL_CHARS, min_size=1, max_size=400), level=st.sampled_from("lmqh"))
def test_same_symbol_as_segno(text: str, level: str) -> None:
    expected = _symbol(text, level)
    with qrmask.installed():
        assert _symbol(text, level) == expected
    assert _symbol(text, level) == expected  # segno's own function is back afterwards


def test_real_verification_urls() -> None:
    for serial in ("546CAWQDCR56", "A%2FB%25C", "X" * 20):
        base = "https://id.example.com/01/09520123450014/10/L2406A/21/"
        url = f"{base}{serial}?t=" + "Qw-_" * 5 + "ab"
        expected = _symbol(url, "m")
        with qrmask.installed():
            assert _symbol(url, "m") == expected


def test_micro_and_fixed_masks_are_left_to_segno() -> None:
    micro = segno.make("12345", micro=True)
    with qrmask.installed():
        assert segno.make("12345", micro=True).matrix == micro.matrix
        fixed = segno.make("hello", mask=3, micro=False)
    assert fixed.mask == 3
    assert fixed.matrix == segno.make("hello", mask=3, micro=False).matrix
