"""The KPIs of a contact centre and a service desk, as pure functions of recorded facts.

Every definition here is the one docs/kpi.md documents; the report queries only load the facts.
A rate whose denominator is zero is undefined (None), never 0 % or 100 %: an interval with no
calls has no service level.

Attribution: a contact counts in the interval in which it arrived (was queued), whatever happened
later; a rating counts when it was given, a QA evaluation when it was scored, and the backlog is
measured at the end of each interval.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from switchboard.case.reports.business_time import AlwaysOpen, BusinessClock
from switchboard.case.reports.intervals import Interval, bucket, intervals
from switchboard.core.service_level import Outcomes, ratio

REALTIME = frozenset({"voice", "chat"})  # answered live: speed-of-answer service level
DEFERRED = frozenset({"email", "fax"})  # answered later: first-response service level
DIMENSIONS = ("tenant", "queue", "channel", "agent")
SATISFIED = 4  # a 1..5 rating of 4 or 5 is satisfied
HOLD_LIMIT_MS = 60_000  # the centres' rule: each hold at most 60 s
BACKLOG_METRICS = ("backlog", "backlog_avg_age_s", "backlog_max_age_s")


@dataclass(frozen=True)
class KpiOptions:
    voice_threshold: timedelta = timedelta(seconds=20)  # 80/20: answered within 20 s
    short_abandon: timedelta | None = (
        None  # SL2: abandons within this are excluded; None = threshold
    )
    email_threshold: timedelta = timedelta(hours=24)  # 90 % within 24 h
    email_clock: BusinessClock = field(default_factory=AlwaysOpen)
    fcr_window: timedelta = timedelta(hours=72)

    @property
    def short_abandon_limit(self) -> timedelta:
        return self.voice_threshold if self.short_abandon is None else self.short_abandon


@dataclass(frozen=True)
class ContactFacts:
    contact_id: str
    tenant: str
    queue: str
    channel: str  # voice, chat, email, fax
    agent_id: str
    customer_id: str
    arrived_at: datetime  # queued (or created, if never queued)
    answered_at: datetime | None = None  # an agent took it (real-time channels)
    first_response_at: datetime | None = None  # the first agent reply (deferred channels)
    abandoned_at: datetime | None = None
    ended_at: datetime | None = None
    wait_ms: int | None = None  # as measured by the router, preferred when known
    talk_ms: int | None = None  # assigned -> ended, hold included (ContactEnded.talk)
    hold_ms: int | None = None
    wrap_up_ms: int | None = None
    holds_ms: tuple[int, ...] = ()  # each hold period, when the channel reported them

    @property
    def answered(self) -> bool:
        return self.answered_at is not None and self.abandoned_at is None

    @property
    def abandoned(self) -> bool:
        return self.abandoned_at is not None and self.answered_at is None

    def wait(self) -> timedelta | None:
        if not self.answered:
            return None
        if self.wait_ms is not None:
            return timedelta(milliseconds=self.wait_ms)
        assert self.answered_at is not None
        return self.answered_at - self.arrived_at

    @property
    def handled(self) -> bool:
        """Ended after an agent had it, with a measured talk time."""
        return self.ended_at is not None and self.talk_ms is not None and bool(self.agent_id)

    @property
    def reached_agent(self) -> bool:
        return self.answered or self.first_response_at is not None


@dataclass(frozen=True)
class RatingFacts:
    tenant: str
    queue: str
    channel: str
    agent_id: str
    rated_at: datetime
    score: int  # 1..5


@dataclass(frozen=True)
class EvaluationFacts:
    tenant: str
    queue: str
    channel: str
    agent_id: str
    scored_at: datetime
    score: float  # 0..100
    fatal_errors: int


@dataclass(frozen=True)
class CaseFacts:
    tenant: str
    queue: str  # of its first contact
    channel: str  # of its first contact
    agent_id: str  # assigned agent
    created_at: datetime
    closed_at: datetime | None  # resolved or closed; None while open


@dataclass(frozen=True)
class DraftFacts:
    """A new request written in the portal that was shown suggested articles."""

    tenant: str
    shown_at: datetime
    opened: int  # suggested articles opened while writing it
    submitted: bool

    # Portal drafts have no queue, channel or agent: grouped by those they fall under "".
    queue: str = ""
    channel: str = ""
    agent_id: str = ""


@dataclass(frozen=True)
class AgentStateFacts:
    """A period of one presence of an agent: from a state change to the agent's next (or to the
    report's `as_of`, for its present state)."""

    tenant: str
    agent_id: str
    presence: str  # available, busy, wrap_up, break, not_responding, offline
    start: datetime
    end: datetime
    reason: str = ""
    by_other: bool = False  # set by someone else (a supervisor), not the agent or the router

    # Agents' states have no queue or channel: grouped by those they fall under "".
    queue: str = ""
    channel: str = ""


Metrics = dict[str, float | None]


@dataclass(frozen=True)
class Row:
    start: datetime
    end: datetime
    group: tuple[tuple[str, str], ...]  # (dimension, value) pairs, in DIMENSIONS order
    metrics: Metrics


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


# ---- the KPIs, each over the facts of one interval and group ---------------------------------


def service_level(contacts: Iterable[ContactFacts], options: KpiOptions) -> Metrics:
    """Real-time contacts (voice, chat): offered, answered, abandoned, SL, SL2, ASA, abandonment."""
    rt = [c for c in contacts if c.channel in REALTIME]
    answered = [c for c in rt if c.answered]
    abandoned = [c for c in rt if c.abandoned]
    short = [
        c
        for c in abandoned
        if c.abandoned_at is not None
        and c.abandoned_at - c.arrived_at <= options.short_abandon_limit
    ]
    waits = [w for c in answered if (w := c.wait()) is not None]
    within = sum(1 for w in waits if w <= options.voice_threshold)
    outcomes = Outcomes(len(answered), within, len(abandoned), len(short))
    return {
        "offered": float(len(rt)),
        "answered": float(len(answered)),
        "answered_within_threshold": float(within),
        "abandoned": float(len(abandoned)),
        "short_abandoned": float(len(short)),
        "service_level": outcomes.service_level,
        "service_level_2": outcomes.service_level_2,
        "asa_s": mean([w.total_seconds() for w in waits]),
        "abandon_rate": outcomes.abandon_rate,
        "abandon_rate_2": outcomes.abandon_rate_2,
    }


def email_service_level(
    contacts: Iterable[ContactFacts], options: KpiOptions, as_of: datetime
) -> Metrics:
    """Deferred contacts (email, fax): share first answered by an agent within the target, in
    business time. One not answered yet counts once its target has passed (a breach); before
    that it is pending and in no rate."""
    clock = options.email_clock
    limit = options.email_threshold.total_seconds()
    received = [c for c in contacts if c.channel in DEFERRED]
    within = breached = pending = answered = 0
    for c in received:
        if c.first_response_at is not None:
            answered += 1
            if clock.business_seconds(c.arrived_at, c.first_response_at) <= limit:
                within += 1
            else:
                breached += 1
        elif clock.business_seconds(c.arrived_at, as_of) > limit:
            breached += 1
        else:
            pending += 1
    return {
        "email_received": float(len(received)),
        "email_answered": float(answered),
        "email_answered_within_target": float(within),
        "email_pending": float(pending),
        "email_service_level": ratio(within, within + breached),
    }


def hold_periods(contact: ContactFacts) -> tuple[int, ...]:
    """Each hold of a contact in ms: the recorded periods, else its total as one hold (a channel
    that reports only the total), else none."""
    if contact.holds_ms:
        return contact.holds_ms
    return (contact.hold_ms,) if contact.hold_ms else ()


def handling(contacts: Iterable[ContactFacts]) -> Metrics:
    """AHT = talk (hold included, as the router measures it) + wrap-up, per handled contact; the
    average hold time per handled contact, and per contact that was put on hold; the holds, and
    those over 60 s (the rule is per hold: two holds of 40 s break it nowhere)."""
    handled = [c for c in contacts if c.handled]
    aht = [((c.talk_ms or 0) + (c.wrap_up_ms or 0)) / 1000 for c in handled]
    holds = [(c.hold_ms or 0) / 1000 for c in handled]
    held = [h for h in holds if h > 0]
    periods = [p for c in handled for p in hold_periods(c)]
    over = sum(1 for p in periods if p > HOLD_LIMIT_MS)
    return {
        "holds": float(len(periods)),
        "holds_over_60s": float(over),
        "holds_over_60s_rate": ratio(over, len(periods)),
        "handled": float(len(handled)),
        "aht_s": mean(aht),
        "avg_talk_s": mean([((c.talk_ms or 0) - (c.hold_ms or 0)) / 1000 for c in handled]),
        "avg_hold_s": mean(holds),
        "avg_hold_when_held_s": mean(held),
        "avg_wrap_up_s": mean([(c.wrap_up_ms or 0) / 1000 for c in handled]),
    }


def first_contact_resolution(
    contacts: Iterable[ContactFacts],
    all_contacts: Sequence[ContactFacts],
    options: KpiOptions,
    as_of: datetime,
) -> Metrics:
    """A contact that reached an agent is resolved at first contact when the same customer makes
    no other contact, on any channel, within the window after it arrived. It is decided once a
    repeat arrives or the window has passed; until then it is pending."""
    by_customer: dict[tuple[str, str], list[datetime]] = defaultdict(list)
    for c in all_contacts:
        by_customer[(c.tenant, c.customer_id)].append(c.arrived_at)
    resolved = repeated = pending = 0
    for c in contacts:
        if not c.reached_agent or not c.customer_id:
            continue
        window_end = c.arrived_at + options.fcr_window
        if any(c.arrived_at < t <= window_end for t in by_customer[(c.tenant, c.customer_id)]):
            repeated += 1
        elif as_of >= window_end:
            resolved += 1
        else:
            pending += 1
    return {
        "fcr_resolved": float(resolved),
        "fcr_repeated": float(repeated),
        "fcr_pending": float(pending),
        "fcr_rate": ratio(resolved, resolved + repeated),
    }


def csat(ratings: Iterable[RatingFacts]) -> Metrics:
    """CSAT = share of ratings of 4 or 5 (of 5)."""
    scores = [r.score for r in ratings]
    return {
        "csat_responses": float(len(scores)),
        "csat": ratio(sum(1 for s in scores if s >= SATISFIED), len(scores)),
        "csat_avg_score": mean([float(s) for s in scores]),
    }


def quality(evaluations: Iterable[EvaluationFacts]) -> Metrics:
    """Fatal-error rate = share of QA evaluations with at least one fatal error."""
    evs = list(evaluations)
    return {
        "qa_evaluations": float(len(evs)),
        "qa_avg_score": mean([e.score for e in evs]),
        "fatal_error_rate": ratio(sum(1 for e in evs if e.fatal_errors > 0), len(evs)),
    }


def backlog(cases: Iterable[CaseFacts], at: datetime) -> Metrics:
    """Cases open at `at` (created before it, not resolved or closed by then) and their ages."""
    ages = [
        (at - c.created_at).total_seconds()
        for c in cases
        if c.created_at < at and (c.closed_at is None or c.closed_at > at)
    ]
    return {
        "backlog": float(len(ages)),
        "backlog_avg_age_s": mean(ages),
        "backlog_max_age_s": max(ages) if ages else None,
    }


def deflection(drafts: Iterable[DraftFacts]) -> Metrics:
    """Suggestions shown (drafts), articles opened, deflected (a draft whose customer opened a
    suggested article and did not send it) and submitted after viewing (opened, then sent)."""
    ds = list(drafts)
    viewed = [d for d in ds if d.opened]
    deflected = sum(1 for d in viewed if not d.submitted)
    return {
        "suggestions_shown": len(ds),
        "articles_opened": sum(d.opened for d in ds),
        "deflected": deflected,
        "submitted_after_viewing": len(viewed) - deflected,
        "deflection_rate": deflected / len(viewed) if viewed else None,
    }


# Time in each presence, in the agent-states report (offline is the time not signed in).
AGENT_PRESENCES = ("available", "busy", "wrap_up", "break", "not_responding")


def agent_states(periods: Iterable[AgentStateFacts], start: datetime, end: datetime) -> Metrics:
    """Agents' time in each presence within [start, end) (a period counts for the part of it
    inside), signed in (any presence but offline); the breaks and not-responding periods that
    began in it, and the changes someone else made; availability = available / signed in."""
    seconds = dict.fromkeys(AGENT_PRESENCES, 0.0)
    breaks = not_responding = by_others = 0
    for p in periods:
        inside = (min(p.end, end) - max(p.start, start)).total_seconds()
        if inside > 0 and p.presence in seconds:
            seconds[p.presence] += inside
        if start <= p.start < end:
            breaks += p.presence == "break"
            not_responding += p.presence == "not_responding"
            by_others += p.by_other
    signed_in = sum(seconds.values())
    return {
        "signed_in_s": signed_in,
        **{f"{presence}_s": value for presence, value in seconds.items()},
        "breaks": float(breaks),
        "not_responding": float(not_responding),
        "changed_by_others": float(by_others),
        "availability": seconds["available"] / signed_in if signed_in else None,
    }


def agent_periods(
    changes: Iterable[tuple[str, str, str, str, str, datetime]], until: datetime
) -> list[AgentStateFacts]:
    """The periods of agents' presences from their state changes (tenant, agent, presence,
    reason, changed by, at), in any order: each lasts until the same agent's next change, the
    last until `until`."""
    by_agent: dict[tuple[str, str], list[tuple[datetime, str, str, str]]] = defaultdict(list)
    for tenant, agent_id, presence, reason, changed_by, at in changes:
        by_agent[(tenant, agent_id)].append((at, presence, reason, changed_by))
    periods = []
    for (tenant, agent_id), seq in by_agent.items():
        seq.sort(key=lambda change: change[0])
        ends = [change[0] for change in seq[1:]] + [max(until, seq[-1][0])]
        for (at, presence, reason, changed_by), ended in zip(seq, ends, strict=True):
            periods.append(
                AgentStateFacts(tenant, agent_id, presence, at, ended, reason, bool(changed_by))
            )
    return periods


# ---- a report: the KPIs per interval and group -----------------------------------------------


@dataclass(frozen=True)
class ReportSpec:
    start: datetime
    end: datetime
    interval: Interval
    tz: ZoneInfo
    group_by: tuple[str, ...] = ()  # a subset of DIMENSIONS
    options: KpiOptions = field(default_factory=KpiOptions)


@dataclass
class ReportFacts:
    contacts: Sequence[ContactFacts] = ()
    # Contacts that may be repeats of the report's contacts (arrived up to end + FCR window).
    later_contacts: Sequence[ContactFacts] = ()
    ratings: Sequence[RatingFacts] = ()
    evaluations: Sequence[EvaluationFacts] = ()
    cases: Sequence[CaseFacts] = ()
    drafts: Sequence[DraftFacts] = ()
    agent_periods: Sequence[AgentStateFacts] = ()


Fact = ContactFacts | RatingFacts | EvaluationFacts | CaseFacts | DraftFacts | AgentStateFacts


def _key(fact: Fact, dims: Sequence[str]):  # type: ignore[no-untyped-def]
    values = {
        "tenant": fact.tenant,
        "queue": fact.queue,
        "channel": fact.channel,
        "agent": fact.agent_id,
    }
    return tuple((d, values[d]) for d in DIMENSIONS if d in dims)


def compute(
    facts: ReportFacts,
    spec: ReportSpec,
    as_of: datetime,
    sections: Sequence[str] = (
        "service_level",
        "email",
        "handling",
        "fcr",
        "csat",
        "quality",
        "backlog",
    ),
) -> list[Row]:
    """One row per interval of [spec.start, spec.end) and group seen in the facts (a row per
    interval with no grouping at all, so an interval with no calls still shows, with no rates)."""
    opts = spec.options
    slots = list(intervals(spec.start, spec.end, spec.interval, spec.tz))
    slot_of: Callable[[datetime], tuple[datetime, datetime]] = lambda t: bucket(  # noqa: E731
        t, spec.interval, spec.tz
    )
    in_range = lambda t: spec.start <= t < spec.end  # noqa: E731
    contacts: dict[tuple, list[ContactFacts]] = defaultdict(list)  # type: ignore[type-arg]
    ratings: dict[tuple, list[RatingFacts]] = defaultdict(list)  # type: ignore[type-arg]
    evaluations: dict[tuple, list[EvaluationFacts]] = defaultdict(list)  # type: ignore[type-arg]
    cases: dict[tuple, list[CaseFacts]] = defaultdict(list)  # type: ignore[type-arg]
    drafts: dict[tuple, list[DraftFacts]] = defaultdict(list)  # type: ignore[type-arg]
    groups: set[tuple] = set()  # type: ignore[type-arg]
    for c in facts.contacts:
        if in_range(c.arrived_at):
            g = _key(c, spec.group_by)
            groups.add(g)
            contacts[(slot_of(c.arrived_at)[0], g)].append(c)
    for r in facts.ratings:
        if in_range(r.rated_at):
            g = _key(r, spec.group_by)
            groups.add(g)
            ratings[(slot_of(r.rated_at)[0], g)].append(r)
    for e in facts.evaluations:
        if in_range(e.scored_at):
            g = _key(e, spec.group_by)
            groups.add(g)
            evaluations[(slot_of(e.scored_at)[0], g)].append(e)
    for d in facts.drafts:
        if in_range(d.shown_at):
            g = _key(d, spec.group_by)
            groups.add(g)
            drafts[(slot_of(d.shown_at)[0], g)].append(d)
    periods: dict[tuple, list[AgentStateFacts]] = defaultdict(list)  # type: ignore[type-arg]
    for p in facts.agent_periods:
        first, last = max(p.start, spec.start), min(p.end, spec.end)
        if p.presence != "offline" and first < last:
            slot_starts = [s for s, _ in intervals(first, last, spec.interval, spec.tz)]
        elif in_range(p.start):
            # A sign-out (no time counted) or a moment's state: where it began, for its counts.
            slot_starts = [slot_of(p.start)[0]]
        else:
            continue
        g = _key(p, spec.group_by)
        groups.add(g)
        for slot_start in slot_starts:
            periods[(slot_start, g)].append(p)
    if "backlog" in sections:
        for k in facts.cases:
            g = _key(k, spec.group_by)
            cases[g].append(k)
            if k.created_at < spec.end and (k.closed_at is None or k.closed_at > spec.start):
                groups.add(g)
    if not spec.group_by:
        groups = {()}
    everyone = list(facts.contacts) + list(facts.later_contacts)
    rows = []
    for start, end in slots:
        for g in sorted(groups):
            cs = contacts.get((start, g), [])
            metrics: Metrics = {}
            if "service_level" in sections:
                metrics.update(service_level(cs, opts))
            if "email" in sections:
                metrics.update(email_service_level(cs, opts, as_of))
            if "handling" in sections:
                metrics.update(handling(cs))
            if "fcr" in sections:
                metrics.update(first_contact_resolution(cs, everyone, opts, as_of))
            if "csat" in sections:
                metrics.update(csat(ratings.get((start, g), [])))
            if "quality" in sections:
                metrics.update(quality(evaluations.get((start, g), [])))
            if "backlog" in sections:
                if start < as_of:  # measured at the interval's end, or now for the current one
                    metrics.update(backlog(cases.get(g, []), min(end, as_of)))
                else:
                    metrics.update(dict.fromkeys(BACKLOG_METRICS))
            if "deflection" in sections:
                metrics.update(deflection(drafts.get((start, g), [])))
            if "agent_states" in sections:
                within = max(start, spec.start), min(end, spec.end)
                metrics.update(agent_states(periods.get((start, g), []), *within))
            rows.append(Row(start, end, g, metrics))
    return rows
