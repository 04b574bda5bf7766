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
from switchboard.core.events import TENANT_RE

AuthorName = Literal["customer", "agent", "system"]

# BCP 47, loosely: a 2-3 letter primary subtag and optional subtags (ko, ko-KR, zh-Hans-CN).
LANGUAGE_RE = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8}){0,4}$")
VISITOR_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
TOPIC_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,190}$")
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


def parse_customer_auth(auth: Any, known_tenants: frozenset[str] | None = None) -> CustomerProfile:
    """Validate a customer's connect `auth`; raise naming the first bad field."""
    if not isinstance(auth, dict):
        raise InvalidArgument("tenant", "is required (auth must be an object)")
    tenant = _optional_str(auth, "tenant")
    if not tenant:
        raise InvalidArgument("tenant")
    if not TENANT_RE.match(tenant):
        raise InvalidArgument("tenant", "is not a valid tenant name ([a-z0-9_-], ≤ 63)")
    if known_tenants is not None and tenant not in known_tenants:
        raise PermissionDenied(f"tenant {tenant!r} is not served here")
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
    visitor_id = _optional_str(auth, "visitor_id")
    if visitor_id and not VISITOR_ID_RE.match(visitor_id):
        raise InvalidArgument("visitor_id", "must be 1-64 characters of [A-Za-z0-9_-]")
    return CustomerProfile(tenant, name, language, email, topic, visitor_id)


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

    def to_wire(self) -> dict[str, Any]:
        """The `message` payload sent to sockets (agent_id stays internal)."""
        return {
            "message_id": self.message_id,
            "contact_id": self.contact_id,
            "author": self.author,
            "agent_name": self.agent_name,
            "text": self.text,
            "sent_at": self.sent_at.isoformat(),
        }


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
    messages: list[ChatMessage] = field(default_factory=list)

    def assigned_to(self, agent_id: str) -> bool:
        return bool(self.agent_id) and self.agent_id == agent_id and not self.ended

    def history(self) -> list[dict[str, Any]]:
        return [m.to_wire() for m in self.messages]
