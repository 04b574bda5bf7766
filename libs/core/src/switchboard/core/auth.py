"""Switchboard access tokens: HMAC-SHA256 signed TokenClaims.

Format: ``sb1.<base64url(TokenClaims protobuf)>.<base64url(hmac)>`` (see switchboard.core.signing).
Services share the secret (``SWITCHBOARD_AUTH_SECRET``); the CLI and partners' integrations are
issued tokens minted with it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from switchboard.core import roles as _roles
from switchboard.core.errors import PermissionDenied, Unauthenticated
from switchboard.core.events import validate_tenant
from switchboard.core.signing import (
    BAD_ENCODING,
    FORGED,
    MALFORMED,
    Sealer,
    TokenError,
)
from switchboard.v1 import auth_pb2

PREFIX = "sb1"
_REFUSED = {
    MALFORMED: "malformed token: expected sb1.<claims>.<signature>",
    BAD_ENCODING: "malformed token: bad encoding",
    FORGED: "token signature does not match",
}
ROLES = frozenset(_roles.ROLES)
SCOPES = frozenset(_roles.SCOPES)


@dataclass(frozen=True)
class Principal:
    tenant: str
    subject: str
    roles: frozenset[str]
    scopes: frozenset[str] = frozenset()

    def has_any(self, *roles: str) -> bool:
        return bool(self.roles.intersection(roles))


def _sealer(secret: str) -> Sealer:
    # Access tokens are signed with the secret itself (the other kinds with keys derived from it).
    return Sealer(secret.encode(), PREFIX)


def mint(
    secret: str,
    tenant: str,
    subject: str,
    roles: Iterable[str],
    ttl_seconds: int | None = None,
    scopes: Iterable[str] = (),
) -> str:
    """Return a signed token for `subject` of `tenant` with `roles` and, for a partner, the
    `scopes` it is granted (switchboard.core.roles)."""
    validate_tenant(tenant)
    roles = sorted(set(roles))
    scopes = sorted(set(scopes))
    unknown = set(roles) - ROLES
    if unknown:
        raise ValueError(f"unknown roles: {sorted(unknown)}")
    unknown = set(scopes) - SCOPES
    if unknown:
        raise ValueError(f"unknown scopes: {sorted(unknown)}")
    if scopes and _roles.PARTNER not in roles:
        raise ValueError("scopes are granted to partners: add the partner role")
    claims = auth_pb2.TokenClaims(
        tenant=tenant,
        subject=subject,
        roles=roles,
        expires_at=int(time.time()) + ttl_seconds if ttl_seconds else 0,
        scopes=scopes,
    )
    return _sealer(secret).seal(claims.SerializeToString(deterministic=True))


def verify(
    secret: str, token: str, known_tenants: frozenset[str] | None = None, now: float | None = None
) -> Principal:
    """Check a token's signature and expiry and return its principal.

    Raises Unauthenticated for a malformed, forged or expired token, and PermissionDenied when the
    token's tenant is not one this deployment serves.
    """
    try:
        claims = auth_pb2.TokenClaims.FromString(_sealer(secret).open(token))
    except TokenError as exc:
        raise Unauthenticated(_REFUSED[exc.reason]) from None
    except DecodeError:
        raise Unauthenticated(_REFUSED[BAD_ENCODING]) from None
    if claims.expires_at and claims.expires_at < (now if now is not None else time.time()):
        raise Unauthenticated("token has expired")
    if known_tenants is not None and claims.tenant not in known_tenants:
        raise PermissionDenied(f"tenant {claims.tenant!r} is not served here")
    return Principal(
        tenant=claims.tenant,
        subject=claims.subject,
        roles=frozenset(claims.roles),
        scopes=frozenset(claims.scopes),
    )
