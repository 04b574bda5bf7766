"""SLA timers and escalation in the store: the engine loads a case's timer rows, asks the pure
decisions (`domain/sla.py`) what a lifecycle step or a scheduler check does to them, and applies
the effects in the caller's transaction: the rows, the audit entries, the case events staged in
the outbox, and the escalation mail staged in the mail outbox (both sent after the commit).

The engine does no I/O of its own, and none happens while the transaction holds its locks."""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from google.protobuf.message import Message
from sqlalchemy import Select, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from switchboard.case.adapters.orm import Case, SlaTimer
from switchboard.case.domain import lifecycle
from switchboard.case.domain.sla import (
    CANCELLED,
    MET,
    PAUSED,
    RUNNING,
    SLA_ACTOR,
    Breached,
    CaseFacts,
    Effect,
    Escalated,
    Reassigned,
    Reprioritised,
    SlaDecisions,
    Timer,
    audit_entry,
    stamp,
)
from switchboard.case.sla.policy import Policies
from switchboard.v1 import case_events_pb2

logger = logging.getLogger(__name__)

__all__ = ["CANCELLED", "MET", "PAUSED", "RUNNING", "SLA_ACTOR", "Recorder", "SlaEngine"]

_COLUMNS = (
    "policy",
    "target_s",
    "state",
    "started_at",
    "elapsed_s",
    "running_since",
    "completed_at",
    "breached_at",
    "escalated_threshold",
    "next_repeat_at",
    "repeats",
)


class Recorder(Protocol):
    """What the engine needs from the case records: the audit trail and the outboxes."""

    async def audit(
        self,
        session: AsyncSession,
        case: Case,
        actor: str,
        action: str,
        data: dict[str, Any],
        at: datetime,
    ) -> object: ...

    def stage(
        self, session: AsyncSession, case: Case, event: Message, key: str, at: datetime
    ) -> None: ...

    async def mail(
        self,
        session: AsyncSession,
        case: Case,
        key: str,
        to: Sequence[str],
        subject: str,
        text: str,
        at: datetime,
    ) -> None: ...

    async def set_priority(
        self, session: AsyncSession, case: Case, priority: int, actor: str, at: datetime
    ) -> None: ...

    async def reassign(
        self,
        session: AsyncSession,
        case: Case,
        agent_id: str,
        queue: str,
        actor: str,
        at: datetime,
    ) -> None: ...


def timer_of(row: SlaTimer) -> Timer:
    """A timer row as the pure decisions see it."""
    return Timer(
        metric=row.metric,
        policy=row.policy,
        target_s=row.target_s,
        state=row.state,
        started_at=row.started_at,
        elapsed_s=row.elapsed_s or 0.0,
        running_since=row.running_since,
        completed_at=row.completed_at,
        breached_at=row.breached_at,
        fired=tuple(row.fired or ()),
        escalated_threshold=row.escalated_threshold,
        next_repeat_at=row.next_repeat_at,
        repeats=row.repeats or 0,
    )


def facts_of(case: Case) -> CaseFacts:
    return CaseFacts(
        id=case.id,
        tenant=case.tenant,
        reference=case.reference,
        queue=case.queue,
        priority=case.priority,
        pending_customer=case.status == lifecycle.PENDING,
    )


def _write(row: SlaTimer, timer: Timer) -> None:
    # Only what differs, so an unchanged row stays clean (no UPDATE, nothing for bulk.py).
    for column in _COLUMNS:
        value = getattr(timer, column)
        if getattr(row, column) != value:
            setattr(row, column, value)
    if list(row.fired or ()) != list(timer.fired):
        row.fired = list(timer.fired)


@functools.cache
def _timers_of() -> Select[SlaTimer]:
    """The timers of the cases `ids`, locked (built once: every batch reads its cases')."""
    return (
        select(SlaTimer)
        .where(SlaTimer.case_id.in_(bindparam("ids", expanding=True)))
        .order_by(SlaTimer.case_id, SlaTimer.metric)
        .with_for_update()
    )


class SlaEngine:
    def __init__(self, policies: Policies, mail: bool = False) -> None:
        """`mail`: whether an SMTP server is configured; without one, escalation emails are
        skipped, and the audit trail says so."""
        self.decisions = SlaDecisions(policies, mail)

    @property
    def policies(self) -> Policies:
        return self.decisions.policies

    @property
    def mail(self) -> bool:
        return self.decisions.mail

    def elapsed(self, row: SlaTimer, now: datetime) -> float:
        """Business seconds counted so far (up to `now` while running)."""
        return self.decisions.elapsed(timer_of(row), now)

    async def timers(self, session: AsyncSession, case_id: str) -> dict[str, SlaTimer]:
        """The case's timer rows, locked; read once per transaction (`preload` reads a batch's)."""
        known: dict[str, dict[str, SlaTimer]] = session.info.setdefault("sla_timers", {})
        timers = known.get(case_id)
        if timers is None:
            rows = await session.scalars(
                select(SlaTimer).where(SlaTimer.case_id == case_id).with_for_update()
            )
            timers = known[case_id] = {t.metric: t for t in rows}
        return timers

    @staticmethod
    async def preload(session: AsyncSession, case_ids: set[str]) -> None:
        """Read and lock the timers of many cases at once (a batch's)."""
        known: dict[str, dict[str, SlaTimer]] = session.info.setdefault("sla_timers", {})
        wanted = case_ids - known.keys()
        if not wanted:
            return
        rows = await session.scalars(_timers_of(), {"ids": sorted(wanted)})
        for case_id in wanted:
            known[case_id] = {}
        for t in rows:
            known[t.case_id][t.metric] = t

    async def _state(self, session: AsyncSession, case: Case) -> dict[str, Timer]:
        return {m: timer_of(row) for m, row in (await self.timers(session, case.id)).items()}

    # ---- lifecycle --------------------------------------------------------------------------

    async def start(
        self, rec: Recorder, session: AsyncSession, case: Case, metric: str, at: datetime
    ) -> None:
        """Start (or restart, for next_response) `metric` under the case's policy, if it has one."""
        timers = await self._state(session, case)
        effects = self.decisions.start(facts_of(case), timers, metric, at)
        await self.apply(rec, session, case, effects, at)

    async def met(
        self, rec: Recorder, session: AsyncSession, case: Case, metric: str, at: datetime
    ) -> None:
        effects = self.decisions.met(await self._state(session, case), metric, at)
        await self.apply(rec, session, case, effects, at)

    async def cancel(
        self, rec: Recorder, session: AsyncSession, case: Case, metric: str, at: datetime
    ) -> None:
        effects = self.decisions.cancel(await self._state(session, case), metric, at)
        await self.apply(rec, session, case, effects, at)

    async def pause(self, rec: Recorder, session: AsyncSession, case: Case, at: datetime) -> None:
        """The case waits on the customer: every running clock stops."""
        effects = self.decisions.pause(await self._state(session, case), at)
        await self.apply(rec, session, case, effects, at)

    async def resume(
        self,
        rec: Recorder,
        session: AsyncSession,
        case: Case,
        at: datetime,
        metrics: tuple[str, ...] | None = None,
        reopen: bool = False,
    ) -> None:
        effects = self.decisions.resume(await self._state(session, case), at, metrics, reopen)
        await self.apply(rec, session, case, effects, at)

    async def acknowledge(
        self, rec: Recorder, session: AsyncSession, case: Case, actor: str, at: datetime
    ) -> None:
        """Someone acted on the case: pending escalation repeats stop."""
        effects = self.decisions.acknowledge(await self._state(session, case), actor)
        await self.apply(rec, session, case, effects, at)

    async def check(self, rec: Recorder, session: AsyncSession, case: Case, now: datetime) -> None:
        """Escalate at every threshold reached, record a breach, repeat a due escalation."""
        effects = self.decisions.check(facts_of(case), await self._state(session, case), now)
        await self.apply(rec, session, case, effects, now)

    # ---- applying the effects ---------------------------------------------------------------

    async def apply(
        self,
        rec: Recorder,
        session: AsyncSession,
        case: Case,
        effects: Sequence[Effect],
        at: datetime,
    ) -> None:
        """Apply `effects` in order in the caller's transaction."""
        rows = await self.timers(session, case.id)
        for effect in effects:
            for timer in _timers(effect):
                row = rows.get(timer.metric)
                if row is None:
                    row = SlaTimer(case_id=case.id, metric=timer.metric, tenant=case.tenant)
                    session.add(row)
                    rows[timer.metric] = row
                _write(row, timer)
            if isinstance(effect, Escalated) and effect.mail is not None:
                m = effect.mail
                await rec.mail(session, case, m.key, m.to, m.subject, m.text, at)
            entry = audit_entry(effect)
            if entry is not None:
                actor, action, data = entry
                await rec.audit(session, case, actor, action, data, at)
            if isinstance(effect, Breached):
                self._stage_breach(rec, session, case, effect, at)
            elif isinstance(effect, Escalated) and effect.publishes:
                self._stage_escalation(rec, session, case, effect, at)
            elif isinstance(effect, Reprioritised):
                await rec.set_priority(session, case, effect.priority, SLA_ACTOR, at)
            elif isinstance(effect, Reassigned):
                await rec.reassign(session, case, effect.agent_id, effect.queue, SLA_ACTOR, at)

    @staticmethod
    def _stage_breach(
        rec: Recorder, session: AsyncSession, case: Case, effect: Breached, at: datetime
    ) -> None:
        t = effect.timer
        event = case_events_pb2.SlaBreached(
            case_id=case.id, reference=case.reference, metric=t.metric, policy=t.policy
        )
        event.target.FromSeconds(t.target_s)
        rec.stage(
            session, case, event, f"sla-breached:{case.id}:{t.metric}:{stamp(t.started_at)}", at
        )

    @staticmethod
    def _stage_escalation(
        rec: Recorder, session: AsyncSession, case: Case, effect: Escalated, at: datetime
    ) -> None:
        t, rule, repeat = effect.timer, effect.rule, effect.repeat
        event = case_events_pb2.CaseEscalated(
            case_id=case.id,
            reference=case.reference,
            metric=t.metric,
            threshold=rule.at,
            level=rule.level,
            kind=rule.kind,
            actions=list(rule.actions),
            repeat=repeat,
        )
        event.elapsed.FromMilliseconds(int(effect.elapsed_s * 1000))
        event.target.FromSeconds(t.target_s)
        key = f"escalated:{case.id}:{t.metric}:{stamp(t.started_at)}:{rule.at}:{repeat}"
        rec.stage(session, case, event, key, at)


def _timers(effect: Effect) -> tuple[Timer, ...]:
    """The timers an effect changes, in their state after it."""
    timers: tuple[Timer, ...] = getattr(effect, "timers", ())
    timer: Timer | None = getattr(effect, "timer", None)
    return (timer,) if timer is not None else timers
