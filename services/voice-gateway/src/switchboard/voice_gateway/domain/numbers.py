"""Callers' numbers."""

from __future__ import annotations

import phonenumbers


def e164(user: str) -> str:
    """The caller's number in E.164 when it parses as one, else as given."""
    try:
        number = phonenumbers.parse(user if user.startswith("+") else "+" + user)
    except phonenumbers.NumberParseException:
        return user
    if phonenumbers.is_possible_number(number):
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return user
