"""GS1 Digital Link parsing: the fast path for the plain form gives exactly what the
general parser gives, for generated links near that form (valid or not)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provmint import gs1


def _parse(parser: object, url: str) -> object:
    try:
        return parser(url)  # type: ignore[operator]
    except gs1.DigitalLinkError as exc:
        return ("error", str(exc))


def _gtin(body: str) -> str:
    return body + str(gs1.gtin_check_digit(body))


_VALUE = st.lists(
    st.sampled_from([*"ABCxyz0189!\"&'()*+,-.:;<=>_%/?# é", "%2F", "%41"]),
    max_size=24,
).map("".join)
_GTIN = st.one_of(
    st.text(alphabet="0123456789", min_size=13, max_size=13).map(_gtin),
    st.text(alphabet="0123456789", min_size=12, max_size=15),
)
_TOKEN = st.one_of(
    st.none(),
    st.text(alphabet="ABCabc019_-", min_size=0, max_size=70),
    st.text(alphabet="ABC%&=+ ", min_size=1, max_size=8),
)


@settings(max_examples=600, deadline=None)
@given(
    gtin=_GTIN,
    lot=st.one_of(st.none(), _VALUE),
    serial=_VALUE,
    token=_TOKEN,
    prefix=st.sampled_from(["", "https://id.example.com", "/x"]),
    extra=st.sampled_from(["", "/22/A", "&t=x", "#f", " "]),
)
def test_fast_path_agrees_with_the_general_parser(
    gtin: str, lot: str | None, serial: str, token: str | None, prefix: str, extra: str
) -> None:
    url = f"{prefix}/01/{gtin}" + (f"/10/{lot}" if lot is not None else "") + f"/21/{serial}"
    url += (f"?t={token}" if token is not None else "") + extra
    assert _parse(gs1.parse_digital_link, url) == _parse(gs1._parse_link, url)


@pytest.mark.parametrize(
    "url",
    [
        "/01/09520123450038/10/L2702G/21/CT3S2VNEMBPZ?t=zYX6o7gFmpQ3EcNgdYbMrw",
        "/01/09520123450038/21/CT3S2VNEMBPZ",
        "/01/09520123450039/21/CT3S2VNEMBPZ",  # a wrong check digit
    ],
)
def test_plain_links(url: str) -> None:
    assert gs1._PLAIN_LINK.fullmatch(url.partition("?")[0] + "?t=a" if "?" in url else url)
    assert _parse(gs1.parse_digital_link, url) == _parse(gs1._parse_link, url)
