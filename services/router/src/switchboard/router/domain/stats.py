"""Queue statistics: service level over a sliding window, the longest wait, a contact's place.

Outcomes (answered or abandoned, within the threshold or not) are counted as they happen and
pruned as they leave the queue's window; the wallboard and `position` read them.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

from switchboard.core.errors import NotFound
from switchboard.router.domain.model import Contact, QueueStats, Status, bucket_entry
from switchboard.router.domain.state import _EngineState

# Contacts still waiting for someone, as the wallboard counts them.
WAITING_FOR_AGENT = frozenset({Status.WAITING, Status.OFFERED})


class Stats(_EngineState):
    """Per-queue statistics (a mixin of `Engine`)."""

    def _record_outcome(self, c: Contact, answered: bool, waited: float) -> None:
        qs = self.tenant(c.tenant).queue_stats(c.queue)
        threshold = self.tenant(c.tenant).config.queue(c.queue).sl_threshold
        within = waited <= threshold
        qs.window.append((self.clock(), answered, waited))
        if answered:
            qs.answered += 1
            qs.answered_in += within
            qs.answer_wait_total += waited
        else:
            qs.abandoned += 1
            qs.abandoned_in += within
        self._prune(c.tenant, c.queue, qs)

    def _prune(self, tenant: str, queue: str, qs: QueueStats) -> None:
        cfg = self.tenant(tenant).config
        q = cfg.queue(queue)
        horizon = self.clock() - q.sl_window
        while qs.window and qs.window[0][0] < horizon:
            _, answered, waited = qs.window.popleft()
            within = waited <= q.sl_threshold
            if answered:
                qs.answered -= 1
                qs.answered_in -= within
                qs.answer_wait_total -= waited
            else:
                qs.abandoned -= 1
                qs.abandoned_in -= within

    def queue_snapshot(self, tenant: str, queue: str) -> tuple[QueueStats, float]:
        """A queue's statistics (pruned to its window) and its longest current wait: of the
        contacts not yet taken by an agent, queued or offered (an offer not yet accepted)."""
        state = self.tenant(tenant)
        qs = state.queue_stats(queue)
        self._prune(tenant, queue, qs)
        longest = 0.0
        while qs.oldest:
            queued_at, contact_id = qs.oldest[0].queued_at, qs.oldest[0].contact_id
            c = self.contacts.get(contact_id)
            if c is None or c.status not in WAITING_FOR_AGENT or c.queue != queue:
                gone = heapq.heappop(qs.oldest)
                if gone.oldest_in == queue:
                    gone.oldest_in = ""
                continue
            longest = self.clock() - queued_at
            break
        return qs, longest

    def queues_of(self, tenant: str) -> list[str]:
        state = self.tenant(tenant)
        names = list(state.config.queues)
        names += [q for q in state.stats if q not in state.config.queues]
        return names

    def position(self, tenant: str, contact_id: str) -> tuple[Contact, int, int, float]:
        """(contact, 1-based place among the contacts ahead of it in its bucket order, waiting in
        its queue, estimated wait in seconds from the queue's recent speed of answer)."""
        c = self.contacts.get(contact_id)
        if c is None or c.tenant != tenant:
            if contact_id in self.history and self.history[contact_id][0].tenant == tenant:
                return self.history[contact_id][0], 0, 0, 0.0
            raise NotFound("contact", contact_id)
        qs, _ = self.queue_snapshot(tenant, c.queue)
        if c.status != Status.WAITING or c.req is None:
            return c, 0, qs.waiting, 0.0
        q = self.tenant(tenant).config.queue(c.queue)
        mine = bucket_entry(c)[:3]
        ahead = sum(
            1
            for entry in self.buckets.get(c.req, [])
            if entry[:3] < mine
            and (other := self.contacts.get(entry[3])) is not None
            and other.version == entry[4]
        )
        position = ahead + 1
        # Contacts answered per second from the queue recently; without history, one per
        # qualifying available agent per threshold.
        window = max(
            1.0, min(q.sl_window, self.clock() - (qs.window[0][0] if qs.window else self.clock()))
        )
        rate = qs.answered / window if qs.answered else 0.0
        if rate > 0:
            estimate = position / rate
        else:
            estimate = position * q.sl_threshold
        return c, position, qs.waiting, estimate

    def iter_tenants(self) -> Iterator[str]:
        return iter(list(self.tenants))
