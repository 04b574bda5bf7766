"""Who sent the fax: the caller id and the CSID (the sender's TSI) as E.164 phone identities, and
for a fax mailed in by its sender, their email address."""

from __future__ import annotations

import re

import phonenumbers

from switchboard.v1 import contact_pb2, fax_pb2

_DIALLABLE = re.compile(r"^[+\d][\d\s().\-/]{4,}$")


def to_e164(raw: str, region: str) -> str:
    """`raw` as an E.164 number (+821012345678), or "" when it is not a valid phone number.

    A CSID is free text set on the sending machine: only the ones that read as a number count."""
    value = (raw or "").strip()
    if not value or not _DIALLABLE.match(value):
        return ""
    if value.startswith("00"):
        value = "+" + value[2:]
    try:
        number = phonenumbers.parse(value, None if value.startswith("+") else region or None)
    except phonenumbers.NumberParseException:
        return ""
    if not phonenumbers.is_valid_number(number):
        return ""
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def identities(caller_id: str, csid: str, region: str) -> list[contact_pb2.CustomerIdentity]:
    """Phone identities from the caller id and the CSID, without duplicates (caller id first)."""
    seen: list[str] = []
    for raw in (caller_id, csid):
        number = to_e164(raw, region)
        if number and number not in seen:
            seen.append(number)
    return [
        contact_pb2.CustomerIdentity(kind=contact_pb2.IDENTITY_KIND_PHONE, value=n) for n in seen
    ]


def of_origin(origin: fax_pb2.FaxOrigin, region: str) -> list[contact_pb2.CustomerIdentity]:
    """The identities a received fax names: its numbers (caller id first), then the address of
    the sender who mailed it in."""
    found = identities(origin.caller_id_number, origin.csid, region)
    if origin.sender_address:
        found.append(
            contact_pb2.CustomerIdentity(
                kind=contact_pb2.IDENTITY_KIND_EMAIL, value=origin.sender_address
            )
        )
    return found


# A fax-to-email gateway's subject names the caller after "from": "Fax from +82 2 1234 5678",
# "New fax from (415) 555-0100, 1 page", 'eFax message from "+1 555 0100"'.
_FROM_NUMBER = re.compile(r"\bfrom\W{0,3}(\+?[\d(][\d\s().\-/]{4,}\d)", re.IGNORECASE)


def caller_in(subject: str, region: str) -> str:
    """The caller's number a fax-to-email gateway's subject names after "from", as E.164; ""
    when it names none that is a valid number."""
    for match in _FROM_NUMBER.finditer(subject or ""):
        number = to_e164(match.group(1), region)
        if number:
            return number
    return ""
