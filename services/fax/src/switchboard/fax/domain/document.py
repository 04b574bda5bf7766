"""Turning a received fax file into page images, within limits.

A fax file is untrusted input. Its TIFF structure is read by hand first (header and IFD chain
only, no pixel is decoded), so a page count, a pixel count or image data that points past the end
of the file is refused before Pillow allocates anything. PDFs are opened with PDFium, which
reports encryption and damage, and each page's size is checked before it is rendered.
Everything refused raises `Rejected` with a code and a reason a person can act on.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field

from PIL import Image

# TIFF tags and compression schemes a fax uses.
_WIDTH, _LENGTH, _COMPRESSION = 256, 257, 259
_STRIP_OFFSETS, _STRIP_BYTES = 273, 279
_TILE_OFFSETS, _TILE_BYTES = 324, 325
_T4_OPTIONS = 292
COMPRESSIONS = {
    1: "none",
    2: "ccitt-rle",
    3: "group3",
    4: "group4",
    5: "lzw",
    7: "jpeg",
    8: "deflate",
    32773: "packbits",
    32946: "deflate",
}
_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 16: 8}


class Rejected(Exception):
    """The document will not be routed; it is quarantined with `code` and `reason`."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 20 * 1024 * 1024
    max_pages: int = 50
    max_page_pixels: int = 40_000_000  # an A4 page at 400 dpi is ~15.5 M pixels
    max_total_pixels: int = 400_000_000
    pdf_dpi: float = 200.0
    thumbnail_width: int = 240


@dataclass
class Page:
    number: int
    image: Image.Image  # mode "1" or "L"
    dpi: tuple[float, float]
    png: bytes = b""
    thumbnail_png: bytes = b""
    ocr_png: bytes = b""  # the page resampled for OCR (see ocr_image)
    ocr_dpi: float = 0.0  # ocr_png's resolution


@dataclass
class Document:
    format: str  # tiff or pdf
    compression: str
    pages: list[Page] = field(default_factory=list)


def sniff(data: bytes) -> str:
    """Return "tiff" or "pdf" from the file's magic bytes, or raise Rejected."""
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if data[:4] in (b"II+\x00", b"MM\x00+"):
        raise Rejected("unsupported", "BigTIFF files are not fax documents")
    if b"%PDF-" in data[:1024]:
        return "pdf"
    raise Rejected("unsupported", "the file is neither a TIFF nor a PDF (unrecognised header)")


@dataclass
class TiffPage:
    width: int
    height: int
    compression: str
    data_end: int  # the byte after the last strip or tile


def inspect_tiff(data: bytes, limits: Limits) -> list[TiffPage]:
    """Read the IFD chain without decoding pixels; raise Rejected when a limit or the structure
    is violated (too many pages or pixels, image data beyond the end of the file, an IFD loop)."""
    endian = "<" if data[:2] == b"II" else ">"
    size = len(data)

    def unpack(fmt: str, offset: int) -> tuple[int, ...]:
        if offset < 0 or offset + struct.calcsize(endian + fmt) > size:
            raise Rejected(
                "corrupt", f"the TIFF structure points past the end of the file at byte {offset}"
            )
        return struct.unpack_from(endian + fmt, data, offset)

    def values(kind: int, count: int, raw_offset: int, entry: int) -> list[int]:
        width = _TYPE_SIZES.get(kind, 1) * count
        fmt = {3: "H", 4: "I", 16: "Q"}.get(kind)
        if fmt is None:
            return []
        start = entry + 8 if width <= 4 else raw_offset
        if count > 1_000_000:
            raise Rejected("corrupt", f"a TIFF tag claims {count} values")
        return list(unpack(f"{count}{fmt}", start))

    pages: list[TiffPage] = []
    offset = unpack("I", 4)[0]
    seen: set[int] = set()
    total_pixels = 0
    while offset:
        if offset in seen:
            raise Rejected("corrupt", "the TIFF's page directory chain loops back on itself")
        seen.add(offset)
        if len(pages) >= limits.max_pages:
            raise Rejected("too_many_pages", f"more than {limits.max_pages} pages (the limit)")
        (count,) = unpack("H", offset)
        tags: dict[int, list[int]] = {}
        for i in range(count):
            entry = offset + 2 + 12 * i
            tag, kind, n, raw = unpack("HHII", entry)
            if tag in (_WIDTH, _LENGTH, _COMPRESSION, _STRIP_OFFSETS, _STRIP_BYTES,
                       _TILE_OFFSETS, _TILE_BYTES, _T4_OPTIONS):  # fmt: skip
                tags[tag] = values(kind, n, raw, entry)
        number = len(pages) + 1
        width = (tags.get(_WIDTH) or [0])[0]
        height = (tags.get(_LENGTH) or [0])[0]
        if width <= 0 or height <= 0:
            raise Rejected("corrupt", f"page {number} has no width or height")
        pixels = width * height
        if pixels > limits.max_page_pixels:
            raise Rejected(
                "too_many_pixels",
                f"page {number} is {width} × {height} pixels ({pixels:,}); the limit is "
                f"{limits.max_page_pixels:,} per page (a decompression bomb is refused unread)",
            )
        total_pixels += pixels
        if total_pixels > limits.max_total_pixels:
            raise Rejected(
                "too_many_pixels",
                f"the pages hold more than {limits.max_total_pixels:,} pixels in all",
            )
        code = (tags.get(_COMPRESSION) or [1])[0]
        compression = COMPRESSIONS.get(code, f"compression-{code}")
        if code == 3 and (tags.get(_T4_OPTIONS) or [0])[0] & 1:
            compression = "group3-2d"
        offsets = tags.get(_STRIP_OFFSETS) or tags.get(_TILE_OFFSETS) or []
        lengths = tags.get(_STRIP_BYTES) or tags.get(_TILE_BYTES) or []
        if not offsets or len(offsets) != len(lengths):
            raise Rejected("corrupt", f"page {number} has no readable image data layout")
        end = max(o + n for o, n in zip(offsets, lengths, strict=True))
        if end > size:
            raise Rejected(
                "corrupt",
                f"page {number}'s image data ends at byte {end:,} but the file has only "
                f"{size:,} bytes (truncated)",
            )
        pages.append(TiffPage(width, height, compression, end))
        (offset,) = unpack("I", offset + 2 + 12 * count)
    if not pages:
        raise Rejected("corrupt", "the TIFF has no pages")
    return pages


def _dpi(image: Image.Image) -> tuple[float, float]:
    dpi = image.info.get("dpi") or (204.0, 196.0)
    try:
        x, y = float(dpi[0]), float(dpi[1])
    except (TypeError, ValueError, IndexError):
        return 204.0, 196.0
    return (x if x > 0 else 204.0, y if y > 0 else 196.0)


def _decode_tiff(data: bytes, limits: Limits) -> Document:
    layout = inspect_tiff(data, limits)
    pages: list[Page] = []
    try:
        with Image.open(io.BytesIO(data)) as tiff:
            for index in range(len(layout)):
                tiff.seek(index)
                image = tiff.copy()
                image.load()
                if image.mode not in ("1", "L"):
                    image = image.convert("L")
                pages.append(Page(index + 1, image, _dpi(tiff)))
    except Rejected:
        raise
    except Exception as exc:  # Pillow/libtiff errors name the damage; keep it in the reason
        raise Rejected(
            "corrupt", f"page {len(pages) + 1} cannot be decoded: {type(exc).__name__}: {exc}"
        ) from exc
    return Document("tiff", layout[0].compression, pages)


def _decode_pdf(data: bytes, limits: Limits) -> Document:
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        text = str(exc)
        if "password" in text.lower():
            raise Rejected(
                "encrypted", "the PDF is password-protected; it cannot be read without the password"
            ) from exc
        raise Rejected("corrupt", f"the PDF cannot be opened: {text}") from exc
    try:
        count = len(pdf)
        if count == 0:
            raise Rejected("corrupt", "the PDF has no pages")
        if count > limits.max_pages:
            raise Rejected("too_many_pages", f"{count} pages; the limit is {limits.max_pages}")
        scale = limits.pdf_dpi / 72.0
        pages: list[Page] = []
        total = 0
        for index in range(count):
            page = pdf[index]
            w, h = page.get_size()
            pixels = int(w * scale) * int(h * scale)
            if pixels > limits.max_page_pixels:
                raise Rejected(
                    "too_many_pixels",
                    f"page {index + 1} is {w:.0f} × {h:.0f} pt, {pixels:,} pixels at "
                    f"{limits.pdf_dpi:.0f} dpi; the limit is {limits.max_page_pixels:,}",
                )
            total += pixels
            if total > limits.max_total_pixels:
                raise Rejected(
                    "too_many_pixels",
                    f"the pages hold more than {limits.max_total_pixels:,} pixels",
                )
            image = page.render(scale=scale, grayscale=True).to_pil().convert("L")
            pages.append(Page(index + 1, image, (limits.pdf_dpi, limits.pdf_dpi)))
            page.close()
        return Document("pdf", "pdf", pages)
    except Rejected:
        raise
    except Exception as exc:
        raise Rejected(
            "corrupt", f"the PDF cannot be rendered: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        pdf.close()


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG", optimize=False)
    return out.getvalue()


def _thumbnail(image: Image.Image, dpi: tuple[float, float], width: int) -> Image.Image:
    # Fax pages are often non-square pixels (204 × 98 or 196 dpi): correct the aspect first.
    gray = image.convert("L")
    height = max(1, round(gray.height * (dpi[0] / dpi[1]) * width / gray.width))
    return gray.resize((width, height), Image.Resampling.LANCZOS)


# Height of a line of text's ink, in pixels, that tesseract reads best: its models are trained
# on text at about 300 dpi, where 12 pt CJK glyphs stand 45-55 pixels tall.
OCR_LINE_HEIGHT = 54.0
OCR_DPI = 300.0  # for a page with no text lines to measure
OCR_THRESHOLD = 160


def line_height(gray: Image.Image) -> float:
    """The median height in pixels of the page's text lines (runs of rows with ink, 0 if none):
    the body text's size, which single large titles or small header lines do not move."""
    ink = gray.point(lambda v: 255 if v < 128 else 0)
    rows = list(ink.resize((1, ink.height), Image.Resampling.BOX).tobytes())
    heights: list[int] = []
    run = 0
    for value in [*rows, 0]:
        if value:
            run += 1
        elif run:
            if run >= 3:  # specks and rules are not lines
                heights.append(run)
            run = 0
    heights.sort()
    return float(heights[len(heights) // 2]) if heights else 0.0


def ocr_image(
    image: Image.Image, dpi: tuple[float, float], max_pixels: int = Limits.max_page_pixels
) -> tuple[Image.Image, float]:
    """The page as the OCR engine reads it best, and its resolution: grey, with square pixels,
    scaled so its text lines stand OCR_LINE_HEIGHT pixels tall.

    A fax at standard resolution has pixels twice as tall as they are wide (204 × 98 dpi), and
    tesseract assumes square ones: read as it is, every glyph is squashed to half its height and
    CJK text comes out garbled. Resampling to square pixels with a smoothing filter restores the
    glyphs' shapes, and scaling by
    the measured line height rather than to a fixed dpi brings small print and large print alike
    to the size the models were trained at. The result never has more than `max_pixels` (a
    file's resolution tags are the sender's)."""
    gray = image.convert("L")
    square = gray.resize(
        (gray.width, max(1, round(gray.height * dpi[0] / dpi[1]))), Image.Resampling.LANCZOS
    )
    measured = line_height(square)
    scale = OCR_LINE_HEIGHT / measured if measured else OCR_DPI / dpi[0]
    scale = min(max(scale, 0.5), 4.0)
    width, height = square.width * scale, square.height * scale
    if width * height > max_pixels:
        shrink = (max_pixels / (width * height)) ** 0.5
        width, height, scale = width * shrink, height * shrink, scale * shrink
    size = (max(1, round(width)), max(1, round(height)))
    resampled = square if size == square.size else gray.resize(size, Image.Resampling.LANCZOS)
    # A fax is black and white: back to two levels, the threshold on the light side so that
    # thin strokes the smoothing greyed stay joined.
    return resampled.point(lambda v: 255 if v > OCR_THRESHOLD else 0), dpi[0] * scale


def normalise(data: bytes, limits: Limits) -> Document:
    """Decode `data` (TIFF class F or PDF) into pages with PNG images and thumbnails.

    Blocking and CPU-bound: run it in a worker thread. Raises Rejected for anything refused."""
    if len(data) > limits.max_bytes:
        raise Rejected(
            "too_large", f"the file has {len(data):,} bytes; the limit is {limits.max_bytes:,}"
        )
    if not data:
        raise Rejected("corrupt", "the file is empty")
    kind = sniff(data)
    # Pixel counts were checked against `limits` before any decoding, so Pillow's own
    # decompression-bomb guard (which is global state) is left as it is.
    document = _decode_tiff(data, limits) if kind == "tiff" else _decode_pdf(data, limits)
    for page in document.pages:
        page.png = _png(page.image)
        page.thumbnail_png = _png(_thumbnail(page.image, page.dpi, limits.thumbnail_width))
        resampled, page.ocr_dpi = ocr_image(page.image, page.dpi, limits.max_page_pixels)
        page.ocr_png = _png(resampled)
    return document
