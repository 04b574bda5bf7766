"""Switchboard access tokens: HMAC-SHA256 signed TokenClaims.

Format: ``sb1.<base64url(TokenClaims protobuf)>.<base64url(hmac)>`` (see switchboard.core.signing).
Services share the secret (``SWITCHBOARD_AUTH_SECRET``); the CLI and partners' integrations are
issued tokens minted with it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

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
# A token minted without a lifetime of its own lives this long.
DEFAULT_TTL_SECONDS = 12 * 3600


@dataclass(frozen=True)
class Principal:
    tenant: str
    subject: str
    roles: frozenset[str]
    scopes: frozenset[str] = frozenset()
    issued_at: int = 0  # seconds; 0 for tokens minted before tokens carried it

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
    ttl_seconds: int | None = DEFAULT_TTL_SECONDS,
    scopes: Iterable[str] = (),
    max_lifetime: int | None = None,
) -> str:
    """Return a signed token for `subject` of `tenant` with `roles` and, for a partner, the
    `scopes` it is granted (switchboard.core.roles), valid for `ttl_seconds` (None or 0: never
    expires). With `max_lifetime`, a token that would live longer (or forever) is refused."""
    validate_tenant(tenant)
    if max_lifetime and not (ttl_seconds and 0 < ttl_seconds <= max_lifetime):
        raise ValueError(
            f"a token lives at most {max_lifetime} s here: give a ttl of 1 to {max_lifetime} s"
        )
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
    now = int(time.time())
    claims = auth_pb2.TokenClaims(
        tenant=tenant,
        subject=subject,
        roles=roles,
        expires_at=now + ttl_seconds if ttl_seconds else 0,
        scopes=scopes,
        issued_at=now,
    )
    return _sealer(secret).seal(claims.SerializeToString(deterministic=True))


def verify(
    secret: str,
    token: str,
    known_tenants: frozenset[str] | None = None,
    now: float | None = None,
    max_lifetime: int | None = None,
) -> Principal:
    """Check a token's signature and expiry and return its principal.

    Raises Unauthenticated for a malformed, forged or expired token, or, with `max_lifetime`, one
    that never expires or lives longer; PermissionDenied when the token's tenant is not one this
    deployment serves.
    """
    try:
        claims = auth_pb2.TokenClaims.FromString(_sealer(secret).open(token))
    except TokenError as exc:
        raise Unauthenticated(_REFUSED[exc.reason]) from None
    except DecodeError:
        raise Unauthenticated(_REFUSED[BAD_ENCODING]) from None
    now = now if now is not None else time.time()
    if claims.expires_at and claims.expires_at < now:
        raise Unauthenticated("token has expired")
    if max_lifetime:
        _check_lifetime(claims, now, max_lifetime)
    if known_tenants is not None and claims.tenant not in known_tenants:
        raise PermissionDenied(f"tenant {claims.tenant!r} is not served here")
    return Principal(
        tenant=claims.tenant,
        subject=claims.subject,
        roles=frozenset(claims.roles),
        scopes=frozenset(claims.scopes),
        issued_at=claims.issued_at,
    )


def _check_lifetime(claims: auth_pb2.TokenClaims, now: float, max_lifetime: int) -> None:
    if not claims.expires_at:
        raise Unauthenticated(f"token never expires; tokens here live at most {max_lifetime} s")
    # A token minted before issued_at was recorded is judged by the lifetime it has left.
    issued = claims.issued_at or now
    if now - issued > max_lifetime or claims.expires_at - issued > max_lifetime:
        raise Unauthenticated(f"token lives longer than the {max_lifetime} s allowed here")


class Revoked(Protocol):
    def check(self, principal: Principal) -> None: ...


@dataclass(frozen=True)
class Verifier:
    """How a service checks the tokens it is given: its secret, the tenants it serves, the
    longest lifetime it accepts and, once the service has opened it, the revocation list
    (`switchboard.core.revocation.Revocations`)."""

    secret: str
    known_tenants: frozenset[str] | None = None
    max_lifetime: int | None = None
    revocations: Revoked | None = None

    def __call__(self, token: str) -> Principal:
        p = verify(self.secret, token, self.known_tenants, max_lifetime=self.max_lifetime)
        if self.revocations is not None:
            self.revocations.check(p)
        return p
