"""The chat's domain: who the customer is, what a chat message is, and the rules on input.

Pure logic, no I/O. Validation raises switchboard.core.errors so every caller reports the
offending field by name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from switchboard.core.errors import DomainError, InvalidArgument, PermissionDenied

AuthorName = Literal["customer", "agent", "system"]

# BCP 47, loosely: a 2-3 letter primary subtag and optional subtags (ko, ko-KR, zh-Hans-CN).
LANGUAGE_RE = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8}){0,4}$")
VISITOR_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
TOPIC_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,190}$")
RECEIPT_STATES = ("delivered", "read")
MAX_NAME_CHARS = 200


class MessageTooLarge(DomainError):
    """A message's text is over the size limit (in UTF-8 bytes)."""

    code = "message_too_large"

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"message too large: {size} bytes, limit {limit}")


def not_assigned(contact_id: str) -> PermissionDenied:
    return PermissionDenied(f"contact {contact_id} is not assigned to you")


@dataclass(frozen=True)
class CustomerProfile:
    """What a customer's widget says about them when it connects."""

    tenant: str
    name: str
    language: str
    email: str = ""
    topic: str = ""
    visitor_id: str = ""


def _optional_str(auth: dict[str, Any], key: str) -> str:
    value = auth.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidArgument(key, "must be a string")
    return value.strip()


def parse_customer_auth(auth: Any, tenant: str, visitor_id: str) -> CustomerProfile:
    """Validate a customer's connect `auth` (the pre-chat form); tenant and visitor come from
    the verified visitor token. Raise naming the first bad field."""
    if not isinstance(auth, dict):
        raise InvalidArgument("token", "is required (auth must be an object)")
    language = _optional_str(auth, "language")
    if not language:
        raise InvalidArgument("language")
    if not LANGUAGE_RE.match(language):
        raise InvalidArgument("language", "must be a BCP 47 tag such as ko, zh-Hans or en")
    name = _optional_str(auth, "name")
    if len(name) > MAX_NAME_CHARS:
        raise InvalidArgument("name", f"must be at most {MAX_NAME_CHARS} characters")
    email = _optional_str(auth, "email").lower()
    if email and not EMAIL_RE.match(email):
        raise InvalidArgument("email", "is not a valid address")
    topic = _optional_str(auth, "topic").lower()
    if topic and not TOPIC_RE.match(topic):
        raise InvalidArgument("topic", "must be a skill name ([a-z0-9_-], ≤ 64)")
    return CustomerProfile(tenant, name, language, email, topic, visitor_id)


def since_seq(auth: Any) -> int:
    """The last history position the widget has seen (0: none)."""
    value = auth.get("since") if isinstance(auth, dict) else None
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidArgument("since", "must be a non-negative whole number")
    return value


def required_str(data: Any, key: str) -> str:
    """`data[key]` as a non-empty string, or InvalidArgument naming `key`."""
    if not isinstance(data, dict):
        raise InvalidArgument(key, "is required (the event must be an object)")
    value = data.get(key)
    if value is None:
        raise InvalidArgument(key)
    if not isinstance(value, str):
        raise InvalidArgument(key, "must be a string")
    if not value.strip():
        raise InvalidArgument(key)
    return value


def check_text(data: Any, limit: int) -> str:
    """The message text of a client event, within `limit` UTF-8 bytes."""
    text = required_str(data, "text")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate from JSON: not text we can store
        raise InvalidArgument("text", "is not valid Unicode") from None
    if size > limit:
        raise MessageTooLarge(size, limit)
    return text


def initial_message_id(contact_id: str) -> str:
    """The id of the message a contact was created with (as the case service stores it)."""
    return f"{contact_id}:initial"


@dataclass(frozen=True)
class ChatMessage:
    message_id: str
    contact_id: str
    author: AuthorName
    text: str
    sent_at: datetime
    agent_id: str = ""
    agent_name: str | None = None
    # An attachment: {"url", "filename", "content_type", "size"} (the text is its caption).
    attachment: dict[str, Any] | None = None
    # Position in the contact's durable history (0 until stored): what a resume asks "since".
    seq: int = 0

    def to_wire(self) -> dict[str, Any]:
        """The `message` payload sent to sockets (agent_id stays internal)."""
        wire: dict[str, Any] = {
            "message_id": self.message_id,
            "contact_id": self.contact_id,
            "author": self.author,
            "agent_name": self.agent_name,
            "text": self.text,
            "sent_at": self.sent_at.isoformat(),
            "seq": self.seq,
        }
        if self.attachment:
            wire["attachment"] = self.attachment
        return wire

    def to_record(self) -> dict[str, Any]:
        """What the durable history keeps (agent_id included)."""
        return {**self.to_wire(), "agent_id": self.agent_id}

    @classmethod
    def from_record(cls, record: dict[str, Any], seq: int) -> ChatMessage:
        return cls(
            message_id=record["message_id"],
            contact_id=record["contact_id"],
            author=record["author"],
            text=record["text"],
            sent_at=datetime.fromisoformat(record["sent_at"]),
            agent_id=record.get("agent_id", ""),
            agent_name=record.get("agent_name"),
            attachment=record.get("attachment"),
            seq=seq,
        )


@dataclass
class Conversation:
    """One chat contact: its customer, its agent once assigned, its history."""

    tenant: str
    contact_id: str
    visitor_id: str
    customer_name: str
    language: str
    agent_id: str = ""
    agent_name: str = ""
    status: dict[str, Any] | None = None  # the last `status` sent to the customer
    ended: bool = False
    # The agent wrapped it up: no longer theirs to open. A chat the customer ended stays
    # readable to its agent until then.
    wrapped_up: bool = False
    messages: list[ChatMessage] = field(default_factory=list)
    email: str = ""
    topic: str = ""
    # Receipts: side ("customer"/"agent") -> {"delivered": message_id, "read": message_id}.
    receipts: dict[str, dict[str, str]] = field(default_factory=dict)
    rated: bool = False
    rating: int = 0  # the score given (1-5), 0 before it is rated
    # The first message and its time (ISO 8601) until the contact's ContactCreated is known to be
    # on the bus: a record written when that was not yet certain (a timeout) is announced again
    # before the visitor's next message, never left a contact the rest of the platform lacks.
    opening: str | None = None
    opened_at: str = ""

    def to_record(self) -> dict[str, Any]:
        """The durable form, without the history (kept apart, in order)."""
        return {
            "tenant": self.tenant,
            "contact_id": self.contact_id,
            "visitor_id": self.visitor_id,
            "customer_name": self.customer_name,
            "language": self.language,
            "agent_id": self.agent_id,
            "agent_name": self.agent_name,
            "status": self.status,
            "ended": self.ended,
            "wrapped_up": self.wrapped_up,
            "email": self.email,
            "topic": self.topic,
            "receipts": self.receipts,
            "rated": self.rated,
            "rating": self.rating,
            "opening": self.opening,
            "opened_at": self.opened_at,
        }

    @classmethod
    def from_record(cls, r: dict[str, Any]) -> Conversation:
        return cls(
            tenant=r["tenant"],
            contact_id=r["contact_id"],
            visitor_id=r["visitor_id"],
            customer_name=r.get("customer_name", ""),
            language=r.get("language", ""),
            agent_id=r.get("agent_id", ""),
            agent_name=r.get("agent_name", ""),
            status=r.get("status"),
            ended=bool(r.get("ended")),
            wrapped_up=bool(r.get("wrapped_up")),
            email=r.get("email", ""),
            topic=r.get("topic", ""),
            receipts=r.get("receipts") or {},
            rated=bool(r.get("rated")),
            rating=int(r.get("rating") or 0),
            opening=r.get("opening"),
            opened_at=r.get("opened_at", ""),
        )

    def assigned_to(self, agent_id: str) -> bool:
        """Whether `agent_id` has this conversation: a chat the customer ended stays theirs
        (to read, not to write to) until they wrap it up."""
        return bool(self.agent_id) and self.agent_id == agent_id and not self.wrapped_up

    def history(self) -> list[dict[str, Any]]:
        return [m.to_wire() for m in self.messages]
