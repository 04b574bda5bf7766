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


# Letters as a customer's fax machine sends them: body text at 12 pt under a 9 pt header line
# (date, numbers, page), scanned at fax resolution: 204 dpi across and 98 dpi ("standard") or
# 196 dpi ("fine") down, so a standard page's pixels are twice as tall as they are wide.
STANDARD = (204, 98)
FINE = (204, 196)

LETTERS: dict[str, tuple[str, list[str]]] = {
    "ko": (
        "2026-12-03 10:15  FROM 02-555-0134  TO 1588-0000  P.1/1",
        [
            "청구서 문의드립니다.",
            "이번 달 요금 청구서의 금액이 잘못 나왔습니다.",
            "확인 후 연락 부탁드립니다. 고객번호 1234-5678",
            "서울특별시 강남구 테헤란로 123",
            "김민준 드림",
        ],
    ),
    "zh": (
        "2026-12-03 10:20  FROM 0411-8888-1234  TO 400-800-0000  P.1/1",
        [
            "关于账单的问题",
            "这个月的账单金额不对，比上个月多了三百元。",
            "请尽快帮我核实一下，谢谢。客户编号 8765-4321",
            "大连市中山区人民路 56 号",
            "王芳",
        ],
    ),
    "ja": (
        "2026-12-03 10:25  FROM 03-5555-0199  TO 0120-000-000  P.1/1",
        [
            "請求書についてのお問い合わせ",
            "今月の請求書の金額が間違っているようです。",
            "ご確認のうえ、ご連絡をお願いいたします。",
            "お客様番号 2468-1357",
            "東京都千代田区丸の内 1-2-3  佐藤花子",
        ],
    ),
    "en": (
        "2026-12-03 10:30  FROM +1 212 555 0147  TO +1 800 555 0100  P.1/1",
        [
            "Subject: question about my invoice",
            "The invoice for this month shows the wrong amount.",
            "I was charged twice for the same service in November.",
            "Please check it and call me back. Customer number 5512-0087",
            "Regards, Emily Carter, 41 Park Avenue, New York",
        ],
    ),
}


def fax_letter(
    header: str,
    lines: list[str],
    resolution: tuple[int, int] = STANDARD,
    points: float = 12.0,
    oversample: int = 4,
) -> Image.Image:
    """One 1-bit page, 1728 dots across, as a fax machine scans a printed letter: rendered at
    `oversample` × the fax resolution across, then sampled down to `resolution` (which may have
    non-square pixels) and thresholded. The header line is 9 pt, the body `points`."""
    fine = resolution[0] * oversample  # dots per inch of the rendering, both ways
    width = 1728 * oversample
    height = int(fine * 11.69)  # A4
    image = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(image)
    draw.text((int(0.3 * fine), int(0.15 * fine)), header, font=_points(9, fine), fill=0)
    body = _points(points, fine)
    y = int(0.75 * fine)
    for line in lines:
        draw.text((int(0.8 * fine), y), line, font=body, fill=0)
        y += int(points / 72 * fine * 1.8)
    scanned = image.resize((1728, round(height * resolution[1] / fine)), Image.Resampling.BOX)
    return scanned.point(lambda v: 255 if v > 140 else 0).convert("1")


def _points(points: float, dpi: float) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(FONT, round(points / 72 * dpi))


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


def character_accuracy(expected: str, read: str) -> float:
    """1 - (edit distance / characters expected), white space ignored: the share of the
    expected characters that OCR read right (insertions count against it too)."""
    want = "".join(expected.split())
    got = "".join(read.split())
    previous = list(range(len(got) + 1))
    for i, a in enumerate(want, 1):
        current = [i]
        for j, b in enumerate(got, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a != b)))
        previous = current
    return max(0.0, 1 - previous[-1] / len(want)) if want else float(not got)
