"""SLA timers and escalation: started, paused, resumed, met and cancelled by the case's lifecycle;
checked by the scheduler, which escalates at each threshold of the policy and repeats an
escalation at its interval until someone acts on the case.

The engine does no I/O of its own: an escalation's mail and event are staged in the outboxes of
the caller's transaction, and sent after it commits."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from google.protobuf.message import Message
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from switchboard.case.adapters.orm import Case, SlaTimer
from switchboard.case.sla.calendar import ALWAYS, Calendar
from switchboard.case.sla.policy import EscalationRule, Policies
from switchboard.v1 import case_events_pb2, case_pb2

logger = logging.getLogger(__name__)

RUNNING, PAUSED, MET, CANCELLED = "running", "paused", "met", "cancelled"
SLA_ACTOR = "sla"


class Recorder(Protocol):
    """What the engine needs from the case records: the audit trail and the outbox."""

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


def _stamp(at: datetime) -> str:
    return at.strftime("%Y%m%dT%H%M%S%f")


class SlaEngine:
    def __init__(self, policies: Policies, mail: bool = False) -> None:
        """`mail`: whether an SMTP server is configured; without one, escalation emails are
        skipped, and the audit trail says so."""
        self.policies = policies
        self.mail = mail

    def calendar(self, timer: SlaTimer) -> Calendar:
        policy = self.policies.by_name(timer.policy)
        return policy.calendar if policy is not None else ALWAYS

    def elapsed(self, timer: SlaTimer, now: datetime) -> float:
        """Business seconds counted so far (up to `now` while running)."""
        if timer.state == RUNNING and timer.running_since is not None:
            return timer.elapsed_s + self.calendar(timer).business_seconds(timer.running_since, now)
        return timer.elapsed_s

    async def timers(self, session: AsyncSession, case_id: str) -> dict[str, SlaTimer]:
        """The case's timers, locked; read once per transaction (`preload` reads a batch's)."""
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
        rows = await session.scalars(
            select(SlaTimer)
            .where(SlaTimer.case_id.in_(wanted))
            .order_by(SlaTimer.case_id, SlaTimer.metric)
            .with_for_update()
        )
        for case_id in wanted:
            known[case_id] = {}
        for t in rows:
            known[t.case_id][t.metric] = t

    # ---- lifecycle --------------------------------------------------------------------------

    async def start(
        self, rec: Recorder, session: AsyncSession, case: Case, metric: str, at: datetime
    ) -> None:
        """Start (or restart, for next_response) `metric` under the case's policy, if it has one."""
        policy = self.policies.policy_for(case.tenant, case.queue, case.priority)
        if policy is None or metric not in policy.targets:
            return
        timers = await self.timers(session, case.id)
        timer = timers.get(metric)
        if timer is not None and timer.state in (RUNNING, PAUSED):
            return
        paused = case.status == case_pb2.CASE_STATUS_PENDING_CUSTOMER
        if timer is None:
            timer = SlaTimer(case_id=case.id, metric=metric, tenant=case.tenant)
            session.add(timer)
            timers[metric] = timer
        timer.policy = policy.name
        timer.target_s = int(policy.targets[metric].total_seconds())
        timer.elapsed_s = 0.0
        timer.state = PAUSED if paused else RUNNING
        timer.started_at = at
        timer.running_since = None if paused else at
        timer.completed_at = None
        timer.breached_at = None
        timer.fired = []
        timer.escalated_threshold = None
        timer.next_repeat_at = None
        timer.repeats = 0
        await rec.audit(
            session,
            case,
            SLA_ACTOR,
            "sla_started",
            {"metric": metric, "policy": policy.name, "target_s": timer.target_s},
            at,
        )

    async def _stop(
        self,
        rec: Recorder,
        session: AsyncSession,
        case: Case,
        metric: str,
        state: str,
        at: datetime,
    ) -> None:
        timer = (await self.timers(session, case.id)).get(metric)
        if timer is None or timer.state not in (RUNNING, PAUSED):
            return
        timer.elapsed_s = self.elapsed(timer, at)
        timer.state = state
        timer.running_since = None
        timer.completed_at = at
        timer.next_repeat_at = None
        await rec.audit(
            session,
            case,
            SLA_ACTOR,
            "sla_met" if state == MET else "sla_cancelled",
            {
                "metric": metric,
                "elapsed_s": round(timer.elapsed_s, 3),
                "breached": timer.breached_at is not None,
            },
            at,
        )

    async def met(
        self, rec: Recorder, session: AsyncSession, case: Case, metric: str, at: datetime
    ) -> None:
        await self._stop(rec, session, case, metric, MET, at)

    async def cancel(
        self, rec: Recorder, session: AsyncSession, case: Case, metric: str, at: datetime
    ) -> None:
        await self._stop(rec, session, case, metric, CANCELLED, at)

    async def pause(self, rec: Recorder, session: AsyncSession, case: Case, at: datetime) -> None:
        """The case waits on the customer: every running clock stops."""
        paused = []
        for metric, timer in (await self.timers(session, case.id)).items():
            if timer.state == RUNNING:
                timer.elapsed_s = self.elapsed(timer, at)
                timer.state = PAUSED
                timer.running_since = None
                timer.next_repeat_at = None
                paused.append(metric)
        if paused:
            await rec.audit(session, case, SLA_ACTOR, "sla_paused", {"metrics": sorted(paused)}, at)

    async def resume(
        self,
        rec: Recorder,
        session: AsyncSession,
        case: Case,
        at: datetime,
        metrics: tuple[str, ...] | None = None,
        reopen: bool = False,
    ) -> None:
        resumed = []
        for metric, timer in (await self.timers(session, case.id)).items():
            if metrics is not None and metric not in metrics:
                continue
            if timer.state == PAUSED or (reopen and timer.state == MET):
                timer.state = RUNNING
                timer.running_since = at
                timer.completed_at = None
                resumed.append(metric)
        if resumed:
            await rec.audit(
                session,
                case,
                SLA_ACTOR,
                "sla_resumed",
                {
                    "metrics": sorted(resumed),
                    "elapsed_s": {
                        m: round(t.elapsed_s, 3)
                        for m, t in (await self.timers(session, case.id)).items()
                        if m in resumed
                    },
                },
                at,
            )

    async def acknowledge(
        self, rec: Recorder, session: AsyncSession, case: Case, actor: str, at: datetime
    ) -> None:
        """Someone acted on the case: pending escalation repeats stop."""
        stopped = []
        for metric, timer in (await self.timers(session, case.id)).items():
            if timer.next_repeat_at is not None:
                timer.next_repeat_at = None
                stopped.append(metric)
        if stopped:
            await rec.audit(
                session, case, actor, "escalation_acknowledged", {"metrics": sorted(stopped)}, at
            )

    # ---- the scheduler's check ----------------------------------------------------------------

    async def check(self, rec: Recorder, session: AsyncSession, case: Case, now: datetime) -> None:
        """Escalate at every threshold reached, record a breach, repeat a due escalation."""
        for metric, timer in sorted((await self.timers(session, case.id)).items()):
            if timer.state != RUNNING:
                continue
            policy = self.policies.by_name(timer.policy)
            if policy is None or timer.target_s <= 0:
                continue
            elapsed = self.elapsed(timer, now)
            percent = elapsed * 100.0 / timer.target_s
            if percent >= 100.0 and timer.breached_at is None:
                timer.breached_at = now
                await rec.audit(
                    session,
                    case,
                    SLA_ACTOR,
                    "sla_breached",
                    {
                        "metric": metric,
                        "policy": policy.name,
                        "target_s": timer.target_s,
                        "elapsed_s": round(elapsed, 3),
                    },
                    now,
                )
                event = case_events_pb2.SlaBreached(
                    case_id=case.id,
                    reference=case.reference,
                    metric=metric,
                    policy=policy.name,
                )
                event.target.FromSeconds(timer.target_s)
                rec.stage(
                    session,
                    case,
                    event,
                    f"sla-breached:{case.id}:{metric}:{_stamp(timer.started_at)}",
                    now,
                )
            fired = list(timer.fired or [])
            reached = [
                r
                for r in policy.escalations
                if metric in r.metrics and r.at <= percent and r.at not in fired
            ]
            for rule in reached:
                fired.append(rule.at)
                timer.fired = fired
                timer.escalated_threshold = rule.at
                timer.repeats = 0
                timer.next_repeat_at = now + rule.repeat_every if rule.repeat_every else None
                await self._escalate(rec, session, case, timer, rule, 0, elapsed, now)
            if not reached and timer.next_repeat_at is not None and now >= timer.next_repeat_at:
                repeated = next(
                    (
                        r
                        for r in policy.escalations
                        if r.at == timer.escalated_threshold and metric in r.metrics
                    ),
                    None,
                )
                if repeated is None or repeated.repeat_every is None:
                    timer.next_repeat_at = None
                    continue
                timer.repeats += 1
                timer.next_repeat_at = now + repeated.repeat_every
                await self._escalate(
                    rec, session, case, timer, repeated, timer.repeats, elapsed, now
                )

    async def _escalate(
        self,
        rec: Recorder,
        session: AsyncSession,
        case: Case,
        timer: SlaTimer,
        rule: EscalationRule,
        repeat: int,
        elapsed: float,
        now: datetime,
    ) -> None:
        outcome: dict[str, Any] = {
            "metric": timer.metric,
            "threshold": rule.at,
            "kind": rule.kind,
            "level": rule.level,
            "actions": list(rule.actions),
            "repeat": repeat,
            "elapsed_s": round(elapsed, 3),
            "target_s": timer.target_s,
        }
        if "email" in rule.actions and rule.notify:
            subject = (
                f"[#{case.reference}] {timer.metric} at {rule.at}% of its SLA: "
                f"escalated to {rule.level}" + (f" (reminder {repeat})" if repeat else "")
            )
            text = (
                f"Case {case.reference} ({case.id}) of tenant {case.tenant} has used "
                f"{round(elapsed)} s of its {timer.target_s} s {timer.metric} target "
                f"(policy {timer.policy}). Escalation: {rule.kind} → {rule.level}."
            )
            if self.mail:
                key = f"escalation-mail:{case.id}:{timer.metric}:{_stamp(timer.started_at)}"
                await rec.mail(
                    session, case, f"{key}:{rule.at}:{repeat}", rule.notify, subject, text, now
                )
                outcome["email"] = "queued"
            else:
                outcome["email"] = "skipped: no SMTP server configured"
        await rec.audit(session, case, SLA_ACTOR, "escalated", outcome, now)
        if "event" in rule.actions:
            event = case_events_pb2.CaseEscalated(
                case_id=case.id,
                reference=case.reference,
                metric=timer.metric,
                threshold=rule.at,
                level=rule.level,
                kind=rule.kind,
                actions=list(rule.actions),
                repeat=repeat,
            )
            event.elapsed.FromMilliseconds(int(elapsed * 1000))
            event.target.FromSeconds(timer.target_s)
            rec.stage(
                session,
                case,
                event,
                f"escalated:{case.id}:{timer.metric}:{_stamp(timer.started_at)}:{rule.at}:{repeat}",
                now,
            )
        if repeat == 0 and "reprioritise" in rule.actions and rule.priority > case.priority:
            await rec.set_priority(session, case, rule.priority, SLA_ACTOR, now)
        if repeat == 0 and "reassign" in rule.actions and (rule.reassign_to or rule.queue):
            await rec.reassign(session, case, rule.reassign_to, rule.queue, SLA_ACTOR, now)
