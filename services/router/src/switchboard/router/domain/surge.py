"""The surge protocol: a tenant's surge level, raised by a queue that stays long enough over its
number of queued customers and cleared by enough agents idle long enough.

A level (see `SurgeLevel`) is raised when more than N customers are queued in one queue (waiting
or offered, not yet answered; outbound callbacks are not queued callers) *continuously* for T:
the engine counts the customers queued per queue as they come and go (`_count_queued`), notes
when a queue goes over each level's N (`TenantState.over_since`) and forgets it the moment the
queue is at or under N again, so a dip restarts the count. A timer at the end of T re-evaluates
the level. It clears when M agents have each been idle (available, no contact, no offer)
continuously for T' — each agent's idle period is timed (`_track_idle`); taking a contact ends
it — and no queue still meets the raise condition. Every change returns a `SurgeChanged` with
the queue's customers queued and its loss (abandonment) rate, and the agents on break then, for
the service to tell.
"""

from __future__ import annotations

from switchboard.router.domain.config import SurgeLevel
from switchboard.router.domain.model import (
    Agent,
    Contact,
    Effect,
    Presence,
    Status,
    SurgeChanged,
    TenantState,
)
from switchboard.router.domain.state import _EngineState


class Surge(_EngineState):
    """Customers queued, idle tracking and surge levels (a mixin of `Engine`)."""

    # ---- customers queued ------------------------------------------------------------------

    def _count_queued(self, c: Contact, delta: int) -> None:
        """`c` came into (+1) or left (-1) its queue's customers queued."""
        if c.callback:
            return  # the customer is not holding: an outbound callback is due to them
        state = self.tenant(c.tenant)
        state.queued[c.queue] = state.queued.get(c.queue, 0) + delta
        self._watch_queue(c.tenant, state, c.queue)

    def _watch_queue(self, tenant: str, state: TenantState, queue: str) -> None:
        """Start or end each level's continuous period over its number for `queue`."""
        n = state.queued.get(queue, 0)
        now = self.clock()
        for level in state.config.surge:
            if not level.watches(queue):
                continue
            key = (level.level, queue)
            if n > level.queued_over:
                if key not in state.over_since:
                    state.over_since[key] = now
                    self._timer(now + level.raise_for, "surge", tenant, 0)
            elif state.over_since.pop(key, None) is not None and state.surge_level:
                self._timer(now, "surge", tenant, 0)  # the level may clear now

    def _recount_queued(self) -> None:
        """Count the customers queued from the contacts (an engine pickled before the count)."""
        for state in self.tenants.values():
            state.queued, state.over_since = {}, {}
        for c in self.contacts.values():
            if c.status in (Status.WAITING, Status.OFFERED):
                self._count_queued(c, +1)

    # ---- idle agents -----------------------------------------------------------------------

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
        for threshold in sorted({lvl.idle_for for lvl in levels}):
            if threshold not in agent.long_idle:
                due = max(agent.idle_since, agent.presence_since) + threshold
                self._timer(due, "idle", (agent.tenant, agent.agent_id, threshold), agent.version)

    def _clear_long_idle(self, agent: Agent) -> None:
        state = self.tenant(agent.tenant)
        for threshold in agent.long_idle:
            state.long_idle[threshold] = state.long_idle.get(threshold, 1) - 1
        agent.long_idle = frozenset()

    # ---- the level -------------------------------------------------------------------------

    def _raised(self, state: TenantState, level: SurgeLevel) -> str:
        """The queue over the level's number continuously for its time (the longest), or ''."""
        now = self.clock()
        best, since = "", now
        for (lvl, queue), start in sorted(state.over_since.items()):
            if lvl == level.level and start + level.raise_for <= now and start <= since:
                best, since = queue, start
        return best

    def _loss_rate(self, tenant: str, queue: str) -> float:
        """Abandoned ÷ (answered + abandoned) in the queue's statistics window."""
        if not queue:
            return 0.0
        qs = self.tenant(tenant).queue_stats(queue)
        self._prune(tenant, queue, qs)
        left = qs.answered + qs.abandoned
        return qs.abandoned / left if left else 0.0

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
                    f"more than {level.queued_over} queued in {q} "
                    f"for {level.raise_for:.0f}s ({state.queued.get(q, 0)} now)"
                )
        if target > previous:
            state.surge_level, state.surge_queue = target, queue
        elif previous and target < previous:
            current = next((lvl for lvl in levels if lvl.level == previous), None)
            if current is not None:  # (a level the configuration no longer has goes at once)
                idle = state.long_idle.get(current.idle_for, 0)
                if idle < current.idle_agents:
                    return []
                reason = (
                    f"{idle} agents idle for {current.idle_for:.0f}s (>= {current.idle_agents})"
                )
            state.surge_level, state.surge_queue = target, queue or state.surge_queue
        else:
            return []
        where = queue or state.surge_queue
        on_break = tuple(
            sorted(
                a.agent_id
                for a in self.agents.values()
                if a.tenant == tenant and a.presence == Presence.BREAK
            )
        )
        effects: list[Effect] = [
            SurgeChanged(
                tenant,
                where,
                state.surge_level,
                previous,
                reason,
                state.surge_actions(),
                queued=state.queued.get(where, 0),
                abandonment_rate=self._loss_rate(tenant, where),
                on_break=on_break,
            )
        ]
        if not state.surge_level:
            state.surge_queue = ""
        if state.surge_level < previous:  # paused callbacks may go now
            for c in list(self.contacts.values()):
                if c.tenant == tenant and c.status == Status.WAITING and c.req and c.req.pausable:
                    effects += self._match_contact(c)
        return effects
