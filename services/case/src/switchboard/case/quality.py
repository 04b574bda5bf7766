"""Quality assurance: which handled contacts to evaluate, scoring forms with fatal and non-fatal
errors, and the evaluations the fatal-error rate is computed from.

Sampling is reproducible: a contact is in the sample when a hash of (seed, tenant, contact id)
falls below the rate, so the same seed always picks the same contacts, whatever the order they
are read in, and adding contacts never changes which earlier ones were picked. Each agent gets at
least `min_per_agent` of their handled contacts (the lowest hashes), so a quiet agent is still
evaluated.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from switchboard.case.adapters import orm
from switchboard.case.adapters.orm import new_id, utc_now
from switchboard.case.reports.orm import QaEvaluation
from switchboard.case.unit_of_work import Conflict, UnitOfWork
from switchboard.core.config import ConfigReader, compose
from switchboard.core.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from switchboard.v1 import contact_pb2

logger = logging.getLogger(__name__)

DEFAULT_FORM = Path(__file__).parent / "forms" / "qa_default.yaml"
MAX_SAMPLE_CONTACTS = 100_000


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


class Quality:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        forms: Mapping[str, ScoringForm],
        default_rate: float = 0.05,
        default_seed: str = "switchboard-qa",
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._sessions = sessions
        self._uow = UnitOfWork(sessions)
        self.forms = dict(forms)
        self.default_rate = default_rate
        self.default_seed = default_seed
        self._clock = clock

    async def handled_contacts(
        self, tenant: str, start: datetime, end: datetime, agent_id: str = ""
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
        async with self._sessions() as session:
            rows = (await session.scalars(stmt.limit(MAX_SAMPLE_CONTACTS))).all()
        return [
            Handled(r.contact_id, r.tenant, r.agent_id, r.queue, r.channel, r.ended_at)
            for r in rows
            if r.ended_at is not None
        ]

    async def evaluations(self, tenant: str, contact_ids: Sequence[str]) -> dict[str, QaEvaluation]:
        if not contact_ids:
            return {}
        async with self._sessions() as session:
            rows = await session.scalars(
                select(QaEvaluation).where(
                    QaEvaluation.tenant == tenant, QaEvaluation.contact_id.in_(contact_ids)
                )
            )
            return {e.contact_id: e for e in rows}

    async def submit(
        self,
        tenant: str,
        evaluator: str,
        contact_id: str,
        form_id: str,
        answers: Mapping[str, bool],
        comment: str = "",
    ) -> QaEvaluation:
        """Score one handled contact on a form; a contact is evaluated once."""
        form = self.forms.get(form_id or "default")
        if form is None:
            raise InvalidArgument("form_id", f"{form_id!r} is not a QA form")
        score, fatal, non_fatal = form.score(answers)
        if len(comment) > 10_000:
            raise InvalidArgument("comment", "is longer than 10000 characters")

        async def evaluate(session: AsyncSession) -> QaEvaluation:
            contact = await session.get(orm.Contact, contact_id) if contact_id else None
            if contact is None or contact.tenant != tenant:
                raise NotFound("contact", contact_id)
            if not contact.agent_id or contact.ended_at is None:
                raise FailedPrecondition(
                    f"contact {contact_id} has not been handled by an agent yet"
                )
            evaluation = QaEvaluation(
                id=new_id(),
                tenant=tenant,
                contact_id=contact_id,
                agent_id=contact.agent_id,
                queue=contact.queue,
                channel=channel_name(contact.channel),
                form_id=form.id,
                evaluator=evaluator,
                score=score,
                fatal_errors=fatal,
                non_fatal_errors=non_fatal,
                answers=dict(answers),
                comment=comment,
                scored_at=self._clock(),
            )
            session.add(evaluation)
            return evaluation

        try:
            evaluation = await self._uow.run(evaluate)
        except Conflict:
            raise AlreadyExists(f"contact {contact_id} has already been evaluated") from None
        logger.info("contact %s evaluated (%d fatal)", contact_id, fatal)
        return evaluation


def channel_name(channel: int) -> str:
    try:
        return contact_pb2.Channel.Name(channel).removeprefix("CHANNEL_").lower()  # type: ignore[arg-type]
    except ValueError:
        return ""
