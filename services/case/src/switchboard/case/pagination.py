"""Opaque, signed page tokens for ListCases.

A token is ``pt1.<base64url(json)>.<base64url(HMAC-SHA256)>`` (switchboard.core.signing), with a
key derived from the platform secret for page tokens only. The JSON holds the keyset cursor
(the last case's created_at and id) and the query it belongs to (tenant and filters), so a token
cannot be forged, edited, or replayed against another tenant or other filters.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from switchboard.core.errors import InvalidArgument
from switchboard.core.signing import Sealer, purpose_key

VERSION = 1
# Its own key and prefix: the auth secret also signs access tokens, which must never verify as
# these, nor these as them.
PREFIX = "pt1"
PURPOSE = "switchboard case page token"


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
        self._sealer = Sealer(purpose_key(secret, PURPOSE), PREFIX)

    def encode(self, query: CaseQuery, cursor: Cursor) -> str:
        payload = {
            "v": VERSION,
            "q": query.key(),
            "t": cursor.created_at.isoformat(),
            "i": cursor.case_id,
            "p": cursor.priority,
        }
        return self._sealer.seal(
            json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        )

    def decode(self, token: str, query: CaseQuery) -> Cursor:
        """The cursor in `token`, or InvalidArgument("page_token") if it was not issued by us for
        exactly this query."""
        try:
            payload = json.loads(self._sealer.open(token))
            if payload["v"] != VERSION:
                raise ValueError("version")
            created_at = datetime.fromisoformat(payload["t"])
            case_id = payload["i"]
            priority = payload.get("p", 0)
            bound = payload["q"]
        except (ValueError, KeyError, TypeError):  # TokenError is a ValueError
            raise _malformed() from None
        if created_at.tzinfo is None or not isinstance(case_id, str) or type(priority) is not int:
            raise _malformed()
        if bound != query.key():
            raise InvalidArgument("page_token", "was issued for another tenant or other filters")
        return Cursor(created_at, case_id, priority)
