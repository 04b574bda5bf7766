"""What customers and agents ask of the chat, as the typed commands its handlers take. The
entrypoints build them from socket and HTTP payloads (entrypoints/payloads.py), so a handler
never sees a raw client dict."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CustomerMessage:
    text: str
    client_id: str | None = None  # the widget's own id: a re-sent message is the same message


@dataclass(frozen=True)
class Receipt:
    message_id: str
    state: str  # delivered or read


@dataclass(frozen=True)
class Rating:
    contact_id: str
    score: int  # 1-5
    comment: str = ""


@dataclass(frozen=True)
class TranscriptRequest:
    contact_id: str
    email: str = ""  # "": the address from the pre-chat form


@dataclass(frozen=True)
class AgentMessage:
    contact_id: str
    text: str
