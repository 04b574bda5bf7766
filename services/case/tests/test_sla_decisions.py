"""The pure SLA decisions (domain/sla.py): timers in, effects out, for a given policy, business
calendar and instant. No store, no clock: every instant is an argument."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from switchboard.case.domain.sla import (
    CANCELLED,
    MET,
    PAUSED,
    RUNNING,
    Breached,
    CaseFacts,
    Effect,
    Escalated,
    Reassigned,
    RemindersAcknowledged,
    RemindersEnded,
    Reprioritised,
    SlaDecisions,
    Timer,
    TimerCancelled,
    TimerMet,
    TimersPaused,
    TimersResumed,
    TimerStarted,
    audit_entry,
)
from switchboard.case.sla.policy import Policies, parse
from switchboard.v1 import case_pb2

HOUR = timedelta(hours=1)
FRIDAY_15_BERLIN = datetime(2026, 11, 27, 14, 0, tzinfo=UTC)  # Friday 15:00 in Berlin (CET)

POLICY: dict[str, Any] = {
    "calendars": {
        "berlin": {
            "timezone": "Europe/Berlin",
            "hours": {"mon-fri": "09:00-17:00"},
            "holidays": ["2026-12-25"],
        }
    },
    "sla_policies": [
        {
            "name": "acme-standard",
            "tenant": "acme",
            "calendar": "berlin",
            "first_response": "1h",
            "resolution": "4h",
            "escalation": [
                {
                    "at": 75,
                    "kind": "functional",
                    "level": "second_line",
                    "actions": ["email", "event"],
                    "notify": ["second-line@acme.example"],
                    "repeat_every": "30m",
                    "metrics": ["resolution"],
                },
                {
                    "at": 100,
                    "kind": "hierarchical",
                    "level": "manager",
                    "actions": ["email", "event", "reprioritise", "reassign"],
                    "notify": ["manager@acme.example"],
                    "priority": "urgent",
                    "queue": "escalations",
                    "metrics": ["resolution"],
                },
            ],
        },
        {"name": "chat", "tenant": "*", "first_response": "60s"},
    ],
}


def decisions(mail: bool = True, doc: dict[str, Any] | None = None) -> SlaDecisions:
    return SlaDecisions(parse(doc or POLICY), mail=mail)


def case(
    priority: int = case_pb2.CASE_PRIORITY_NORMAL, pending: bool = False, tenant: str = "acme"
) -> CaseFacts:
    return CaseFacts("case-1", tenant, "C-123-456", "", priority, pending)


def started(d: SlaDecisions, metric: str, at: datetime, facts: CaseFacts | None = None) -> Timer:
    [effect] = d.start(facts or case(), {}, metric, at)
    assert isinstance(effect, TimerStarted)
    return effect.timer


def only_timer(effects: list[Effect]) -> Timer:
    [effect] = effects
    timer = getattr(effect, "timer", None)
    if timer is None:
        [timer] = effect.timers  # type: ignore[union-attr]
    assert isinstance(timer, Timer)
    return timer


def last_state(effects: list[Effect], metric: str) -> Timer:
    states = [t for e in effects for t in (*getattr(e, "timers", ()), getattr(e, "timer", None))]
    return [t for t in states if t is not None and t.metric == metric][-1]


# ---- start ------------------------------------------------------------------------------------


def test_start_under_the_matching_policy() -> None:
    d = decisions()
    t = started(d, "resolution", FRIDAY_15_BERLIN)
    assert (t.policy, t.target_s, t.state, t.running_since) == (
        "acme-standard",
        4 * 3600,
        RUNNING,
        FRIDAY_15_BERLIN,
    )
    # no target for the metric, or no policy for the case: nothing
    assert d.start(case(), {}, "next_response", FRIDAY_15_BERLIN) == []
    assert SlaDecisions(Policies()).start(case(), {}, "resolution", FRIDAY_15_BERLIN) == []
    # the other tenant falls through to the catch-all policy
    other = started(d, "first_response", FRIDAY_15_BERLIN, case(tenant="globex"))
    assert (other.policy, other.target_s) == ("chat", 60)


def test_a_case_pending_on_its_customer_starts_paused() -> None:
    t = started(decisions(), "resolution", FRIDAY_15_BERLIN, case(pending=True))
    assert (t.state, t.running_since, t.started_at) == (PAUSED, None, FRIDAY_15_BERLIN)


def test_a_running_timer_is_not_restarted_but_a_stopped_one_is_reset() -> None:
    d = decisions()
    t = started(d, "resolution", FRIDAY_15_BERLIN)
    later = FRIDAY_15_BERLIN + HOUR
    assert d.start(case(), {"resolution": t}, "resolution", later) == []
    assert d.start(case(), {"resolution": replace(t, state=PAUSED)}, "resolution", later) == []
    done = replace(
        t, state=MET, elapsed_s=99.0, breached_at=later, fired=(75, 100), repeats=3,
        escalated_threshold=100, next_repeat_at=later, completed_at=later,
    )  # fmt: skip
    again = only_timer(d.start(case(), {"resolution": done}, "resolution", later))
    assert again == Timer("resolution", "acme-standard", 4 * 3600, RUNNING, later, 0.0, later)


# ---- business time, pause, resume, met, cancel ------------------------------------------------


def test_business_hours_count_only_while_the_calendar_is_open() -> None:
    d = decisions()
    t = started(d, "resolution", FRIDAY_15_BERLIN)
    assert d.elapsed(t, FRIDAY_15_BERLIN + 2 * HOUR) == 2 * 3600  # until 17:00
    assert d.elapsed(t, datetime(2026, 11, 29, 12, 0, tzinfo=UTC)) == 2 * 3600  # Sunday
    assert d.elapsed(t, datetime(2026, 11, 30, 9, 0, tzinfo=UTC)) == 3 * 3600  # Mon 10:00
    # A holiday (Friday 25 December) counts nothing.
    xmas_eve = datetime(2026, 12, 24, 15, 0, tzinfo=UTC)  # Thursday 16:00 in Berlin
    t = started(d, "resolution", xmas_eve)
    assert d.elapsed(t, datetime(2026, 12, 28, 8, 30, tzinfo=UTC)) == 3600 + 1800


def test_pause_stops_the_running_clocks_and_resume_runs_them_again() -> None:
    d = decisions()
    timers = {
        "first_response": started(d, "first_response", FRIDAY_15_BERLIN),
        "resolution": started(d, "resolution", FRIDAY_15_BERLIN),
    }
    timers["first_response"] = replace(timers["first_response"], state=MET)
    pause_at = FRIDAY_15_BERLIN + HOUR
    [paused] = d.pause(timers, pause_at)
    assert isinstance(paused, TimersPaused)
    [p] = paused.timers  # the met one is left alone
    assert (p.metric, p.state, p.elapsed_s, p.running_since) == ("resolution", PAUSED, 3600, None)
    assert audit_entry(paused) == ("sla", "sla_paused", {"metrics": ["resolution"]})
    assert d.pause({"resolution": p}, pause_at + HOUR) == []  # nothing runs

    # Paused over the weekend and Monday morning; the customer replies Monday 10:00 Berlin.
    resume_at = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    [resumed] = d.resume({**timers, "resolution": p}, resume_at)
    assert isinstance(resumed, TimersResumed)
    [r] = resumed.timers
    assert (r.state, r.running_since, r.elapsed_s) == (RUNNING, resume_at, 3600)
    assert audit_entry(resumed) == (
        "sla",
        "sla_resumed",
        {"metrics": ["resolution"], "elapsed_s": {"resolution": 3600.0}},
    )
    assert d.elapsed(r, resume_at + HOUR) == 2 * 3600  # the paused time never counted


def test_met_and_cancelled_keep_the_elapsed_time_and_whether_it_breached() -> None:
    d = decisions()
    t = started(d, "resolution", FRIDAY_15_BERLIN)
    at = FRIDAY_15_BERLIN + 90 * timedelta(minutes=1)
    [met] = d.met({"resolution": t}, "resolution", at)
    assert isinstance(met, TimerMet)
    assert (met.timer.state, met.timer.elapsed_s, met.timer.completed_at) == (MET, 5400, at)
    assert audit_entry(met) == (
        "sla",
        "sla_met",
        {"metric": "resolution", "elapsed_s": 5400.0, "breached": False},
    )
    late = replace(t, breached_at=at, next_repeat_at=at)
    [cancelled] = d.cancel({"resolution": late}, "resolution", at)
    assert isinstance(cancelled, TimerCancelled)
    assert (cancelled.timer.state, cancelled.timer.next_repeat_at) == (CANCELLED, None)
    assert audit_entry(cancelled) == (
        "sla",
        "sla_cancelled",
        {"metric": "resolution", "elapsed_s": 5400.0, "breached": True},
    )
    assert d.met({"resolution": met.timer}, "resolution", at) == []  # already stopped
    assert d.cancel({}, "resolution", at) == []  # no such timer


def test_a_reopen_resumes_the_met_resolution_timer_where_it_stopped() -> None:
    d = decisions()
    t = started(d, "resolution", FRIDAY_15_BERLIN)
    first = started(d, "first_response", FRIDAY_15_BERLIN)
    resolved_at = FRIDAY_15_BERLIN + HOUR
    met = only_timer(d.met({"resolution": t}, "resolution", resolved_at))
    first_met = only_timer(d.met({"first_response": first}, "first_response", resolved_at))
    timers = {"resolution": met, "first_response": first_met}
    reopened_at = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)  # Monday 09:00 Berlin
    assert d.resume(timers, reopened_at) == []  # a plain resume leaves met timers alone
    r = only_timer(d.resume(timers, reopened_at, ("resolution",), reopen=True))
    assert (r.metric, r.state, r.elapsed_s, r.completed_at) == ("resolution", RUNNING, 3600, None)
    assert d.elapsed(r, reopened_at + 2 * HOUR) == 3 * 3600


# ---- the check: breach, escalation levels, reminders ------------------------------------------


def test_nothing_before_the_first_threshold() -> None:
    d = decisions()
    t = started(d, "resolution", FRIDAY_15_BERLIN)
    just_before = datetime(2026, 11, 30, 9, 0, tzinfo=UTC) - timedelta(microseconds=1)
    assert d.check(case(), {"resolution": t}, just_before) == []


def test_each_threshold_escalates_once_with_its_level() -> None:
    d = decisions()
    timers = {"resolution": started(d, "resolution", FRIDAY_15_BERLIN)}
    at_75 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)  # Monday 10:00 Berlin: 3 of 4 hours
    [escalated] = d.check(case(), timers, at_75)
    assert isinstance(escalated, Escalated)
    assert (escalated.rule.at, escalated.rule.kind, escalated.rule.level) == (
        75,
        "functional",
        "second_line",
    )
    assert (escalated.repeat, escalated.elapsed_s, escalated.email) == (0, 3 * 3600, "queued")
    t = escalated.timer
    assert (t.fired, t.escalated_threshold, t.repeats) == ((75,), 75, 0)
    assert t.next_repeat_at == at_75 + timedelta(minutes=30)
    assert escalated.mail is not None
    assert escalated.mail.to == ("second-line@acme.example",)
    assert escalated.mail.key == "escalation-mail:case-1:resolution:20261127T140000000000:75:0"
    assert escalated.mail.subject == (
        "[#C-123-456] resolution at 75% of its SLA: escalated to second_line"
    )
    assert escalated.mail.text == (
        "Case C-123-456 (case-1) of tenant acme has used 10800 s of its 14400 s resolution "
        "target (policy acme-standard). Escalation: functional → second_line."
    )
    assert audit_entry(escalated) == (
        "sla",
        "escalated",
        {
            "metric": "resolution",
            "threshold": 75,
            "kind": "functional",
            "level": "second_line",
            "actions": ["email", "event"],
            "repeat": 0,
            "elapsed_s": 10800.0,
            "target_s": 14400,
            "email": "queued",
        },
    )
    # Checked again at the same instant: already escalated, no reminder due yet.
    assert d.check(case(), {"resolution": t}, at_75) == []


def test_a_late_check_breaches_then_escalates_every_threshold_passed_in_order() -> None:
    d = decisions()
    timers = {"resolution": started(d, "resolution", FRIDAY_15_BERLIN)}
    tuesday = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)  # 2 h Friday + 8 h Monday + 1 h
    effects = d.check(case(), timers, tuesday)
    assert [type(e) for e in effects] == [
        Breached,
        Escalated,
        Escalated,
        Reprioritised,
        Reassigned,
    ]
    breached, at_75, at_100, reprioritised, reassigned = effects
    assert isinstance(breached, Breached) and breached.timer.breached_at == tuesday
    assert breached.elapsed_s == 11 * 3600
    assert audit_entry(breached) == (
        "sla",
        "sla_breached",
        {
            "metric": "resolution",
            "policy": "acme-standard",
            "target_s": 14400,
            "elapsed_s": 39600.0,
        },
    )
    assert isinstance(at_75, Escalated) and isinstance(at_100, Escalated)
    assert [(e.rule.at, e.rule.level, e.repeat) for e in (at_75, at_100)] == [
        (75, "second_line", 0),
        (100, "manager", 0),
    ]
    assert reprioritised == Reprioritised(case_pb2.CASE_PRIORITY_URGENT)
    assert reassigned == Reassigned("", "escalations")
    final = last_state(effects, "resolution")
    # The last escalation (100 %) does not repeat: no reminder is pending.
    assert (final.fired, final.escalated_threshold, final.next_repeat_at) == ((75, 100), 100, None)
    assert final.breached_at == tuesday
    assert d.check(case(), {"resolution": final}, tuesday + 10 * HOUR) == []  # breached once


def test_a_breach_is_at_the_deadline_exactly() -> None:
    d = decisions(doc={"sla_policies": [{"name": "p", "tenant": "*", "resolution": "4h"}]})
    t = started(d, "resolution", FRIDAY_15_BERLIN)
    deadline = FRIDAY_15_BERLIN + 4 * HOUR
    assert d.check(case(), {"resolution": t}, deadline - timedelta(microseconds=1)) == []
    [breached] = d.check(case(), {"resolution": t}, deadline)
    assert isinstance(breached, Breached)
    assert (breached.elapsed_s, breached.timer.breached_at) == (4 * 3600, deadline)
    # In business hours, the deadline is where the calendar says 4 h of business time end.
    b = decisions()
    t = started(b, "resolution", FRIDAY_15_BERLIN)
    policy = b.policies.by_name("acme-standard")
    assert policy is not None
    end = policy.calendar.add(FRIDAY_15_BERLIN, 4 * 3600)
    assert end == datetime(2026, 11, 30, 10, 0, tzinfo=UTC)  # Monday 11:00 Berlin
    before = [type(e) for e in b.check(case(), {"resolution": t}, end - timedelta(seconds=1))]
    assert before == [Escalated]  # 75 % only
    at_end = [type(e) for e in b.check(case(), {"resolution": t}, end)]
    assert at_end == [Breached, Escalated, Escalated, Reprioritised, Reassigned]


def test_a_paused_or_stopped_timer_is_never_escalated() -> None:
    d = decisions()
    t = started(d, "resolution", FRIDAY_15_BERLIN)
    much_later = datetime(2026, 12, 10, 12, 0, tzinfo=UTC)
    for state in (PAUSED, MET, CANCELLED):
        assert d.check(case(), {"resolution": replace(t, state=state)}, much_later) == []
    # A timer of a policy no longer in the file is left alone.
    assert d.check(case(), {"resolution": replace(t, policy="gone")}, much_later) == []


def test_reminders_repeat_until_acknowledged() -> None:
    d = decisions()
    at_75 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    [first] = d.check(case(), {"resolution": started(d, "resolution", FRIDAY_15_BERLIN)}, at_75)
    t = only_timer([first])
    # Not due yet, then due at 30 minutes: reminder 1 (email and event, no other action).
    assert d.check(case(), {"resolution": t}, at_75 + timedelta(minutes=29)) == []
    [reminder] = d.check(case(), {"resolution": t}, at_75 + timedelta(minutes=30))
    assert isinstance(reminder, Escalated)
    assert (reminder.rule.at, reminder.repeat, reminder.timer.repeats) == (75, 1, 1)
    assert reminder.timer.next_repeat_at == at_75 + HOUR
    assert reminder.mail is not None and reminder.mail.key.endswith(":75:1")
    assert reminder.mail.subject.endswith("escalated to second_line (reminder 1)")
    # Reminder 2 would be due at 11:00, when the next threshold is reached: that one instead.
    at_100 = d.check(case(), {"resolution": reminder.timer}, at_75 + HOUR)
    assert [type(e) for e in at_100] == [Breached, Escalated, Reprioritised, Reassigned]
    assert [(e.rule.at, e.repeat) for e in at_100 if isinstance(e, Escalated)] == [(100, 0)]
    # Someone acts on the case after reminder 1: the reminders stop, the timer runs on.
    [ack] = d.acknowledge({"resolution": reminder.timer}, "agent:a-1")
    assert isinstance(ack, RemindersAcknowledged)
    assert audit_entry(ack) == ("agent:a-1", "escalation_acknowledged", {"metrics": ["resolution"]})
    quiet = only_timer([ack])
    assert (quiet.state, quiet.next_repeat_at, quiet.repeats) == (RUNNING, None, 1)
    assert d.check(case(), {"resolution": quiet}, at_75 + HOUR - timedelta(minutes=1)) == []
    assert d.acknowledge({"resolution": quiet}, "agent:a-1") == []  # nothing pending


def test_a_due_reminder_whose_rule_no_longer_repeats_ends_quietly() -> None:
    d = decisions()
    t = started(d, "resolution", FRIDAY_15_BERLIN)
    due = datetime(2026, 11, 30, 9, 10, tzinfo=UTC)
    # The policy file changed after the escalation: its threshold has no rule that repeats.
    stale = replace(t, fired=(75,), escalated_threshold=80, next_repeat_at=due)
    [ended] = d.check(case(), {"resolution": stale}, due)
    assert isinstance(ended, RemindersEnded)
    assert ended.timer.next_repeat_at is None and audit_entry(ended) is None


def test_without_a_mail_server_the_email_is_skipped_and_said_so() -> None:
    d = decisions(mail=False)
    [escalated] = d.check(
        case(),
        {"resolution": started(d, "resolution", FRIDAY_15_BERLIN)},
        datetime(2026, 11, 30, 9, 0, tzinfo=UTC),
    )
    assert isinstance(escalated, Escalated)
    assert (escalated.mail, escalated.email) == (None, "skipped: no SMTP server configured")
    entry = audit_entry(escalated)
    assert entry is not None and entry[2]["email"] == "skipped: no SMTP server configured"


@pytest.mark.parametrize(
    ("priority", "raised"),
    [
        (case_pb2.CASE_PRIORITY_NORMAL, True),
        (case_pb2.CASE_PRIORITY_HIGH, True),
        (case_pb2.CASE_PRIORITY_URGENT, False),  # never lowered, nor set again
    ],
)
def test_reprioritise_only_raises(priority: int, raised: bool) -> None:
    d = decisions()
    t = started(d, "resolution", FRIDAY_15_BERLIN)
    effects = d.check(case(priority), {"resolution": t}, datetime(2026, 12, 1, 9, 0, tzinfo=UTC))
    assert (Reprioritised(case_pb2.CASE_PRIORITY_URGENT) in effects) is raised


def test_one_check_sees_the_priority_an_earlier_escalation_set() -> None:
    doc: dict[str, Any] = {
        "sla_policies": [
            {
                "name": "p",
                "tenant": "*",
                "first_response": "1h",
                "resolution": "1h",
                "escalation": [
                    {"at": 50, "kind": "functional", "level": "second_line",
                     "actions": ["reprioritise"], "priority": "urgent"},
                    {"at": 90, "kind": "functional", "level": "experts",
                     "actions": ["reprioritise"], "priority": "high"},
                ],
            }
        ]
    }  # fmt: skip
    d = decisions(doc=doc)
    start = FRIDAY_15_BERLIN
    timers = {m: started(d, m, start) for m in ("first_response", "resolution")}
    effects = d.check(case(), timers, start + HOUR)
    # Two metrics, each with both thresholds: the case goes to urgent once, and never back.
    assert [e for e in effects if isinstance(e, Reprioritised)] == [
        Reprioritised(case_pb2.CASE_PRIORITY_URGENT)
    ]
    assert [(e.timer.metric, e.rule.at) for e in effects if isinstance(e, Escalated)] == [
        ("first_response", 50),
        ("first_response", 90),
        ("resolution", 50),
        ("resolution", 90),
    ]
    assert {e.email for e in effects if isinstance(e, Escalated)} == {""}  # no email asked
