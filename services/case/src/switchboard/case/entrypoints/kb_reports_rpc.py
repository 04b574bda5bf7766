"""CaseService RPCs of the knowledge base, reports and quality assurance.

`KnowledgeReportRpcs` is a mixin of the CaseServicer: the servicer (or the composition root)
sets ``servicer.kb_reports = build_kb_reports(...)``. The bus subscriptions of customer
satisfaction (SatisfactionRated, and CaseStatusChanged for the survey) are made by
`subscribe_kb_reports` on a durable of their own. Every RPC is scoped to the caller's tenant.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from switchboard.case.adapters import orm
from switchboard.case.adapters.orm import utc_now
from switchboard.case.csat import Csat, Publisher
from switchboard.case.knowledge.service import (
    ArticleView,
    AttachmentView,
    Draft,
    KnowledgeBase,
    Objects,
    SearchResult,
)
from switchboard.case.quality import (
    Quality,
    ScoreLine,
    ScoringForm,
    Targets,
    load_forms,
    sample_with_reasons,
)
from switchboard.case.reports import kpi
from switchboard.case.reports.business_time import BusinessClock
from switchboard.case.reports.intervals import parse_interval, zone
from switchboard.case.reports.orm import QaEvaluation
from switchboard.case.reports.service import Reports
from switchboard.case.views import timestamp
from switchboard.core.bus import Bus
from switchboard.core.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from switchboard.core.grpc import acting_for, for_anyone, principal, require, require_rule
from switchboard.v1 import case_events_pb2, case_pb2, contact_pb2, events_pb2

# Who may call each RPC is in switchboard.core.roles; publishing has its own rule there.
PUBLISH_RULE = "/switchboard.v1.CaseService/SetArticleState:publish"

_STATE_NAMES = {
    case_pb2.ARTICLE_STATE_DRAFT: "draft",
    case_pb2.ARTICLE_STATE_REVIEW: "review",
    case_pb2.ARTICLE_STATE_PUBLISHED: "published",
    case_pb2.ARTICLE_STATE_RETIRED: "retired",
}
_STATE_VALUES = {v: k for k, v in _STATE_NAMES.items()}
_KINDS = {
    case_pb2.REPORT_KIND_UNSPECIFIED: "summary",
    case_pb2.REPORT_KIND_SUMMARY: "summary",
    case_pb2.REPORT_KIND_SERVICE_LEVEL: "service_level",
    case_pb2.REPORT_KIND_EMAIL: "email",
    case_pb2.REPORT_KIND_HANDLING: "handling",
    case_pb2.REPORT_KIND_FCR: "fcr",
    case_pb2.REPORT_KIND_CSAT: "csat",
    case_pb2.REPORT_KIND_QUALITY: "quality",
    case_pb2.REPORT_KIND_BACKLOG: "backlog",
    case_pb2.REPORT_KIND_DEFLECTION: "deflection",
    case_pb2.REPORT_KIND_AGENT_STATES: "agent_states",
}


@dataclass
class KbReports:
    knowledge: KnowledgeBase
    reports: Reports
    quality: Quality
    csat: Csat
    sessions: async_sessionmaker[AsyncSession]


def build_kb_reports(
    sessions: async_sessionmaker[AsyncSession],
    publisher: Publisher | None,
    consumer: str,
    qa_rate: float = 0.05,
    qa_seed: str = "switchboard-qa",
    qa_forms: Sequence[Path] = (),
    calendar_for: Callable[[str], BusinessClock | None] | None = None,
    clock: Callable[[], datetime] = utc_now,
    objects: Objects | None = None,
    zone_for: Callable[[str], ZoneInfo] | None = None,
) -> KbReports:
    """Everything the mixin and the CSAT subscriptions need. `consumer` is the case service's
    durable name; CSAT uses ``<consumer>-csat`` for its own idempotency records. `objects` keeps
    the knowledge base's attachments (without it, attaching a file is FAILED_PRECONDITION)."""
    return KbReports(
        knowledge=KnowledgeBase(sessions, clock, objects),
        reports=Reports(sessions, clock, calendar_for=calendar_for),
        quality=Quality(sessions, load_forms(qa_forms), qa_rate, qa_seed, clock, zone_for),
        csat=Csat(sessions, publisher, f"{consumer}-csat"),
        sessions=sessions,
    )


def subscribe_kb_reports(bus: Bus, kb_reports: KbReports, durable: str) -> None:
    """CSAT's subscriptions, on the durable ``<durable>-csat`` (call before bus.start())."""
    name = f"{durable}-csat"
    bus.subscribe(name, events_pb2.SatisfactionRated, kb_reports.csat.on_satisfaction_rated)
    bus.subscribe(name, case_events_pb2.CaseStatusChanged, kb_reports.csat.on_case_status_changed)


def _when(ts: Timestamp, field: str) -> datetime:
    if ts.seconds == 0 and ts.nanos == 0:
        raise InvalidArgument(field)
    return ts.ToDatetime(tzinfo=UTC)


def _period(
    request: case_pb2.ListQaSamplesRequest | case_pb2.GetQaScorecardRequest,
) -> tuple[datetime, datetime]:
    """A request's ``from`` and ``to``, the second after the first."""
    start, end = _when(getattr(request, "from"), "from"), _when(request.to, "to")
    if end <= start:
        raise InvalidArgument("to", "must be after from")
    return start, end


def _draft(request: case_pb2.CreateArticleRequest | case_pb2.UpdateArticleRequest) -> Draft:
    return Draft(
        request.title, request.body, request.language, tuple(request.tags), request.category
    )


def _attachment(f: AttachmentView) -> case_pb2.ArticleAttachment:
    return case_pb2.ArticleAttachment(
        attachment_id=f.attachment_id,
        filename=f.filename,
        content_type=f.content_type,
        size_bytes=f.size_bytes,
        sha256=f.sha256,
        added_by=f.added_by,
        added_at=timestamp(f.added_at),
    )


def _article(a: ArticleView) -> case_pb2.KnowledgeArticle:
    return case_pb2.KnowledgeArticle(
        article_id=a.article_id,
        version=a.version,
        title=a.title,
        body=a.body,
        language=a.language,
        tags=a.tags,
        state=_STATE_VALUES[a.state],  # type: ignore[arg-type]
        author=a.author,
        created_at=timestamp(a.created_at),
        latest_version=a.latest_version,
        published_version=a.published_version or 0,
        helpful_votes=a.helpful,
        not_helpful_votes=a.not_helpful,
        category=a.category,
        review_comment=a.review_comment,
        state_changed_by=a.state_changed_by,
        state_changed_at=timestamp(a.state_changed_at),
        attachments=[_attachment(f) for f in a.attachments],
        source_case_id=a.source_case_id,
        source_case_reference=a.source_case_reference,
    )


def _hits(results: Sequence[SearchResult]) -> case_pb2.SearchKnowledgeResponse:
    return case_pb2.SearchKnowledgeResponse(
        hits=[
            case_pb2.KnowledgeHit(article=_article(r.article), score=r.score, snippet=r.snippet)
            for r in results
        ]
    )


def _evaluation(e: QaEvaluation) -> case_pb2.QaEvaluation:
    return case_pb2.QaEvaluation(
        evaluation_id=e.id,
        contact_id=e.contact_id,
        agent_id=e.agent_id,
        form_id=e.form_id,
        evaluator=e.evaluator,
        score=e.score,
        fatal_errors=e.fatal_errors,
        non_fatal_errors=e.non_fatal_errors,
        scored_at=timestamp(e.scored_at),
        form_version=e.form_version,
        channel=e.channel,
        queue=e.queue,
        items=[case_pb2.QaItemResult(item_id=k, passed=v) for k, v in (e.answers or {}).items()],
        comment=e.comment,
        status=e.status,
        dispute_reason=e.dispute_reason,
        disputed_at=timestamp(e.disputed_at),
        decided_by=e.decided_by,
        decision_note=e.decision_note,
        decided_at=timestamp(e.decided_at),
        original_score=e.original_score or 0.0,
        original_fatal_errors=e.original_fatal_errors or 0,
    )


def _form(f: ScoringForm) -> case_pb2.QaForm:
    return case_pb2.QaForm(
        form_id=f.id,
        version=f.version,
        title=f.title,
        items=[
            case_pb2.QaFormItem(item_id=i.id, text=i.text, fatal=i.fatal, weight=i.weight)
            for i in f.items
        ],
        created_by=f.created_by,
        created_at=timestamp(f.created_at),
    )


def _score_line(line: ScoreLine) -> case_pb2.QaScoreLine:
    return case_pb2.QaScoreLine(
        key=line.key,
        evaluations=line.evaluations,
        average_score=line.average_score,
        fatal_error_rate=line.fatal_error_rate,
    )


def _answers(items: Sequence[case_pb2.QaItemResult]) -> dict[str, bool]:
    answers: dict[str, bool] = {}
    for i, item in enumerate(items):
        if not item.item_id:
            raise InvalidArgument(f"items[{i}].item_id")
        if item.item_id in answers:
            raise InvalidArgument(f"items[{i}].item_id", f"{item.item_id!r} is given twice")
        answers[item.item_id] = item.passed
    return answers


def _limit(value: int, default: int) -> int:
    if value < 0 or value > 50:
        raise InvalidArgument("limit", "must be between 0 and 50")
    return value or default


async def case_text(sessions: async_sessionmaker[AsyncSession], tenant: str, case_id: str) -> str:
    """What a case is about: its subject and its customer's messages, oldest first."""
    async with sessions() as session:
        case = await session.get(orm.Case, case_id)
        if case is None or case.tenant != tenant:
            raise NotFound("case", case_id)
        texts = await session.scalars(
            select(orm.Message.text)
            .join(orm.Contact, orm.Contact.contact_id == orm.Message.contact_id)
            .where(
                orm.Contact.case_id == case_id,
                orm.Message.author == contact_pb2.AUTHOR_CUSTOMER,
            )
            .order_by(orm.Message.sent_at)
            .limit(20)
        )
        return "\n".join([case.subject, *texts])


RESOLVED = frozenset(
    {
        case_pb2.CASE_STATUS_RESOLVED,
        case_pb2.CASE_STATUS_CLOSED,
        case_pb2.CASE_STATUS_PENDING_REVIEW,
        case_pb2.CASE_STATUS_PENDING_CONFIRMATION,
    }
)


async def case_draft(
    sessions: async_sessionmaker[AsyncSession], tenant: str, case_id: str, reference: str
) -> tuple[str, str, str, str]:
    """(case id, case reference, title, body) of a draft from a resolved case: its subject, and its agents'
    replies oldest first, one paragraph each."""
    async with sessions() as session:
        if case_id:
            case = await session.get(orm.Case, case_id)
        else:
            case = await session.scalar(
                select(orm.Case).where(
                    orm.Case.tenant == tenant, orm.Case.reference == reference.strip().upper()
                )
            )
        if case is None or case.tenant != tenant:
            raise NotFound("case", case_id or reference)
        if case.status not in RESOLVED:
            raise FailedPrecondition(f"case {case.reference or case.id} is not resolved yet")
        texts = await session.scalars(
            select(orm.Message.text)
            .join(orm.Contact, orm.Contact.contact_id == orm.Message.contact_id)
            .where(
                orm.Contact.case_id == case.id,
                orm.Message.author == contact_pb2.AUTHOR_AGENT,
            )
            .order_by(orm.Message.sent_at)
            .limit(50)
        )
        body = "\n\n".join(t.strip() for t in texts if t.strip())
        title = case.subject.strip() or case.reference or case.id
        return case.id, case.reference, title[:500], body or title


class KnowledgeReportRpcs:
    """The knowledge-base, report and QA methods of CaseService."""

    kb_reports: KbReports

    # ---- knowledge base ---------------------------------------------------------------------

    async def SearchKnowledge(self, request, context):  # type: ignore[no-untyped-def]
        tenant = principal().tenant
        require(request, "query")
        results = await self.kb_reports.knowledge.search(
            tenant, request.query, _limit(request.limit, 10), request.language
        )
        return _hits(results)

    async def SuggestArticles(self, request, context):  # type: ignore[no-untyped-def]
        tenant = principal().tenant
        if request.case_id:
            text = await case_text(self.kb_reports.sessions, tenant, request.case_id)
        elif request.text:
            text = request.text
        else:
            raise InvalidArgument("case_id", "or text is required")
        if not text.strip():
            return case_pb2.SearchKnowledgeResponse()
        results = await self.kb_reports.knowledge.suggest(tenant, text, _limit(request.limit, 5))
        return _hits(results)

    async def GetArticle(self, request, context):  # type: ignore[no-untyped-def]
        tenant = principal().tenant
        require(request, "article_id")
        return _article(
            await self.kb_reports.knowledge.get(tenant, request.article_id, request.version)
        )

    async def CreateArticle(self, request, context):  # type: ignore[no-untyped-def]
        tenant = principal().tenant
        draft = _draft(request)
        return _article(await self.kb_reports.knowledge.create(tenant, principal().subject, draft))

    async def UpdateArticle(self, request, context):  # type: ignore[no-untyped-def]
        tenant = principal().tenant
        require(request, "article_id")
        draft = _draft(request)
        return _article(
            await self.kb_reports.knowledge.update(
                tenant, principal().subject, request.article_id, draft
            )
        )

    async def SetArticleState(self, request, context):  # type: ignore[no-untyped-def]
        state = _STATE_NAMES.get(request.state)
        if state is None:
            raise InvalidArgument("state", "must be draft, review, published or retired")
        # Reviewing (publishing, retiring, sending back to draft) is the reviewers' rule.
        p = require_rule(PUBLISH_RULE) if state != "review" else principal()
        tenant = p.tenant
        require(request, "article_id")
        if request.version < 0:
            raise InvalidArgument("version", "must not be negative")
        return _article(
            await self.kb_reports.knowledge.set_state(
                tenant,
                principal().subject,
                request.article_id,
                request.version,
                state,
                request.comment,
            )
        )

    async def ListArticles(self, request, context):  # type: ignore[no-untyped-def]
        tenant = principal().tenant
        state = _STATE_NAMES.get(request.state, "")
        if request.limit < 0:
            raise InvalidArgument("limit", "must not be negative")
        articles, categories = await self.kb_reports.knowledge.list_articles(
            tenant, state, request.language, request.category, request.limit
        )
        return case_pb2.ListArticlesResponse(
            articles=[_article(a) for a in articles], categories=categories
        )

    async def ListArticleVersions(self, request, context):  # type: ignore[no-untyped-def]
        tenant = principal().tenant
        require(request, "article_id")
        versions = await self.kb_reports.knowledge.versions(tenant, request.article_id)
        return case_pb2.ListArticlesResponse(articles=[_article(a) for a in versions])

    async def AddArticleAttachment(self, request, context):  # type: ignore[no-untyped-def]
        p = principal()
        require(request, "article_id")
        require(request, "filename")
        return _article(
            await self.kb_reports.knowledge.attach(
                p.tenant,
                p.subject,
                request.article_id,
                request.filename,
                request.content_type,
                request.data,
            )
        )

    async def GetArticleAttachment(self, request, context):  # type: ignore[no-untyped-def]
        tenant = principal().tenant
        require(request, "article_id")
        require(request, "attachment_id")
        view, data = await self.kb_reports.knowledge.attachment(
            tenant, request.article_id, request.attachment_id
        )
        return case_pb2.ArticleAttachmentData(attachment=_attachment(view), data=data)

    async def DraftArticleFromCase(self, request, context):  # type: ignore[no-untyped-def]
        p = principal()
        if not request.case_id and not request.reference.strip():
            raise InvalidArgument("case_id", "or reference is required")
        case_id, reference, title, body = await case_draft(
            self.kb_reports.sessions, p.tenant, request.case_id, request.reference
        )
        draft = Draft(title, body, request.language)
        made = await self.kb_reports.knowledge.create(
            p.tenant, p.subject, draft, case_id, reference
        )
        return _article(made)

    async def VoteArticle(self, request, context):  # type: ignore[no-untyped-def]
        p = principal()
        require(request, "article_id")
        return _article(
            await self.kb_reports.knowledge.vote(
                p.tenant, p.subject, request.article_id, request.helpful
            )
        )

    # ---- reports ------------------------------------------------------------------------------

    async def GetReport(self, request, context):  # type: ignore[no-untyped-def]
        tenant = principal().tenant
        kind = _KINDS.get(request.kind)
        if kind is None:
            raise InvalidArgument("kind", f"{request.kind} is not a report kind")
        for name in ("voice_threshold_seconds", "short_abandon_seconds", "email_threshold_hours",
                     "fcr_window_hours"):  # fmt: skip
            if getattr(request, name) < 0:
                raise InvalidArgument(name, "must not be negative")
        options = kpi.KpiOptions(
            voice_threshold=timedelta(seconds=request.voice_threshold_seconds or 20),
            short_abandon=(
                timedelta(seconds=request.short_abandon_seconds)
                if request.short_abandon_seconds
                else None
            ),
            email_threshold=timedelta(hours=request.email_threshold_hours or 24),
            fcr_window=timedelta(hours=request.fcr_window_hours or 72),
        )
        spec = kpi.ReportSpec(
            start=_when(getattr(request, "from"), "from"),
            end=_when(request.to, "to"),
            interval=parse_interval(request.interval or "day"),
            tz=zone(request.time_zone),
            group_by=tuple(dict.fromkeys(g.strip().lower() for g in request.group_by)),
            options=options,
        )
        table = await self.kb_reports.reports.report(
            tenant, kind, spec, business_hours=request.email_business_hours
        )
        dims = [c for c in table.columns if c in kpi.DIMENSIONS]
        metric_names = table.columns[2 + len(dims) :]
        rows = []
        for r in table.rows:
            group = dict(r.group)
            rows.append(
                case_pb2.ReportRow(
                    interval_start=timestamp(r.start),
                    interval_end=timestamp(r.end),
                    tenant=group.get("tenant", tenant),
                    queue=group.get("queue", ""),
                    channel=group.get("channel", ""),
                    agent_id=group.get("agent", ""),
                    values=[
                        case_pb2.ReportValue(
                            name=n,
                            value=v if (v := r.metrics.get(n)) is not None else 0.0,
                            defined=v is not None,
                        )
                        for n in metric_names
                    ],
                )
            )
        return case_pb2.Report(
            columns=table.columns, rows=rows, csv=table.csv(), as_of=timestamp(table.as_of)
        )

    # ---- quality assurance ----------------------------------------------------------------------

    async def SubmitQaScore(self, request, context):  # type: ignore[no-untyped-def]
        tenant = principal().tenant
        require(request, "contact_id")
        evaluation = await self.kb_reports.quality.submit(
            tenant, principal().subject, request.contact_id, request.form_id,
            _answers(request.items), request.comment, request.form_version,
        )  # fmt: skip
        return _evaluation(evaluation)

    async def ListQaSamples(self, request, context):  # type: ignore[no-untyped-def]
        tenant = principal().tenant
        start, end = _period(request)
        if request.long_handle_seconds < 0 or request.low_csat_max < 0:
            raise InvalidArgument("long_handle_seconds", "and low_csat_max must not be negative")
        quality = self.kb_reports.quality
        rate = request.rate or quality.default_rate
        seed = request.seed or quality.default_seed
        targets = Targets(
            frozenset(request.targets),
            request.long_handle_seconds or 600,
            request.low_csat_max or 2,
        )
        handled = await quality.handled_contacts(
            tenant, start, end, request.agent_id, request.channel
        )
        if request.targeted_only:
            chosen = sample_with_reasons(handled, 0.0, seed, 0, targets)
        else:
            chosen = sample_with_reasons(handled, rate, seed, request.min_per_agent, targets)
        scored = await quality.evaluations(tenant, [c.contact_id for c, _ in chosen])
        return case_pb2.ListQaSamplesResponse(
            samples=[
                case_pb2.QaSample(
                    contact_id=c.contact_id,
                    agent_id=c.agent_id,
                    queue=c.queue,
                    channel=c.channel,  # type: ignore[arg-type]
                    ended_at=timestamp(c.ended_at),
                    evaluation=(
                        _evaluation(scored[c.contact_id]) if c.contact_id in scored else None
                    ),
                    reasons=reasons,
                    handle_seconds=c.handle_s,
                    csat=c.csat or 0,
                    escalated=c.escalated,
                )
                for c, reasons in chosen
            ],
            seed=seed,
            rate=rate,
        )

    async def PutQaForm(self, request, context):  # type: ignore[no-untyped-def]
        p = principal()
        require(request, "yaml")
        return _form(await self.kb_reports.quality.put_form(p.tenant, p.subject, request.yaml))

    async def ListQaForms(self, request, context):  # type: ignore[no-untyped-def]
        forms = await self.kb_reports.quality.list_forms(principal().tenant)
        return case_pb2.ListQaFormsResponse(forms=[_form(f) for f in forms])

    async def GetQaForm(self, request, context):  # type: ignore[no-untyped-def]
        form = await self.kb_reports.quality.form(
            principal().tenant, request.form_id, request.version
        )
        return _form(form)

    async def ListQaEvaluations(self, request, context):  # type: ignore[no-untyped-def]
        # An agent lists its own evaluations only; evaluators and leads anyone's.
        p = acting_for(request.agent_id) if request.agent_id else for_anyone()
        if request.limit < 0 or request.limit > 500:
            raise InvalidArgument("limit", "must be between 0 and 500")
        found = await self.kb_reports.quality.list_evaluations(
            p.tenant, request.agent_id, request.status, request.limit or 100
        )
        return case_pb2.ListQaEvaluationsResponse(evaluations=[_evaluation(e) for e in found])

    async def DisputeQaEvaluation(self, request, context):  # type: ignore[no-untyped-def]
        require(request, "evaluation_id")
        quality = self.kb_reports.quality
        current = await quality.get_evaluation(principal().tenant, request.evaluation_id)
        p = acting_for(current.agent_id)  # the evaluated agent itself
        if p.subject != current.agent_id:
            raise PermissionDenied("only the evaluated agent may dispute an evaluation")
        evaluation = await quality.dispute(
            p.tenant, p.subject, request.evaluation_id, request.reason
        )
        return _evaluation(evaluation)

    async def DecideQaDispute(self, request, context):  # type: ignore[no-untyped-def]
        p = principal()
        require(request, "evaluation_id")
        evaluation = await self.kb_reports.quality.decide(
            p.tenant, p.subject, request.evaluation_id, request.uphold,
            {} if request.uphold else _answers(request.items), request.note,
        )  # fmt: skip
        return _evaluation(evaluation)

    async def GetQaScorecard(self, request, context):  # type: ignore[no-untyped-def]
        tenant = principal().tenant
        start, end = _period(request)
        card = await self.kb_reports.quality.scorecard(
            tenant, start, end, request.agent_id, request.team, dict(request.agent_teams)
        )
        return case_pb2.QaScorecard(
            agents=[_score_line(line) for line in card.agents],
            teams=[_score_line(line) for line in card.teams],
            days=[
                case_pb2.QaScorePoint(
                    day=timestamp(day),
                    evaluations=line.evaluations,
                    average_score=line.average_score,
                    fatal_error_rate=line.fatal_error_rate,
                    date=day.date().isoformat(),
                )
                for day, line in card.days
            ],
            total=_score_line(card.total),
            time_zone=card.time_zone,
        )
