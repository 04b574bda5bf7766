"""The engine's indexes and matching: available agents by profile group, and who gets what.

Each profile group keeps, per channel, a heap of its available agents ordered by idle time
(`_refresh` files an agent again after any change); a contact's requirements map to the groups
that qualify, and a group to the buckets of waiting contacts it can take, both cached until a new
group or bucket appears. Matching looks at a few heap heads, never at every agent or contact.
`_sweep` keeps the lazily-deleted heaps of waiting contacts near their live size.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping
from typing import Any

from switchboard.router.domain.model import (
    NOBODY,
    Agent,
    Contact,
    Effect,
    Group,
    Req,
    Status,
)
from switchboard.router.domain.state import _EngineState

SWEEP = 8  # heap entries looked at per push while a heap holds over twice its live entries


def _sweep(heap: list[Any], at: int, live: Callable[[Any], bool]) -> int:
    """Look at up to SWEEP entries of the heap from index `at`, removing the stale ones (each in
    O(log n), the heap kept valid); return the index the next sweep starts from. Called once per
    push while the heap is over its bound, so the cursor goes round the heap faster than it
    grows: stale entries are dropped within one round, a few at a time."""
    for _ in range(SWEEP):
        if at >= len(heap):
            at = 0
            if not heap:
                break
        if live(heap[at]):
            at += 1
            continue
        last = heap.pop()
        if at < len(heap):
            heap[at] = last
            _sift_down(heap, at)
            _sift_up(heap, at)
    return at


def _sift_up(heap: list[Any], pos: int) -> None:
    """Move heap[pos] towards the root while it is smaller than its parent."""
    item = heap[pos]
    while pos > 0:
        parent = (pos - 1) >> 1
        if not item < heap[parent]:
            break
        heap[pos] = heap[parent]
        pos = parent
    heap[pos] = item


def _sift_down(heap: list[Any], pos: int) -> None:
    """Move heap[pos] towards the leaves while a child is smaller."""
    item, end = heap[pos], len(heap)
    while True:
        child = 2 * pos + 1
        if child >= end:
            break
        if child + 1 < end and heap[child + 1] < heap[child]:
            child += 1
        if not heap[child] < item:
            break
        heap[pos] = heap[child]
        pos = child
    heap[pos] = item


class Index(_EngineState):
    """Availability index and matching (a mixin of `Engine`)."""

    # ---- availability index -----------------------------------------------------------------

    def _refresh(self, agent: Agent) -> None:
        """Re-file the agent in its group's heaps after anything that changes its availability."""
        new = agent.channels_available()
        group = agent.group
        for ch in agent.avail - new:
            group.available[ch] = group.available.get(ch, 1) - 1
        for ch in new - agent.avail:
            group.available[ch] = group.available.get(ch, 0) + 1
        agent.avail = new
        agent.version += 1
        for ch in sorted(new):
            heap = group.heaps.setdefault(ch, [])
            if len(heap) > 2 * len(group.members) + 64:  # compact the stale entries
                heap[:] = [e for e in heap if self._live_agent_entry(group, ch, e)]
                heapq.heapify(heap)
            heapq.heappush(
                group.heaps.setdefault(ch, []),
                (agent.idle_since, next(self._seq), agent.agent_id, agent.version),
            )
        self._track_idle(agent)

    @staticmethod
    def _live_agent_entry(group: Group, channel: int, entry: tuple[float, int, str, int]) -> bool:
        agent = group.members.get(entry[2])
        return agent is not None and agent.version == entry[3] and channel in agent.avail

    def _drop_availability(self, agent: Agent) -> None:
        for ch in agent.avail:
            agent.group.available[ch] = agent.group.available.get(ch, 1) - 1
        agent.avail = frozenset()
        agent.version += 1

    def _head(self, group: Group, channel: int, skip: Mapping[str, None]) -> Agent | None:
        """The longest-idle available agent of the group for the channel, not in `skip`."""
        heap = group.heaps.get(channel)
        if not heap:
            return None
        parked: list[tuple[float, int, str, int]] = []
        found: Agent | None = None
        while heap:
            _, _, agent_id, version = heap[0]
            agent = group.members.get(agent_id)
            if agent is None or agent.version != version or channel not in agent.avail:
                heapq.heappop(heap)  # stale
                continue
            if agent_id in skip:
                parked.append(heapq.heappop(heap))
                if len(parked) >= 16:
                    break
                continue
            found = agent
            break
        for entry in parked:
            heapq.heappush(heap, entry)
        return found

    # ---- matching ----------------------------------------------------------------------------

    def _qualifying(self, req: Req) -> list[tuple[int, Group, bool]]:
        cached = self.req_groups.get(req)
        if cached is not None and cached[0] == self._groups_version:
            return cached[1]
        out: list[tuple[int, Group, bool]] = []
        for group in self.tenant_groups.get(req.tenant, []):
            score, reasons, via_step = group.assess(req)
            if not reasons:
                out.append((score, group, via_step))
        out.sort(key=lambda t: (-t[0], t[1].seq))
        self.req_groups[req] = (self._groups_version, out)
        return out

    def _group_reqs(self, group: Group, channel: int) -> list[Req]:
        version = self._reqs_version * 1_000_003 + self._groups_version
        cached = group.req_cache.get(channel)
        if cached is not None and cached[0] == version:
            return cached[1]
        reqs = [
            r
            for r in self.buckets
            if r.tenant == group.tenant and r.channel == channel and not group.assess(r)[1]
        ]
        group.req_cache[channel] = (version, reqs)
        return reqs

    def _candidates(self, c: Contact, allow_declined: bool) -> list[tuple[int, Agent, bool]]:
        """The best available agent of each qualifying group, best first."""
        assert c.req is not None
        skip = NOBODY if allow_declined else c.declined_by
        out: list[tuple[int, Agent, bool]] = []
        for score, group, via_step in self._qualifying(c.req):
            agent = self._head(group, c.channel, skip)
            if agent is not None:
                out.append((score, agent, via_step))
        out.sort(key=lambda t: (-t[0], t[1].idle_since, t[1].group.seq))
        return out

    def _match_contact(self, c: Contact, not_now: str = "") -> list[Effect]:
        """Offer a waiting contact to the best available agent, if there is one."""
        if c.status != Status.WAITING or c.req is None:
            return []
        state = self.tenant(c.tenant)
        if c.req.pausable and "pause_callbacks" in state.surge_actions():
            return []
        if c.sticky_agent:
            agent = self.agents.get((c.tenant, c.sticky_agent))
            if agent is not None and c.channel in agent.avail:
                score, reasons, via_step = agent.group.assess(c.req)
                if not reasons:
                    attempt = self._attempt(c, [(score, agent, via_step)], sticky=True)
                    return [self._offer(agent, c, via_step, attempt)]
        ranked = self._candidates(c, allow_declined=False)
        if not ranked and c.declined_by:
            # Only agents who let it go before: the next best of them, never the one just now.
            ranked = [
                r for r in self._candidates(c, allow_declined=True) if r[1].agent_id != not_now
            ]
        if not ranked:
            return []
        score, best, via_step = ranked[0]
        return [self._offer(best, c, via_step, self._attempt(c, ranked))]

    def _match_agent(self, agent: Agent, not_now: str = "") -> list[Effect]:
        """Offer the freed agent the waiting contact that most needs it, if any."""
        if not agent.avail:
            return []
        state = self.tenant(agent.tenant)
        paused = "pause_callbacks" in state.surge_actions()
        sticky = self.sticky_waiting.get((agent.tenant, agent.agent_id))
        best: tuple[tuple[int, float, int], Contact] | None = None
        if sticky:
            for contact_id in list(sticky)[:32]:
                c = self.contacts.get(contact_id)
                if c is None or c.status != Status.WAITING or c.req is None:
                    sticky.pop(contact_id, None)
                    continue
                if c.channel in agent.avail and not agent.group.assess(c.req)[1]:
                    if not (paused and c.req.pausable):
                        key = (-c.priority, c.queued_at, c.seq)
                        if best is None or key < best[0]:
                            best = (key, c)
        if best is None:
            for channel in sorted(agent.avail):
                for req in self._group_reqs(agent.group, channel):
                    if not self.bucket_size.get(req) or (paused and req.pausable):
                        continue
                    c = self._bucket_head(req, agent.agent_id)
                    if c is None:
                        c = self._bucket_head(req, "")  # only contacts it declined before
                        if c is None or c.contact_id == not_now:
                            continue
                    q = state.config.queue(c.queue)
                    key = (-c.priority, c.queued_at + q.sl_threshold, c.seq)
                    if best is None or key < best[0]:
                        best = (key, c)
        if best is None:
            return []
        c = best[1]
        assert c.req is not None
        score, _, via_step = agent.group.assess(c.req)
        attempt = self._attempt(
            c, [(score, agent, via_step)], sticky=c.sticky_agent == agent.agent_id
        )
        return [self._offer(agent, c, via_step, attempt)]
