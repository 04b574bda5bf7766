"""Signed visitor tokens: what lets a widget reconnect as the same visitor.

Format ``sv1.<base64url(JSON {t: tenant, v: visitor_id, e: expiry})>.<base64url(HMAC-SHA256)>``.
The HMAC key is derived from the platform secret, so a visitor token is never a valid
``sb1`` access token and vice versa.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from switchboard.chat.domain.model import VISITOR_ID_RE
from switchboard.core.auth import b64url_decode, b64url_encode
from switchboard.core.errors import PermissionDenied, Unauthenticated
from switchboard.core.events import TENANT_RE

PREFIX = "sv1"


@dataclass(frozen=True)
class Visitor:
    tenant: str
    visitor_id: str
    expires_at: int


def _key(secret: str) -> bytes:
    return hmac.new(secret.encode(), b"switchboard chat visitor token", hashlib.sha256).digest()


def new_visitor_id() -> str:
    return secrets.token_hex(16)


def mint(
    secret: str, tenant: str, visitor_id: str, ttl_seconds: int, now: float | None = None
) -> str:
    """A token binding `visitor_id` to `tenant` until now + `ttl_seconds`."""
    if not TENANT_RE.match(tenant) or not VISITOR_ID_RE.match(visitor_id):
        raise ValueError("bad tenant or visitor id")
    expires = int((now if now is not None else time.time()) + ttl_seconds)
    body = b64url_encode(
        json.dumps({"t": tenant, "v": visitor_id, "e": expires}, separators=(",", ":")).encode()
    )
    sig = b64url_encode(
        hmac.new(_key(secret), f"{PREFIX}.{body}".encode(), hashlib.sha256).digest()
    )
    return f"{PREFIX}.{body}.{sig}"


def verify(
    secret: str,
    token: str,
    known_tenants: frozenset[str] | None = None,
    now: float | None = None,
    allow_expired: bool = False,
) -> Visitor:
    """The visitor a token names; Unauthenticated if malformed, forged or expired."""
    if not isinstance(token, str) or len(token) > 1024:
        raise Unauthenticated("visitor token: malformed")
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise Unauthenticated("visitor token: malformed (expected sv1.<claims>.<signature>)")
    expected = hmac.new(_key(secret), f"{PREFIX}.{parts[1]}".encode(), hashlib.sha256).digest()
    try:
        given = b64url_decode(parts[2])
        claims = json.loads(b64url_decode(parts[1]))
    except ValueError:
        raise Unauthenticated("visitor token: malformed (bad encoding)") from None
    if not hmac.compare_digest(expected, given):
        raise Unauthenticated("visitor token: signature does not match")
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
