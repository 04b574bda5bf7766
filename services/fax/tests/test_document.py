"""Normalising and refusing fax files; rules, identities and reply rendering (no network)."""

from __future__ import annotations

import io
import tracemalloc

import pytest
from PIL import Image

from switchboard.core.errors import InvalidArgument
from switchboard.fax.domain import identity, render, rules
from switchboard.fax.domain.document import Limits, Rejected, inspect_tiff, normalise
from switchboard.fax.samples import (
    ENGLISH,
    KOREAN,
    encrypted_pdf,
    fax_page,
    pdf,
    tiff,
    tiff_bomb,
    truncated,
)

LIMITS = Limits()


@pytest.mark.parametrize(
    ("compression", "t4_2d", "expected"),
    [("group4", False, "group4"), ("group3", False, "group3"), ("group3", True, "group3-2d")],
)
def test_multi_page_tiff_class_f_becomes_pages_and_thumbnails(
    compression: str, t4_2d: bool, expected: str
) -> None:
    data = tiff([fax_page(KOREAN), fax_page(ENGLISH)], compression, t4_2d)
    document = normalise(data, LIMITS)
    assert document.format == "tiff"
    assert document.compression == expected
    assert [p.number for p in document.pages] == [1, 2]
    first = document.pages[0]
    assert first.image.width == 1728
    assert first.dpi == (204.0, 196.0)
    assert Image.open(io.BytesIO(first.png)).size == first.image.size
    thumb = Image.open(io.BytesIO(first.thumbnail_png))
    assert thumb.width == LIMITS.thumbnail_width
    # the thumbnail corrects fax pixels (204 × 196 dpi) to the page's real aspect ratio
    expected_height = first.image.height * (204 / 196) * thumb.width / first.image.width
    assert abs(thumb.height - expected_height) <= 1


def test_pdf_pages_are_rendered() -> None:
    document = normalise(pdf([fax_page(ENGLISH), fax_page(KOREAN)]), LIMITS)
    assert document.format == "pdf"
    assert len(document.pages) == 2
    assert document.pages[0].image.width == pytest.approx(1728 / 204 * 200, abs=2)


def test_a_pixel_bomb_is_refused_from_its_header_without_allocating_it() -> None:
    bomb = tiff_bomb(100_000, 100_000)
    assert len(bomb) < 1024
    tracemalloc.start()
    try:
        with pytest.raises(Rejected) as refused:
            normalise(bomb, LIMITS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert refused.value.code == "too_many_pixels"
    assert "100000 × 100000" in refused.value.reason
    assert "10,000,000,000" in refused.value.reason
    assert peak < 5 * 1024 * 1024


def test_a_truncated_tiff_is_refused_saying_where_it_ends() -> None:
    data = tiff([fax_page(KOREAN), fax_page(ENGLISH)])
    with pytest.raises(Rejected) as refused:
        normalise(truncated(data), LIMITS)
    assert refused.value.code == "corrupt"
    assert "truncated" in refused.value.reason or "past the end" in refused.value.reason


def test_a_password_protected_pdf_is_refused() -> None:
    with pytest.raises(Rejected) as refused:
        normalise(encrypted_pdf(), LIMITS)
    assert refused.value.code == "encrypted"
    assert "password" in refused.value.reason


def test_limits_on_size_and_pages_and_format() -> None:
    data = tiff([fax_page(["1"]), fax_page(["2"]), fax_page(["3"])])
    with pytest.raises(Rejected) as too_many:
        normalise(data, Limits(max_pages=2))
    assert too_many.value.code == "too_many_pages"
    with pytest.raises(Rejected) as too_big:
        normalise(data, Limits(max_bytes=100))
    assert too_big.value.code == "too_large"
    with pytest.raises(Rejected) as other:
        normalise(b"GIF89a not a fax", LIMITS)
    assert other.value.code == "unsupported"
    with pytest.raises(Rejected) as many_pdf_pages:
        normalise(pdf([fax_page(["1"]), fax_page(["2"]), fax_page(["3"])]), Limits(max_pages=2))
    assert many_pdf_pages.value.code == "too_many_pages"


def test_an_ifd_loop_is_refused() -> None:
    data = bytearray(tiff([fax_page(["loop"])]))
    first_ifd = int.from_bytes(data[4:8], "little")
    count = int.from_bytes(data[first_ifd : first_ifd + 2], "little")
    next_at = first_ifd + 2 + 12 * count
    data[next_at : next_at + 4] = first_ifd.to_bytes(4, "little")
    with pytest.raises(Rejected) as refused:
        inspect_tiff(bytes(data), LIMITS)
    assert "loops" in refused.value.reason


def test_rules_set_skill_and_priority_ignoring_spaces_and_case() -> None:
    book = rules.load()
    demo = book.for_tenant("demo")
    decision = demo.decide("账 单 问 题\n紧急", "zh")
    assert decision.skills == ["billing"]
    assert decision.priority == 5
    assert decision.matched == ["billing", "urgent"]
    form = demo.decide("ACME CLAIM  FORM\npolicy no: 12345", "en")
    assert form.skills == ["billing"] and form.priority == 2
    assert demo.decide("hello", "en").skills == []


def test_bad_rules_are_refused_naming_the_entry() -> None:
    with pytest.raises(InvalidArgument) as bad:
        rules.parse("tenants:\n  demo:\n    rules:\n      - name: x\n        skill: billing\n")
    assert "tenants.demo.rules[0]" in str(bad.value)


def test_caller_id_and_csid_become_e164_identities() -> None:
    found = identity.identities("02-1234-5678", "+82 2 1234 5678", "KR")
    assert [i.value for i in found] == ["+82212345678"]
    assert identity.to_e164("ACME SALES", "KR") == ""
    assert identity.to_e164("0086 10 6552 9988", "KR") == "+861065529988"
    assert [i.value for i in identity.identities("", "+1 415 555 2671", "KR")] == ["+14155552671"]


def test_a_long_reply_renders_as_a_multi_page_g4_fax_and_pdf() -> None:
    text = "안녕하세요. 청구서를 다시 보내 드립니다. " * 100 + "\n" + "Thank you. " * 150
    pages = render.render_pages(text, "Case C-7K3M9Q", render.DEFAULT_FONT)
    assert len(pages) >= 2
    data = render.to_tiff(pages)
    layout = inspect_tiff(data, LIMITS)
    assert [p.compression for p in layout] == ["group4"] * len(pages)
    assert layout[0].width == 1728
    document = normalise(render.to_pdf(pages), LIMITS)
    assert len(document.pages) == len(pages)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("tenant: {}\n", "r.yaml:1: tenant: unknown field"),
        ("tenants:\n  demo:\n    rule: []\n", "r.yaml:3: tenants.demo.rule: unknown field"),
        (
            "tenants:\n  demo:\n    rules:\n      - keywords: [bill]\n        skil: billing\n",
            "r.yaml:5: tenants.demo.rules[0].skil: unknown field",
        ),
        (
            "tenants:\n  demo:\n    rules:\n      - keywords: [bill, '']\n",
            "r.yaml:4: tenants.demo.rules[0].keywords[1]: must be a string",
        ),
        (
            "tenants:\n  demo:\n    rules:\n      - {keywords: bill, priority: high}\n",
            "r.yaml:4: tenants.demo.rules[0].priority: must be an integer",
        ),
    ],
)
def test_a_mistake_in_the_rules_names_its_file_line_and_entry(text: str, error: str) -> None:
    with pytest.raises(InvalidArgument) as bad:
        rules.parse(text, "r.yaml")
    assert error in str(bad.value)
