"""Opaque, signed page tokens for ListCases.

A token is ``base64url(json) + "." + base64url(HMAC-SHA256)``. The JSON holds the keyset cursor
(the last case's created_at and id) and the query it belongs to (tenant and filters), so a token
cannot be forged, edited, or replayed against another tenant or other filters.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime

from switchboard.core.auth import b64url_decode, b64url_encode
from switchboard.core.errors import InvalidArgument

VERSION = 1
# Domain separation: the auth secret also signs access tokens, which must never verify as these.
_CONTEXT = b"switchboard.case.page_token.v1."


@dataclass(frozen=True)
class CaseQuery:
    """What ListCases selects: one tenant's cases, optionally filtered."""

    tenant: str
    status: int = 0
    contact_id: str = ""
    customer_id: str = ""
    case_type: int = 0
    priority: int = 0
    queue: str = ""
    assigned_agent_id: str = ""
    order: int = 0  # switchboard.v1.CaseOrder

    def key(self) -> list[object]:
        return [
            self.tenant,
            self.status,
            self.contact_id,
            self.customer_id,
            self.case_type,
            self.priority,
            self.queue,
            self.assigned_agent_id,
            self.order,
        ]


@dataclass(frozen=True)
class Cursor:
    """The position after the last case of a page: the sort time (created_at, or updated_at for
    CASE_ORDER_UPDATED_DESC), the priority (for CASE_ORDER_PRIORITY_DESC), then the id."""

    created_at: datetime
    case_id: str
    priority: int = 0


def _malformed() -> InvalidArgument:
    return InvalidArgument("page_token", "is tampered or malformed; start again without it")


class PageTokens:
    def __init__(self, secret: str) -> None:
        self._key = secret.encode()

    def _sign(self, body: str) -> bytes:
        return hmac.new(self._key, _CONTEXT + body.encode(), hashlib.sha256).digest()

    def encode(self, query: CaseQuery, cursor: Cursor) -> str:
        payload = {
            "v": VERSION,
            "q": query.key(),
            "t": cursor.created_at.isoformat(),
            "i": cursor.case_id,
            "p": cursor.priority,
        }
        body = b64url_encode(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
        return f"{body}.{b64url_encode(self._sign(body))}"

    def decode(self, token: str, query: CaseQuery) -> Cursor:
        """The cursor in `token`, or InvalidArgument("page_token") if it was not issued by us for
        exactly this query."""
        body, _, sig = token.partition(".")
        if not body or not sig:
            raise _malformed()
        try:
            given = b64url_decode(sig)
        except (ValueError, binascii.Error):
            raise _malformed() from None
        if not hmac.compare_digest(self._sign(body), given):
            raise _malformed()
        try:
            payload = json.loads(b64url_decode(body))
            if payload["v"] != VERSION:
                raise ValueError("version")
            created_at = datetime.fromisoformat(payload["t"])
            case_id = payload["i"]
            priority = payload.get("p", 0)
            bound = payload["q"]
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise _malformed() from None
        if created_at.tzinfo is None or not isinstance(case_id, str) or type(priority) is not int:
            raise _malformed()
        if bound != query.key():
            raise InvalidArgument("page_token", "was issued for another tenant or other filters")
        return Cursor(created_at, case_id, priority)
