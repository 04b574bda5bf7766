"""Socket.IO namespace and room names shared by the customer and agent namespaces."""

from __future__ import annotations

CUSTOMER = "/customer"
AGENT = "/agent"


def visitor_room(tenant: str, visitor_id: str) -> str:
    return f"visitor:{tenant}:{visitor_id}"


def contact_room(contact_id: str) -> str:
    return f"contact:{contact_id}"


def agent_room(tenant: str, agent_id: str) -> str:
    return f"agent:{tenant}:{agent_id}"
