"""Short human case references (C-7K3M9Q): six characters from an alphabet with no look-alikes."""

from __future__ import annotations

import re
import secrets

ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
LENGTH = 6
PATTERN = re.compile(rf"^C-[{ALPHABET}]{{{LENGTH}}}$")


def new_reference() -> str:
    return "C-" + "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))


def looks_like_reference(value: str) -> bool:
    return bool(PATTERN.match(value.strip().upper()))


def normalise(value: str) -> str:
    """A reference as typed by a person or found in a subject: "#c-7k3m9q" → "C-7K3M9Q"."""
    return value.strip().lstrip("#").upper()
