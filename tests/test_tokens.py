"""provmint.tokens (``provmint-token/1``) and the GS1 rules in provmint.gs1."""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import unquote, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provmint import gs1, tokens
from provmint.gs1 import FieldProblem

SECRET = bytes(range(32))
GTIN = "09506000134352"


def ref_token(secret: bytes, gtin14: str, serial: str) -> bytes:
    message = b"PMT1" + gtin14.encode("ascii") + serial.encode("ascii")
    return hmac.new(secret, message, hashlib.sha256).digest()[:16]


def token_via_states(secret: bytes, gtin14: str, serial: str) -> bytes:
    inner, outer = tokens.hmac_states(secret)
    h = inner.copy()
    h.update((gtin14 + serial).encode("ascii"))
    o = outer.copy()
    o.update(h.digest())
    return o.digest()[:16]


GTINS = st.from_regex(r"[0-9]{14}", fullmatch=True)
SERIALS = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20)
SECRETS = st.one_of(st.binary(min_size=32, max_size=64), st.binary(min_size=65, max_size=200))


# --------------------------------------------------------------------------- tokens


@settings(max_examples=300)
@given(st.binary(max_size=300), st.binary(max_size=100))
def test_short_sha256_is_sha256_whole_and_copied(first: bytes, more: bytes) -> None:
    # The short-message constructor may be CPython's own SHA-256: the same digests,
    # for one block or many, and from a copied state as from a fresh one.
    assert tokens.short_sha256(first).digest() == hashlib.sha256(first).digest()
    state = tokens.short_sha256(first)
    copied = state.copy()
    copied.update(more)
    assert copied.digest() == hashlib.sha256(first + more).digest()
    assert state.digest() == hashlib.sha256(first).digest()  # the copy left it alone


def test_constants() -> None:
    assert (tokens.TOKEN_BYTES, tokens.TOKEN_CHARS, tokens.MIN_SECRET_BYTES) == (16, 22, 32)


def test_known_token() -> None:
    # HMAC-SHA256(bytes(range(32)), b"PMT1" + gtin + serial)[:16], computed with hmac.new
    token = tokens.make_token(SECRET, GTIN, "1")
    assert token == ref_token(SECRET, GTIN, "1")
    assert len(token) == 16
    assert tokens.make_token(SECRET, GTIN, "2") != token
    assert tokens.make_token(bytes(range(1, 33)), GTIN, "1") != token


@settings(max_examples=150, deadline=None)
@given(secret=SECRETS, gtin=GTINS, serial=SERIALS)
def test_make_token_equals_hmac_and_states(secret: bytes, gtin: str, serial: str) -> None:
    expected = ref_token(secret, gtin, serial)
    assert tokens.make_token(secret, gtin, serial) == expected
    assert token_via_states(secret, gtin, serial) == expected


@pytest.mark.parametrize("length", [0, 1, 16, 31])
def test_short_secret_rejected(length: int) -> None:
    with pytest.raises(ValueError):
        tokens.make_token(bytes(length), GTIN, "1")
    with pytest.raises(ValueError):
        tokens.hmac_states(bytes(length))


def test_secret_lengths_at_block_boundaries() -> None:
    for length in (32, 63, 64, 65, 128):
        secret = bytes(range(length))
        assert tokens.make_token(secret, GTIN, "S") == ref_token(secret, GTIN, "S")
        assert token_via_states(secret, GTIN, "S") == ref_token(secret, GTIN, "S")


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(min_size=16, max_size=16))
def test_format_parse_round_trip(raw: bytes) -> None:
    text = tokens.format_token(raw)
    assert len(text) == 22
    assert "=" not in text
    assert text == base64.urlsafe_b64encode(raw).decode().rstrip("=")
    assert set(text) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert tokens.parse_token(text) == raw


def test_format_known_values() -> None:
    assert tokens.format_token(bytes(16)) == "A" * 22
    assert tokens.format_token(b"\xff" * 16) == "_" * 21 + "w"
    assert tokens.format_token(b"\xfb" * 16)[0] == "-"


@pytest.mark.parametrize("length", [0, 15, 17, 32])
def test_format_rejects_wrong_length(length: int) -> None:
    with pytest.raises(ValueError):
        tokens.format_token(bytes(length))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "A" * 21,
        "A" * 23,
        "A" * 24,
        "A" * 20 + "==",  # padding
        "A" * 22 + "==",
        "A" * 21 + "=",
        "A" * 21 + "+",  # standard base64 alphabet, not base64url
        "A" * 21 + "/",
        "A" * 10 + " " + "A" * 11,
        "A" * 21 + "\n",
        "A" * 21 + "é",
        "A" * 21 + "٣",  # a non-ASCII digit
        "A" * 21 + "B",  # stray bits in the last character
        "A" * 21 + "P",
        "_" * 22,
        "A" * 21 + "x",
    ],
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        tokens.parse_token(text)


def test_parse_rejects_non_str() -> None:
    with pytest.raises(ValueError):
        tokens.parse_token(b"A" * 22)  # type: ignore[arg-type]


def test_canonical_last_characters() -> None:
    """Only the last characters whose low 4 bits are zero are canonical: A, Q, g, w."""
    accepted = set()
    for ch in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_":
        try:
            tokens.parse_token("A" * 21 + ch)
        except ValueError:
            continue
        accepted.add(ch)
    assert accepted == {"A", "Q", "g", "w"}


def test_tokens_equal() -> None:
    a = tokens.make_token(SECRET, GTIN, "1")
    assert tokens.tokens_equal(a, bytes(a))
    assert not tokens.tokens_equal(a, tokens.make_token(SECRET, GTIN, "2"))
    assert not tokens.tokens_equal(a, a[:15])
    assert not tokens.tokens_equal(a, a + b"\x00")


@pytest.mark.parametrize(("gtin", "serial"), [("0950600013435", "1"), (GTIN, ""), (GTIN, "é")])
def test_make_token_rejects_bad_identity(gtin: str, serial: str) -> None:
    with pytest.raises(ValueError):
        tokens.make_token(SECRET, gtin, serial)


# --------------------------------------------------------------------------- gs1


@pytest.mark.parametrize(
    "gtin",
    [
        "09506000134352",
        "09521234543213",
        "09520123456788",
        "8904000210037",
        "00614141123452",
        "96385074",
        "614141123452",
        "4006381333931",
    ],
)
def test_gtin_check_digit_published(gtin: str) -> None:
    assert gs1.gtin_check_digit(gtin[:-1]) == int(gtin[-1])
    assert gs1.normalize_gtin(gtin) == gtin.rjust(14, "0")
    for wrong in range(10):
        if wrong != int(gtin[-1]):
            problem = gs1.normalize_gtin(gtin[:-1] + str(wrong))
            assert isinstance(problem, FieldProblem)
            assert problem.code == "gtin_check_digit"


def test_gtin_check_digit_docstring_example() -> None:
    assert gs1.gtin_check_digit("0952012345001") == 4


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("96385074", "00000096385074"),  # GTIN-8
        ("614141123452", "00614141123452"),  # GTIN-12 (UPC-A)
        ("8904000210037", "08904000210037"),  # GTIN-13
        ("09506000134352", "09506000134352"),  # GTIN-14
        ("  09506000134352\t", "09506000134352"),  # surrounding whitespace
    ],
)
def test_normalize_gtin_lengths(value: str, expected: str) -> None:
    assert gs1.normalize_gtin(value) == expected


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("", "gtin_empty"),
        ("   ", "gtin_empty"),
        ("9.50600013435E+12", "gtin_scientific"),
        ("9.506E12", "gtin_scientific"),
        ("0950600013435a", "gtin_not_digits"),
        ("０９５０６０００１３４３５２", "gtin_not_digits"),
        ("0950 6000134352", "gtin_not_digits"),
        ("1234567", "gtin_length"),
        ("123456789", "gtin_length"),
        ("123456789012345", "gtin_length"),
        ("09506000134353", "gtin_check_digit"),
    ],
)
def test_normalize_gtin_problems(value: str, code: str) -> None:
    problem = gs1.normalize_gtin(value)
    assert isinstance(problem, FieldProblem)
    assert problem.code == code


@settings(max_examples=100, deadline=None)
@given(body=st.from_regex(r"[0-9]{13}", fullmatch=True))
def test_check_digit_matches_weights(body: str) -> None:
    # weights 3,1,3,... from the right of the 13-digit body; total must reach a multiple of 10
    digit = gs1.gtin_check_digit(body)
    weights = [3 if i % 2 == 0 else 1 for i in range(13)][::-1]
    assert 0 <= digit <= 9
    assert (sum(int(c) * w for c, w in zip(body, weights, strict=True)) + digit) % 10 == 0
    # leading zeros do not change the check digit (one routine for every length)
    assert gs1.gtin_check_digit(body.lstrip("0") or "0") == digit


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        ("A/B&1", "A%2FB%261"),
        ("x%y", "x%25y"),
        ("a?b", "a%3Fb"),
        ("a#b", "a%23b"),
        ("a b", "a%20b"),
        ("a+b=c", "a%2Bb%3Dc"),
        ("é", "%C3%A9"),
        ("AZaz09-._~", "AZaz09-._~"),
        ("", ""),
    ],
)
def test_percent_encode(value: str, encoded: str) -> None:
    assert gs1.percent_encode(value) == encoded
    assert unquote(encoded) == value


def test_digital_link_documented_form() -> None:
    token = "AAAAAAAAAAAAAAAAAAAAAA"
    assert gs1.digital_link("https://id.example.com", GTIN, "S1", "L1", token) == (
        f"https://id.example.com/01/{GTIN}/10/L1/21/S1?t={token}"
    )
    assert gs1.digital_link("https://id.example.com/", GTIN, "S1", "", token) == (
        f"https://id.example.com/01/{GTIN}/21/S1?t={token}"
    )
    assert gs1.digital_link("https://id.example.com", GTIN, "x%y", "A/B&1", "ab-_") == (
        f"https://id.example.com/01/{GTIN}/10/A%2FB%261/21/x%25y?t=ab-_"
    )


CSET82 = "!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
X20 = st.text(st.sampled_from(CSET82), min_size=1, max_size=20)


def _biip_parse(url: str) -> dict[str, str]:
    from biip.gs1_digital_link_uris import GS1DigitalLinkURI

    uri = GS1DigitalLinkURI.parse(url)
    return {e.ai.ai: e.value for e in uri.element_strings}


@pytest.mark.parametrize(
    ("serial", "lot"),
    [
        ("S1", "L1"),
        ("x%y", "A/B&1"),
        ("a?b", ""),
        ("A/B&1", "a?b"),
        ("'\"<>", "%25"),
        ("12345678901234567890", ""),
    ],
)
def test_digital_link_parses_with_biip(serial: str, lot: str) -> None:
    assert gs1.check_serial(serial) is None
    assert gs1.check_lot(lot) is None
    token = tokens.format_token(tokens.make_token(SECRET, GTIN, serial))
    url = gs1.digital_link("https://id.example.com/", GTIN, serial, lot, token)
    parsed = _biip_parse(url)
    expected = {"01": GTIN, "21": serial, **({"10": lot} if lot else {})}
    assert parsed == expected
    assert urlsplit(url).query == f"t={token}"
    assert urlsplit(url).path.count("/") == (6 if lot else 4)


@settings(max_examples=100, deadline=None)
@given(serial=X20, lot=st.one_of(st.just(""), X20), raw=st.binary(min_size=16, max_size=16))
def test_digital_link_round_trip_biip(serial: str, lot: str, raw: bytes) -> None:
    token = tokens.format_token(raw)
    url = gs1.digital_link("https://id.example.com", GTIN, serial, lot, token)
    expected = {"01": GTIN, "21": serial, **({"10": lot} if lot else {})}
    assert _biip_parse(url) == expected
    parts = urlsplit(url)
    assert parts.scheme == "https" and parts.netloc == "id.example.com"
    segments = parts.path.split("/")[1:]
    assert [unquote(s) for s in segments] == (
        ["01", GTIN, *(["10", lot] if lot else []), "21", serial]
    )
    assert tokens.parse_token(parts.query.removeprefix("t=")) == raw
