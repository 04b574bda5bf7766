"""Quality assurance: which handled contacts to evaluate, scoring forms with fatal and non-fatal
errors, and the evaluations the fatal-error rate is computed from.

Sampling is reproducible: a contact is in the sample when a hash of (seed, tenant, contact id)
falls below the rate, so the same seed always picks the same contacts, whatever the order they
are read in, and adding contacts never changes which earlier ones were picked. Each agent gets at
least `min_per_agent` of their handled contacts (the lowest hashes), so a quiet agent is still
evaluated. Targeted sampling adds every handled contact that is worth a look whatever the draw:
a long handle time, a low CSAT rating, an escalation.

Forms are per tenant and versioned: the built-in forms (forms/*.yaml and the service's
configured files) are version 1 of their id for every tenant; each `put_form` of an id is the
next version, and an evaluation records the version it was scored on, so a later change to a
form never changes an earlier score. An evaluated agent may dispute its evaluation once; a
second evaluator upholds or re-scores it. Scoring, disputes and decisions are appended to the
contact's case audit trail.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from switchboard.case import audit
from switchboard.case.adapters import keyring, orm
from switchboard.case.adapters.orm import new_id, utc_now
from switchboard.case.reports.orm import CsatRating, QaEvaluation, QaForm
from switchboard.case.unit_of_work import Conflict, UnitOfWork
from switchboard.core.config import ConfigReader, compose
from switchboard.core.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from switchboard.v1 import contact_pb2

logger = logging.getLogger(__name__)
UTC_ZONE = ZoneInfo("UTC")  # the scorecard's days for a tenant with no time zone

DEFAULT_FORM = Path(__file__).parent / "forms" / "qa_default.yaml"
MAX_SAMPLE_CONTACTS = 100_000
MAX_FORM_BYTES = 64 * 1024
MAX_TEXT = 10_000
TARGETS = ("long_handle", "low_csat", "escalated")
STATUSES = ("scored", "disputed", "upheld", "changed")


@dataclass(frozen=True)
class FormItem:
    id: str
    text: str
    fatal: bool = False
    weight: float = 1.0


@dataclass(frozen=True)
class ScoringForm:
    id: str
    title: str
    items: tuple[FormItem, ...]
    version: int = 1
    created_by: str = ""  # empty: built in
    created_at: datetime | None = None

    def score(self, answers: Mapping[str, bool]) -> tuple[float, int, int]:
        """(score 0..100, fatal errors, non-fatal errors) for the items' pass/fail answers.
        Any fatal error scores 0; otherwise the passed share of the non-fatal weight."""
        ids = {i.id for i in self.items}
        unknown = sorted(set(answers) - ids)
        if unknown:
            raise InvalidArgument("items", f"{unknown[0]!r} is not an item of form {self.id!r}")
        missing = [i.id for i in self.items if i.id not in answers]
        if missing:
            raise InvalidArgument("items", f"item {missing[0]!r} of form {self.id!r} is unanswered")
        fatal = sum(1 for i in self.items if i.fatal and not answers[i.id])
        non_fatal = [i for i in self.items if not i.fatal]
        failed = sum(1 for i in non_fatal if not answers[i.id])
        weight = sum(i.weight for i in non_fatal)
        passed = sum(i.weight for i in non_fatal if answers[i.id])
        score = 0.0 if fatal else (100.0 * passed / weight if weight else 100.0)
        return round(score, 2), fatal, failed


_FORM_FIELDS = {"id", "title", "items"}
_ITEM_FIELDS = {"id", "text", "fatal", "weight"}
_ITEM_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def load_form(source: str | Path) -> ScoringForm:
    """A form from a YAML file (or YAML text): id, title, items of id/text/fatal/weight. A
    ConfigError (an InvalidArgument) names the file, the line and the field."""
    if isinstance(source, Path):
        name, text = str(source), source.read_text(encoding="utf-8")
    else:
        name, text = "QA form", source
    r = ConfigReader(name)
    root = compose(text, name)
    f = {k: v for k, (_, v) in r.mapping(root, "", _FORM_FIELDS).items()}
    for required in ("id", "items"):
        if required not in f:
            raise r.fail(root, required, "is required")
    items: list[FormItem] = []
    for n, node in enumerate(r.seq(f["items"], "items")):
        where = f"items[{n}]"
        i = {k: v for k, (_, v) in r.mapping(node, where, _ITEM_FIELDS).items()}
        if "id" not in i:
            raise r.fail(node, f"{where}.id", "is required")
        item_id = r.string(i["id"], f"{where}.id", _ITEM_ID)
        if any(item.id == item_id for item in items):
            raise r.fail(i["id"], f"{where}.id", f"{item_id!r} appears twice")
        items.append(
            FormItem(
                id=item_id,
                text=r.string(i["text"], f"{where}.text") if "text" in i else "",
                fatal=r.boolean(i["fatal"], f"{where}.fatal") if "fatal" in i else False,
                weight=r.number(i["weight"], f"{where}.weight", 0, 1000) if "weight" in i else 1.0,
            )
        )
    if not items:
        raise r.fail(f["items"], "items", "needs at least one item")
    title = r.string(f["title"], "title") if "title" in f else ""
    return ScoringForm(r.string(f["id"], "id"), title, tuple(items))


def load_forms(paths: Sequence[Path] = ()) -> dict[str, ScoringForm]:
    forms = {f.id: f for f in (load_form(DEFAULT_FORM), *(load_form(p) for p in paths))}
    return forms


@dataclass(frozen=True)
class Handled:
    contact_id: str
    tenant: str
    agent_id: str
    queue: str
    channel: int
    ended_at: datetime
    handle_s: int = 0  # talk (hold included) + wrap-up
    csat: int | None = None  # the customer's latest rating of the contact (1-5)
    escalated: bool = False  # wrap-up code "escalated", or the case's SLA escalated


@dataclass(frozen=True)
class Targets:
    """Which handled contacts are picked whatever the random draw."""

    kinds: frozenset[str] = frozenset()
    long_handle_s: int = 600
    low_csat_max: int = 2

    def __post_init__(self) -> None:
        unknown = sorted(self.kinds - set(TARGETS))
        if unknown:
            raise InvalidArgument("targets", f"{unknown[0]!r} is not one of {', '.join(TARGETS)}")
        if self.long_handle_s < 0 or self.low_csat_max < 0:
            raise InvalidArgument("targets", "thresholds must not be negative")

    def reasons(self, c: Handled) -> list[str]:
        found = []
        if "long_handle" in self.kinds and c.handle_s > self.long_handle_s:
            found.append("long_handle")
        if "low_csat" in self.kinds and c.csat is not None and c.csat <= self.low_csat_max:
            found.append("low_csat")
        if "escalated" in self.kinds and c.escalated:
            found.append("escalated")
        return found


def _draw(seed: str, tenant: str, contact_id: str) -> float:
    digest = hashlib.sha256(f"{seed}\x00{tenant}\x00{contact_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def sample(
    contacts: Sequence[Handled], rate: float, seed: str, min_per_agent: int = 0
) -> list[Handled]:
    """The contacts to evaluate: each with probability `rate`, reproducibly for `seed`, and at
    least `min_per_agent` of each agent's (as many as they have)."""
    if not 0.0 <= rate <= 1.0:
        raise InvalidArgument("rate", "must be between 0 and 1")
    if min_per_agent < 0:
        raise InvalidArgument("min_per_agent", "must not be negative")
    by_agent: dict[str, list[tuple[float, Handled]]] = defaultdict(list)
    for c in contacts:
        by_agent[c.agent_id].append((_draw(seed, c.tenant, c.contact_id), c))
    chosen: list[Handled] = []
    for drawn in by_agent.values():
        drawn.sort(key=lambda d: (d[0], d[1].contact_id))
        picked = [c for x, c in drawn if x < rate]
        if len(picked) < min_per_agent:
            picked = [c for _, c in drawn[:min_per_agent]]
        chosen.extend(picked)
    return sorted(chosen, key=lambda c: (c.agent_id, c.ended_at, c.contact_id))


def sample_with_reasons(
    contacts: Sequence[Handled],
    rate: float,
    seed: str,
    min_per_agent: int = 0,
    targets: Targets | None = None,
) -> list[tuple[Handled, list[str]]]:
    """The random sample (reason "random") and the targeted contacts (their reasons), each
    contact once, by agent and time."""
    reasons: dict[str, list[str]] = {
        c.contact_id: ["random"] for c in sample(contacts, rate, seed, min_per_agent)
    }
    for c in contacts:
        hits = targets.reasons(c) if targets else []
        if hits:
            reasons.setdefault(c.contact_id, []).extend(hits)
    chosen = [c for c in contacts if c.contact_id in reasons]
    chosen.sort(key=lambda c: (c.agent_id, c.ended_at, c.contact_id))
    return [(c, reasons[c.contact_id]) for c in chosen]


@dataclass(frozen=True)
class ScoreLine:
    key: str
    evaluations: int
    average_score: float
    fatal_error_rate: float  # evaluations with a fatal error / evaluations


@dataclass(frozen=True)
class Scorecard:
    agents: list[ScoreLine]
    teams: list[ScoreLine]
    days: list[tuple[datetime, ScoreLine]]  # each day's local midnight (aware, in time_zone)
    total: ScoreLine
    time_zone: str = "UTC"


def _line(key: str, rows: Sequence[QaEvaluation]) -> ScoreLine:
    n = len(rows)
    if not n:
        return ScoreLine(key, 0, 0.0, 0.0)
    return ScoreLine(
        key,
        n,
        round(sum(r.score for r in rows) / n, 2),
        round(sum(1 for r in rows if r.fatal_errors) / n, 4),
    )


def scorecard(
    rows: Sequence[QaEvaluation],
    tz: ZoneInfo = UTC_ZONE,
    agent_teams: Mapping[str, str] | None = None,
) -> Scorecard:
    """Average score and fatal-error rate per agent, per team, per day in `tz` (the tenant's
    time zone: an evaluation at 23:30 UTC is on the next day in Seoul), in all. A team is the
    agent's in `agent_teams` (the agents directory's; none: "") when given, else the queue."""
    by_agent: dict[str, list[QaEvaluation]] = defaultdict(list)
    by_team: dict[str, list[QaEvaluation]] = defaultdict(list)
    by_day: dict[datetime, list[QaEvaluation]] = defaultdict(list)
    for r in rows:
        by_agent[r.agent_id].append(r)
        by_team[(agent_teams or {}).get(r.agent_id, "") if agent_teams else r.queue].append(r)
        at = r.scored_at.astimezone(tz)
        by_day[datetime(at.year, at.month, at.day, tzinfo=tz)].append(r)
    return Scorecard(
        agents=[_line(k, v) for k, v in sorted(by_agent.items())],
        teams=[_line(k, v) for k, v in sorted(by_team.items())],
        days=[(d, _line(d.date().isoformat(), v)) for d, v in sorted(by_day.items())],
        total=_line("", rows),
        time_zone=tz.key,
    )


class Quality:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        forms: Mapping[str, ScoringForm],
        default_rate: float = 0.05,
        default_seed: str = "switchboard-qa",
        clock: Callable[[], datetime] = utc_now,
        zone_for: Callable[[str], ZoneInfo] | None = None,
    ) -> None:
        self._sessions = sessions
        self._zone_for = zone_for or (lambda tenant: UTC_ZONE)
        self._uow = UnitOfWork(sessions)
        self.forms = dict(forms)  # the built-in forms: version 1 for every tenant
        self.default_rate = default_rate
        self.default_seed = default_seed
        self._clock = clock

    # ---- forms ---------------------------------------------------------------------------------

    async def put_form(self, tenant: str, author: str, definition: str) -> ScoringForm:
        """Store `definition` (YAML) as the next version of its form id for `tenant`."""
        if len(definition.encode()) > MAX_FORM_BYTES:
            raise InvalidArgument("yaml", f"is longer than {MAX_FORM_BYTES} bytes")
        form = load_form(definition)
        if len(form.id) > 64:
            raise InvalidArgument("id", "is longer than 64 characters")
        now = self._clock()

        async def put(session: AsyncSession) -> ScoringForm:
            latest = await session.scalar(
                select(func.max(QaForm.version)).where(
                    QaForm.tenant == tenant, QaForm.form_id == form.id
                )
            )
            version = (latest or (1 if form.id in self.forms else 0)) + 1
            session.add(
                QaForm(
                    tenant=tenant, form_id=form.id, version=version, definition=definition,
                    created_by=author, created_at=now,
                )
            )  # fmt: skip
            return replace(form, version=version, created_by=author, created_at=now)

        try:
            stored = await self._uow.run(put, attempts=3)
        except Conflict:
            raise AlreadyExists(f"form {form.id!r} is being changed by someone else") from None
        logger.info("QA form %s version %d put for %s", stored.id, stored.version, tenant)
        return stored

    async def form(self, tenant: str, form_id: str, version: int = 0) -> ScoringForm:
        """A version of one of the tenant's forms (0: the latest)."""
        form_id = form_id or "default"
        if version < 0:
            raise InvalidArgument("form_version", "must not be negative")
        async with self._sessions() as session:
            stmt = select(QaForm).where(QaForm.tenant == tenant, QaForm.form_id == form_id)
            if version:
                stmt = stmt.where(QaForm.version == version)
            row = await session.scalar(stmt.order_by(QaForm.version.desc()).limit(1))
        if row is not None:
            return _stored(row)
        built_in = self.forms.get(form_id)
        if built_in is not None and version in (0, 1):
            return built_in
        if built_in is None and not version:
            raise InvalidArgument("form_id", f"{form_id!r} is not a QA form")
        raise NotFound("form version", f"{form_id} v{version}")

    async def list_forms(self, tenant: str) -> list[ScoringForm]:
        """The latest version of each form of the tenant, built-in ones included, by id."""
        async with self._sessions() as session:
            rows = (await session.scalars(select(QaForm).where(QaForm.tenant == tenant))).all()
        latest: dict[str, ScoringForm] = dict(self.forms)
        for row in sorted(rows, key=lambda r: r.version):
            latest[row.form_id] = _stored(row)
        return [latest[k] for k in sorted(latest)]

    # ---- sampling ------------------------------------------------------------------------------

    async def handled_contacts(
        self, tenant: str, start: datetime, end: datetime, agent_id: str = "", channel: int = 0
    ) -> list[Handled]:
        c = orm.Contact
        stmt = select(c).where(
            c.tenant == tenant,
            c.ended_at >= start,
            c.ended_at < end,
            c.agent_id != "",
            c.abandoned_at.is_(None),
        )
        if agent_id:
            stmt = stmt.where(c.agent_id == agent_id)
        if channel:
            stmt = stmt.where(c.channel == channel)
        async with self._sessions() as session:
            rows = [
                r
                for r in (await session.scalars(stmt.limit(MAX_SAMPLE_CONTACTS))).all()
                if r.ended_at is not None
            ]
            ids = [r.contact_id for r in rows]
            case_ids = list({r.case_id for r in rows})
            ratings: dict[str, tuple[datetime, int]] = {}
            escalated_cases: set[str] = set()
            for chunk in _chunks(ids):
                for rating in await session.scalars(
                    select(CsatRating).where(
                        CsatRating.tenant == tenant, CsatRating.contact_id.in_(chunk)
                    )
                ):
                    seen = ratings.get(rating.contact_id)
                    if seen is None or rating.rated_at > seen[0]:
                        ratings[rating.contact_id] = (rating.rated_at, rating.score)
            for chunk in _chunks(case_ids):
                escalated_cases.update(
                    await session.scalars(
                        select(orm.SlaTimer.case_id).where(
                            orm.SlaTimer.case_id.in_(chunk),
                            orm.SlaTimer.escalated_threshold.is_not(None),
                        )
                    )
                )
        return [
            Handled(
                r.contact_id, r.tenant, r.agent_id, r.queue, r.channel, r.ended_at,  # type: ignore[arg-type]
                handle_s=((r.talk_ms or 0) + (r.wrap_up_ms or 0)) // 1000,
                csat=ratings[r.contact_id][1] if r.contact_id in ratings else None,
                escalated=r.wrap_up_code == "escalated" or r.case_id in escalated_cases,
            )
            for r in rows
        ]  # fmt: skip

    async def evaluations(self, tenant: str, contact_ids: Sequence[str]) -> dict[str, QaEvaluation]:
        if not contact_ids:
            return {}
        found: dict[str, QaEvaluation] = {}
        async with self._sessions() as session:
            for chunk in _chunks(list(contact_ids)):
                rows = await session.scalars(
                    select(QaEvaluation).where(
                        QaEvaluation.tenant == tenant, QaEvaluation.contact_id.in_(chunk)
                    )
                )
                found.update({e.contact_id: e for e in rows})
        return found

    # ---- scoring, disputes ---------------------------------------------------------------------

    async def submit(
        self,
        tenant: str,
        evaluator: str,
        contact_id: str,
        form_id: str,
        answers: Mapping[str, bool],
        comment: str = "",
        form_version: int = 0,
    ) -> QaEvaluation:
        """Score one handled contact on a version of a form; a contact is evaluated once."""
        form = await self.form(tenant, form_id, form_version)
        score, fatal, non_fatal = form.score(answers)
        if len(comment) > MAX_TEXT:
            raise InvalidArgument("comment", f"is longer than {MAX_TEXT} characters")

        async def evaluate(session: AsyncSession) -> QaEvaluation:
            contact = await session.get(orm.Contact, contact_id) if contact_id else None
            if contact is None or contact.tenant != tenant:
                raise NotFound("contact", contact_id)
            if not contact.agent_id or contact.ended_at is None:
                raise FailedPrecondition(
                    f"contact {contact_id} has not been handled by an agent yet"
                )
            now = self._clock()
            evaluation = QaEvaluation(
                id=new_id(),
                tenant=tenant,
                contact_id=contact_id,
                agent_id=contact.agent_id,
                queue=contact.queue,
                channel=channel_name(contact.channel),
                form_id=form.id,
                form_version=form.version,
                evaluator=evaluator,
                score=score,
                fatal_errors=fatal,
                non_fatal_errors=non_fatal,
                answers=dict(answers),
                comment=await _seal(session, tenant, contact, comment),
                scored_at=now,
                status="scored",
            )
            session.add(evaluation)
            await self._audit(session, contact, evaluator, "qa_scored", evaluation, now)
            return evaluation

        try:
            evaluation = await self._uow.run(evaluate)
        except Conflict:
            raise AlreadyExists(f"contact {contact_id} has already been evaluated") from None
        logger.info("contact %s evaluated (%d fatal)", contact_id, fatal)
        return evaluation

    async def list_evaluations(
        self, tenant: str, agent_id: str = "", status: str = "", limit: int = 100
    ) -> list[QaEvaluation]:
        if status and status not in STATUSES:
            raise InvalidArgument("status", f"must be one of {', '.join(STATUSES)}")
        stmt = select(QaEvaluation).where(QaEvaluation.tenant == tenant)
        if agent_id:
            stmt = stmt.where(QaEvaluation.agent_id == agent_id)
        if status:
            stmt = stmt.where(QaEvaluation.status == status)
        stmt = stmt.order_by(QaEvaluation.scored_at.desc(), QaEvaluation.id).limit(limit)
        async with self._sessions() as session:
            return list((await session.scalars(stmt)).all())

    async def get_evaluation(self, tenant: str, evaluation_id: str) -> QaEvaluation:
        async with self._sessions() as session:
            found = await session.get(QaEvaluation, evaluation_id) if evaluation_id else None
        if found is None or found.tenant != tenant:
            raise NotFound("evaluation", evaluation_id)
        return found

    async def dispute(
        self, tenant: str, agent_id: str, evaluation_id: str, reason: str
    ) -> QaEvaluation:
        """The evaluated agent disputes its evaluation (once), saying why."""
        reason = reason.strip()
        if not reason:
            raise InvalidArgument("reason", "is required")
        if len(reason) > MAX_TEXT:
            raise InvalidArgument("reason", f"is longer than {MAX_TEXT} characters")

        async def dispute(session: AsyncSession) -> QaEvaluation:
            e = await self._locked(session, tenant, evaluation_id)
            if e.agent_id != agent_id:
                raise PermissionDenied("only the evaluated agent may dispute an evaluation")
            if e.status != "scored":
                raise FailedPrecondition(f"evaluation {evaluation_id} is {e.status}, not scored")
            now = self._clock()
            contact = await session.get(orm.Contact, e.contact_id)
            e.status, e.disputed_at = "disputed", now
            e.dispute_reason = await _seal(session, tenant, contact, reason)
            await self._audit(session, contact, agent_id, "qa_disputed", e, now, reason=reason)
            return e

        evaluation = await self._run(dispute, evaluation_id)
        logger.info("evaluation %s disputed", evaluation_id)
        return evaluation

    async def decide(
        self,
        tenant: str,
        decider: str,
        evaluation_id: str,
        uphold: bool,
        answers: Mapping[str, bool],
        note: str = "",
    ) -> QaEvaluation:
        """A second evaluator decides a dispute: keeps the score, or re-scores the contact on
        the same form version (the first score is kept as original_score)."""
        if len(note) > MAX_TEXT:
            raise InvalidArgument("note", f"is longer than {MAX_TEXT} characters")
        current = await self.get_evaluation(tenant, evaluation_id)
        rescored: tuple[float, int, int] | None = None
        if not uphold:
            form = await self.form(tenant, current.form_id, current.form_version)
            rescored = form.score(answers)

        async def decide(session: AsyncSession) -> QaEvaluation:
            e = await self._locked(session, tenant, evaluation_id)
            if e.status != "disputed":
                raise FailedPrecondition(f"evaluation {evaluation_id} is {e.status}, not disputed")
            if decider in (e.evaluator, e.agent_id):
                raise FailedPrecondition(
                    "a dispute is decided by a second evaluator, not the one who scored it"
                )
            now = self._clock()
            contact = await session.get(orm.Contact, e.contact_id)
            e.decided_by, e.decided_at = decider, now
            e.decision_note = await _seal(session, tenant, contact, note)
            if rescored is None:
                e.status = "upheld"
            else:
                e.original_score, e.original_fatal_errors = e.score, e.fatal_errors
                e.score, e.fatal_errors, e.non_fatal_errors = rescored
                e.answers = dict(answers)
                e.status = "changed"
            await self._audit(session, contact, decider, "qa_decided", e, now, note=note)
            return e

        evaluation = await self._run(decide, evaluation_id)
        logger.info("dispute of evaluation %s decided: %s", evaluation_id, evaluation.status)
        return evaluation

    async def scorecard(
        self,
        tenant: str,
        start: datetime,
        end: datetime,
        agent_id: str = "",
        team: str = "",
        agent_teams: Mapping[str, str] | None = None,
    ) -> Scorecard:
        """The tenant's scorecard; `team` is a queue, or a team of `agent_teams` when given."""
        e = QaEvaluation
        stmt = select(e).where(e.tenant == tenant, e.scored_at >= start, e.scored_at < end)
        if agent_id:
            stmt = stmt.where(e.agent_id == agent_id)
        if team and agent_teams:
            stmt = stmt.where(
                e.agent_id.in_(sorted(a for a, t in agent_teams.items() if t == team))
            )
        elif team:
            stmt = stmt.where(e.queue == team)
        async with self._sessions() as session:
            rows = (await session.scalars(stmt.limit(MAX_SAMPLE_CONTACTS))).all()
        return scorecard(rows, self._zone_for(tenant), agent_teams)

    async def _locked(self, session: AsyncSession, tenant: str, evaluation_id: str) -> QaEvaluation:
        found = await session.get(QaEvaluation, evaluation_id, with_for_update=True)
        if found is None or found.tenant != tenant:
            raise NotFound("evaluation", evaluation_id)
        return found

    async def _run(self, work: Callable[[AsyncSession], Any], evaluation_id: str) -> QaEvaluation:
        try:
            result: QaEvaluation = await self._uow.run(work)
        except Conflict:
            raise FailedPrecondition(
                f"evaluation {evaluation_id} was changed at the same moment: reload it"
            ) from None
        return result

    async def _audit(
        self,
        session: AsyncSession,
        contact: orm.Contact | None,
        actor: str,
        action: str,
        e: QaEvaluation,
        at: datetime,
        **extra: str,
    ) -> None:
        """The QA step on the trail of the contact's case."""
        if contact is None:
            return
        case = await session.get(orm.Case, contact.case_id)
        if case is None:
            return
        data: dict[str, Any] = {
            "evaluation_id": e.id,
            "contact_id": e.contact_id,
            "agent_id": e.agent_id,
            "form_id": e.form_id,
            "form_version": e.form_version,
            "score": e.score,
            "fatal_errors": e.fatal_errors,
            "status": e.status,
            **extra,
        }
        await audit.append(
            session, case.tenant, audit.CASE, case.id, actor, action, data, at, case.customer_id
        )


async def _seal(session: AsyncSession, tenant: str, contact: orm.Contact | None, text: str) -> str:
    """An evaluation's free text, sealed with the key of the customer of the evaluated contact's
    case (as its audit entries are): it may quote them, and is erased with them."""
    case = await session.get(orm.Case, contact.case_id) if contact is not None else None
    customer = case.customer_id if case is not None and case.tenant == tenant else keyring.TENANT
    return keyring.of(session).seal(session, tenant, customer, text)


def _stored(row: QaForm) -> ScoringForm:
    form = load_form(row.definition)
    return replace(form, version=row.version, created_by=row.created_by, created_at=row.created_at)


def _chunks(values: list[str], size: int = 500) -> list[list[str]]:
    return [values[i : i + size] for i in range(0, len(values), size)]


def channel_name(channel: int) -> str:
    try:
        return contact_pb2.Channel.Name(channel).removeprefix("CHANNEL_").lower()  # type: ignore[arg-type]
    except ValueError:
        return ""
