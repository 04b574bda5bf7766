"""Short human case references (C-7K3M9Q): six characters from an alphabet with no look-alikes."""

from __future__ import annotations

import re
import secrets

ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
LENGTH = 6
PATTERN = re.compile(rf"^C-[{ALPHABET}]{{{LENGTH}}}$")


BITS = 5  # per character: the alphabet has 2**5 letters, so each is equally likely


def new_reference() -> str:
    # One draw of random bits for all six characters, five bits each.
    bits = secrets.randbits(BITS * LENGTH)
    return "C-" + "".join(ALPHABET[(bits >> (BITS * i)) % len(ALPHABET)] for i in range(LENGTH))


def looks_like_reference(value: str) -> bool:
    return bool(PATTERN.match(value.strip().upper()))


def normalise(value: str) -> str:
    """A reference as typed by a person or found in a subject: "#c-7k3m9q" → "C-7K3M9Q"."""
    return value.strip().lstrip("#").upper()
