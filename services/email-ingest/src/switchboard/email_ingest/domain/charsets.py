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

# What undeclared or mislabelled bytes are tried as, after UTF-8.
_SNIFF = ("utf-8", "cp949", "gb18030", "cp932", "big5hkscs")

_KR_DESIGNATOR = b"\x1b$)C"


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
    except LookupError:
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


def decode(data: bytes, label: str | None, problems: list[str] | None = None) -> str:
    """Decode `data` declared as `label`; never raises. Mislabelled bytes are decoded as what they
    are, and anything still undecodable is replaced; either is noted in `problems`."""
    declared = candidates(label)
    name = normalise_label(label)
    if name and not declared and problems is not None:
        problems.append(f"unknown charset {name!r}")
    for codec in declared:
        text = _strict(data, codec)
        if text is not None:
            return text
    if not data.strip(b"\t\r\n -~"):
        # Pure ASCII (this includes unshifted ISO-2022 text that failed above only on control bytes).
        return data.decode("ascii", "replace")
    for codec in _SNIFF:
        if codec in declared:
            continue
        text = _strict(data, codec)
        if text is not None:
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
