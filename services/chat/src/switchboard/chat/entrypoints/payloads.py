"""Client payloads (Socket.IO events, JSON bodies) checked and turned into the handlers' typed
commands: a bad payload is refused here with an InvalidArgument naming the field."""

from __future__ import annotations

from typing import Any

from switchboard.chat.domain.commands import (
    AgentMessage,
    CustomerMessage,
    Rating,
    Receipt,
    TranscriptRequest,
)
from switchboard.chat.domain.model import EMAIL_RE, RECEIPT_STATES, check_text, required_str
from switchboard.core.errors import InvalidArgument


def _field(data: Any, key: str) -> Any:
    return data.get(key) if isinstance(data, dict) else None


def text(data: Any, limit: int) -> str:
    """The `text` of a payload, within `limit` UTF-8 bytes."""
    return check_text(data, limit)


def contact_id(data: Any) -> str:
    return required_str(data, "contact_id")


def customer_message(data: Any, limit: int) -> CustomerMessage:
    message = check_text(data, limit)
    client_id = _field(data, "client_id")
    if client_id is not None and (
        not isinstance(client_id, str) or not 8 <= len(client_id) <= 64 or not client_id.isascii()
    ):
        raise InvalidArgument("client_id", "must be 8-64 ASCII characters")
    return CustomerMessage(message, client_id)


def typing(data: Any) -> bool:
    return bool(_field(data, "typing"))


def receipt(data: Any) -> Receipt:
    message_id = required_str(data, "message_id")
    state = required_str(data, "state")
    if state not in RECEIPT_STATES:
        raise InvalidArgument("state", "must be delivered or read")
    return Receipt(message_id, state)


def rating(data: Any, limit: int) -> Rating:
    contact = contact_id(data)
    score = _field(data, "score")
    if not isinstance(score, int) or isinstance(score, bool) or not 1 <= score <= 5:
        raise InvalidArgument("score", "must be a whole number from 1 to 5")
    comment = _field(data, "comment") or ""
    if not isinstance(comment, str) or len(comment.encode("utf-8", "replace")) > limit:
        raise InvalidArgument("comment", f"must be text of at most {limit} bytes")
    return Rating(contact, score, comment)


def transcript_request(data: Any) -> TranscriptRequest:
    contact = contact_id(data)
    email = _field(data, "email") or ""
    if not isinstance(email, str) or (email and not EMAIL_RE.match(email.strip())):
        raise InvalidArgument("email", "is not a valid address")
    return TranscriptRequest(contact, email.strip())


def agent_message(data: Any, limit: int) -> AgentMessage:
    contact = contact_id(data)
    return AgentMessage(contact, check_text(data, limit))
