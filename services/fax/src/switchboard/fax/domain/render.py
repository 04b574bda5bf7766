"""An agent's reply as a fax document: A4 pages at fine fax resolution (204 × 196 dpi), 1-bit,
written as a multi-page TIFF G4 (or PDF), with the case number on every page. The CJK font from
Debian's fonts-noto-cjk covers Korean, Chinese, Japanese and Latin text in one face."""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

FAX_DPI = (204, 196)
A4_PIXELS = (1728, 2292)  # 1728 dots across is the fax standard width; 297 mm at 196 dpi
DEFAULT_FONT = "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"
MARGIN = 100


def _font(path: str, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    if path and Path(path).exists():
        return ImageFont.truetype(path, size)
    return ImageFont.load_default(size)


def wrap(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int) -> list[str]:
    """Break `text` into lines no wider than `width` pixels: at spaces where there are any,
    anywhere between CJK characters (which have none)."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for char in paragraph:
            candidate = line + char
            if font.getlength(candidate) <= width or not line:
                line = candidate
                continue
            cut = line.rfind(" ")
            if char != " " and cut > 0:
                lines.append(line[:cut])
                line = line[cut + 1 :] + char
            else:
                lines.append(line)
                line = char.lstrip()
        lines.append(line)
    return lines


def render_pages(
    text: str,
    header: str,
    font_path: str = DEFAULT_FONT,
    size: int = 40,
) -> list[Image.Image]:
    """Render `text` under `header` into 1-bit A4 fax pages, "page n/N" at the foot of each."""
    width, height = A4_PIXELS
    body = _font(font_path, size)
    small = _font(font_path, max(16, size * 2 // 3))
    line_height = int(size * 1.5)
    top = MARGIN + line_height * 2
    per_page = max(1, (height - top - MARGIN - line_height) // line_height)
    lines = wrap(text, body, width - 2 * MARGIN)
    chunks = [lines[i : i + per_page] for i in range(0, len(lines), per_page)] or [[]]
    pages = []
    for number, chunk in enumerate(chunks, 1):
        page = Image.new("1", A4_PIXELS, 1)
        draw = ImageDraw.Draw(page)
        draw.text((MARGIN, MARGIN), header, font=small, fill=0)
        draw.line(
            (MARGIN, MARGIN + line_height, width - MARGIN, MARGIN + line_height), fill=0, width=3
        )
        y = top
        for line in chunk:
            draw.text((MARGIN, y), line, font=body, fill=0)
            y += line_height
        footer = f"{number}/{len(chunks)}"
        draw.text(
            (width - MARGIN - small.getlength(footer), height - MARGIN), footer, font=small, fill=0
        )
        pages.append(page)
    return pages


def reply_header(case_reference: str, to_number: str, at: datetime) -> str:
    case = f"Case {case_reference}" if case_reference else "Reply"
    return f"{case}  ·  To {to_number}  ·  {at:%Y-%m-%d %H:%M} UTC"


def to_tiff(
    pages: list[Image.Image],
    compression: str = "group4",
    t4_2d: bool = False,
    dpi: tuple[int, int] = FAX_DPI,
) -> bytes:
    """A multi-page TIFF class F at fax resolution (`dpi`, fine by default): group4 (T.6), or
    group3 (T.4; 1-D, or 2-D with `t4_2d`)."""
    out = io.BytesIO()
    extra: dict[str, Any] = {}
    if t4_2d:
        extra["tiffinfo"] = {292: 1}  # T4Options: 2-D coding
    pages[0].save(
        out,
        "TIFF",
        compression=compression,
        dpi=dpi,
        save_all=True,
        append_images=pages[1:],
        **extra,
    )
    return out.getvalue()


def to_pdf(pages: list[Image.Image]) -> bytes:
    out = io.BytesIO()
    pages[0].save(out, "PDF", resolution=FAX_DPI[0], save_all=True, append_images=pages[1:])
    return out.getvalue()
