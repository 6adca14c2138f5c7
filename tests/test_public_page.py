"""The public page a consumer sees (provmint.publicpage): brand settings, each verdict in
each language, escaping, the report link, colours and the catalogs.

Rendering is tested on :class:`PublicPages` directly (every verdict and error page in
every language), then through the service's ASGI application in this process (the
language a request gets, the logo route). The catalogs are checked against Babel, which
is a test and developer tool only: the service reads the compiled ``.mo`` files with
:mod:`gettext`. What a real browser shows (screenshots, overflow at 360 px, computed
colours) is in ``tests/test_browser.py``.
"""

from __future__ import annotations

import asyncio
import html
import io
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import read_mo, write_mo
from babel.messages.pofile import read_po
from conftest import EXAMPLE_CSV
from hypothesis import given
from hypothesis import strategies as st

from provmint.config import (
    DEFAULT_BRAND_COLOUR,
    MAX_LOGO_BYTES,
    BrandSettings,
    contrast_ratio,
    resolve_settings,
)
from provmint.errors import ConfigError
from provmint.publicpage import LANGUAGES, PublicPages, VerdictView, choose_language, short_hash
from provmint.publicpage.i18n import MAX_LANGUAGE_RANGES, translations
from provmint.publicpage.icons import ICONS
from provmint.publicpage.palette import COLOURS, PAIRS, TONES, VERDICT_TONES, brand_pairs
from provmint.publicpage.render import _css
from provmint.publicpage.texts import ERRORS, FIELD_LABELS, VERDICTS, Page, field_label

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "provmint" / "publicpage"
LOCALE = PACKAGE / "locale"
SHOWN = ("genuine", "pending", "suspect", "unknown", "unavailable")
"""The verdicts a page can show (a forged code is shown as unknown)."""
GTIN = "09520123450014"
PATH = f"/01/{GTIN}/10/L2406A/21/546CAWQDCR56"
TX = "0x" + "1234abcd" * 8
RECORD = {
    "gtin": GTIN,
    "serial": "546CAWQDCR56",
    "lot": "L2406A",
    "expiry": "2027-06-30",
    "product_name": "Aurora Serum 30 ml",
    "production_date": "2024-06-12",
    "best_before_note": "keep cool",
}
ANCHOR = {"block_time": 1718000000, "block_number": 12, "chain_id": 31337, "tx_hash": TX}
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def _view(verdict: str, **changes: Any) -> VerdictView:
    good = verdict in ("genuine", "pending", "suspect")
    values: dict[str, Any] = {
        "verdict": verdict,
        "link_path": PATH,
        "token": "hFHK_RvqWoEUUGfH50elVA",
        "record": RECORD if good else None,
        "batch_id": "20240612-abcdef12" if good else None,
        "anchor": ANCHOR if verdict in ("genuine", "suspect") else None,
        "scans": 3 if good else None,
        "logged": True if good else None,
    }
    values.update(changes)
    return VerdictView(**values)


def _heading(page: str) -> tuple[str, str]:
    found = re.search(r'data-verdict="([a-z]+)"><h1>(.*?)</h1>', page)
    assert found, page[:300]
    return found.group(1), html.unescape(found.group(2))


def _href(page: str, element_id: str) -> str | None:
    found = re.search(rf'id="{element_id}" href="([^"]*)"', page)
    return html.unescape(found.group(1)) if found else None


@pytest.fixture(scope="module")
def pages() -> PublicPages:
    """A brand with every setting: name, contact by mail, explorer."""
    return PublicPages(
        BrandSettings(
            name="Aurora <Labs>",
            contact="mailto:quality@aurora.example",
            explorer="https://explorer.example/tx/{tx}",
        )
    )


@pytest.fixture(scope="module")
def plain() -> PublicPages:
    """No [brand] table at all."""
    return PublicPages(BrandSettings())


# --------------------------------------------------------------------------- each page


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("verdict", SHOWN)
def test_each_verdict_in_each_language(pages: PublicPages, verdict: str, language: str) -> None:
    t = translations(language).gettext
    page = pages.verdict(_view(verdict), language)
    wording = VERDICTS[verdict]
    assert f'<html lang="{language}">' in page
    assert _heading(page) == (verdict, t(wording.title))
    assert f"<title>{html.escape(t(wording.title))} · Aurora &lt;Labs&gt;</title>" in page
    assert html.escape(t(wording.meaning)) in page
    assert page.count("<svg") == 1 and ICONS[verdict] in page
    assert f'<main class="t-{VERDICT_TONES[verdict]}">' in page
    stop = html.escape(t(Page().do_not_use))
    if verdict in ("suspect", "unknown"):
        assert stop in page and 'id="report"' in page
    else:
        assert stop not in page and 'id="report"' not in page
    if verdict in ("genuine", "pending", "suspect"):
        assert '<p class="product" id="product">Aurora Serum 30 ml</p>' in page
        assert f"<th>{html.escape(t(FIELD_LABELS['serial']))}</th><td>546CAWQDCR56</td>" in page
        assert 'id="proof"' in page
    else:
        assert "<table>" not in page and 'id="proof"' not in page and "Aurora Serum" not in page
    # Nothing that would load or run anything, from here or elsewhere.
    for needle in ("<script", "<link", "@import", "url(", "<iframe", "javascript:", "<img"):
        assert needle not in page.lower(), needle


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_subtitle_never_repeats_the_title(language: str) -> None:
    t = translations(language).gettext
    for wording in [*VERDICTS.values(), *ERRORS.values()]:
        title, meaning = t(wording.title).casefold(), t(wording.meaning).casefold()
        assert title not in meaning, (language, title)


def test_every_record_value_is_escaped(plain: PublicPages) -> None:
    hostile = "<script>alert(1)</script>"
    record = {
        "gtin": GTIN,
        "serial": 'A"B<C>',
        "lot": "L&1",
        "product_name": hostile,
        "note": "<img src=x onerror=alert(1)>'",
    }
    view = _view("genuine", record=record, batch_id="<b>", link_path='/01/x/21/A"<b>')
    page = plain.verdict(view, "en")
    assert "<script" not in page and "<img" not in page and "<b>" not in page
    assert '<p class="product" id="product">&lt;script&gt;alert(1)&lt;/script&gt;</p>' in page
    assert "<td>A&quot;B&lt;C&gt;</td>" in page and "<td>L&amp;1</td>" in page
    assert "<td>&lt;img src=x onerror=alert(1)&gt;&#x27;</td>" in page
    assert _href(page, "proof") == '/proof/01/x/21/A"<b>?t=hFHK_RvqWoEUUGfH50elVA'
    branded = PublicPages(BrandSettings(name='<script>"x"</script>'))
    assert "<script" not in branded.verdict(view, "en")


def test_field_labels(pages: PublicPages) -> None:
    page = pages.verdict(_view("genuine"), "en")
    for label, value in (
        ("Product number (GTIN)", GTIN),
        ("Serial number", "546CAWQDCR56"),
        ("Batch / lot", "L2406A"),
        ("Expiry date", "2027-06-30"),
        ("Production date", "2024-06-12"),
        ("Best before note", "keep cool"),  # a column without a label: its name in words
        ("Registration batch", "20240612-abcdef12"),
        ("Scans of this code", "3"),
    ):
        assert f"<th>{label}</th><td>{value}</td>" in page, label
    assert "Product name" not in page  # the headline column is not repeated below it
    assert field_label("best_before") == "Best before" and field_label("c_11") == "C 11"
    # Codes may break anywhere (they have no words); words never break mid-word.
    assert '<tr class="code"><th>Serial number</th>' in page
    assert "<tr><th>Expiry date</th>" in page
    assert "word-break" not in page
    assert re.findall(r"[^}]*overflow-wrap:anywhere", pages.css) == [
        ".code td{overflow-wrap:anywhere"
    ]


def test_columns_come_in_a_reading_order(plain: PublicPages) -> None:
    record = dict(sorted(RECORD.items()))  # the store keeps records sorted by column
    page = plain.verdict(_view("genuine", record=record), "en")
    shown = re.findall(r"<th>([^<]+)</th>", page)
    assert shown[:5] == [
        "Product number (GTIN)",
        "Serial number",
        "Batch / lot",
        "Production date",
        "Expiry date",
    ]


def test_the_headline_column_and_its_fallback() -> None:
    named = PublicPages(BrandSettings(product_name="best_before_note"))
    page = named.verdict(_view("genuine"), "en")
    assert 'id="product">keep cool</p>' in page
    assert "<th>Product name</th><td>Aurora Serum 30 ml</td>" in page
    record = {k: v for k, v in RECORD.items() if k != "product_name"}
    for language in LANGUAGES:
        page = PublicPages(BrandSettings()).verdict(_view("genuine", record=record), language)
        generic = translations(language).gettext(Page().product)
        assert f'id="product">{generic}</p>' in page


def test_the_transaction_is_shortened_and_linked(pages: PublicPages, plain: PublicPages) -> None:
    assert short_hash(TX) == "0x1234…abcd"
    page = pages.verdict(_view("genuine"), "de")
    link = f'<a id="transaction" href="https://explorer.example/tx/{TX}" rel="noreferrer">'
    assert f"{link}0x1234…abcd</a>" in page
    assert "Block 12 der Blockchain 31337" in page
    assert TX not in page.replace(f"/tx/{TX}", "")
    page = plain.verdict(_view("genuine"), "en")
    assert f'<span id="transaction" title="{TX}">0x1234…abcd</span>' in page
    assert "block 12 of chain 31337" in page and "2024-06-10 06:13 UTC" in page


def test_the_page_says_when_a_scan_was_not_logged(plain: PublicPages) -> None:
    page = plain.verdict(_view("pending", logged=False, scans=None), "fr")
    assert 'id="not-logged"' in page and "Scans" not in page
    assert "Ce scan n’a pas pu être enregistré" in page
    assert 'id="not-logged"' not in plain.verdict(_view("pending"), "fr")


# --------------------------------------------------------------------------- reporting


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("verdict", ["suspect", "unknown"])
def test_the_report_mail_names_the_scanned_code(
    pages: PublicPages, verdict: str, language: str
) -> None:
    """The mail's subject and body are prefilled, and the body names the code's own path,
    which is this visitor's request: percent-encoded in the link, escaped in the page."""
    path = '/01/09520123450014/21/A%2FB%25C"<x>&y=1 z'
    page = pages.verdict(_view(verdict, link_path=path), language)
    raw = re.search(r'id="report" href="([^"]*)"', page)
    assert raw is not None
    assert re.fullmatch(r"[A-Za-z0-9:@.?=&;%_\-]*", raw.group(1)), raw.group(1)
    href = _href(page, "report")
    assert href is not None and href.startswith("mailto:quality@aurora.example?subject=")
    query = parse_qs(urlsplit(href).query, keep_blank_values=True)
    t = translations(language).gettext
    title = t(VERDICTS[verdict].title)
    assert query["subject"] == [t(Page().mail_subject).replace("{verdict}", title)]
    (body,) = query["body"]
    assert f": {path}\n" in body and title in body
    # Shown only encoded, inside the link (and, escaped, in the proof link of a copy).
    assert "<x>" not in page
    assert "A%2FB%25C" not in page.replace(f'href="/proof{html.escape(path)}?t=', "")


def test_the_report_form_gets_the_code(tmp_path: Path) -> None:
    form = PublicPages(BrandSettings(contact="https://aurora.example/report?code={code}&src=qr"))
    page = form.verdict(_view("unknown", link_path='/01/x/21/A"<b>'), "es")
    assert (
        _href(page, "report")
        == "https://aurora.example/report?code=%2F01%2Fx%2F21%2FA%22%3Cb%3E&src=qr"
    )
    assert 'rel="noreferrer"' in page and "<b>" not in page
    assert "infórmenos" in page  # "report it to us"


def test_without_a_contact_the_next_step_is_the_shop(plain: PublicPages) -> None:
    page = plain.verdict(_view("unknown"), "en")
    assert "Do not use this product." in page
    assert "tell the shop that sold it to you" in page and 'id="report"' not in page


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("language", LANGUAGES)
def test_error_pages(pages: PublicPages, language: str) -> None:
    t = translations(language).gettext
    for status, wording in [*ERRORS.items(), (414, ERRORS[400]), (418, ERRORS[400])]:
        page = pages.error(status, "not a valid product code: <x>", language)
        assert _heading(page) == ("error", t(wording.title)), status
        assert f'<html lang="{language}">' in page and ICONS["error"] in page
        assert "&lt;x&gt;" in page and "<x>" not in page
        assert 'id="proof"' not in page and "<table>" not in page
    assert '<main class="t-red">' in pages.error(404, "", language)
    assert '<main class="t-grey">' in pages.error(400, "", language)


# --------------------------------------------------------------------------- colours


def test_every_colour_pair_passes_wcag_aa() -> None:
    for where, text, background in (*PAIRS, *brand_pairs(DEFAULT_BRAND_COLOUR)):
        ratio = contrast_ratio(text, background)
        assert ratio >= 4.5, f"{where}: {text} on {background} is {ratio:.2f}:1"


def test_contrast_ratio_known_answers() -> None:
    assert contrast_ratio("#000000", "#ffffff") == pytest.approx(21.0)
    assert contrast_ratio("#ffffff", "#ffffff") == pytest.approx(1.0)
    assert contrast_ratio("#777777", "#ffffff") == pytest.approx(4.48, abs=0.01)
    assert contrast_ratio("#0b5cad", "#FFFFFF") == contrast_ratio("#ffffff", "#0b5cad")


def test_each_verdict_has_its_own_colour_and_icon() -> None:
    shown = {verdict: VERDICT_TONES[verdict] for verdict in SHOWN}
    assert len(set(shown.values())) == len(SHOWN)
    assert len({TONES[tone] for tone in shown.values()}) == len(SHOWN)
    assert len({ICONS[verdict] for verdict in (*SHOWN, "error")}) == len(SHOWN) + 1
    # "Genuine, being registered" is blue, nowhere near the orange of a possible copy.
    assert TONES[shown["pending"]] == "#0550ae" and TONES[shown["suspect"]] == "#bc4c00"


def test_the_stylesheet_uses_only_the_tabled_colours() -> None:
    accent = "#0b5cad"
    used = set(re.findall(r"#[0-9a-f]{6}", _css(accent)))
    assert used <= {*COLOURS.values(), *TONES.values(), accent}
    assert accent in used


# --------------------------------------------------------------------------- languages


@pytest.mark.parametrize(
    ("asked", "header", "expected"),
    [
        ("pt", "de", "pt"),
        ("es", "", "es"),
        ("xx", "fr", "fr"),  # not a language of ours: ignored
        ("PT", "", "en"),  # only the codes as listed
        ("pt-BR", "", "en"),
        (None, "pt-BR,pt;q=0.9,en;q=0.8", "pt"),
        (None, "en;q=0.5, de", "de"),
        (None, "de-CH;q=0.4, fr-CA;q=0.6", "fr"),
        (None, "FR", "fr"),
        (None, "es;q=0.8, de;q=0.8", "es"),  # a tie goes to the first
        (None, "ja, zh;q=0.9", "en"),
        (None, "fr;q=0", "en"),  # "not French"
        (None, "de;q=1.5, es", "es"),  # a quality above 1 is malformed: skipped
        (None, "de;q=abc, es;level=1, pt", "pt"),
        (None, "*", "en"),
        (None, ",,;;,=,q=1,-de,de-", "en"),
        (None, ", ".join(["ja"] * MAX_LANGUAGE_RANGES + ["de"]), "en"),  # past the bound
        (None, ", ".join(["ja"] * (MAX_LANGUAGE_RANGES - 1) + ["de"]), "de"),
        (None, "", "en"),
    ],
)
def test_the_language_of_a_page(asked: str | None, header: str, expected: str) -> None:
    assert choose_language(asked, header) == expected


@given(asked=st.one_of(st.none(), st.text(max_size=8)), header=st.text(max_size=512))
def test_any_language_header_is_read_without_error(asked: str | None, header: str) -> None:
    assert choose_language(asked, header) in LANGUAGES


# --------------------------------------------------------------------------- catalogs


def _po(language: str) -> Any:
    with (LOCALE / language / "LC_MESSAGES" / "provmint.po").open("rb") as fh:
        return read_po(fh, locale=language)


def _pot_ids() -> set[str]:
    with (LOCALE / "provmint.pot").open("rb") as fh:
        return {m.id for m in read_po(fh) if m.id}


def test_the_template_holds_every_message_the_code_uses() -> None:
    found = extract_from_dir(str(PACKAGE), keywords={"N_": None}, comment_tags=())
    used = {message for _, _, message, *_ in found}
    assert used == _pot_ids(), "run scripts/catalogs"
    # And the code's tables hold only marked messages.
    marked = {*FIELD_LABELS.values(), *(getattr(Page(), f) for f in Page.__dataclass_fields__)}
    for wording in [*VERDICTS.values(), *ERRORS.values()]:
        marked |= {wording.title, wording.meaning, *wording.steps}
    assert marked <= used


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_message_is_translated(language: str) -> None:
    catalog = _po(language)
    ids = {m.id for m in catalog if m.id}
    assert ids == _pot_ids(), "run scripts/catalogs"
    for message in catalog:
        if not message.id:
            continue
        assert message.string and message.string.strip(), (language, message.id)
        assert not message.fuzzy, (language, message.id)
        placeholders = set(re.findall(r"\{\w+\}", message.id))
        assert set(re.findall(r"\{\w+\}", message.string)) == placeholders, message.id
        assert message.string.count("{") == len(re.findall(r"\{\w+\}", message.string))
        if language == "en":
            assert message.string == message.id
        elif message.id in (VERDICTS["genuine"].title, Page().do_not_use):
            assert message.string != message.id, (language, message.id)


@pytest.mark.parametrize("language", LANGUAGES)
def test_each_compiled_catalog_is_its_po(language: str) -> None:
    """The committed .mo is what Babel compiles from the .po, message for message (the
    comparison leaves out the header, which names Babel's version)."""
    compiled = io.BytesIO()
    write_mo(compiled, _po(language))
    compiled.seek(0)
    with (LOCALE / language / "LC_MESSAGES" / "provmint.mo").open("rb") as fh:
        committed = read_mo(fh)

    def messages(catalog: Any) -> dict[str, str]:
        return {m.id: m.string for m in catalog if m.id}

    assert messages(committed) == messages(read_mo(compiled)), "run scripts/catalogs"
    runtime = translations(language)
    assert runtime.gettext(VERDICTS["suspect"].title) == messages(committed)["Possible copy"]


def test_the_service_reads_the_catalogs_without_babel() -> None:
    code = (
        "import sys\n"
        "from provmint.config import BrandSettings\n"
        "from provmint.publicpage import PublicPages, VerdictView\n"
        "import provmint.server\n"
        "page = PublicPages(BrandSettings()).verdict(VerdictView('unknown', '/01/x'), 'de')\n"
        "assert 'Nicht erkannt' in page\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'babel'], 'babel imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# --------------------------------------------------------------------------- [brand]


def _config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "brand.toml"
    path.write_text(body, encoding="utf-8")
    return path


def _brand(tmp_path: Path, body: str) -> BrandSettings:
    return resolve_settings(config_file=_config(tmp_path, "[brand]\n" + body)).brand


def test_brand_defaults(tmp_path: Path) -> None:
    assert _brand(tmp_path, "") == BrandSettings()
    assert resolve_settings(config_file=_config(tmp_path, "")).brand == BrandSettings()
    default = BrandSettings()
    assert default.name is None and default.logo is None and default.contact is None
    assert default.colour == DEFAULT_BRAND_COLOUR and default.product_name == "product_name"


def test_brand_settings_are_read(tmp_path: Path) -> None:
    logo = tmp_path / "logo.png"
    logo.write_bytes(PNG)
    brand = _brand(
        tmp_path,
        'name = "  Aurora Labs "\n'
        f'logo = "{logo}"\n'
        'contact = "quality@aurora.example"\n'
        'colour = "#0B5CAD"\n'
        'product_name = "name"\n'
        'explorer = "https://etherscan.io/tx/{tx}"\n',
    )
    assert brand == BrandSettings(
        name="Aurora Labs",
        logo=logo,
        logo_type="image/png",
        logo_data=PNG,
        contact="mailto:quality@aurora.example",
        colour="#0b5cad",
        product_name="name",
        explorer="https://etherscan.io/tx/{tx}",
    )
    assert "logo_data" not in repr(brand)
    form = _brand(tmp_path, 'contact = "https://aurora.example/report?code={code}"\n')
    assert form.contact == "https://aurora.example/report?code={code}"
    assert _brand(tmp_path, 'contact = "mailto:a.b+c@x.example"\n').contact == (
        "mailto:a.b+c@x.example"
    )


@pytest.mark.parametrize(
    ("data", "media_type"),
    [
        (PNG, "image/png"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 32, "image/jpeg"),
        (b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"\x00" * 32, "image/webp"),
        (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>', "image/svg+xml"),
    ],
)
def test_a_logo_is_known_by_its_content(tmp_path: Path, data: bytes, media_type: str) -> None:
    logo = tmp_path / "logo.bin"
    logo.write_bytes(data)
    brand = _brand(tmp_path, f'logo = "{logo}"\n')
    assert (brand.logo_type, brand.logo_data) == (media_type, data)


def _svg(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "logo.svg"
    path.write_text(text, encoding="utf-8")
    return path


BAD_BRANDS = [
    ('nmae = "x"\n', "unknown setting 'nmae'"),
    ('name = ""\n', "[brand] name must be a non-empty string"),
    ("name = 3\n", "[brand] name must be a non-empty string"),
    ('name = "a\\nb"\n', "[brand] name must be one line"),
    (f'name = "{"x" * 81}"\n', "at most 80 characters"),
    ('logo = "https://cdn.example/logo.png"\n', "[brand] logo must be the path of an image"),
    ('logo = "//cdn.example/logo.png"\n', "not a URL"),
    ('logo = "data:image/png;base64,AAAA"\n', "not a URL"),
    ('logo = "{missing}"\n', "[brand] logo: cannot read"),
    ('logo = "{text}"\n', "is not a PNG, SVG, JPEG or WebP image"),
    ('logo = "{big}"\n', "is larger than 256 KiB"),
    ('logo = "{script}"\n', "holds scripts or event handlers"),
    ('logo = "{handler}"\n', "holds scripts or event handlers"),
    ('contact = "http://aurora.example/report"\n', "[brand] contact must be an e-mail"),
    ('contact = "javascript:alert(1)"\n', "[brand] contact must be an e-mail"),
    ('contact = "a b@aurora.example"\n', "[brand] contact must be an e-mail"),
    ('contact = "https://aurora.example/<x>"\n', "[brand] contact must be an e-mail"),
    ('contact = "https://[::1"\n', "[brand] contact must be an e-mail"),
    ('colour = "#fff"\n', "[brand] colour must be a colour written #rrggbb"),
    ('colour = "blue"\n', "[brand] colour must be a colour written #rrggbb"),
    ('colour = "#ffff00"\n', "#ffff00 against white has a contrast ratio of 1.07:1"),
    ('colour = "#777777"\n', "contrast ratio of 4.48:1, below the 4.5:1"),
    ('product_name = "Product Name"\n', "[brand] product_name must be a column name"),
    ("product_name = 1\n", "[brand] product_name must be a column name"),
    ('explorer = "https://etherscan.io/tx/"\n', "[brand] explorer must be an https URL"),
    ('explorer = "http://etherscan.io/tx/{tx}"\n', "[brand] explorer must be an https URL"),
    ('explorer = "https://x.example/{tx}/{tx}"\n', "[brand] explorer must be an https URL"),
    ('explorer = "https://x.example/{hash}{tx}"\n', "[brand] explorer must be an https URL"),
]


@pytest.mark.parametrize(("line", "message"), BAD_BRANDS)
def test_bad_brand_settings_name_the_file_and_key(tmp_path: Path, line: str, message: str) -> None:
    (tmp_path / "text.png").write_text("not an image")
    (tmp_path / "big.png").write_bytes(PNG + b"\x00" * MAX_LOGO_BYTES)
    script = _svg(tmp_path, '<svg xmlns="http://www.w3.org/2000/svg"><script>x()</script></svg>')
    handler = tmp_path / "handler.svg"
    handler.write_text('<svg onload = "x()"/>')
    line = line.format(
        missing=tmp_path / "missing.png",
        text=tmp_path / "text.png",
        big=tmp_path / "big.png",
        script=script,
        handler=handler,
        tx="{tx}",
        hash="{hash}",
    )
    config = _config(tmp_path, "[brand]\n" + line)
    with pytest.raises(ConfigError) as caught:
        resolve_settings(config_file=config)
    assert str(config) in str(caught.value) and message in str(caught.value), str(caught.value)


def test_a_brand_table_of_the_wrong_type_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"brand must be a table"):
        resolve_settings(config_file=_config(tmp_path, 'brand = "Aurora"\n'))


def test_bad_brand_settings_are_usage_errors_on_the_command_line(cli, tmp_path: Path) -> None:
    (tmp_path / "no-config.toml").write_text('[brand]\ncolour = "#ffff00"\n')  # PROVMINT_CONFIG
    r = cli("batch", "list")
    assert r.exit_code == 2, (r.stdout, r.stderr)
    assert "contrast ratio of 1.07:1" in r.stderr and "Traceback" not in r.stderr


# --------------------------------------------------------------------------- the service


def _asgi(
    app: Any, path: str, query: str = "", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One GET through the application in this process."""
    raw = [(b"host", b"id.example.com")]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": raw,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    found = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    return sent[0]["status"], found, sent[1]["body"]


@pytest.fixture
def served(cli, keyed, tmp_path: Path) -> Any:
    """The example minted, with a [brand] table and a logo, as an ASGI application."""
    from provmint.server import create_app

    logo = tmp_path / "logo.svg"
    logo.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"/>')
    (tmp_path / "no-config.toml").write_text(
        f'[brand]\nname = "Aurora"\nlogo = "{logo}"\ncontact = "quality@aurora.example"\n'
    )
    assert cli("batch", "create", EXAMPLE_CSV).exit_code == 0
    r = cli("product", "show", "--gtin", GTIN, "--serial", "546CAWQDCR56", "--json")
    url = urlsplit(json.loads(r.stdout)["url"])
    app = create_app(resolve_settings())
    app.path, app.query = url.path, url.query  # type: ignore[attr-defined]
    yield app
    app.service.writer.close()


def test_the_service_answers_in_the_visitors_language(served: Any) -> None:
    path, query = served.path, served.query
    cases = [
        ({}, "", "en", "Genuine, being registered"),
        ({"Accept-Language": "de-DE,de;q=0.9,en;q=0.5"}, "", "de", "Original, Registrierung läuft"),
        ({"Accept-Language": "de"}, "&lang=es", "es", "Auténtico, en proceso de registro"),
        ({"Accept-Language": "fr"}, "&lang=xx", "fr", "Authentique, enregistrement en cours"),
        ({}, "&loc=Lisboa&lang=pt", "pt", "Autêntico, registro em andamento"),
    ]
    for headers, extra, language, heading in cases:
        status, found, body = _asgi(served, path, query + extra, headers)
        page = body.decode()
        assert status == 200 and found["content-type"].startswith("text/html")
        assert f'<html lang="{language}">' in page and _heading(page) == ("pending", heading)
        assert '<header class="brand" id="brand">' in page and "Aurora" in page
        assert re.search(r'<img src="/brand/logo\?v=[0-9a-f]{12}" alt="">', page)
    # JSON answers do not change with the language.
    answers = []
    for headers, extra, *_ in cases:
        _, _, body = _asgi(served, path, query + extra, {**headers, "Accept": "application/json"})
        answer = json.loads(body)
        del answer["scans"]  # one more each time
        answers.append(answer)
    assert all(answer == answers[0] for answer in answers)
    assert answers[0]["verdict"] == "pending" and answers[0]["reason"].startswith("genuine record")


def test_error_pages_are_branded_and_translated(served: Any) -> None:
    status, _, body = _asgi(served, "/nothing/here", "lang=fr")
    assert status == 404 and _heading(body.decode()) == ("error", "Non reconnu")
    status, _, body = _asgi(served, f"/01/{GTIN}/21/A/B", "", {"Accept-Language": "es"})
    page = body.decode()
    assert status == 400 and _heading(page) == ("error", "Enlace no válido")
    assert '<html lang="es">' in page and "Aurora" in page
    status, _, body = _asgi(served, f"/01/{GTIN}/21/NOSUCH", "t=AAAAAAAAAAAAAAAAAAAAAA&lang=de")
    page = body.decode()
    assert status == 404 and _heading(page) == ("unknown", "Nicht erkannt")
    href = _href(page, "report")
    assert href is not None and href.startswith("mailto:quality@aurora.example?subject=")
    assert quote(f"/01/{GTIN}/21/NOSUCH", safe="") in href


def test_the_logo_is_served_by_the_service(served: Any, tmp_path: Path) -> None:
    status, found, body = _asgi(served, "/brand/logo", "v=0123456789ab")
    assert status == 200 and found["content-type"] == "image/svg+xml"
    assert body == (tmp_path / "logo.svg").read_bytes()
    assert "no-store" not in found.get("cache-control", "")


def test_no_logo_no_logo_route(cli, keyed) -> None:
    from provmint.server import create_app

    assert cli("batch", "create", EXAMPLE_CSV).exit_code == 0
    app = create_app(resolve_settings())
    try:
        status, _, body = _asgi(app, "/brand/logo", "", {"Accept": "application/json"})
        assert status == 404 and json.loads(body)["error"]["message"] == "no such page"
        status, _, body = _asgi(app, "/01/x", "")
        assert status == 400 and "<header" not in body.decode()  # no brand: no header
    finally:
        app.service.writer.close()
