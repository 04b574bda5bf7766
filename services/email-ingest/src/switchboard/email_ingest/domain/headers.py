"""Header decoding: RFC 2047 encoded words (adjacent words joined before decoding, since mailers
split multi-byte characters across them), raw 8-bit headers, RFC 2231 parameters."""

from __future__ import annotations

import base64
import binascii
import quopri
import re
from email.message import Message
from email.utils import getaddresses, parseaddr

from switchboard.email_ingest.domain import charsets

MAX_HEADER_CHARS = 16 * 1024

_WORD = re.compile(rb"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_MSGID = re.compile(r"<([^<>\s]{1,998})>")


def _to_bytes(value: str) -> bytes:
    # compat32 keeps raw 8-bit header bytes as surrogate escapes.
    return value.encode("ascii", "surrogateescape") if value else b""


def _word_bytes(encoding: bytes, payload: bytes) -> bytes:
    if encoding in (b"b", b"B"):
        cleaned = re.sub(rb"[^A-Za-z0-9+/]", b"", payload)
        cleaned += b"=" * (-len(cleaned) % 4)
        try:
            return base64.b64decode(cleaned)
        except (binascii.Error, ValueError):
            return payload
    return quopri.decodestring(payload.replace(b"_", b" "), header=True)


def decode_header(value: str | None, fallback: str = "", problems: list[str] | None = None) -> str:
    """The text of a header; encoded words decoded, raw 8-bit bytes decoded as `fallback` (or
    sniffed), never raising."""
    if not value:
        return ""
    data = _to_bytes(str(value))
    if len(data) > MAX_HEADER_CHARS:
        if problems is not None:
            problems.append(f"header of {len(data)} bytes truncated to {MAX_HEADER_CHARS}")
        data = data[:MAX_HEADER_CHARS]
    out: list[str] = []
    pos = 0
    pending: bytes = b""
    pending_charset = ""

    def flush() -> None:
        nonlocal pending, pending_charset
        if pending:
            out.append(charsets.decode(pending, pending_charset or "utf-8", problems))
        pending, pending_charset = b"", ""

    for match in _WORD.finditer(data):
        between = data[pos : match.start()]
        charset = match.group(1).decode("ascii", "replace").split("*", 1)[0]
        if between and not (pending and between.strip() == b""):
            flush()
            out.append(charsets.decode(between, fallback or "utf-8", problems))
        elif between.strip() == b"" and not pending and out == [] and between:
            out.append(between.decode("ascii", "replace"))
        decoded = _word_bytes(match.group(2), match.group(3))
        if pending and charsets.normalise_label(charset) != pending_charset:
            flush()
        pending += decoded
        pending_charset = charsets.normalise_label(charset)
        pos = match.end()
    flush()
    rest = data[pos:]
    if rest:
        out.append(charsets.decode(rest, fallback or "utf-8", problems))
    text = "".join(out)
    return re.sub(r"\s*[\r\n]+\s*", " ", text).strip()


def raw_all(msg: Message, name: str) -> list[str]:
    """A header's values as received (8-bit bytes as surrogate escapes): compat32's own getters
    wrap such values in Header objects that have already guessed their charset."""
    lower = name.lower()
    return [str(v) for k, v in getattr(msg, "_headers", []) if k.lower() == lower]


def raw(msg: Message, name: str) -> str | None:
    values = raw_all(msg, name)
    return values[0] if values else None


def addresses(
    msg: Message, name: str, fallback: str = "", problems: list[str] | None = None
) -> list[tuple[str, str]]:
    """(display name, lower-cased address) pairs of an address header."""
    values = raw_all(msg, name)
    result: list[tuple[str, str]] = []
    for display, addr in getaddresses([str(v) for v in values]):
        if "@" not in addr:
            continue
        addr_text = decode_header(addr, fallback, problems)
        result.append((decode_header(display, fallback, problems), addr_text.strip().lower()))
    return result


def first_address(
    msg: Message, name: str, fallback: str = "", problems: list[str] | None = None
) -> tuple[str, str]:
    found = addresses(msg, name, fallback, problems)
    if found:
        return found[0]
    display, addr = parseaddr(raw(msg, name) or "")
    return decode_header(display, fallback, problems), addr.strip().lower()


def message_ids(value: str | None) -> list[str]:
    """The Message-IDs in a header (In-Reply-To, References), in order, without angle brackets."""
    if not value:
        return []
    text = _to_bytes(str(value)).decode("ascii", "replace")
    return [m for m in _MSGID.findall(text)]


def param(part: Message, name: str, header: str, problems: list[str] | None = None) -> str:
    """A Content-Type/Content-Disposition parameter, RFC 2231 (charset'lang'%XX, continuations)
    or RFC 2047-in-quotes (as Outlook writes filenames) decoded."""
    try:
        value = part.get_param(name, header=header)
    except Exception:  # a malformed parameter list: treat as absent
        return ""
    if value is None:
        return ""
    if isinstance(value, tuple):
        charset, _lang, text = value
        raw = str(text).encode("raw-unicode-escape")
        return charsets.decode(raw, charset or "utf-8", problems)
    return decode_header(str(value).strip('"'), "", problems)
