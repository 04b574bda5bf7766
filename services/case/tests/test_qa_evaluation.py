"""Quality assurance through CaseService over real gRPC and a real database: targeted sampling,
versioned per-tenant forms, the dispute of an evaluation and its decision by a second evaluator
(audited), the scorecard, and tenants kept apart."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
import yaml
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from switchboard.case import audit, customers
from switchboard.case.adapters import backfill, keyring, orm
from switchboard.case.adapters.crypto import ERASED
from switchboard.case.entrypoints.kb_reports_rpc import KnowledgeReportRpcs, build_kb_reports
from switchboard.case.reports.orm import CsatRating
from switchboard.case.sla import policy
from switchboard.core import auth
from switchboard.core import grpc as sb_grpc
from switchboard.v1 import case_pb2, case_pb2_grpc, contact_pb2

SECRET = "qa-evaluation-secret"
T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
CHAT, EMAIL = contact_pb2.CHANNEL_CHAT, contact_pb2.CHANNEL_EMAIL
DEFAULT_ITEMS = ("identity_verified", "correct_information", "compliance", "greeting",
                 "understood_need", "tone", "hold_etiquette", "documented", "closing")  # fmt: skip

FORM_V = """
id: default
title: Service desk
items:
  - {id: identity_verified, text: Verified the caller, fatal: true}
  - {id: greeting, text: Greeted the customer}
"""


class Servicer(KnowledgeReportRpcs, case_pb2_grpc.CaseServiceServicer):
    pass


def ts(value: datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(value)
    return t


async def seed(sessions: async_sessionmaker[AsyncSession]) -> None:
    """acme: four handled contacts (a long one, a badly rated one, an escalated one, a plain
    one) and an abandoned one; globex: one handled contact."""
    async with sessions.begin() as s:
        keys = keyring.of(s)
        for tenant, customer in (("acme", "k1"), ("globex", "k9")):
            s.add(orm.Customer(id=customer, tenant=tenant, created_at=T0,
                               display_name=keys.seal(s, tenant, customer, "Ana")))  # fmt: skip
        await s.flush()
        for case_id, tenant, customer in (("case1", "acme", "k1"), ("case9", "globex", "k9")):
            s.add(orm.Case(id=case_id, tenant=tenant, customer_id=customer, reference=case_id,
                           status=case_pb2.CASE_STATUS_IN_PROGRESS, created_at=T0, updated_at=T0,
                           subject=keys.seal(s, tenant, customer, "refund")))  # fmt: skip
        await s.flush()

        def contact(
            cid: str, tenant: str, agent: str, channel: int, minute: int, **kw: Any
        ) -> None:
            at = T0 + timedelta(minutes=minute)
            s.add(orm.Contact(contact_id=cid, tenant=tenant, case_id=kw.pop("case", "case1"),
                              channel=channel, language="ko", skills=[],
                              queue=kw.pop("queue", "billing"), subject="", agent_id=agent,
                              status="ended", created_at=at, queued_at=at, assigned_at=at,
                              ended_at=at + timedelta(minutes=5), **kw))  # fmt: skip

        contact("long", "acme", "a1", CHAT, 1, talk_ms=900_000, wrap_up_ms=60_000)
        contact("rated", "acme", "a1", EMAIL, 2, talk_ms=60_000)
        contact(
            "esc", "acme", "a2", CHAT, 3, talk_ms=60_000, wrap_up_code="escalated", queue="tech"
        )
        contact("plain", "acme", "a2", CHAT, 4, talk_ms=60_000, queue="tech")
        contact("gone", "acme", "", CHAT, 5, abandoned_at=T0 + timedelta(minutes=6))
        contact("g1", "globex", "a1", CHAT, 1, case="case9", talk_ms=900_000)
        await s.flush()
        s.add(CsatRating(tenant="acme", case_id="case1", contact_id="rated", event_id="r1",
                         score=1, comment="", queue="billing", channel="email", agent_id="a1",
                         rated_at=T0 + timedelta(minutes=30)))  # fmt: skip


@pytest.fixture
async def served(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[int]:
    await seed(sessions)
    servicer = Servicer()
    servicer.kb_reports = build_kb_reports(sessions, None, "case", qa_rate=0.0, qa_seed="s1")
    service = case_pb2.DESCRIPTOR.services_by_name["CaseService"].full_name
    server, port, _ = await sb_grpc.start_server(
        [(case_pb2_grpc.add_CaseServiceServicer_to_server, servicer, service)],
        "127.0.0.1", 0, SECRET, frozenset({"acme", "globex"}),
    )  # fmt: skip
    try:
        yield port
    finally:
        await server.stop(0.5)


class Caller:
    def __init__(self, port: int, subject: str, role: str, tenant: str = "acme") -> None:
        token = auth.mint(SECRET, tenant, subject, [role])
        self.channel = sb_grpc.channel(f"127.0.0.1:{port}", token)
        self.stub = case_pb2_grpc.CaseServiceStub(self.channel)

    async def refused(self, method: str, request: Any) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await getattr(self.stub, method)(request, timeout=10)
        return err.value


@pytest.fixture
async def callers(served: int) -> AsyncIterator[Any]:
    made: list[Caller] = []

    def make(subject: str, role: str, tenant: str = "acme") -> Any:
        caller = Caller(served, subject, role, tenant)
        made.append(caller)
        return caller

    try:
        yield make
    finally:
        for c in made:
            await c.channel.close()


def window(request: Any) -> Any:
    getattr(request, "from").CopyFrom(ts(T0 - timedelta(hours=1)))
    request.to.CopyFrom(ts(T0 + timedelta(days=1)))
    return request


def items(failed: tuple[str, ...] = (), ids: tuple[str, ...] = DEFAULT_ITEMS) -> list[Any]:
    return [case_pb2.QaItemResult(item_id=i, passed=i not in failed) for i in ids]


async def test_targeted_sampling_picks_long_badly_rated_and_escalated_contacts(
    callers: Any,
) -> None:
    qa = callers("qa-1", "qa").stub
    # At a rate of 0, nothing is drawn at random: only the targets are sampled.
    plain = await qa.ListQaSamples(window(case_pb2.ListQaSamplesRequest()), timeout=10)
    assert list(plain.samples) == []
    targeted = await qa.ListQaSamples(
        window(case_pb2.ListQaSamplesRequest(targets=["long_handle", "low_csat", "escalated"])),
        timeout=10,
    )
    got = {s.contact_id: list(s.reasons) for s in targeted.samples}
    assert got == {"long": ["long_handle"], "rated": ["low_csat"], "esc": ["escalated"]}
    by_id = {s.contact_id: s for s in targeted.samples}
    assert by_id["long"].handle_seconds == 960 and by_id["rated"].csat == 1
    assert by_id["esc"].escalated and by_id["esc"].agent_id == "a2"
    # Per channel and agent, with thresholds of the caller's choosing.
    email = await qa.ListQaSamples(
        window(case_pb2.ListQaSamplesRequest(targets=["low_csat"], channel=EMAIL)), timeout=10
    )
    assert [s.contact_id for s in email.samples] == ["rated"]
    shorter = await qa.ListQaSamples(
        window(case_pb2.ListQaSamplesRequest(targets=["long_handle"], long_handle_seconds=30,
                                             agent_id="a2")),
        timeout=10,
    )  # fmt: skip
    assert [s.contact_id for s in shorter.samples] == ["esc", "plain"]
    # Random and targeted together: every contact drawn is marked random.
    everything = await qa.ListQaSamples(
        window(case_pb2.ListQaSamplesRequest(rate=1.0, targets=["escalated"])), timeout=10
    )
    assert {s.contact_id: list(s.reasons) for s in everything.samples} == {
        "long": ["random"], "rated": ["random"], "esc": ["random", "escalated"],
        "plain": ["random"],
    }  # fmt: skip
    # Only the targets, whatever the service's random rate and the minimum per agent.
    only = await qa.ListQaSamples(
        window(case_pb2.ListQaSamplesRequest(targets=["escalated"], targeted_only=True,
                                             min_per_agent=5, rate=1.0)),
        timeout=10,
    )  # fmt: skip
    assert [(s.contact_id, list(s.reasons)) for s in only.samples] == [("esc", ["escalated"])]
    err = await callers("qa-1", "qa").refused(
        "ListQaSamples", window(case_pb2.ListQaSamplesRequest(targets=["loud"]))
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_forms_are_versioned_per_tenant_and_evaluations_keep_their_version(
    callers: Any,
) -> None:
    qa = callers("qa-1", "qa").stub
    built_in = await qa.GetQaForm(case_pb2.GetQaFormRequest(form_id="default"), timeout=10)
    assert built_in.version == 1 and len(built_in.items) == len(DEFAULT_ITEMS)

    v2 = await qa.PutQaForm(case_pb2.PutQaFormRequest(yaml=FORM_V), timeout=10)
    assert (v2.form_id, v2.version, v2.created_by) == ("default", 2, "qa-1")
    assert [(i.item_id, i.fatal) for i in v2.items] == [
        ("identity_verified", True), ("greeting", False)
    ]  # fmt: skip
    first = await qa.SubmitQaScore(
        case_pb2.SubmitQaScoreRequest(
            contact_id="long", items=items(("greeting",), ("identity_verified", "greeting"))
        ),
        timeout=10,
    )
    assert (first.form_version, first.score, first.fatal_errors) == (2, 0.0, 0)

    v3 = await qa.PutQaForm(
        case_pb2.PutQaFormRequest(yaml=FORM_V + "  - {id: closing, text: Closed properly}\n"),
        timeout=10,
    )
    assert v3.version == 3 and len(v3.items) == 3
    listed = await qa.ListQaForms(case_pb2.ListQaFormsRequest(), timeout=10)
    assert [(f.form_id, f.version) for f in listed.forms] == [("default", 3)]
    # The earlier version is still there, as it was.
    again = await qa.GetQaForm(case_pb2.GetQaFormRequest(form_id="default", version=2), timeout=10)
    assert [i.item_id for i in again.items] == ["identity_verified", "greeting"]
    # Scoring on the latest version needs its new item; an older version can still be chosen.
    err = await callers("qa-1", "qa").refused(
        "SubmitQaScore",
        case_pb2.SubmitQaScoreRequest(
            contact_id="rated", items=items((), ("identity_verified", "greeting"))
        ),
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "closing" in (err.details() or "")
    older = await qa.SubmitQaScore(
        case_pb2.SubmitQaScoreRequest(
            contact_id="rated", form_version=2, items=items((), ("identity_verified", "greeting"))
        ),
        timeout=10,
    )
    assert older.form_version == 2 and older.score == 100.0
    listed_evals = await qa.ListQaEvaluations(case_pb2.ListQaEvaluationsRequest(), timeout=10)
    assert {e.contact_id: e.form_version for e in listed_evals.evaluations} == {
        "long": 2, "rated": 2
    }  # fmt: skip

    # Another tenant has only the built-in form, and none of acme's versions.
    other = callers("qa-9", "qa", "globex")
    theirs = await other.stub.ListQaForms(case_pb2.ListQaFormsRequest(), timeout=10)
    assert [(f.form_id, f.version) for f in theirs.forms] == [("default", 1)]
    err = await other.refused("GetQaForm", case_pb2.GetQaFormRequest(form_id="default", version=2))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    # A form that does not parse says where; an agent may not put forms.
    err = await callers("qa-1", "qa").refused(
        "PutQaForm", case_pb2.PutQaFormRequest(yaml="id: x\nitems: []\n")
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "items" in (err.details() or "")
    err = await callers("a1", "agent").refused("PutQaForm", case_pb2.PutQaFormRequest(yaml=FORM_V))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_the_agent_disputes_and_a_second_evaluator_decides(
    callers: Any, sessions: async_sessionmaker[AsyncSession]
) -> None:
    qa = callers("qa-1", "qa")
    scored = await qa.stub.SubmitQaScore(
        case_pb2.SubmitQaScoreRequest(contact_id="long", items=items(("compliance",)),
                                      comment="no recording notice"),
        timeout=10,
    )  # fmt: skip
    assert (scored.status, scored.fatal_errors, scored.score) == ("scored", 1, 0.0)
    await qa.stub.SubmitQaScore(
        case_pb2.SubmitQaScoreRequest(contact_id="esc", items=items(("tone",))), timeout=10
    )

    a1, a2 = callers("a1", "agent"), callers("a2", "agent")
    mine = await a1.stub.ListQaEvaluations(
        case_pb2.ListQaEvaluationsRequest(agent_id="a1"), timeout=10
    )
    assert [e.contact_id for e in mine.evaluations] == ["long"]
    assert mine.evaluations[0].comment == "no recording notice"
    assert {i.item_id: i.passed for i in mine.evaluations[0].items}["compliance"] is False
    # An agent sees only its own, and disputes only its own.
    for request in (case_pb2.ListQaEvaluationsRequest(agent_id="a1"),
                    case_pb2.ListQaEvaluationsRequest()):  # fmt: skip
        err = await a2.refused("ListQaEvaluations", request)
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    dispute = case_pb2.DisputeQaEvaluationRequest(
        evaluation_id=scored.evaluation_id, reason="The notice was played by the IVR"
    )
    assert (await a2.refused("DisputeQaEvaluation", dispute)).code() == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    no_reason = case_pb2.DisputeQaEvaluationRequest(evaluation_id=scored.evaluation_id)
    assert (await a1.refused("DisputeQaEvaluation", no_reason)).code() == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    disputed = await a1.stub.DisputeQaEvaluation(dispute, timeout=10)
    assert disputed.status == "disputed"
    assert disputed.dispute_reason == "The notice was played by the IVR"
    assert (await a1.refused("DisputeQaEvaluation", dispute)).code() == (
        grpc.StatusCode.FAILED_PRECONDITION
    )
    queue = await qa.stub.ListQaEvaluations(
        case_pb2.ListQaEvaluationsRequest(status="disputed"), timeout=10
    )
    assert [e.evaluation_id for e in queue.evaluations] == [scored.evaluation_id]

    change = case_pb2.DecideQaDisputeRequest(
        evaluation_id=scored.evaluation_id, items=items(("greeting",)), note="IVR notice heard"
    )
    # Not the evaluator who scored it, and not an agent.
    err = await qa.refused("DecideQaDispute", change)
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "second evaluator" in (err.details() or "")
    assert (await a1.refused("DecideQaDispute", change)).code() == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    decided = await callers("sup-1", "supervisor").stub.DecideQaDispute(change, timeout=10)
    assert (decided.status, decided.decided_by, decided.decision_note) == (
        "changed", "sup-1", "IVR notice heard"
    )  # fmt: skip
    assert (decided.fatal_errors, decided.original_fatal_errors) == (0, 1)
    # Greeting failed: 1 of the 9 non-fatal weight.
    assert decided.original_score == 0.0 and decided.score == round(100 * 8 / 9, 2)
    err = await callers("qa-2", "qa").refused("DecideQaDispute", change)
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION  # decided once

    async with sessions() as s:
        trail = await audit.trail(s, audit.CASE, "case1")
        assert await audit.verify(s, audit.CASE, "case1") == (1, [])  # the chain is intact
    steps = [(e.actor, e.action) for e in trail if e.action.startswith("qa_")]
    assert steps == [("qa-1", "qa_scored"), ("qa-1", "qa_scored"), ("a1", "qa_disputed"),
                     ("sup-1", "qa_decided")]  # fmt: skip

    # The scorecard counts the decided score: no fatal error left for a1.
    card_request = window(case_pb2.GetQaScorecardRequest())
    card_request.to.CopyFrom(ts(datetime.now(UTC) + timedelta(days=1)))
    card = await qa.stub.GetQaScorecard(card_request, timeout=10)
    assert {(line.key, line.evaluations, line.fatal_error_rate) for line in card.agents} == {
        ("a1", 1, 0.0), ("a2", 1, 0.0)
    }  # fmt: skip
    assert {line.key for line in card.teams} == {"billing", "tech"}
    assert sum(p.evaluations for p in card.days) == 2 and card.total.evaluations == 2
    assert (await a1.refused("GetQaScorecard", card_request)).code() == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    # Grouped by the agents directory's teams (the chat passes them): a2 is in none.
    card_request.agent_teams.update({"a1": "ko-team", "qa-1": "ko-team"})
    by_team = await qa.stub.GetQaScorecard(card_request, timeout=10)
    assert {(line.key, line.evaluations) for line in by_team.teams} == {("ko-team", 1), ("", 1)}
    card_request.team = "ko-team"  # the team's agents only
    only = await qa.stub.GetQaScorecard(card_request, timeout=10)
    assert [line.key for line in only.agents] == ["a1"] and only.total.evaluations == 1
    assert [(line.key, line.evaluations) for line in only.teams] == [("ko-team", 1)]


async def test_tenants_never_see_each_others_evaluations(callers: Any) -> None:
    qa = callers("qa-1", "qa")
    scored = await qa.stub.SubmitQaScore(
        case_pb2.SubmitQaScoreRequest(contact_id="long", items=items(("compliance",))),
        timeout=10,
    )
    other_qa, other_agent = callers("qa-9", "qa", "globex"), callers("a1", "agent", "globex")
    # globex's contact is not acme's to score, nor acme's globex's.
    err = await other_qa.refused(
        "SubmitQaScore", case_pb2.SubmitQaScoreRequest(contact_id="long", items=items())
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND
    listed = await other_qa.stub.ListQaEvaluations(case_pb2.ListQaEvaluationsRequest(), timeout=10)
    assert list(listed.evaluations) == []
    # The same agent id in another tenant is another agent.
    theirs = await other_agent.stub.ListQaEvaluations(
        case_pb2.ListQaEvaluationsRequest(agent_id="a1"), timeout=10
    )
    assert list(theirs.evaluations) == []
    err = await other_agent.refused(
        "DisputeQaEvaluation",
        case_pb2.DisputeQaEvaluationRequest(evaluation_id=scored.evaluation_id, reason="x"),
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND
    card = await other_qa.stub.GetQaScorecard(
        window(case_pb2.GetQaScorecardRequest(to=ts(datetime.now(UTC) + timedelta(days=1)))),
        timeout=10,
    )
    assert card.total.evaluations == 0
    samples = await other_qa.stub.ListQaSamples(
        window(case_pb2.ListQaSamplesRequest(targets=["long_handle"])), timeout=10
    )
    assert [s.contact_id for s in samples.samples] == ["g1"]


SEOUL_POLICY = """
calendars:
  seoul-office:
    timezone: Asia/Seoul
    hours: {mon-fri: "09:00-18:00"}
business_hours:
  acme: seoul-office
"""


async def test_the_scorecards_days_are_the_tenants_days(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """acme works in Seoul (its business hours' time zone), globex has no time zone (UTC): an
    evaluation at 23:30 UTC is on the next day in Seoul, one at 14:00 UTC the same day."""
    await seed(sessions)
    policies = policy.parse(yaml.safe_load(SEOUL_POLICY))
    now = [datetime(2026, 6, 1, 14, 0, tzinfo=UTC)]
    servicer = Servicer()
    servicer.kb_reports = build_kb_reports(
        sessions, None, "case", qa_rate=0.0, clock=lambda: now[0], zone_for=policies.time_zone
    )
    service = case_pb2.DESCRIPTOR.services_by_name["CaseService"].full_name
    server, port, _ = await sb_grpc.start_server(
        [(case_pb2_grpc.add_CaseServiceServicer_to_server, servicer, service)],
        "127.0.0.1", 0, SECRET, frozenset({"acme", "globex"}),
    )  # fmt: skip
    acme, globex = Caller(port, "qa-1", "qa"), Caller(port, "qa-9", "qa", "globex")
    try:
        # 14:00 UTC is 23:00 on June 1 in Seoul; 23:30 UTC is 08:30 on June 2 there.
        await acme.stub.SubmitQaScore(
            case_pb2.SubmitQaScoreRequest(contact_id="long", items=items()), timeout=10
        )
        now[0] = datetime(2026, 6, 1, 23, 30, tzinfo=UTC)
        await acme.stub.SubmitQaScore(
            case_pb2.SubmitQaScoreRequest(contact_id="plain", items=items(("compliance",))),
            timeout=10,
        )
        await globex.stub.SubmitQaScore(
            case_pb2.SubmitQaScoreRequest(contact_id="g1", items=items()), timeout=10
        )

        def card_request() -> Any:
            request = case_pb2.GetQaScorecardRequest(to=ts(datetime(2026, 6, 3, tzinfo=UTC)))
            getattr(request, "from").CopyFrom(ts(datetime(2026, 5, 31, tzinfo=UTC)))
            return request

        card = await acme.stub.GetQaScorecard(card_request(), timeout=10)
        assert card.time_zone == "Asia/Seoul"
        assert [(p.date, p.evaluations, p.fatal_error_rate) for p in card.days] == [
            ("2026-06-01", 1, 0.0),
            ("2026-06-02", 1, 1.0),
        ]
        # Each day starts at midnight in Seoul: 15:00 UTC the day before.
        assert [p.day.ToDatetime(tzinfo=UTC) for p in card.days] == [
            datetime(2026, 5, 31, 15, 0, tzinfo=UTC),
            datetime(2026, 6, 1, 15, 0, tzinfo=UTC),
        ]

        other = await globex.stub.GetQaScorecard(card_request(), timeout=10)
        assert other.time_zone == "UTC"
        assert [(p.date, p.evaluations) for p in other.days] == [("2026-06-01", 1)]
        assert other.days[0].day.ToDatetime(tzinfo=UTC) == datetime(2026, 6, 1, tzinfo=UTC)
    finally:
        await acme.channel.close()
        await globex.channel.close()
        await server.stop(0.5)


async def test_evaluation_free_text_is_sealed_at_rest(
    callers: Any, sessions: async_sessionmaker[AsyncSession]
) -> None:
    qa, a1 = callers("qa-1", "qa"), callers("a1", "agent")
    scored = await qa.stub.SubmitQaScore(
        case_pb2.SubmitQaScoreRequest(contact_id="long", items=items(("compliance",)),
                                      comment="read the card 4111 aloud"),
        timeout=10,
    )  # fmt: skip
    await a1.stub.DisputeQaEvaluation(
        case_pb2.DisputeQaEvaluationRequest(
            evaluation_id=scored.evaluation_id, reason="Ana asked me to repeat 4111"
        ),
        timeout=10,
    )
    await callers("sup-1", "supervisor").stub.DecideQaDispute(
        case_pb2.DecideQaDisputeRequest(
            evaluation_id=scored.evaluation_id, uphold=True, note="4111 is card data"
        ),
        timeout=10,
    )

    async def raw() -> tuple[str, str, str]:
        async with sessions() as s:
            row = (
                await s.execute(
                    text(
                        "SELECT comment, dispute_reason, decision_note FROM qa_evaluations "
                        "WHERE id = :id"
                    ),
                    {"id": scored.evaluation_id},
                )
            ).one()
        return row[0], row[1], row[2]

    # What was written is nowhere in what is stored (a fragment such as "4111" may turn up by
    # chance in the envelope's hex key id or its base64; a whole phrase, with its spaces, cannot).
    written = ("read the card 4111 aloud", "Ana asked me to repeat 4111", "4111 is card data")
    for stored in await raw():
        assert stored.startswith("sb1e:") and not any(w in stored for w in written)

    async def read() -> Any:
        listed = await qa.stub.ListQaEvaluations(
            case_pb2.ListQaEvaluationsRequest(agent_id="a1"), timeout=10
        )
        [e] = listed.evaluations
        return e

    e = await read()
    assert (e.comment, e.dispute_reason, e.decision_note) == (
        "read the card 4111 aloud", "Ana asked me to repeat 4111", "4111 is card data"
    )  # fmt: skip

    # Written before sealing: read as it is.
    async with sessions.begin() as s:
        await s.execute(
            text("UPDATE qa_evaluations SET comment = 'clear old comment' WHERE id = :id"),
            {"id": scored.evaluation_id},
        )
    assert (await read()).comment == "clear old comment"
    # The service seals it as it starts, with the key of the case's customer.
    await backfill.seal_existing(sessions)
    comment, _, _ = await raw()
    assert comment.startswith("sb1e:") and "clear old comment" not in comment
    assert (await read()).comment == "clear old comment"

    # The customer's erasure reaches what was sealed with their key; the score stays.
    async with sessions.begin() as s:
        await customers.erase(s, "acme", "k1", "admin-1", orm.utc_now())
    e = await read()
    assert (e.comment, e.dispute_reason, e.decision_note) == (ERASED, ERASED, ERASED)
    assert e.status == "upheld" and e.fatal_errors == 1
