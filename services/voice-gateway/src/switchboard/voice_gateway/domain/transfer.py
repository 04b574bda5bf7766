"""Blind transfer: a REFER from the agent's phone, and the queue its Refer-To names."""

from __future__ import annotations

from switchboard.voice_gateway.config import VoiceConfig
from switchboard.voice_gateway.domain.refused import Refused
from switchboard.voice_gateway.domain.state import State


def refer_refusal(from_agent: bool, state: State, refer_to: str) -> Refused | None:
    """Only the agent's leg of a connected call may transfer, and only to somewhere."""
    if not from_agent or state is not State.CONNECTED or not refer_to:
        return Refused(403, "Forbidden: only the agent may transfer a connected call")
    return None


def target_queue(config: VoiceConfig, target: str, tenant: str) -> str:
    """The queue a Refer-To user names: a transfer code, a number of the same tenant's plan
    (its queue), or else a queue by name."""
    queue = config.transfer_codes.get(target, "")
    if queue:
        return queue
    plan = config.plan_for(target)
    return plan.queue if plan is not None and plan.tenant == tenant else target


def refused_status(unknown_queue: bool) -> str:
    """The sipfrag status line NOTIFYing a transfer the router refused."""
    return "404 Not Found" if unknown_queue else "503 Service Unavailable"
