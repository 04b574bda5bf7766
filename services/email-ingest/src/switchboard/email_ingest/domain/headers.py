"""Header decoding: RFC 2047 encoded words (adjacent words joined before decoding, since mailers
split multi-byte characters across them), raw 8-bit headers, RFC 2231 parameters.

Read as lenient readers do: an encoded word missing its closing `?=` ends at the next space, a Q
word may hold spaces, and raw 8-bit bytes are decoded as valid UTF-8, else as one of the
charsets the message declares (`hints`) when that reads as real text, else as detected."""

from __future__ import annotations

import base64
import binascii
import quopri
import re
from collections.abc import Sequence
from email.message import Message
from email.utils import getaddresses, parseaddr

from switchboard.email_ingest.domain import charsets
from switchboard.email_ingest.domain.feedparse import IndexedMessage

MAX_HEADER_CHARS = 16 * 1024

_WORD = re.compile(rb"=\?([^?\s]+)\?([bBqQ])\?(?:([^?\r\n]*)\?=|([^?\s\"]+)(?=[\s\"]|$))")
_MSGID = re.compile(r"<([^<>\s]{1,998})>")
_ADDR_SPEC = re.compile(r"[^\s<>\"(),;:@\[\]]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")

# One address in its plainest forms (`a@b.c`, `<a@b.c>`, `Name Surname <a@b.c>`: ASCII letters,
# digits and single spaces in the name; dot-separated atoms of letters, digits, `_`, `+` and `-`
# in the address): what the stdlib's address parser and our header decoding make of it is the
# text as it stands, so it is read without them. Most mail's From and To look like this.
_PLAIN_ADDRESS = re.compile(
    r"(?:(?P<name>[A-Za-z0-9]+(?: [A-Za-z0-9]+)*) )?<(?P<bracketed>{addr})>|(?P<bare>{addr})".format(
        addr=r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
    )
)

Hints = str | Sequence[str]


def _hints(fallback: Hints) -> tuple[str, ...]:
    if isinstance(fallback, str):
        return (fallback,) if fallback else ()
    return tuple(h for h in fallback if h)


def _to_bytes(value: str) -> bytes:
    # compat32 keeps raw 8-bit header bytes as surrogate escapes (values it decoded itself, as
    # RFC 2231 parameters, may hold real characters).
    return value.encode("utf-8", "surrogateescape") if value else b""


def _word_bytes(encoding: bytes, payload: bytes) -> bytes:
    if encoding in (b"b", b"B"):
        cleaned = re.sub(rb"[^A-Za-z0-9+/]", b"", payload)
        cleaned += b"=" * (-len(cleaned) % 4)
        try:
            return base64.b64decode(cleaned)
        except (binascii.Error, ValueError):
            return payload
    return quopri.decodestring(payload.replace(b"_", b" "), header=True)


def decode_header(
    value: str | None, fallback: Hints = "", problems: list[str] | None = None
) -> str:
    """The text of a header; encoded words decoded, raw 8-bit bytes decoded as UTF-8 or one of the
    `fallback` charsets (or detected), never raising."""
    hints = _hints(fallback)
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
            out.append(charsets.decode_8bit(between, hints, problems))
        elif between.strip() == b"" and not pending and out == [] and between:
            out.append(between.decode("ascii", "replace"))
        payload = match.group(3) if match.group(3) is not None else match.group(4)
        decoded = _word_bytes(match.group(2), payload)
        if pending and charsets.normalise_label(charset) != pending_charset:
            flush()
        pending += decoded
        pending_charset = charsets.normalise_label(charset)
        pos = match.end()
    flush()
    rest = data[pos:]
    if rest:
        out.append(charsets.decode_8bit(rest, hints, problems))
    text = "".join(out)
    return re.sub(r"\s*[\r\n]+\s*", " ", text).strip()


def raw_all(msg: Message, name: str) -> list[str]:
    """A header's values as received (8-bit bytes as surrogate escapes): compat32's own getters
    wrap such values in Header objects that have already guessed their charset."""
    if isinstance(msg, IndexedMessage):
        return [str(v) for v in msg.raw_values(name)]
    lower = name.lower()
    return [str(v) for k, v in getattr(msg, "_headers", []) if k.lower() == lower]


def raw(msg: Message, name: str) -> str | None:
    values = raw_all(msg, name)
    return values[0] if values else None


def addresses(
    msg: Message, name: str, fallback: Hints = "", problems: list[str] | None = None
) -> list[tuple[str, str]]:
    """(display name, lower-cased address) pairs of an address header."""
    values = raw_all(msg, name)
    if len(values) == 1:
        plain = _PLAIN_ADDRESS.fullmatch(values[0])
        if plain is not None:
            address = plain.group("bracketed") or plain.group("bare")
            return [(plain.group("name") or "", address.lower())]
    result: list[tuple[str, str]] = []
    for display, addr in getaddresses([str(v) for v in values]):
        if "@" not in addr:
            continue
        addr_text = decode_header(addr, fallback, problems).strip()
        display_text = decode_header(display, fallback, problems)
        if any(c.isspace() for c in addr_text):
            # "Name addr@host" without angle brackets: the address is the address-like word.
            match = _ADDR_SPEC.search(addr_text)
            if match is None:
                continue
            display_text = display_text or (
                addr_text[: match.start()] + addr_text[match.end() :]
            ).strip(" \t<>\"'()")
            addr_text = match.group(0)
        result.append((display_text, addr_text.lower()))
    return result


def first_address(
    msg: Message, name: str, fallback: Hints = "", problems: list[str] | None = None
) -> tuple[str, str]:
    found = addresses(msg, name, fallback, problems)
    if found:
        return found[0]
    value = raw(msg, name) or ""
    display, addr = parseaddr(value)
    if "@" not in addr:
        # No angle brackets, an unclosed one, or 8-bit text around the address: take the first
        # address-like word and the rest as the name, as lenient readers do.
        text = decode_header(value, fallback, problems)
        match = _ADDR_SPEC.search(text)
        if match is None:
            return decode_header(display, fallback, problems), addr.strip().lower()
        rest = (text[: match.start()] + text[match.end() :]).strip(" \t<>\"'()")
        return rest.strip(), match.group(0).lower()
    return decode_header(display, fallback, problems), addr.strip().lower()


def message_ids(value: str | None) -> list[str]:
    """The Message-IDs in a header (In-Reply-To, References), in order, without angle brackets."""
    if not value:
        return []
    text = _to_bytes(str(value)).decode("ascii", "replace")
    return [m for m in _MSGID.findall(text)]


def param(
    part: Message,
    name: str,
    header: str,
    problems: list[str] | None = None,
    fallback: Hints = "",
) -> str:
    """A Content-Type/Content-Disposition parameter, RFC 2231 (charset'lang'%XX, continuations)
    or RFC 2047-in-quotes (as Outlook writes filenames) decoded."""
    raw_value = raw(part, header)
    if raw_value and not raw_value.isascii():
        # Raw 8-bit bytes in the value: the parser's own getter has already replaced them.
        found = re.search(rf"(?i)(?:^|;)\s*{re.escape(name)}\s*=\s*(\"[^\"]*\"?|[^;]*)", raw_value)
        if found:
            return decode_header(found.group(1).strip().strip('"'), fallback, problems)
    try:
        value = part.get_param(name, header=header)
    except Exception:  # a malformed parameter list: treat as absent
        return ""
    if value is None:
        return ""
    if isinstance(value, tuple):
        charset, _lang, text = value
        try:
            data = str(text).encode("latin-1", "surrogateescape")
        except UnicodeEncodeError:
            data = str(text).encode("utf-8", "surrogateescape")
        if charset:
            return charsets.decode(data, charset, problems)
        return charsets.decode_8bit(data, _hints(fallback), problems)
    return decode_header(str(value).strip('"'), fallback, problems)
