"""Switchboard access tokens: HMAC-SHA256 signed TokenClaims.

Format: ``sb1.<base64url(TokenClaims protobuf)>.<base64url(hmac)>``. Services share the secret
(``SWITCHBOARD_AUTH_SECRET``); the CLI and partners' integrations are issued tokens minted with it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterable
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from switchboard.core.errors import PermissionDenied, Unauthenticated
from switchboard.core.events import validate_tenant
from switchboard.v1 import auth_pb2

PREFIX = "sb1"
ROLES = frozenset({"agent", "supervisor", "partner", "admin", "service"})


@dataclass(frozen=True)
class Principal:
    tenant: str
    subject: str
    roles: frozenset[str]

    def has_any(self, *roles: str) -> bool:
        return bool(self.roles.intersection(roles))

    def require_agent_or_manager(self, agent_id: str) -> None:
        """An agent acts only for itself; supervisors, partners and admins for any agent."""
        if self.has_any("supervisor", "partner", "admin", "service"):
            return
        if "agent" in self.roles and self.subject == agent_id:
            return
        raise PermissionDenied(f"{self.subject!r} may not act for agent {agent_id!r}")


def b64url_encode(data: bytes) -> str:
    """Unpadded base64url, as in tokens."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    """Strict inverse of b64url_encode: raises ValueError on any character outside base64url."""
    # validate=True: characters outside the alphabet are an error, not silently skipped.
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


def mint(
    secret: str,
    tenant: str,
    subject: str,
    roles: Iterable[str],
    ttl_seconds: int | None = None,
) -> str:
    """Return a signed token for `subject` of `tenant` with `roles`."""
    validate_tenant(tenant)
    roles = sorted(set(roles))
    unknown = set(roles) - ROLES
    if unknown:
        raise ValueError(f"unknown roles: {sorted(unknown)}")
    claims = auth_pb2.TokenClaims(
        tenant=tenant,
        subject=subject,
        roles=roles,
        expires_at=int(time.time()) + ttl_seconds if ttl_seconds else 0,
    )
    body = b64url_encode(claims.SerializeToString(deterministic=True))
    sig = b64url_encode(
        hmac.new(secret.encode(), f"{PREFIX}.{body}".encode(), hashlib.sha256).digest()
    )
    return f"{PREFIX}.{body}.{sig}"


def verify(
    secret: str, token: str, known_tenants: frozenset[str] | None = None, now: float | None = None
) -> Principal:
    """Check a token's signature and expiry and return its principal.

    Raises Unauthenticated for a malformed, forged or expired token, and PermissionDenied when the
    token's tenant is not one this deployment serves.
    """
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise Unauthenticated("malformed token: expected sb1.<claims>.<signature>")
    expected = hmac.new(secret.encode(), f"{PREFIX}.{parts[1]}".encode(), hashlib.sha256).digest()
    try:
        given = b64url_decode(parts[2])
        claims = auth_pb2.TokenClaims.FromString(b64url_decode(parts[1]))
    except (ValueError, DecodeError) as exc:
        raise Unauthenticated("malformed token: bad encoding") from exc
    if not hmac.compare_digest(expected, given):
        raise Unauthenticated("token signature does not match")
    if claims.expires_at and claims.expires_at < (now if now is not None else time.time()):
        raise Unauthenticated("token has expired")
    if known_tenants is not None and claims.tenant not in known_tenants:
        raise PermissionDenied(f"tenant {claims.tenant!r} is not served here")
    return Principal(tenant=claims.tenant, subject=claims.subject, roles=frozenset(claims.roles))
