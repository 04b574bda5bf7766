"""Page tokens: opaque, signed, and bound to the tenant and filters they were issued for."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from switchboard.case.pagination import CaseQuery, Cursor, PageTokens
from switchboard.core.errors import InvalidArgument

QUERY = CaseQuery("acme", status=1, customer_id="cu-1")
CURSOR = Cursor(datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), "case-9")


def test_round_trip() -> None:
    tokens = PageTokens("secret")
    assert tokens.decode(tokens.encode(QUERY, CURSOR), QUERY) == CURSOR


@pytest.mark.parametrize(
    "other",
    [
        CaseQuery("other", status=1, customer_id="cu-1"),
        CaseQuery("acme", status=2, customer_id="cu-1"),
        CaseQuery("acme", status=1),
        CaseQuery("acme", status=1, customer_id="cu-1", contact_id="c-1"),
    ],
)
def test_bound_to_tenant_and_filters(other: CaseQuery) -> None:
    tokens = PageTokens("secret")
    with pytest.raises(InvalidArgument, match="page_token"):
        tokens.decode(tokens.encode(QUERY, CURSOR), other)


def _forge(token: str) -> str:
    prefix, body, sig = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload["q"][0] = "other"
    forged = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    return f"{prefix}.{forged}.{sig}"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: "",
        lambda t: "garbage",
        lambda t: t + "x",
        lambda t: ("B" if t[0] != "B" else "C") + t[1:],
        lambda t: t.split(".")[0] + ".",
        lambda t: t.replace(".", ".!"),
        lambda t: t + "!!!!",  # junk outside base64url must not be skipped
        _forge,
    ],
)
def test_tampered_or_malformed(mangle) -> None:  # type: ignore[no-untyped-def]
    tokens = PageTokens("secret")
    with pytest.raises(InvalidArgument, match="tampered or malformed"):
        tokens.decode(mangle(tokens.encode(QUERY, CURSOR)), QUERY)


def test_other_secret_does_not_verify() -> None:
    token = PageTokens("secret").encode(QUERY, CURSOR)
    with pytest.raises(InvalidArgument, match="tampered or malformed"):
        PageTokens("another").decode(token, QUERY)
