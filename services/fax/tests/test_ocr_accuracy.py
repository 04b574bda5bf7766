"""OCR quality on faxes as customers' machines send them: printed letters in Korean, Chinese,
Japanese and English (12 pt body under a 9 pt header line) scanned at standard (204 × 98 dpi)
and fine (204 × 196 dpi) resolution, kept as TIFF G3 files in fixtures/ocr with the text each
page holds. Read by the service's own path (normalise, then Tesseract.read of the page prepared
for OCR) with Debian's tesseract and language packs."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from switchboard.fax import samples
from switchboard.fax.adapters.ocr import AUTOMATIC, SINGLE_COLUMN, Tesseract, segmentation
from switchboard.fax.domain import rules
from switchboard.fax.domain.document import Limits, normalise, ocr_image

CORPUS = Path(__file__).parent / "fixtures" / "ocr"
PAGES = sorted(p.name for p in CORPUS.glob("*.tif"))


def expected(name: str) -> str:
    return (CORPUS / f"{name.split('-')[0]}.txt").read_text("utf-8")


def test_the_corpus_has_every_language_at_both_resolutions() -> None:
    assert PAGES == [
        f"{lang}-{res}.tif" for lang in ("en", "ja", "ko", "zh") for res in ("fine", "standard")
    ]
    with Image.open(CORPUS / "ko-standard.tif") as page:
        assert page.info["dpi"] == (204, 98)


@pytest.mark.parametrize("name", PAGES)
async def test_a_clean_page_is_read_with_95_percent_of_its_characters_right(name: str) -> None:
    document = normalise((CORPUS / name).read_bytes(), Limits())
    page = document.pages[0]
    text = await Tesseract(workers=1).read(page.ocr_png, page.ocr_dpi)
    truth = expected(name)
    accuracy = samples.character_accuracy(truth, text.text)
    assert accuracy >= 0.95, f"{name}: {accuracy:.3f} of characters right:\n{text.text}"
    # the fax machine's header line (date, numbers, page) is read, not dropped as noise
    header = truth.splitlines()[0]
    assert samples.character_accuracy(header, text.text.splitlines()[0]) >= 0.9, text.text
    # and the letter's subject reaches the rules: every page is about billing
    decision = rules.load().for_tenant("demo").decide(text.text, name[:2])
    assert "billing" in decision.skills, (name, text.text)


def test_standard_resolution_pages_get_square_pixels_for_ocr() -> None:
    document = normalise((CORPUS / "ko-standard.tif").read_bytes(), Limits())
    page = document.pages[0]
    assert page.dpi == (204.0, 98.0)
    inches = (page.image.width / 204, page.image.height / 98)
    with Image.open(io.BytesIO(page.ocr_png)) as prepared:
        # stretched 2.08× down the page relative to across: the page's true shape again
        assert prepared.height / prepared.width == pytest.approx(inches[1] / inches[0], rel=0.01)
        assert page.image.height / page.image.width < 0.7  # as it came, squashed
    assert page.ocr_dpi == pytest.approx(prepared.width / inches[0], rel=0.01)


def test_the_ocr_image_never_exceeds_the_pixel_limit_whatever_the_resolution_tags_say() -> None:
    page = Image.new("1", (1728, 1000), 1)
    # a sender claiming 1 dpi down the page would otherwise ask for a 196× taller image
    prepared, dpi = ocr_image(page, (204.0, 1.0), max_pixels=4_000_000)
    assert prepared.width * prepared.height <= 4_000_000
    assert dpi > 0


def _columns(count: int) -> bytes:
    page = Image.new("L", (2480, 1200), 255)
    draw = ImageDraw.Draw(page)
    width = 2480 // count
    for column in range(count):
        for line in range(12):
            x = 150 + column * width
            draw.rectangle((x, 150 + line * 80, x + width - 400, 190 + line * 80), fill=0)
    out = io.BytesIO()
    page.save(out, "PNG")
    return out.getvalue()


def test_a_letter_is_read_as_one_column_and_a_two_column_page_by_layout_analysis() -> None:
    assert segmentation(_columns(1)) == SINGLE_COLUMN
    assert segmentation(_columns(2)) == AUTOMATIC
    letter = normalise((CORPUS / "en-standard.tif").read_bytes(), Limits()).pages[0]
    assert segmentation(letter.ocr_png) == SINGLE_COLUMN
