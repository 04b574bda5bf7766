"""The router's own Prometheus metrics (the bus and gRPC ones come from switchboard.core)."""

from __future__ import annotations

from prometheus_client import Counter

REPLAY_DIVERGENCES = Counter(
    "switchboard_router_replay_divergences_total",
    "Journal entries whose replay decided other offers or assignments than were recorded.",
)
STEP_DOWNS = Counter(
    "switchboard_router_step_downs_total",
    "Times a leading replica stopped leading, by cause.",
    ["cause"],
)
SESSION_ACTIONS = Counter(
    "switchboard_router_agent_session_actions_total",
    "Actions agents sent on their AgentSession streams (accept, decline, wrap_up), by the status "
    "code of the answer (OK, or the code of the refusal).",
    ["action", "code"],
)
