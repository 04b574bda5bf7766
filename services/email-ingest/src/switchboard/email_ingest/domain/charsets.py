"""Decoding text in whatever charset a mail declares, including the labels Python does not know.

Mail labels charsets loosely: Outlook writes ks_c_5601-1987 for Windows code page 949, Chinese
mailers write GB2312 for text that needs GBK or GB18030, Japanese ones write Shift_JIS for CP932.
Each label maps to the superset codec that real mail needs; when the declared charset still fails,
the bytes are tried against the likely candidates before anything is replaced.
"""

from __future__ import annotations

import codecs

# label -> codecs to try, in order (supersets first).
_FAMILIES: dict[str, tuple[str, ...]] = {
    "ks_c_5601-1987": ("cp949",),
    "ks_c_5601": ("cp949",),
    "ks_c_5601_1987": ("cp949",),
    "ksc5601": ("cp949",),
    "ksc_5601": ("cp949",),
    "euc-kr": ("cp949",),
    "euckr": ("cp949",),
    "x-euc-kr": ("cp949",),
    "windows-949": ("cp949",),
    "x-windows-949": ("cp949",),
    "uhc": ("cp949",),
    "iso-2022-kr": ("iso2022_kr",),
    "csiso2022kr": ("iso2022_kr",),
    "gb2312": ("gb18030",),
    "gb_2312-80": ("gb18030",),
    "csgb2312": ("gb18030",),
    "euc-cn": ("gb18030",),
    "x-euc-cn": ("gb18030",),
    "gbk": ("gb18030",),
    "x-gbk": ("gb18030",),
    "cp936": ("gb18030",),
    "windows-936": ("gb18030",),
    "gb18030": ("gb18030",),
    "hz-gb-2312": ("hz",),
    "big5": ("big5hkscs", "cp950"),
    "x-big5": ("big5hkscs", "cp950"),
    "cn-big5": ("big5hkscs", "cp950"),
    "big5-hkscs": ("big5hkscs",),
    "shift_jis": ("cp932", "shift_jis_2004"),
    "shift-jis": ("cp932", "shift_jis_2004"),
    "sjis": ("cp932",),
    "x-sjis": ("cp932",),
    "ms_kanji": ("cp932",),
    "windows-31j": ("cp932",),
    "iso-2022-jp": ("iso2022_jp", "iso2022_jp_ext", "iso2022_jp_2", "iso2022_jp_2004"),
    "csiso2022jp": ("iso2022_jp", "iso2022_jp_ext", "iso2022_jp_2"),
    "iso-2022-jp-2": ("iso2022_jp_2",),
    "euc-jp": ("euc_jp", "euc_jis_2004"),
    "utf-7": ("utf-7",),
    "unicode-1-1-utf-7": ("utf-7",),
    "x-utf-7": ("utf-7",),
    "utf8": ("utf-8",),
    "utf-8": ("utf-8",),
    # WHATWG: Latin-1 labels mean Windows-1252 in practice; ASCII labels often hide UTF-8.
    "iso-8859-1": ("cp1252",),
    "latin1": ("cp1252",),
    "us-ascii": ("utf-8", "cp1252"),
    "ascii": ("utf-8", "cp1252"),
}

# What undeclared or mislabelled bytes are tried as, after UTF-8; on a tie, the earlier wins.
_SNIFF = ("utf-8", "cp949", "gb18030", "cp932", "big5hkscs", "cp1252", "latin-1")
# Declared labels for which valid UTF-8 wins over the declaration (mailers label UTF-8 text as
# ASCII or Latin-1 far more often than Latin-1 text happens to be valid UTF-8).
_WESTERN = {"cp1252", "latin-1", "iso8859-1", "ascii"} | {f"iso8859-{n}" for n in range(2, 17)}
_WESTERN_COMMON = set("ŒœŠšŽžŸ’‘“”„–—…€•«»°§©®±²³µ¿¡·´¨ªº½¼¾£¥¢ßÆæØøÐðÞþ")

_KR_DESIGNATOR = b"\x1b$)C"
_SAMPLE_CHARS = 20_000  # plausibility is judged on this much text


def normalise_label(label: str | None) -> str:
    return (label or "").strip().strip("\"'").lower()


def candidates(label: str | None) -> tuple[str, ...]:
    """The codecs to try for a declared charset label ('' when undeclared)."""
    name = normalise_label(label)
    if not name:
        return ()
    if name in _FAMILIES:
        return _FAMILIES[name]
    try:
        return (codecs.lookup(name).name,)
    except (LookupError, ValueError):  # unknown, or not a name at all (a NUL inside)
        return ()


def _strict(data: bytes, codec: str) -> str | None:
    if codec == "iso2022_kr" and _KR_DESIGNATOR not in data and b"\x0e" in data:
        # The designator is sent once per message; a part cut from the middle lacks it.
        data = _KR_DESIGNATOR + data
    try:
        text = data.decode(codec)
    except (UnicodeDecodeError, LookupError):
        return None
    if codec == "utf-7" and "\ufffd" in text:
        return None
    return text


def _weight(ch: str, codec: str) -> float:
    """How likely `ch` is as one character of real text decoded as `codec` (0..1)."""
    o = ord(ch)
    if 0x3000 <= o <= 0x303F or 0xFF01 <= o <= 0xFF5E:  # CJK punctuation and full-width forms
        return 1.0 if codec not in ("cp1252", "latin-1") else 0.1
    if codec in ("cp1252", "latin-1"):
        if ch in _WESTERN_COMMON or (0xC0 <= o <= 0xFF and o not in (0xD7, 0xF7)):
            return 1.0
        return 0.1 if o < 0xA0 else 0.4
    if codec == "cp949":
        if 0xAC00 <= o <= 0xD7A3:
            # Beyond the 2,350 syllables of KS X 1001 (CPython spells those as 8-byte sequences).
            return 1.0 if _encoded_length(ch, "euc_kr") == 2 else 0.2
        return 0.3 if 0x4E00 <= o <= 0x9FFF else 0.1
    if codec == "cp932":
        if 0x3040 <= o <= 0x30FF:
            return 1.0
        if 0x4E00 <= o <= 0x9FFF:
            return 1.0 if 0x88 <= _lead(ch, "shift_jis") <= 0x9F else 0.5
        return 0.3 if 0xFF61 <= o <= 0xFF9F else 0.1  # half-width kana
    if codec == "gb18030":
        if 0x4E00 <= o <= 0x9FFF:
            lead = _lead(ch, "gb2312")
            return 1.0 if 0xB0 <= lead <= 0xD7 else 0.6 if lead else 0.3
        return 0.1
    if codec == "big5hkscs":
        if 0x4E00 <= o <= 0x9FFF:
            lead = _lead(ch, "big5")
            return 1.0 if 0xA4 <= lead <= 0xC6 else 0.5 if lead else 0.2
        return 0.1
    return 1.0  # UTF-8 decodes only what was written as such


def _encoded_length(ch: str, codec: str) -> int:
    try:
        return len(ch.encode(codec))
    except UnicodeEncodeError:
        return 0


def _lead(ch: str, codec: str) -> int:
    try:
        return ch.encode(codec)[0]
    except (UnicodeEncodeError, IndexError):
        return 0


def plausibility(text: str, codec: str) -> float:
    """How much `text` (decoded as `codec`) looks like real writing, 0..1; ASCII-only text is 1.

    Western text has its accented letters one or two at a time between ASCII letters; CJK text has
    runs of them. So long runs count against Windows-1252, and a CJK character wedged between two
    ASCII letters (as "Müller" read as GB18030 gives) counts against the CJK codecs."""
    total = 0.0
    count = 0
    run = 0
    chars = list(text[:_SAMPLE_CHARS])
    for i, ch in enumerate(chars):
        if ord(ch) < 0x80:
            run = 0
            continue
        run += 1
        w = _weight(ch, codec)
        if codec in ("cp1252", "latin-1") and run > 2 and w == 1.0:
            w = 0.2
        if codec not in ("cp1252", "latin-1", "utf-8") and 0 < i < len(chars) - 1:
            if chars[i - 1].isascii() and chars[i - 1].isalpha():
                if chars[i + 1].isascii() and chars[i + 1].isalpha():
                    w = min(w, 0.1)
        total += w
        count += 1
    return total / count if count else 1.0


def sniff(data: bytes, hints: tuple[str, ...] = ()) -> tuple[str, str] | None:
    """(text, codec) for undeclared bytes: valid UTF-8 first, then the hinted codecs when the text
    they give is plausible, then the most plausible of the usual mail charsets."""
    text = _strict(data, "utf-8")
    if text is not None:
        return text, "utf-8"
    best: tuple[float, str, str] | None = None
    for codec in dict.fromkeys(hints + _SNIFF):
        text = _strict(data, codec)
        if text is None:
            continue
        score = plausibility(text, codec) + (0.05 if codec in hints else 0.0)
        if codec in hints and score >= 0.75:
            return text, codec
        if best is None or score > best[0]:
            best = (score, text, codec)
    return (best[1], best[2]) if best else None


def decode_8bit(
    data: bytes, hints: list[str] | tuple[str, ...] = (), problems: list[str] | None = None
) -> str:
    """Raw bytes without a label of their own (8-bit header bytes): valid UTF-8, then the
    message's declared charsets (`hints`), then detection; never raises."""
    if not data.strip(b"\t\r\n -~"):
        return data.decode("ascii", "replace")
    codecs_hinted: tuple[str, ...] = ()
    for label in hints:
        codecs_hinted += candidates(label)
    found = sniff(data, tuple(dict.fromkeys(codecs_hinted)))
    if found is not None:
        return found[0]
    text = data.decode("utf-8", "replace")
    if problems is not None:
        problems.append(f"{text.count(chr(0xFFFD))} undecodable bytes in raw 8-bit text replaced")
    return text


def decode(data: bytes, label: str | None, problems: list[str] | None = None) -> str:
    """Decode `data` declared as `label`; never raises. Mislabelled bytes are decoded as what they
    are, and anything still undecodable is replaced; either is noted in `problems`."""
    declared = candidates(label)
    name = normalise_label(label)
    if name and not declared and problems is not None:
        problems.append(f"unknown charset {name!r}")
    if declared and declared[0] in _WESTERN and not data.isascii():
        text = _strict(data, "utf-8")
        if text is not None:
            if (
                problems is not None
                and declared[0] != "utf-8"
                and name not in ("us-ascii", "ascii")
            ):
                problems.append(f"declared {name} but decoded as utf-8")
            return text
    for codec in declared:
        text = _strict(data, codec)
        if text is None:
            continue
        if codec in _WESTERN and plausibility(text, codec) < 0.5:
            # A Western label on what reads as CJK mojibake: Windows-1252 decodes any bytes, so
            # the label is no proof; take the detector's reading when it is convincing.
            found = sniff(data)
            if found is not None and plausibility(found[0], found[1]) >= 0.9:
                if problems is not None:
                    problems.append(f"declared {name} but decoded as {found[1]}")
                return found[0]
        return text
    if not data.strip(b"\t\r\n -~"):
        # Pure ASCII (this includes unshifted ISO-2022 text that failed above only on control bytes).
        return data.decode("ascii", "replace")
    found = sniff(data, tuple(c for c in declared if c not in ("utf-8",)))
    if found is not None:
        text, codec = found
        if name and declared and problems is not None:
            problems.append(f"declared {name} but decoded as {codec}")
        return text
    fallback = declared[0] if declared else "utf-8"
    text = data.decode(fallback, "replace")
    if problems is not None:
        problems.append(
            f"{text.count(chr(0xFFFD))} undecodable bytes in {name or 'undeclared'} text replaced"
        )
    return text
