"""provmint.qrmask picks the same data mask as segno itself, module for module."""

from __future__ import annotations

import pytest
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


def test_nested_and_overlapping_blocks_restore_segno() -> None:
    """A nested block must not save qrmask's own function as segno's and leave segno
    patched for good (micro codes then went round best_mask forever)."""
    from segno import encoder

    own = encoder.find_and_apply_best_mask
    micro = segno.make("12345", micro=True).matrix
    with qrmask.installed():
        with qrmask.installed():
            assert encoder.find_and_apply_best_mask is qrmask.best_mask
            assert segno.make("12345", micro=True).matrix == micro
        assert encoder.find_and_apply_best_mask is qrmask.best_mask  # the outer block's
    assert encoder.find_and_apply_best_mask is own
    with qrmask.installed():  # and once more, after all that
        assert segno.make("12345", micro=True).matrix == micro
    assert encoder.find_and_apply_best_mask is own
    # Blocks that end in another order than they began (two threads, say).
    first, second = qrmask.installed(), qrmask.installed()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert encoder.find_and_apply_best_mask is qrmask.best_mask
    second.__exit__(None, None, None)
    assert encoder.find_and_apply_best_mask is own


def test_a_failing_block_restores_segno() -> None:
    from segno import encoder

    own = encoder.find_and_apply_best_mask
    with pytest.raises(RuntimeError), qrmask.installed(), qrmask.installed():
        raise RuntimeError("boom")
    assert encoder.find_and_apply_best_mask is own
