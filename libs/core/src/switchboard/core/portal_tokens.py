"""The customer portal's tokens: the one-time sign-in link mailed to a customer (``pl1``) and the
session it is exchanged for (``ps1``), each sealed with its own key derived from the platform
secret (switchboard.core.signing), so neither opens as the other or as an access token.

A link names its tenant, customer, email, expiry and a random id; the portal records each id it
has accepted so a link signs in once. A session names the same customer until it expires.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass

from switchboard.core.errors import Unauthenticated
from switchboard.core.signing import Sealer, TokenError, purpose_key

LINK_PREFIX = "pl1"
SESSION_PREFIX = "ps1"
LINK_TTL_SECONDS = 15 * 60
SESSION_TTL_SECONDS = 8 * 3600


@dataclass(frozen=True)
class PortalGrant:
    """Who a link or session signs in: one customer of one tenant, known by `email`."""

    tenant: str
    customer_id: str
    email: str
    expires_at: int
    token_id: str


def _sealer(secret: str, prefix: str) -> Sealer:
    return Sealer(purpose_key(secret, f"portal-{prefix}"), prefix)


def _seal(secret: str, prefix: str, tenant: str, customer_id: str, email: str, ttl: int) -> str:
    body = {
        "t": tenant,
        "c": customer_id,
        "e": email,
        "x": int(time.time()) + ttl,
        "j": secrets.token_hex(16),
    }
    return _sealer(secret, prefix).seal(json.dumps(body, separators=(",", ":")).encode())


def _open(secret: str, prefix: str, token: object, now: float | None) -> PortalGrant:
    try:
        body = json.loads(_sealer(secret, prefix).open(token))
        grant = PortalGrant(
            str(body["t"]), str(body["c"]), str(body["e"]), int(body["x"]), str(body["j"])
        )
    except (TokenError, ValueError, KeyError, TypeError):
        raise Unauthenticated("not a valid portal token") from None
    if grant.expires_at < (time.time() if now is None else now):
        raise Unauthenticated("the portal token has expired")
    return grant


def mint_link(
    secret: str, tenant: str, customer_id: str, email: str, ttl: int = LINK_TTL_SECONDS
) -> str:
    """A sign-in link token for one customer, valid `ttl` seconds (single use is the portal's)."""
    return _seal(secret, LINK_PREFIX, tenant, customer_id, email, ttl)


def open_link(secret: str, token: object, now: float | None = None) -> PortalGrant:
    """The grant of a genuine, unexpired link token; Unauthenticated otherwise."""
    return _open(secret, LINK_PREFIX, token, now)


def mint_session(
    secret: str, tenant: str, customer_id: str, email: str, ttl: int = SESSION_TTL_SECONDS
) -> str:
    """A portal session for the customer a link signed in."""
    return _seal(secret, SESSION_PREFIX, tenant, customer_id, email, ttl)


def open_session(secret: str, token: object, now: float | None = None) -> PortalGrant:
    """The grant of a genuine, unexpired session token; Unauthenticated otherwise."""
    return _open(secret, SESSION_PREFIX, token, now)
