"""Reports: load one tenant's facts for a period from the case store, compute the KPIs of
reports.kpi per interval and group, and render them as rows and CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from switchboard.case.adapters import orm
from switchboard.case.adapters.orm import utc_now
from switchboard.case.csat import SURVEY_REPLIES
from switchboard.case.quality import channel_name
from switchboard.case.reports import kpi
from switchboard.case.reports.business_time import BusinessClock
from switchboard.case.reports.orm import (
    AgentStateChange,
    CsatRating,
    QaEvaluation,
    SuggestionDraft,
)
from switchboard.core.errors import InvalidArgument
from switchboard.v1 import case_pb2

MAX_PERIOD = timedelta(days=366)
MAX_ROWS = 50_000
# A contact is queued shortly after it is created; one that waited longer than this before being
# queued is still found (it is selected by creation time, then attributed by arrival).
QUEUE_SLACK = timedelta(days=1)

SECTIONS: dict[str, tuple[str, ...]] = {
    "summary": ("service_level", "email", "handling", "fcr", "csat", "quality", "backlog"),
    "service_level": ("service_level",),
    "email": ("email",),
    "handling": ("handling",),
    "fcr": ("fcr",),
    "csat": ("csat",),
    "quality": ("quality",),
    "backlog": ("backlog",),
    "deflection": ("deflection",),
    "agent_states": ("agent_states",),
}
# Out of the backlog: resolved (also while awaiting a reviewer or the customer) or closed.
CLOSED = (
    case_pb2.CASE_STATUS_RESOLVED,
    case_pb2.CASE_STATUS_PENDING_REVIEW,
    case_pb2.CASE_STATUS_PENDING_CONFIRMATION,
    case_pb2.CASE_STATUS_CLOSED,
)


@dataclass(frozen=True)
class ReportTable:
    columns: list[str]
    rows: list[kpi.Row]
    as_of: datetime

    def csv(self) -> str:
        return to_csv(self)


def _cell(value: float | None) -> str:
    if value is None:
        return ""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.4f}"


def to_csv(table: ReportTable) -> str:
    """RFC 4180 CSV: interval bounds (ISO 8601, UTC), the group columns, then the KPIs; an
    undefined KPI (no denominator) is an empty cell."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(table.columns)
    for row in table.rows:
        group = dict(row.group)
        dims = [group[d] for d in kpi.DIMENSIONS if d in group]
        values = [_cell(row.metrics.get(c)) for c in table.columns[2 + len(dims) :]]
        writer.writerow([row.start.isoformat(), row.end.isoformat(), *dims, *values])
    return out.getvalue()


class Reports:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        clock: Callable[[], datetime] = utc_now,
        calendar_for: Callable[[str], BusinessClock | None] | None = None,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        # The tenant's business-hours calendar for the email service level, if it has one.
        self._calendar_for = calendar_for or (lambda tenant: None)

    async def report(
        self,
        tenant: str,
        kind: str,
        spec: kpi.ReportSpec,
        business_hours: bool = False,
    ) -> ReportTable:
        if kind not in SECTIONS:
            raise InvalidArgument("kind", f"{kind!r} is not a report kind")
        if spec.end <= spec.start:
            raise InvalidArgument("to", "must be after from")
        if spec.end - spec.start > MAX_PERIOD:
            raise InvalidArgument("to", "a report covers at most 366 days")
        unknown = [g for g in spec.group_by if g not in kpi.DIMENSIONS]
        if unknown:
            raise InvalidArgument(
                "group_by", f"{unknown[0]!r} is not one of tenant, queue, channel, agent"
            )
        if business_hours:
            calendar = self._calendar_for(tenant)
            if calendar is None:
                raise InvalidArgument(
                    "email_business_hours",
                    f"tenant {tenant!r} has no business hours (business_hours in the policy file)",
                )
            spec = replace(spec, options=replace(spec.options, email_clock=calendar))
        sections = SECTIONS[kind]
        as_of = self._clock()
        facts = await self._facts(tenant, spec, sections, as_of)
        rows = kpi.compute(facts, spec, as_of, sections)
        if len(rows) > MAX_ROWS:
            raise InvalidArgument(
                "interval", f"the report would have {len(rows)} rows; use a longer interval"
            )
        dims = [d for d in kpi.DIMENSIONS if d in spec.group_by]
        # The column names, even when no group had anything to report.
        sample = (
            rows[0]
            if rows
            else kpi.compute(kpi.ReportFacts(), replace(spec, group_by=()), as_of, sections)[0]
        )
        metrics = list(sample.metrics)
        return ReportTable(["interval_start", "interval_end", *dims, *metrics], rows, as_of)

    async def _facts(
        self, tenant: str, spec: kpi.ReportSpec, sections: Sequence[str], as_of: datetime
    ) -> kpi.ReportFacts:
        facts = kpi.ReportFacts()
        async with self._sessions() as session:
            if {"service_level", "email", "handling", "fcr"} & set(sections):
                window = spec.options.fcr_window if "fcr" in sections else timedelta()
                contacts = await self._contacts(
                    session, tenant, spec.start - QUEUE_SLACK, spec.end + window
                )
                facts.contacts = [c for c in contacts if c.arrived_at < spec.end]
                facts.later_contacts = [c for c in contacts if c.arrived_at >= spec.end]
            if "csat" in sections:
                facts.ratings = [
                    kpi.RatingFacts(r.tenant, r.queue, r.channel, r.agent_id, r.rated_at, r.score)
                    for r in await session.scalars(
                        select(CsatRating).where(
                            CsatRating.tenant == tenant,
                            CsatRating.rated_at >= spec.start,
                            CsatRating.rated_at < spec.end,
                        )
                    )
                ]
            if "quality" in sections:
                facts.evaluations = [
                    kpi.EvaluationFacts(
                        e.tenant,
                        e.queue,
                        e.channel,
                        e.agent_id,
                        e.scored_at,
                        e.score,
                        e.fatal_errors,
                    )
                    for e in await session.scalars(
                        select(QaEvaluation).where(
                            QaEvaluation.tenant == tenant,
                            QaEvaluation.scored_at >= spec.start,
                            QaEvaluation.scored_at < spec.end,
                        )
                    )
                ]
            if "backlog" in sections:
                facts.cases = await self._cases(session, tenant, spec)
            if "deflection" in sections:
                facts.drafts = [
                    kpi.DraftFacts(d.tenant, d.shown_at, d.opened, d.submitted_at is not None)
                    for d in await session.scalars(
                        select(SuggestionDraft).where(
                            SuggestionDraft.tenant == tenant,
                            SuggestionDraft.shown_at >= spec.start,
                            SuggestionDraft.shown_at < spec.end,
                        )
                    )
                ]
            if "agent_states" in sections:
                facts.agent_periods = kpi.agent_periods(
                    await self._agent_state_changes(session, tenant, spec), as_of
                )
        return facts

    @staticmethod
    async def _agent_state_changes(
        session: AsyncSession, tenant: str, spec: kpi.ReportSpec
    ) -> list[tuple[str, str, str, str, str, datetime]]:
        """The tenant's agents' state changes in the report's period, and each agent's last
        one before it (the state the period begins in)."""
        a = AgentStateChange
        columns = (a.tenant, a.agent_id, a.presence, a.reason, a.changed_by, a.changed_at)
        last = (
            select(a.agent_id, func.max(a.changed_at).label("at"))
            .where(a.tenant == tenant, a.changed_at < spec.start)
            .group_by(a.agent_id)
            .subquery()
        )
        before = (
            select(*columns)
            .join(last, and_(a.agent_id == last.c.agent_id, a.changed_at == last.c.at))
            .where(a.tenant == tenant)
        )
        inside = select(*columns).where(
            a.tenant == tenant, a.changed_at >= spec.start, a.changed_at < spec.end
        )
        found = [*await session.execute(before), *await session.execute(inside)]
        return [tuple(row) for row in found]  # type: ignore[misc]

    async def _contacts(
        self, session: AsyncSession, tenant: str, start: datetime, end: datetime
    ) -> list[kpi.ContactFacts]:
        c = orm.Contact
        rows = list(
            await session.execute(
                select(c, orm.Case.customer_id)
                .join(orm.Case, orm.Case.id == c.case_id)
                .where(
                    c.tenant == tenant,
                    c.created_at >= start,
                    c.created_at < end,
                    # A rating given in answer to the survey is no contact to serve or repeat.
                    c.wrap_up_code.not_in(SURVEY_REPLIES),
                )
            )
        )
        holds = await self._holds(session, [r.contact_id for r, _ in rows])
        return [
            kpi.ContactFacts(
                contact_id=r.contact_id,
                tenant=r.tenant,
                queue=r.queue,
                channel=channel_name(r.channel),
                agent_id=r.agent_id,
                customer_id=r.customer_id or case_customer,
                arrived_at=r.queued_at or r.created_at,
                answered_at=r.assigned_at,
                first_response_at=r.first_agent_response_at,
                abandoned_at=r.abandoned_at,
                ended_at=r.ended_at,
                wait_ms=r.wait_ms,
                talk_ms=r.talk_ms,
                hold_ms=r.hold_ms,
                wrap_up_ms=r.wrap_up_ms,
                holds_ms=tuple(holds.get(r.contact_id, ())),
            )
            for r, case_customer in rows
        ]

    @staticmethod
    async def _holds(session: AsyncSession, contact_ids: list[str]) -> dict[str, list[int]]:
        """The hold periods of these contacts (ms each), oldest first; one still open when its
        contact ended lasted until the end."""
        found: dict[str, list[int]] = {}
        h, c = orm.ContactHold, orm.Contact
        for start in range(0, len(contact_ids), 500):
            chunk = contact_ids[start : start + 500]
            rows = await session.execute(
                select(h.contact_id, h.started_at, h.ended_at, c.ended_at)
                .join(c, c.contact_id == h.contact_id)
                .where(h.contact_id.in_(chunk))
                .order_by(h.contact_id, h.started_at)
            )
            for contact_id, started, ended, contact_ended in rows:
                until = ended or contact_ended
                if until is not None and until >= started:
                    ms = int((until - started).total_seconds() * 1000)
                    found.setdefault(contact_id, []).append(ms)
        return found

    async def _cases(
        self, session: AsyncSession, tenant: str, spec: kpi.ReportSpec
    ) -> list[kpi.CaseFacts]:
        k = orm.Case
        rows = list(
            await session.scalars(
                select(k).where(
                    k.tenant == tenant,
                    k.created_at < spec.end,
                    or_(
                        k.status.not_in(CLOSED),
                        and_(k.resolved_at.is_not(None), k.resolved_at > spec.start),
                        and_(k.resolved_at.is_(None), k.updated_at > spec.start),
                    ),
                )
            )
        )
        first: dict[str, orm.Contact] = {}
        if rows:
            for ct in await session.scalars(
                select(orm.Contact)
                .where(orm.Contact.case_id.in_([r.id for r in rows]))
                .order_by(orm.Contact.created_at.desc())
            ):
                first[ct.case_id] = ct  # the earliest wins: rows come newest first
        result = []
        for r in rows:
            closed_at = None
            if r.status in CLOSED:
                closed_at = r.resolved_at or r.closed_at or r.updated_at
            opening = first.get(r.id)
            result.append(
                kpi.CaseFacts(
                    tenant=r.tenant,
                    queue=r.queue or (opening.queue if opening else ""),
                    channel=channel_name(opening.channel) if opening else "",
                    agent_id=r.assigned_agent_id,
                    created_at=r.created_at,
                    closed_at=closed_at,
                )
            )
        return result
