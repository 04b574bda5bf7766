"""Sample fax documents: text in Debian's Noto CJK font at fax resolution, as TIFF class F
(G3 1-D, G3 2-D, G4) and PDF, and hostile files (a pixel-bomb header, a truncated TIFF, a
password-protected PDF). Used by the tests, the benchmark and demos."""

from __future__ import annotations

import os
import struct

from PIL import Image, ImageDraw, ImageFont

from switchboard.fax.domain.render import to_pdf, to_tiff

FONT = "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"

# A few lines of large text per page: quick to read on two cores.
KOREAN = ["청구서 문의", "이번 달 요금 청구서가", "잘못 나왔습니다."]
CHINESE = ["账单问题", "这个月的账单金额不对", "请尽快帮我核实一下。"]
ENGLISH = ["Billing question", "My invoice for this month", "is wrong. Please check it."]


def fax_page(lines: list[str], size: int = 64) -> Image.Image:
    """One 1-bit page, 1728 dots wide (the fax standard), text in Noto Sans CJK."""
    font = ImageFont.truetype(FONT, size)
    page = Image.new("1", (1728, 120 + len(lines) * int(size * 1.7) + 120), 1)
    draw = ImageDraw.Draw(page)
    for i, line in enumerate(lines):
        draw.text((100, 120 + i * int(size * 1.7)), line, font=font, fill=0)
    return page


# The samples are encoded exactly as the service encodes what it sends.
tiff = to_tiff
pdf = to_pdf


def tiff_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A TIFF whose header claims width × height pixels of G4 data, in a few hundred bytes."""
    strip = b"\x00" * 64
    entries = [
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, 1, 1),
        (259, 3, 1, 4),
        (262, 3, 1, 0),
        (273, 4, 1, 8),  # strip offset: right after the header
        (277, 3, 1, 1),
        (278, 4, 1, height),
        (279, 4, 1, len(strip)),
    ]
    ifd_offset = 8 + len(strip)
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        packed = struct.pack("<H", value) + b"\x00\x00" if kind == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, count) + packed
    ifd += struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", ifd_offset) + strip + ifd


def truncated(data: bytes) -> bytes:
    """A real multi-page fax cut off part way (the image data of its last page is missing)."""
    return data[: len(data) * 2 // 3]


def encrypted_pdf() -> bytes:
    """A PDF with the standard security handler whose user password is not empty."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] >>",
        b"<< /Filter /Standard /V 1 /R 2 /O <"
        + os.urandom(32).hex().encode()
        + b"> /U <"
        + os.urandom(32).hex().encode()
        + b"> /P -44 >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    ident = os.urandom(16).hex().encode()
    out += (
        b"trailer\n<< /Size %d /Root 1 0 R /Encrypt 4 0 R /ID [<%s> <%s>] >>\nstartxref\n%d\n%%%%EOF\n"
        % (len(objects) + 1, ident, ident, xref)
    )
    return bytes(out)
