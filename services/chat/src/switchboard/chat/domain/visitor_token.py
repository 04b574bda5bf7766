"""Signed visitor tokens: what lets a widget reconnect as the same visitor.

Format ``sv1.<base64url(JSON {t: tenant, v: visitor_id, e: expiry})>.<base64url(HMAC-SHA256)>``
(switchboard.core.signing). The HMAC key is derived from the platform secret for this purpose, so
a visitor token is never a valid ``sb1`` access token and vice versa.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass

from switchboard.chat.domain.model import VISITOR_ID_RE
from switchboard.core.errors import PermissionDenied, Unauthenticated
from switchboard.core.events import TENANT_RE
from switchboard.core.signing import (
    BAD_ENCODING,
    FORGED,
    MALFORMED,
    Sealer,
    TokenError,
    purpose_key,
)

PREFIX = "sv1"


@dataclass(frozen=True)
class Visitor:
    tenant: str
    visitor_id: str
    expires_at: int


_REFUSED = {
    MALFORMED: "visitor token: malformed (expected sv1.<claims>.<signature>)",
    BAD_ENCODING: "visitor token: malformed (bad encoding)",
    FORGED: "visitor token: signature does not match",
}


def _sealer(secret: str) -> Sealer:
    return Sealer(purpose_key(secret, "switchboard chat visitor token"), PREFIX, max_length=1024)


def new_visitor_id() -> str:
    return secrets.token_hex(16)


def mint(
    secret: str, tenant: str, visitor_id: str, ttl_seconds: int, now: float | None = None
) -> str:
    """A token binding `visitor_id` to `tenant` until now + `ttl_seconds`."""
    if not TENANT_RE.match(tenant) or not VISITOR_ID_RE.match(visitor_id):
        raise ValueError("bad tenant or visitor id")
    expires = int((now if now is not None else time.time()) + ttl_seconds)
    claims = {"t": tenant, "v": visitor_id, "e": expires}
    return _sealer(secret).seal(json.dumps(claims, separators=(",", ":")).encode())


def verify(
    secret: str,
    token: str,
    known_tenants: frozenset[str] | None = None,
    now: float | None = None,
    allow_expired: bool = False,
) -> Visitor:
    """The visitor a token names; Unauthenticated if malformed, forged or expired."""
    try:
        claims = json.loads(_sealer(secret).open(token))
    except TokenError as exc:
        raise Unauthenticated(_REFUSED[exc.reason]) from None
    except ValueError:
        raise Unauthenticated(_REFUSED[BAD_ENCODING]) from None
    if not isinstance(claims, dict):
        raise Unauthenticated("visitor token: malformed claims")
    tenant, visitor_id, expires = claims.get("t"), claims.get("v"), claims.get("e")
    if (
        not isinstance(tenant, str)
        or not isinstance(visitor_id, str)
        or not isinstance(expires, int)
    ):
        raise Unauthenticated("visitor token: malformed claims")
    if not allow_expired and expires < (now if now is not None else time.time()):
        raise Unauthenticated("visitor token: expired, ask /api/visitor-token for a new one")
    if known_tenants is not None and tenant not in known_tenants:
        raise PermissionDenied(f"tenant {tenant!r} is not served here")
    return Visitor(tenant, visitor_id, expires)
