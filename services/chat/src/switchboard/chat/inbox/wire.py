"""Protobuf messages from the router and the case service as the JSON the inbox page reads.

Every string here may come from a customer; the page renders them as text only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from switchboard.chat.notifier import OFFLINE_SUBJECT
from switchboard.core import recording_seal
from switchboard.v1 import case_pb2, contact_pb2, events_pb2, router_pb2

RECORDINGS_BUCKET = recording_seal.BUCKET

CHANNELS = {
    contact_pb2.CHANNEL_VOICE: "voice",
    contact_pb2.CHANNEL_EMAIL: "email",
    contact_pb2.CHANNEL_FAX: "fax",
    contact_pb2.CHANNEL_CHAT: "chat",
}
IDENTITIES = {
    contact_pb2.IDENTITY_KIND_PHONE: "phone",
    contact_pb2.IDENTITY_KIND_EMAIL: "email",
    contact_pb2.IDENTITY_KIND_CHAT_VISITOR: "visitor",
    contact_pb2.IDENTITY_KIND_PARTNER_ID: "partner",
}
PRESENCES = {
    router_pb2.PRESENCE_OFFLINE: "offline",
    router_pb2.PRESENCE_AVAILABLE: "available",
    router_pb2.PRESENCE_BUSY: "busy",
    router_pb2.PRESENCE_WRAP_UP: "wrap_up",
    router_pb2.PRESENCE_BREAK: "break",
    router_pb2.PRESENCE_NOT_RESPONDING: "not_responding",
}
PRESENCE_BY_NAME = {v: k for k, v in PRESENCES.items()}
AUTHORS = {
    contact_pb2.AUTHOR_CUSTOMER: "customer",
    contact_pb2.AUTHOR_AGENT: "agent",
    contact_pb2.AUTHOR_SYSTEM: "system",
}
CASE_STATUSES = {
    case_pb2.CASE_STATUS_NEW: "new",
    case_pb2.CASE_STATUS_ASSIGNED: "assigned",
    case_pb2.CASE_STATUS_IN_PROGRESS: "in_progress",
    case_pb2.CASE_STATUS_PENDING_CUSTOMER: "pending_customer",
    case_pb2.CASE_STATUS_RESOLVED: "resolved",
    case_pb2.CASE_STATUS_CLOSED: "closed",
    case_pb2.CASE_STATUS_PENDING_REVIEW: "pending_review",
    case_pb2.CASE_STATUS_PENDING_CONFIRMATION: "pending_confirmation",
}
CASE_STATUS_BY_NAME = {v: k for k, v in CASE_STATUSES.items()}
# How long a contact may wait for the agent's first answer, by the channel it is answered on (the
# desk's SLA countdown): an offline chat message is answered by email, so it has the email's day.
FIRST_RESPONSE_SECONDS = {"voice": 20, "chat": 60, "email": 24 * 3600, "fax": 24 * 3600}


def reply_channel(channel: str, conversation_id: str) -> str:
    """The channel a contact is answered on: its own, except an offline chat message (see
    ChatNotifier.contact_created), which is answered by email."""
    return "email" if channel == "chat" and conversation_id.startswith("offline:") else channel


def first_response_due(created: int | None, answered_on: str) -> int | None:
    """When the first answer is due (ms), by the channel the contact is answered on."""
    return created + FIRST_RESPONSE_SECONDS[answered_on] * 1000 if created else None


# What became of an email or fax reply (DeliveryStatus), and the order states move in.
DELIVERY_STATES = {
    events_pb2.DELIVERY_STATE_SENT: "sent",
    events_pb2.DELIVERY_STATE_DELIVERED: "delivered",
    events_pb2.DELIVERY_STATE_RETRYING: "retrying",
    events_pb2.DELIVERY_STATE_FAILED: "failed",
}
DELIVERY_RANK = {"queued": 0, "retrying": 1, "sent": 2, "delivered": 3, "failed": 3}


def ms(ts: Timestamp) -> int | None:
    """Milliseconds since the epoch, or None for an unset timestamp."""
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return ts.seconds * 1000 + ts.nanos // 1_000_000


def text_of(parts: Any) -> str:
    return "\n".join(p.text for p in parts if p.content_type in ("", "text/plain"))


def contact(c: contact_pb2.Contact) -> dict[str, Any]:
    channel = CHANNELS.get(c.channel, "chat")
    created = ms(c.created_at)
    answered_on = reply_channel(channel, c.conversation_id)
    return {
        "contact_id": c.contact_id,
        "channel": channel,
        "customer_name": c.customer_name,
        "language": c.language,
        "skills": list(c.skills),
        "priority": int(c.priority),
        "queue": c.queue,
        "subject": c.subject,
        "text": text_of(c.content),
        "html": any(p.content_type == "text/html" for p in c.content),
        "identities": [
            {"kind": IDENTITIES.get(i.kind, "other"), "value": i.value} for i in c.identities
        ],
        "attachments": [
            {
                "filename": a.filename,
                "content_type": a.content_type,
                "size": int(a.size_bytes),
                "index": n,
            }
            for n, a in enumerate(c.attachments)
        ],
        "created_at": created,
        "conversation_id": c.conversation_id,
        "case_id": c.case_id,
        "reply_channel": answered_on,
        "sla_due": first_response_due(created, answered_on),
    }


def restored_contact(c: case_pb2.Case, k: case_pb2.CaseContact) -> dict[str, Any]:
    """A contact as `contact()` gives it, rebuilt from the case record (after a desk restart)."""
    channel = CHANNELS.get(k.channel, "chat")
    created = ms(k.created_at)
    first = next((m for m in k.messages if m.author == contact_pb2.AUTHOR_CUSTOMER), None)
    # An offline chat message (or a portal message) is known by its conversation id, or, in a
    # record made before contacts carried it, by its subject.
    offline = channel == "chat" and (
        k.subject == OFFLINE_SUBJECT or k.conversation_id.startswith("offline:")
    )
    answered_on = "email" if offline else channel
    return {
        "contact_id": k.contact_id,
        "channel": channel,
        "customer_name": c.customer.display_name,
        "language": k.language,
        "skills": list(k.skills),
        "priority": 0,
        "queue": k.queue,
        "subject": k.subject,
        "text": text_of(first.parts) if first else "",
        "html": False,
        "identities": [
            {"kind": IDENTITIES.get(i.kind, "other"), "value": i.value}
            for i in c.customer.identities
        ],
        "attachments": [],
        "created_at": created,
        "conversation_id": "",
        "case_id": c.case_id,
        "reply_channel": answered_on,
        "sla_due": first_response_due(created, answered_on),
    }


def offer(o: router_pb2.Offer) -> dict[str, Any]:
    return {
        "offer_id": o.offer_id,
        "expires_at": ms(o.expires_at),
        "queue": o.queue,
        "step": o.step,
        "contact": contact(o.contact),
    }


# The presence of an agent the desk has not signed in (or that was signed out).
SIGNED_OUT = {"presence": "offline", "reason": "", "by": "", "by_name": ""}


def presence(a: router_pb2.Agent, name_of: Callable[[str], str] = str) -> dict[str, Any]:
    """An agent's presence as its pages show it; `by`: who set it when neither the agent nor the
    router did (a supervisor's id), and `by_name` as the agent knows them (`name_of` the id)."""
    by = a.presence_set_by
    return {
        "presence": PRESENCES.get(a.presence, "offline"),
        "reason": a.presence_reason,
        "by": by,
        "by_name": name_of(by) if by else "",
    }


def board_state(a: router_pb2.Agent) -> str:
    """The agent's state on the wallboard: "available" only when signed in as available with no
    open contact and no outstanding offer (free to take a contact now); an available agent
    handling contacts or holding an offer is "busy"; otherwise the presence itself."""
    presence = PRESENCES.get(a.presence, "offline")
    if presence == "available" and (a.active_contact_ids or a.has_pending_offer):
        return "busy"
    return presence


def agent(a: router_pb2.Agent) -> dict[str, Any]:
    return {
        "agent_id": a.agent_id,
        "name": a.display_name,
        "presence": PRESENCES.get(a.presence, "offline"),
        "state": board_state(a),
        "reason": a.presence_reason,
        "active": len(a.active_contact_ids),
        "connected": a.connected,
        "pending_offer": a.has_pending_offer,
        "since": ms(a.presence_since),
        "languages": [lang.language for lang in a.languages],
    }


def _seconds(d: Any) -> float:
    return d.seconds + d.nanos / 1e9


def queue_stats(q: router_pb2.QueueStats) -> dict[str, Any]:
    """A queue's live figures for the wallboard. Waiting customers are those queued and those
    offered to an agent who has not accepted yet: both are still waiting for someone."""
    return {
        "queue": q.queue,
        "waiting": int(q.waiting) + int(q.offered),
        "queued": int(q.waiting),
        "longest_wait": _seconds(q.longest_wait),
        "offered": int(q.offered),
        "assigned": int(q.assigned),
        "answered": int(q.answered),
        "abandoned": int(q.abandoned),
        "sl_threshold": _seconds(q.sl_threshold),
        "sl_target": q.sl_target,
        "service_level": q.service_level,
        "asa": _seconds(q.average_speed_of_answer),
        "abandonment_rate": q.abandonment_rate,
        "surge_level": int(q.surge_level),
        "agents": {PRESENCES.get(s.presence, "offline"): int(s.count) for s in q.agents},
    }


def message(m: contact_pb2.Message) -> dict[str, Any]:
    return {
        "message_id": m.message_id,
        "author": AUTHORS.get(m.author, "system"),
        "agent_id": m.agent_id,
        "text": text_of(m.parts),
        "sent_at": ms(m.sent_at),
        "attachments": [
            {"filename": a.filename, "content_type": a.content_type} for a in m.attachments
        ],
        # The call's recording, played in the case panel (inbox/recordings.py): the voice
        # gateway's message naming it (the case keeps its id, not its attachment).
        "recording": m.message_id == recording_seal.message_id(m.contact_id)
        or any(a.bucket == RECORDINGS_BUCKET for a in m.attachments),
    }


def case(c: case_pb2.Case, with_messages: bool = True) -> dict[str, Any]:
    return {
        "case_id": c.case_id,
        "reference": c.reference,
        "status": CASE_STATUSES.get(c.status, "new"),
        "subject": c.subject,
        "customer": {
            "customer_id": c.customer.customer_id,
            "name": c.customer.display_name,
            "identities": [
                {"kind": IDENTITIES.get(i.kind, "other"), "value": i.value}
                for i in c.customer.identities
            ],
        },
        "created_at": ms(c.created_at),
        "updated_at": ms(c.updated_at),
        "assigned_agent_id": c.assigned_agent_id,
        "notes": [
            {"note_id": n.note_id, "author": n.author, "text": n.text, "at": ms(n.created_at)}
            for n in c.notes
        ],
        "sla": [
            {
                "metric": t.metric,
                "target": _seconds(t.target),
                "elapsed": _seconds(t.elapsed),
                "state": t.state,
                "breached": ms(t.breached_at) is not None,
            }
            for t in c.sla
        ],
        "contacts": [
            {
                "contact_id": k.contact_id,
                "channel": CHANNELS.get(k.channel, "chat"),
                "subject": k.subject,
                "status": k.status,
                "agent_id": k.agent_id,
                "created_at": ms(k.created_at),
                "messages": [message(m) for m in k.messages] if with_messages else [],
            }
            for k in c.contacts
        ],
    }
