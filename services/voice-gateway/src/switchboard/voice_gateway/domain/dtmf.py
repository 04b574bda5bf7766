"""DTMF sent in SIP INFO (`application/dtmf-relay`, `application/dtmf`)."""

from __future__ import annotations

from switchboard.voice_gateway.domain.refused import Refused

KEYS = frozenset("0123456789*#ABCD")


def info_digit(content_type: str, body: bytes) -> str | Refused:
    """The key an INFO carries, or the response refusing it (415 or 400)."""
    kind = content_type.split(";")[0].strip().lower()
    text = body.decode(errors="replace")
    digit = ""
    if kind == "application/dtmf-relay":
        for line in text.splitlines():
            key, _, value = line.partition("=")
            if key.strip().lower() == "signal":
                digit = value.strip()[:1]
    elif kind == "application/dtmf":
        digit = text.strip()[:1]
    else:
        return Refused(415, "Unsupported Media Type")
    if digit not in KEYS:
        return Refused(400, "Malformed DTMF Signal")
    return digit
