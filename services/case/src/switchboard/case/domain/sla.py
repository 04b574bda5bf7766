"""SLA decisions: a case's timers in, the effects of a lifecycle step or a scheduler check out.

Pure: the timers are plain values, the policy and its business calendar are given, and `now` is
an argument. Nothing here reads or writes the store; `sla/engine.py` loads the timer rows, asks
these functions, and applies the effects in the caller's transaction (rows, audit entries,
outbox events, escalation mail staged to be sent after the commit).

Every effect but `RemindersEnded` is one audit entry; the effects that change a timer carry its
state after the change, so applying them in order leaves each row as the last one says.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from switchboard.case.sla.calendar import ALWAYS, Calendar
from switchboard.case.sla.policy import EscalationRule, Policies, SlaPolicy

RUNNING, PAUSED, MET, CANCELLED = "running", "paused", "met", "cancelled"
SLA_ACTOR = "sla"


@dataclass(frozen=True)
class Timer:
    """One SLA target of a case, as stored: `elapsed_s` business seconds counted until
    `running_since` (None unless running)."""

    metric: str
    policy: str
    target_s: int
    state: str
    started_at: datetime
    elapsed_s: float = 0.0
    running_since: datetime | None = None
    completed_at: datetime | None = None
    breached_at: datetime | None = None
    fired: tuple[int, ...] = ()  # thresholds (%) escalated
    escalated_threshold: int | None = None  # the last escalation, repeated until acknowledged
    next_repeat_at: datetime | None = None
    repeats: int = 0


@dataclass(frozen=True)
class CaseFacts:
    """What the SLA decisions read of a case."""

    id: str
    tenant: str
    reference: str
    queue: str
    priority: int
    pending_customer: bool


# ---- effects ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimerStarted:
    timer: Timer


@dataclass(frozen=True)
class TimerMet:
    timer: Timer


@dataclass(frozen=True)
class TimerCancelled:
    timer: Timer


@dataclass(frozen=True)
class TimersPaused:
    timers: tuple[Timer, ...]


@dataclass(frozen=True)
class TimersResumed:
    timers: tuple[Timer, ...]


@dataclass(frozen=True)
class RemindersAcknowledged:
    """Someone acted on the case: the timers' pending escalation reminders stop."""

    timers: tuple[Timer, ...]
    actor: str


@dataclass(frozen=True)
class Breached:
    timer: Timer
    elapsed_s: float


@dataclass(frozen=True)
class EscalationMail:
    key: str
    to: tuple[str, ...]
    subject: str
    text: str


@dataclass(frozen=True)
class Escalated:
    """A threshold reached (`repeat` 0) or a reminder of it (`repeat` 1, 2, …)."""

    timer: Timer
    rule: EscalationRule
    repeat: int
    elapsed_s: float
    mail: EscalationMail | None  # to stage in the mail outbox
    email: str  # the audit's word on the mail: "queued", "skipped: …", or "" (none asked)

    @property
    def publishes(self) -> bool:
        return "event" in self.rule.actions


@dataclass(frozen=True)
class Reprioritised:
    priority: int


@dataclass(frozen=True)
class Reassigned:
    agent_id: str
    queue: str


@dataclass(frozen=True)
class RemindersEnded:
    """A due reminder whose rule no longer repeats: none is pending any more (no audit entry)."""

    timer: Timer


Effect = (
    TimerStarted
    | TimerMet
    | TimerCancelled
    | TimersPaused
    | TimersResumed
    | RemindersAcknowledged
    | Breached
    | Escalated
    | Reprioritised
    | Reassigned
    | RemindersEnded
)


def stamp(at: datetime) -> str:
    """A timer start as it appears in the keys of its events and mail."""
    return at.strftime("%Y%m%dT%H%M%S%f")


# ---- decisions --------------------------------------------------------------------------------


class SlaDecisions:
    """The SLA rules of a policy file. `mail`: whether an SMTP server is configured; without
    one, an escalation's email is skipped, and its audit entry says so."""

    def __init__(self, policies: Policies, mail: bool = False) -> None:
        self.policies = policies
        self.mail = mail

    def calendar(self, timer: Timer) -> Calendar:
        policy = self.policies.by_name(timer.policy)
        return policy.calendar if policy is not None else ALWAYS

    def elapsed(self, timer: Timer, now: datetime) -> float:
        """Business seconds counted so far (up to `now` while running)."""
        if timer.state == RUNNING and timer.running_since is not None:
            return timer.elapsed_s + self.calendar(timer).business_seconds(timer.running_since, now)
        return timer.elapsed_s

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(
        self, case: CaseFacts, timers: Mapping[str, Timer], metric: str, at: datetime
    ) -> list[Effect]:
        """Start (or restart, once stopped) `metric` under the case's policy, if it has one; a
        case pending on its customer starts it paused."""
        policy = self.policies.policy_for(case.tenant, case.queue, case.priority)
        if policy is None or metric not in policy.targets:
            return []
        timer = timers.get(metric)
        if timer is not None and timer.state in (RUNNING, PAUSED):
            return []
        paused = case.pending_customer
        started = Timer(
            metric=metric,
            policy=policy.name,
            target_s=int(policy.targets[metric].total_seconds()),
            state=PAUSED if paused else RUNNING,
            started_at=at,
            running_since=None if paused else at,
        )
        return [TimerStarted(started)]

    def _stop(
        self, timers: Mapping[str, Timer], metric: str, state: str, at: datetime
    ) -> Timer | None:
        timer = timers.get(metric)
        if timer is None or timer.state not in (RUNNING, PAUSED):
            return None
        return replace(
            timer,
            elapsed_s=self.elapsed(timer, at),
            state=state,
            running_since=None,
            completed_at=at,
            next_repeat_at=None,
        )

    def met(self, timers: Mapping[str, Timer], metric: str, at: datetime) -> list[Effect]:
        stopped = self._stop(timers, metric, MET, at)
        return [TimerMet(stopped)] if stopped is not None else []

    def cancel(self, timers: Mapping[str, Timer], metric: str, at: datetime) -> list[Effect]:
        stopped = self._stop(timers, metric, CANCELLED, at)
        return [TimerCancelled(stopped)] if stopped is not None else []

    def pause(self, timers: Mapping[str, Timer], at: datetime) -> list[Effect]:
        """The case waits on the customer: every running clock stops."""
        paused = tuple(
            replace(
                t,
                elapsed_s=self.elapsed(t, at),
                state=PAUSED,
                running_since=None,
                next_repeat_at=None,
            )
            for t in timers.values()
            if t.state == RUNNING
        )
        return [TimersPaused(paused)] if paused else []

    def resume(
        self,
        timers: Mapping[str, Timer],
        at: datetime,
        metrics: tuple[str, ...] | None = None,
        reopen: bool = False,
    ) -> list[Effect]:
        """Paused clocks run again (only `metrics`, if given); with `reopen`, met ones too."""
        resumed = tuple(
            replace(t, state=RUNNING, running_since=at, completed_at=None)
            for metric, t in timers.items()
            if (metrics is None or metric in metrics)
            and (t.state == PAUSED or (reopen and t.state == MET))
        )
        return [TimersResumed(resumed)] if resumed else []

    def acknowledge(self, timers: Mapping[str, Timer], actor: str) -> list[Effect]:
        """Someone acted on the case: pending escalation reminders stop."""
        stopped = tuple(
            replace(t, next_repeat_at=None) for t in timers.values() if t.next_repeat_at is not None
        )
        return [RemindersAcknowledged(stopped, actor)] if stopped else []

    # ---- the scheduler's check ----------------------------------------------------------------

    def check(self, case: CaseFacts, timers: Mapping[str, Timer], now: datetime) -> list[Effect]:
        """At `now`: a breach at 100 % of a target, an escalation at every threshold reached
        and not escalated yet, or else a reminder of the last one when it is due."""
        effects: list[Effect] = []
        priority = case.priority  # an escalation's reprioritising is seen by the next rule
        for metric, timer in sorted(timers.items()):
            if timer.state != RUNNING:
                continue
            policy = self.policies.by_name(timer.policy)
            if policy is None or timer.target_s <= 0:
                continue
            elapsed = self.elapsed(timer, now)
            percent = elapsed * 100.0 / timer.target_s
            if percent >= 100.0 and timer.breached_at is None:
                timer = replace(timer, breached_at=now)
                effects.append(Breached(timer, elapsed))
            reached = [
                r
                for r in policy.escalations
                if metric in r.metrics and r.at <= percent and r.at not in timer.fired
            ]
            for rule in reached:
                timer = replace(
                    timer,
                    fired=(*timer.fired, rule.at),
                    escalated_threshold=rule.at,
                    repeats=0,
                    next_repeat_at=now + rule.repeat_every if rule.repeat_every else None,
                )
                effects.append(self._escalated(case, timer, rule, 0, elapsed))
                if "reprioritise" in rule.actions and rule.priority > priority:
                    priority = rule.priority
                    effects.append(Reprioritised(rule.priority))
                if "reassign" in rule.actions and (rule.reassign_to or rule.queue):
                    effects.append(Reassigned(rule.reassign_to, rule.queue))
            if reached or timer.next_repeat_at is None or now < timer.next_repeat_at:
                continue
            repeated = _repeated_rule(policy, timer)
            if repeated is None or repeated.repeat_every is None:
                effects.append(RemindersEnded(replace(timer, next_repeat_at=None)))
                continue
            timer = replace(
                timer, repeats=timer.repeats + 1, next_repeat_at=now + repeated.repeat_every
            )
            effects.append(self._escalated(case, timer, repeated, timer.repeats, elapsed))
        return effects

    def _escalated(
        self, case: CaseFacts, timer: Timer, rule: EscalationRule, repeat: int, elapsed: float
    ) -> Escalated:
        mail, email = None, ""
        if "email" in rule.actions and rule.notify:
            if self.mail:
                mail = EscalationMail(
                    key=f"escalation-mail:{case.id}:{timer.metric}:{stamp(timer.started_at)}"
                    f":{rule.at}:{repeat}",
                    to=tuple(rule.notify),
                    subject=(
                        f"[#{case.reference}] {timer.metric} at {rule.at}% of its SLA: "
                        f"escalated to {rule.level}" + (f" (reminder {repeat})" if repeat else "")
                    ),
                    text=(
                        f"Case {case.reference} ({case.id}) of tenant {case.tenant} has used "
                        f"{round(elapsed)} s of its {timer.target_s} s {timer.metric} target "
                        f"(policy {timer.policy}). Escalation: {rule.kind} → {rule.level}."
                    ),
                )
                email = "queued"
            else:
                email = "skipped: no SMTP server configured"
        return Escalated(timer, rule, repeat, elapsed, mail, email)


def _repeated_rule(policy: SlaPolicy, timer: Timer) -> EscalationRule | None:
    return next(
        (
            r
            for r in policy.escalations
            if r.at == timer.escalated_threshold and timer.metric in r.metrics
        ),
        None,
    )


# ---- what the audit trail says ----------------------------------------------------------------


def audit_entry(effect: Effect) -> tuple[str, str, dict[str, Any]] | None:
    """(actor, action, data) of the audit entry recording `effect`; None for the effects that
    are recorded by the case change they cause (a reprioritising, a reassignment) or not at all."""
    match effect:
        case TimerStarted(timer=t):
            return (
                SLA_ACTOR,
                "sla_started",
                {
                    "metric": t.metric,
                    "policy": t.policy,
                    "target_s": t.target_s,
                },
            )
        case TimerMet(timer=t) | TimerCancelled(timer=t):
            return (
                SLA_ACTOR,
                "sla_met" if t.state == MET else "sla_cancelled",
                {
                    "metric": t.metric,
                    "elapsed_s": round(t.elapsed_s, 3),
                    "breached": t.breached_at is not None,
                },
            )
        case TimersPaused(timers=ts):
            return SLA_ACTOR, "sla_paused", {"metrics": sorted(t.metric for t in ts)}
        case TimersResumed(timers=ts):
            return (
                SLA_ACTOR,
                "sla_resumed",
                {
                    "metrics": sorted(t.metric for t in ts),
                    "elapsed_s": {t.metric: round(t.elapsed_s, 3) for t in ts},
                },
            )
        case RemindersAcknowledged(timers=ts, actor=actor):
            return actor, "escalation_acknowledged", {"metrics": sorted(t.metric for t in ts)}
        case Breached(timer=t, elapsed_s=elapsed):
            return (
                SLA_ACTOR,
                "sla_breached",
                {
                    "metric": t.metric,
                    "policy": t.policy,
                    "target_s": t.target_s,
                    "elapsed_s": round(elapsed, 3),
                },
            )
        case Escalated(timer=t, rule=rule, repeat=repeat, elapsed_s=elapsed, email=email):
            data: dict[str, Any] = {
                "metric": t.metric,
                "threshold": rule.at,
                "kind": rule.kind,
                "level": rule.level,
                "actions": list(rule.actions),
                "repeat": repeat,
                "elapsed_s": round(elapsed, 3),
                "target_s": t.target_s,
            }
            if email:
                data["email"] = email
            return SLA_ACTOR, "escalated", data
    return None
