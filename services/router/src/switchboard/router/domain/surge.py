"""The surge protocol: a tenant's surge level, raised by contacts waiting too long in a queue and
cleared by agents idle long enough.

Ages of waiting contacts and idle periods of agents are counted by timers (`Engine.tick`); each
change re-evaluates the tenant's level and returns a `SurgeChanged` when it moves.
"""

from __future__ import annotations

from switchboard.router.domain.config import SurgeLevel
from switchboard.router.domain.model import (
    Agent,
    Effect,
    Presence,
    Status,
    SurgeChanged,
    TenantState,
)
from switchboard.router.domain.state import _EngineState


class Surge(_EngineState):
    """Idle tracking and surge levels (a mixin of `Engine`)."""

    def _is_idle(self, agent: Agent) -> bool:
        return agent.presence == Presence.AVAILABLE and not agent.active and agent.offer_id is None

    def _track_idle(self, agent: Agent) -> None:
        levels = self.tenant(agent.tenant).config.surge
        if not levels:
            return
        if not self._is_idle(agent):
            if agent.long_idle:
                self._clear_long_idle(agent)
            return
        for threshold in sorted({lvl.clear_idle_for for lvl in levels}):
            if threshold not in agent.long_idle:
                due = max(agent.idle_since, agent.presence_since) + threshold
                self._timer(due, "idle", (agent.tenant, agent.agent_id, threshold), agent.version)

    def _clear_long_idle(self, agent: Agent) -> None:
        state = self.tenant(agent.tenant)
        for threshold in agent.long_idle:
            state.long_idle[threshold] = state.long_idle.get(threshold, 1) - 1
        agent.long_idle = frozenset()

    def _raised(self, state: TenantState, level: SurgeLevel) -> str:
        """The queue meeting the level's raise condition, or ''."""
        for (queue, threshold), n in state.aged.items():
            if threshold == level.wait_longer_than and n > level.waiting_over:
                return queue
        return ""

    def _evaluate_surge(self, tenant: str) -> list[Effect]:
        state = self.tenant(tenant)
        levels = state.config.surge
        if not levels:
            return []
        previous = state.surge_level
        target, queue, reason = 0, "", ""
        for level in levels:
            q = self._raised(state, level)
            if q:
                target, queue = level.level, q
                reason = (
                    f"more than {level.waiting_over} contacts waited over "
                    f"{level.wait_longer_than:.0f}s in {q}"
                )
        if target > previous:
            state.surge_level, state.surge_queue = target, queue
        elif previous and target < previous:
            current = next(lvl for lvl in levels if lvl.level == previous)
            idle = state.long_idle.get(current.clear_idle_for, 0)
            if idle < current.clear_idle_agents:
                return []
            state.surge_level, state.surge_queue = target, queue
            reason = (
                f"{idle} agents idle for {current.clear_idle_for:.0f}s "
                f"(>= {current.clear_idle_agents})"
            )
        else:
            return []
        effects: list[Effect] = [
            SurgeChanged(
                tenant,
                queue or state.surge_queue,
                state.surge_level,
                previous,
                reason,
                state.surge_actions(),
            )
        ]
        if state.surge_level < previous:  # paused callbacks may go now
            for c in list(self.contacts.values()):
                if c.tenant == tenant and c.status == Status.WAITING and c.req and c.req.pausable:
                    effects += self._match_contact(c)
        return effects
