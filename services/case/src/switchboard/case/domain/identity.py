"""Normalising customer identities so one customer is recognised on every channel."""

from __future__ import annotations

import phonenumbers

from switchboard.core.errors import InvalidArgument
from switchboard.v1 import contact_pb2

PHONE = contact_pb2.IDENTITY_KIND_PHONE
EMAIL = contact_pb2.IDENTITY_KIND_EMAIL


def normalise(kind: int, value: str, default_region: str | None = None) -> str:
    """The canonical form of an identity: phone numbers in E.164 (a national number needs
    `default_region`), email addresses lower-cased, anything else trimmed. A phone number that
    cannot be parsed is InvalidArgument."""
    value = value.strip()
    if kind == EMAIL:
        return value.lower()
    if kind == PHONE:
        try:
            number = phonenumbers.parse(value, default_region)
        except phonenumbers.NumberParseException as exc:
            raise InvalidArgument("identity", f"{value!r} is not a phone number: {exc}") from None
        if not phonenumbers.is_possible_number(number):
            raise InvalidArgument("identity", f"{value!r} is not a possible phone number")
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return value
