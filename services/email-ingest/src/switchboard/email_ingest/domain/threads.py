"""Threading rules: how an incoming mail finds its conversation and case.

In order: the Message-IDs it answers (In-Reply-To, then References, newest first); a case token in
the address it was sent to (support+C-7K3M9Q@...) or in the subject ([#C-7K3M9Q]); and, last, the
same sender with the same normalised subject on a mail that presents itself as a reply.
"""

from __future__ import annotations

import hashlib
import re

CASE_REF = r"C-[0-9A-Z]{4,12}"
_SUBJECT_TOKEN = re.compile(r"\[#\s*(" + CASE_REF + r")\s*\]", re.I)
_PLUS_TOKEN = re.compile(r"\+(" + CASE_REF + r")@", re.I)
_PREFIX = re.compile(
    r"^\s*((re|aw|sv|vs|antw|wg|fw|fwd|tr|rif|odp|ynt|réf|답장|회신|전달|回复|回覆|答复|转发|轉寄|返信|転送)"
    r"\s*(\[\d+\]|\(\d+\))?\s*[:：]\s*)",
    re.I,
)
_REPLY_PREFIX = re.compile(
    r"^\s*(re|aw|sv|vs|antw|odp|ynt|답장|회신|回复|回覆|答复|返信)\s*(\[\d+\]|\(\d+\))?\s*[:：]",
    re.I,
)


def subject_token(subject: str) -> str:
    match = _SUBJECT_TOKEN.search(subject or "")
    return match.group(1).upper() if match else ""


def plus_token(addresses: list[str]) -> str:
    for address in addresses:
        match = _PLUS_TOKEN.search(address or "")
        if match:
            return match.group(1).upper()
    return ""


def normalise_subject(subject: str) -> str:
    """The subject without reply/forward prefixes (any language), case tokens and spacing."""
    s = _SUBJECT_TOKEN.sub(" ", subject or "")
    previous = None
    while previous != s:
        previous = s
        s = _PREFIX.sub("", s)
    return re.sub(r"\s+", " ", s).strip().casefold()


def is_reply_subject(subject: str) -> bool:
    return bool(_REPLY_PREFIX.match(subject or ""))


def with_token(subject: str, reference: str) -> str:
    """The subject carrying the case token once."""
    if not reference or subject_token(subject) == reference.upper():
        return subject
    return f"{subject.strip()} [#{reference}]".strip()


def plus_address(address: str, reference: str) -> str:
    local, _, domain = address.partition("@")
    return f"{local.split('+', 1)[0]}+{reference}@{domain}" if reference and domain else address


def key(*parts: str) -> str:
    """A JetStream key-value key for arbitrary text (Message-IDs hold characters keys cannot)."""
    return hashlib.sha256("\x1f".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:40]
