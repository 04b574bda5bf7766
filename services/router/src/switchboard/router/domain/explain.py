"""Explanations: why a contact went to an agent, and why the others could not take it.

Every offer carries an `Attempt` (the ranked candidates and the agents excluded, with why);
`explain` answers ExplainDecision from it, and for a waiting contact says why it waits now.
"""

from __future__ import annotations

import itertools

from switchboard.core.errors import InvalidArgument, NotFound
from switchboard.router.domain.model import (
    STATUS_NAMES,
    Agent,
    Attempt,
    Contact,
    Group,
    Presence,
    Req,
    Status,
    Why,
)
from switchboard.router.domain.state import _EngineState

MAX_CANDIDATES = 20
MAX_EXCLUSIONS = 50


class Explain(_EngineState):
    """Decision records and the reasons agents were passed over (a mixin of `Engine`)."""

    def _attempt(
        self, c: Contact, ranked: list[tuple[int, Agent, bool]], sticky: bool = False
    ) -> Attempt:
        candidates = [
            (a.agent_id, score, a.idle_since, sticky or a.agent_id == c.sticky_agent)
            for score, a, _ in ranked[:MAX_CANDIDATES]
        ]
        excluded, total = self._exclusions(c, {a.agent_id for _, a, _ in ranked})
        return Attempt("", "", self.clock(), "offered", c.step_name, candidates, excluded, total)

    def _exclusions(
        self, c: Contact, chosen: set[str]
    ) -> tuple[list[tuple[str, tuple[Why, ...], str]], int]:
        """Which agents of the tenant could not take the contact, and why (the first 50 listed,
        all counted)."""
        req = c.req or self._req(c)
        listed: list[tuple[str, tuple[Why, ...], str]] = []
        total = 0
        for group, reasons, detail in self._not_qualifying(req):
            total += len(group.members)
            for agent_id in group.members:
                if len(listed) >= MAX_EXCLUSIONS:
                    break
                listed.append((agent_id, reasons, detail))
        for _, group, _ in self._qualifying(req):
            available = group.available.get(c.channel, 0)
            unavailable = len(group.members) - available
            declined = sum(1 for a in c.declined_by if a in group.members)
            total += unavailable + declined
            if len(listed) >= MAX_EXCLUSIONS or unavailable + declined == 0:
                continue
            # Name some of them; looking further than a few hundred members costs more than the
            # names are worth (they are all counted above).
            for agent in itertools.islice(group.members.values(), 500):
                if len(listed) >= MAX_EXCLUSIONS:
                    break
                if agent.agent_id in chosen:
                    continue
                why = self._unavailable(agent, c)
                if why is not None:
                    listed.append((agent.agent_id, (why[0],), why[1]))
        return listed, total

    def _not_qualifying(self, req: Req) -> list[tuple[Group, tuple[Why, ...], str]]:
        """The groups that cannot take contacts with these requirements, with why (cached until a
        new group appears, like `_qualifying`)."""
        cached = self.req_excluded.get(req)
        if cached is not None and cached[0] == self._groups_version:
            return cached[1]
        out: list[tuple[Group, tuple[Why, ...], str]] = []
        for group in self.tenant_groups.get(req.tenant, []):
            _, reasons, _ = group.assess(req)
            if reasons:
                out.append((group, tuple(reasons), self._detail(group, req, reasons)))
        self.req_excluded[req] = (self._groups_version, out)
        return out

    def _detail(self, group: Group, req: Req, reasons: list[Why]) -> str:
        if Why.LANGUAGE in reasons:
            return f"does not speak {req.language or 'the language'}"
        if Why.SKILL in reasons:
            missing = [s for s in req.skills if group.skill_prof(s) == 0]
            return f"lacks skill {', '.join(missing)}"
        return f"below the minimum proficiency {req.min_prof} in force"

    def _unavailable(self, agent: Agent, c: Contact) -> tuple[Why, str] | None:
        if agent.agent_id in c.declined_by:
            return Why.DECLINED, "declined or missed this contact"
        if agent.presence != Presence.AVAILABLE:
            reason = f" ({agent.presence_reason})" if agent.presence_reason else ""
            return Why.PRESENCE, f"{agent.presence.name.lower()}{reason}"
        if not agent.connected:
            return Why.NOT_CONNECTED, "no open offer stream"
        if agent.offer_id is not None:
            return Why.RESERVED, "holding another offer"
        if c.channel not in agent.avail:
            return Why.CAPACITY, f"at capacity ({len(agent.active)} active)"
        return None

    def preview(
        self, tenant: str, channel: int, language: str, skills: tuple[str, ...], queue: str
    ) -> tuple[str, Attempt]:
        """Who would be offered a contact with these requirements now, best first, and why the
        others would not: the queue it would go to and the attempt an offer would record. Nothing
        is queued or changed."""
        if channel not in (1, 2, 3, 4):
            raise InvalidArgument("channel", "must name a channel")
        cfg = self.tenant(tenant).config
        q = queue if queue in cfg.queues else cfg.default_queue
        now = self.clock()
        c = Contact(b"", "preview", tenant, channel, language, tuple(skills), False, q, now, now, 0)
        c.min_prof = cfg.queue(q).min_proficiency
        c.req = Req(
            tenant=tenant,
            channel=channel,
            queue=q,
            language=language,
            skills=tuple(sorted(set(skills) | set(cfg.queue(q).skills))),
            min_prof=c.min_prof,
            extra_languages=(),
            drop_skills=False,
            pausable=False,
        )
        ranked = self._candidates(c, allow_declined=False)
        attempt = self._attempt(c, ranked)
        attempt.agent_id = ranked[0][1].agent_id if ranked else ""
        attempt.outcome = "offered" if ranked else "waiting"
        return q, attempt

    def explain(self, tenant: str, contact_id: str) -> tuple[Contact, str, Attempt | None]:
        """A contact's decision record; for a waiting contact also why it waits right now."""
        c = self.contacts.get(contact_id)
        state = ""
        if c is None:
            hit = self.history.get(contact_id)
            if hit is None:
                raise NotFound("contact", contact_id)
            c, state = hit
        if c.tenant != tenant:
            raise NotFound("contact", contact_id)
        live: Attempt | None = None
        if c.status == Status.WAITING:
            excluded, total = self._exclusions(c, set())
            live = Attempt("", "", self.clock(), "waiting", c.step_name, [], excluded, total)
        return c, state or STATUS_NAMES[c.status], live
