"""The KPI definitions of docs/kpi.md against small fixtures computed by hand."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from switchboard.case.reports.business_time import AlwaysOpen, WeeklyHours
from switchboard.case.reports.intervals import Interval, bucket, intervals, parse_interval
from switchboard.case.reports.kpi import (
    CaseFacts,
    ContactFacts,
    EvaluationFacts,
    KpiOptions,
    RatingFacts,
    ReportFacts,
    ReportSpec,
    backlog,
    compute,
    csat,
    email_service_level,
    first_contact_resolution,
    handling,
    quality,
    service_level,
)
from switchboard.core.errors import InvalidArgument

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)  # a Monday
OPTS = KpiOptions()
s = timedelta(seconds=1)


def call(
    n: int,
    arrived: datetime = T0,
    wait: float | None = None,
    abandon_after: float | None = None,
    queue: str = "billing",
    channel: str = "voice",
    customer: str = "",
    agent: str = "a1",
) -> ContactFacts:
    return ContactFacts(
        contact_id=f"c{n}",
        tenant="acme",
        queue=queue,
        channel=channel,
        agent_id=agent if wait is not None else "",
        customer_id=customer or f"k{n}",
        arrived_at=arrived,
        answered_at=arrived + wait * s if wait is not None else None,
        abandoned_at=arrived + abandon_after * s if abandon_after is not None else None,
    )


def test_no_calls_has_no_rates() -> None:
    m = service_level([], OPTS)
    assert m["offered"] == 0 and m["answered"] == 0
    assert m["service_level"] is None and m["service_level_2"] is None
    assert m["asa_s"] is None and m["abandon_rate"] is None
    assert handling([])["aht_s"] is None
    assert csat([])["csat"] is None
    assert quality([])["fatal_error_rate"] is None
    assert email_service_level([], OPTS, T0)["email_service_level"] is None


def test_every_call_abandoned() -> None:
    calls = [call(1, abandon_after=5), call(2, abandon_after=30), call(3, abandon_after=60)]
    m = service_level(calls, OPTS)
    assert (m["offered"], m["answered"], m["abandoned"], m["short_abandoned"]) == (3, 0, 3, 1)
    assert m["service_level"] == 0.0  # 0 answered in time / 3 with an outcome
    assert m["service_level_2"] == 0.0  # 0 / (3 - 1 short abandon)
    assert m["abandon_rate"] == 1.0
    assert m["abandon_rate_2"] == 1.0  # 2 long abandons / 2
    assert m["asa_s"] is None


def test_service_level_both_forms_and_asa() -> None:
    calls = [
        call(1, wait=10),
        call(2, wait=20),  # exactly at the threshold counts as within
        call(3, wait=25),
        call(4, abandon_after=4),  # short abandon
        call(5, abandon_after=40),
        call(6),  # still waiting: offered, in no rate
    ]
    m = service_level(calls, OPTS)
    assert m["offered"] == 6 and m["answered"] == 3 and m["abandoned"] == 2
    assert m["answered_within_threshold"] == 2
    assert m["service_level"] == pytest.approx(2 / 5)
    assert m["service_level_2"] == pytest.approx(2 / 4)
    assert m["asa_s"] == pytest.approx(55 / 3)
    assert m["abandon_rate"] == pytest.approx(2 / 5)
    assert m["abandon_rate_2"] == pytest.approx(1 / 4)
    premium = service_level(calls, KpiOptions(voice_threshold=timedelta(seconds=10)))
    assert premium["service_level"] == pytest.approx(1 / 5)
    assert premium["service_level_2"] == pytest.approx(1 / 4)  # 4 s abandon still short


def test_router_wait_is_preferred_to_timestamps() -> None:
    c = ContactFacts(
        "c1", "acme", "q", "voice", "a1", "k1", T0, answered_at=T0 + 30 * s, wait_ms=12_000
    )
    assert service_level([c], OPTS)["asa_s"] == 12.0


def test_email_is_not_in_voice_service_level() -> None:
    m = service_level([call(1, channel="email", wait=5)], OPTS)
    assert m["offered"] == 0


def test_a_contact_crossing_an_interval_boundary_counts_where_it_arrived() -> None:
    first = call(1, arrived=T0 + timedelta(minutes=14, seconds=50), wait=20)
    second = call(2, arrived=T0 + timedelta(minutes=15, seconds=5), abandon_after=35)
    spec = ReportSpec(T0, T0 + timedelta(minutes=30), Interval.QUARTER_HOUR, ZoneInfo("UTC"))
    rows = compute(ReportFacts(contacts=[first, second]), spec, as_of=T0 + timedelta(hours=1))
    assert [r.start for r in rows] == [T0, T0 + timedelta(minutes=15)]
    a, b = rows[0].metrics, rows[1].metrics
    assert (a["offered"], a["answered"], a["abandoned"], a["service_level"]) == (1, 1, 0, 1.0)
    assert (b["offered"], b["answered"], b["abandoned"], b["service_level"]) == (1, 0, 1, 0.0)


def test_report_shows_empty_intervals_and_groups() -> None:
    calls = [call(1, wait=5, queue="billing"), call(2, wait=50, queue="tech")]
    spec = ReportSpec(
        T0, T0 + timedelta(hours=2), Interval.HOUR, ZoneInfo("UTC"), group_by=("queue",)
    )
    rows = compute(ReportFacts(contacts=calls), spec, as_of=T0 + timedelta(days=1))
    assert [(r.start.hour, dict(r.group)["queue"]) for r in rows] == [
        (9, "billing"),
        (9, "tech"),
        (10, "billing"),
        (10, "tech"),
    ]
    assert rows[0].metrics["service_level"] == 1.0 and rows[1].metrics["service_level"] == 0.0
    assert rows[2].metrics["offered"] == 0 and rows[2].metrics["service_level"] is None
    assert compute(ReportFacts(), spec, as_of=T0) == []  # no groups seen, nothing to show
    ungrouped = ReportSpec(T0, T0 + timedelta(hours=2), Interval.HOUR, ZoneInfo("UTC"))
    nothing = compute(ReportFacts(), ungrouped, as_of=T0)
    assert len(nothing) == 2 and all(r.metrics["service_level"] is None for r in nothing)


SEOUL = ZoneInfo("Asia/Seoul")


def kst(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2025, 3, day, hour, minute, tzinfo=SEOUL)  # 2025-03-07 is a Friday


def email(n: int, arrived: datetime, answered: datetime | None) -> ContactFacts:
    return ContactFacts(
        f"e{n}", "acme", "mail", "email", "a1", f"k{n}", arrived, first_response_at=answered
    )


def test_email_service_level_in_business_hours_over_a_weekend() -> None:
    calendar = WeeklyHours.weekdays("Asia/Seoul", time(9), time(18))
    mails = [
        email(1, kst(7, 17), kst(10, 10)),  # Fri 17:00 -> Mon 10:00: 1 h + 1 h of business time
        email(2, kst(5, 10), kst(10, 10)),  # Wed 10:00 -> Mon 10:00: 8 + 9 + 9 + 1 = 27 h
        email(3, kst(7, 17, 30), None),  # Fri 17:30, unanswered by Mon 12:00: 3.5 h, pending
    ]
    as_of = kst(10, 12)
    with_calendar = email_service_level(mails, KpiOptions(email_clock=calendar), as_of)
    assert calendar.business_seconds(kst(7, 17), kst(10, 10)) == 2 * 3600
    assert with_calendar["email_received"] == 3 and with_calendar["email_answered"] == 2
    assert with_calendar["email_pending"] == 1
    assert with_calendar["email_service_level"] == 0.5
    around_the_clock = email_service_level(mails, KpiOptions(email_clock=AlwaysOpen()), as_of)
    # 65 h and 120 h: both late; the unanswered one has waited 66.5 h: a breach too.
    assert around_the_clock["email_service_level"] == 0.0
    assert around_the_clock["email_pending"] == 0
    # A holiday on Monday: the first email has waited 1 h so far, nothing breached on Monday.
    holiday = WeeklyHours.weekdays("Asia/Seoul", time(9), time(18), holidays=[date(2025, 3, 10)])
    assert holiday.business_seconds(kst(7, 17), kst(10, 10)) == 3600


def test_handling_time_and_hold() -> None:
    a = ContactFacts(
        "c1", "acme", "q", "voice", "a1", "k1", T0, answered_at=T0, ended_at=T0,
        talk_ms=300_000, hold_ms=60_000, wrap_up_ms=30_000,
    )  # fmt: skip
    b = ContactFacts(
        "c2", "acme", "q", "voice", "a1", "k2", T0, answered_at=T0, ended_at=T0,
        talk_ms=200_000, hold_ms=0, wrap_up_ms=10_000,
    )  # fmt: skip
    unhandled = call(3, abandon_after=10)
    m = handling([a, b, unhandled])
    assert m["handled"] == 2
    assert m["aht_s"] == pytest.approx((330 + 210) / 2)  # talk (hold included) + wrap-up
    assert m["avg_talk_s"] == pytest.approx((240 + 200) / 2)
    assert m["avg_hold_s"] == pytest.approx(30)
    assert m["avg_hold_when_held_s"] == pytest.approx(60)
    assert m["avg_wrap_up_s"] == pytest.approx(20)


def test_first_contact_resolution_with_a_window() -> None:
    day = timedelta(days=1)
    a1 = call(1, arrived=T0, wait=5, customer="A")
    a2 = call(2, arrived=T0 + day, wait=5, customer="A", channel="email")
    b1 = call(3, arrived=T0 + timedelta(hours=1), wait=5, customer="B")
    c1 = call(4, arrived=T0 + timedelta(hours=2), abandon_after=50, customer="C")
    everyone = [a1, a2, b1, c1]
    later = first_contact_resolution(everyone, everyone, OPTS, as_of=T0 + 5 * day)
    assert (later["fcr_resolved"], later["fcr_repeated"], later["fcr_pending"]) == (2, 1, 0)
    assert later["fcr_rate"] == pytest.approx(2 / 3)
    soon = first_contact_resolution(everyone, everyone, OPTS, as_of=T0 + day + timedelta(hours=2))
    assert (soon["fcr_resolved"], soon["fcr_repeated"], soon["fcr_pending"]) == (0, 1, 2)
    assert soon["fcr_rate"] == 0.0
    # With a 12-hour window the next-day contact is not a repeat.
    short = KpiOptions(fcr_window=timedelta(hours=12))
    assert first_contact_resolution(everyone, everyone, short, T0 + 5 * day)["fcr_rate"] == 1.0


def test_csat_and_fatal_error_rate() -> None:
    ratings = [RatingFacts("acme", "q", "chat", "a1", T0, score) for score in (5, 4, 3, 1)]
    m = csat(ratings)
    assert m["csat_responses"] == 4 and m["csat"] == 0.5 and m["csat_avg_score"] == 3.25
    evs = [
        EvaluationFacts("acme", "q", "voice", "a1", T0, 90.0, 0),
        EvaluationFacts("acme", "q", "voice", "a1", T0, 40.0, 2),
        EvaluationFacts("acme", "q", "voice", "a2", T0, 80.0, 0),
    ]
    q = quality(evs)
    assert q["qa_evaluations"] == 3 and q["fatal_error_rate"] == pytest.approx(1 / 3)
    assert q["qa_avg_score"] == pytest.approx(70.0)


def test_backlog_and_age() -> None:
    h = timedelta(hours=1)
    cases = [
        CaseFacts("acme", "q", "email", "a1", T0 - h, None),
        CaseFacts("acme", "q", "email", "a1", T0, T0 + h / 2),
        CaseFacts("acme", "q", "email", "a1", T0 + h, None),
    ]
    m = backlog(cases, T0 + 45 * timedelta(minutes=1))
    assert m["backlog"] == 1 and m["backlog_max_age_s"] == 105 * 60
    m = backlog(cases, T0 + 2 * h)
    assert m["backlog"] == 2 and m["backlog_avg_age_s"] == (3 * 3600 + 3600) / 2
    assert backlog([], T0)["backlog_avg_age_s"] is None
    spec = ReportSpec(T0, T0 + 3 * h, Interval.HOUR, ZoneInfo("UTC"))
    rows = compute(ReportFacts(cases=cases), spec, as_of=T0 + 90 * timedelta(minutes=1))
    assert [r.metrics["backlog"] for r in rows] == [1, 2, None]  # 10:00, now (10:30), future


def test_intervals_align_in_the_time_zone() -> None:
    tz = ZoneInfo("Asia/Seoul")
    moment = datetime(2025, 3, 5, 20, 7, tzinfo=UTC)  # Thu 05:07 in Seoul
    assert bucket(moment, Interval.QUARTER_HOUR, tz) == (
        datetime(2025, 3, 5, 20, 0, tzinfo=UTC),
        datetime(2025, 3, 5, 20, 15, tzinfo=UTC),
    )
    start, end = bucket(moment, Interval.DAY, tz)
    assert start == datetime(2025, 3, 6, 0, 0, tzinfo=tz) and end - start == timedelta(days=1)
    start, _ = bucket(moment, Interval.WEEK, tz)
    assert start == datetime(2025, 3, 3, 0, 0, tzinfo=tz)  # Monday
    start, end = bucket(moment, Interval.MONTH, tz)
    assert (start, end) == (datetime(2025, 3, 1, tzinfo=tz), datetime(2025, 4, 1, tzinfo=tz))
    berlin = ZoneInfo("Europe/Berlin")  # clocks go forward on 2025-03-30
    start, end = bucket(datetime(2025, 3, 30, 12, tzinfo=UTC), Interval.DAY, berlin)
    assert end - start == timedelta(hours=23)
    hours = list(
        intervals(datetime(2025, 3, 30, 0, tzinfo=UTC), datetime(2025, 3, 30, 3, tzinfo=UTC),
                  Interval.HOUR, berlin)
    )  # fmt: skip
    assert len(hours) == 3 and all(e - s == timedelta(hours=1) for s, e in hours)


def test_unknown_interval_is_a_clear_error() -> None:
    assert parse_interval("15m") is Interval.QUARTER_HOUR
    with pytest.raises(InvalidArgument, match="interval"):
        parse_interval("fortnight")


def test_deflection_counts_drafts_opened_and_not_sent() -> None:
    from switchboard.case.reports.kpi import DraftFacts, deflection

    at = datetime(2026, 3, 2, 9, tzinfo=UTC)
    drafts = [
        DraftFacts("demo", at, opened=2, submitted=False),  # read two, left: deflected
        DraftFacts("demo", at, opened=1, submitted=True),  # read one, sent anyway
        DraftFacts("demo", at, opened=0, submitted=True),  # never opened: neither
        DraftFacts("demo", at, opened=0, submitted=False),
    ]
    assert deflection(drafts) == {
        "suggestions_shown": 4,
        "articles_opened": 3,
        "deflected": 1,
        "submitted_after_viewing": 1,
        "deflection_rate": 0.5,
    }
    # Nothing opened: no rate (undefined), not 0 %.
    assert deflection(drafts[2:])["deflection_rate"] is None


def test_agent_states_are_time_in_each_presence_split_at_interval_boundaries() -> None:
    """A period counts in each interval for its part inside; breaks, not-responding periods and
    changes made by others count where they began; availability = available / signed in; an
    agent signed out is in no interval it does not change in."""
    from switchboard.case.reports.kpi import agent_periods

    m = timedelta(minutes=1)
    changes = [
        ("acme", "ko-1", "wrap_up", "", "", T0 + 50 * m),
        ("acme", "ko-1", "available", "", "", T0 - 10 * m),  # in force as the report begins
        ("acme", "ko-1", "break", "lunch", "sup-1", T0 + 10 * m),
        ("acme", "ko-1", "available", "", "", T0 + 40 * m),
        ("acme", "ko-1", "available", "", "", T0 + 55 * m),
        ("acme", "ko-1", "offline", "", "", T0 + 80 * m),
        ("acme", "ko-2", "offline", "", "", T0 - 30 * m),  # signed out throughout
    ]
    periods = agent_periods(changes, T0 + 600 * m)
    ko_1 = sorted((p.presence, p.start, p.end) for p in periods if p.agent_id == "ko-1")
    assert ko_1[0] == ("available", T0 - 10 * m, T0 + 10 * m)
    assert ("offline", T0 + 80 * m, T0 + 600 * m) in ko_1  # the last lasts until `until`
    spec = ReportSpec(T0, T0 + 90 * m, Interval.HOUR, ZoneInfo("UTC"), group_by=("agent",))
    rows = compute(ReportFacts(agent_periods=periods), spec, T0 + 600 * m, ("agent_states",))
    assert [(r.start, dict(r.group)["agent"]) for r in rows] == [
        (T0, "ko-1"),
        (T0 + 60 * m, "ko-1"),
    ]
    assert rows[0].metrics == {
        "signed_in_s": 3600.0,
        "available_s": 1500.0,  # 09:00-09:10, 09:40-09:50, 09:55-10:00
        "busy_s": 0.0,
        "wrap_up_s": 300.0,
        "break_s": 1800.0,
        "not_responding_s": 0.0,
        "breaks": 1.0,
        "not_responding": 0.0,
        "changed_by_others": 1.0,  # the break, set by sup-1
        "availability": 1500 / 3600,
    }
    assert rows[1].metrics["available_s"] == 1200.0  # 10:00-10:20, then signed out
    assert rows[1].metrics["signed_in_s"] == 1200.0 and rows[1].metrics["availability"] == 1.0
    # Cut at the report's end (10:30), not the interval's (11:00): an agent still available.
    still = agent_periods([("acme", "ko-3", "available", "", "", T0 + 70 * m)], T0 + 600 * m)
    [row] = compute(
        ReportFacts(agent_periods=still), replace(spec, start=T0 + 60 * m), T0, ("agent_states",)
    )
    assert row.metrics["available_s"] == 1200.0
    # Nobody signed in: one row per interval with no availability (undefined, not 0).
    [empty] = compute(ReportFacts(), replace(spec, group_by=()), T0, ("agent_states",))[:1]
    assert empty.metrics["signed_in_s"] == 0 and empty.metrics["availability"] is None
