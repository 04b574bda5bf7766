from __future__ import annotations

import time

import pytest

from switchboard.core import auth, portal_tokens
from switchboard.core.errors import Unauthenticated

SECRET = "portal-test-secret"


def test_a_link_names_its_customer_and_expires() -> None:
    link = portal_tokens.mint_link(SECRET, "demo", "cust-1", "minji@example.com", ttl=60)
    grant = portal_tokens.open_link(SECRET, link)
    assert (grant.tenant, grant.customer_id, grant.email) == ("demo", "cust-1", "minji@example.com")
    assert (
        grant.token_id
        != portal_tokens.open_link(
            SECRET, portal_tokens.mint_link(SECRET, "demo", "cust-1", "minji@example.com")
        ).token_id
    )
    with pytest.raises(Unauthenticated, match="expired"):
        portal_tokens.open_link(SECRET, link, now=time.time() + 61)


def test_kinds_and_secrets_do_not_mix() -> None:
    link = portal_tokens.mint_link(SECRET, "demo", "cust-1", "a@example.com")
    session = portal_tokens.mint_session(SECRET, "demo", "cust-1", "a@example.com")
    access = auth.mint(SECRET, "demo", "cust-1", ["customer"])
    for wrong in (session, access, "pl1.e30.AAAA", "", None):
        with pytest.raises(Unauthenticated):
            portal_tokens.open_link(SECRET, wrong)
    for wrong in (link, access):
        with pytest.raises(Unauthenticated):
            portal_tokens.open_session(SECRET, wrong)
    with pytest.raises(Unauthenticated):
        portal_tokens.open_link("another-secret", link)
    head, body, mac = link.split(".")
    with pytest.raises(Unauthenticated):
        portal_tokens.open_link(SECRET, f"{head}.{body[:-2]}xx.{mac}")
