"""Seal what a case store held in clear before its data keys (migration 0005): run by the service
as it starts, a few hundred rows per transaction, until nothing is left in clear (and again for
the quality-assurance and knowledge-base text sealed since).

Audit entries are left as they are: their hashes cover their data as written, so sealing it
would break every chain.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import ColumnElement, and_, not_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from switchboard.case.adapters import crypto, keyring
from switchboard.case.adapters.orm import (
    Case,
    CaseNote,
    Contact,
    Customer,
    CustomerIdentity,
    Message,
)
from switchboard.case.knowledge.orm import PUBLISHED, RETIRED, KbArticle, KbArticleVersion
from switchboard.case.reports.orm import CsatRating, QaEvaluation

logger = logging.getLogger(__name__)

CHUNK = 500


def _clear(column: Any) -> ColumnElement[bool]:
    return and_(column != "", not_(column.startswith(crypto.PREFIX, autoescape=True)))


# (model, sealed column, its primary key, the customer whose key seals it, joins to reach it)
_COLUMNS: list[tuple[Any, Any, Any, Any, list[tuple[Any, Any]]]] = [
    (Customer, Customer.display_name, Customer.id, Customer.id, []),
    (Case, Case.subject, Case.id, Case.customer_id, []),
    (Contact, Contact.subject, Contact.contact_id, Case.customer_id, [(Case, Contact.case_id)]),
    (CaseNote, CaseNote.text, CaseNote.id, Case.customer_id, [(Case, CaseNote.case_id)]),
    (
        Message,
        Message.text,
        Message.message_id,
        Case.customer_id,
        [(Contact, Message.contact_id), (Case, Contact.case_id)],
    ),
    (
        CsatRating,
        CsatRating.comment,
        CsatRating.event_id,
        Case.customer_id,
        [(Case, CsatRating.case_id)],
    ),
    *(
        (
            QaEvaluation,
            column,
            QaEvaluation.id,
            Case.customer_id,
            [(Contact, QaEvaluation.contact_id), (Case, Contact.case_id)],
        )
        for column in (
            QaEvaluation.comment,
            QaEvaluation.dispute_reason,
            QaEvaluation.decision_note,
        )
    ),
]


async def _identities(session: AsyncSession) -> int:
    keys = keyring.of(session)
    rows = (
        await session.execute(
            select(
                CustomerIdentity.tenant,
                CustomerIdentity.kind,
                CustomerIdentity.value,
                CustomerIdentity.customer_id,
            )
            .where(CustomerIdentity.sealed.is_(None))
            .limit(CHUNK)
        )
    ).all()
    for tenant, kind, value, customer_id in rows:
        await session.execute(
            update(CustomerIdentity)
            .where(
                CustomerIdentity.tenant == tenant,
                CustomerIdentity.kind == kind,
                CustomerIdentity.value == value,
            )
            .values(
                value=keys.index(session, tenant, value),
                sealed=keys.seal(session, tenant, customer_id, value),
            )
        )
    return len(rows)


async def _column(session: AsyncSession, spec: tuple[Any, Any, Any, Any, list[Any]]) -> int:
    model, column, pk, customer, joins = spec
    keys = keyring.of(session)
    stmt = select(pk, model.tenant, column, customer).select_from(model)
    for target, on in joins:
        stmt = stmt.join(target, on == target.__mapper__.primary_key[0])
    rows = (await session.execute(stmt.where(_clear(column)).limit(CHUNK))).all()
    for key, tenant, text, customer_id in rows:
        await session.execute(
            update(model)
            .where(pk == key)
            .values({column.key: keys.seal(session, tenant, customer_id or "", text)})
        )
    return len(rows)


async def _article_versions(session: AsyncSession) -> int:
    """Knowledge-base text: published (and retired) versions with the tenant's key, the others
    with the key of the customer of the case they were drafted from (knowledge.orm)."""
    keys = keyring.of(session)
    v = KbArticleVersion
    texts = (v.title, v.body, v.review_comment)
    rows = (
        await session.execute(
            select(v.article_id, v.version, v.tenant, v.state, *texts, Case.customer_id)
            .join(KbArticle, KbArticle.id == v.article_id)
            .outerjoin(Case, Case.id == KbArticle.source_case_id)
            .where(or_(*(_clear(c) for c in texts)))
            .limit(CHUNK)
        )
    ).all()
    for article_id, version, tenant, state, *values, customer_id in rows:
        public = state in (PUBLISHED, RETIRED)
        owner = keyring.TENANT if public else customer_id or keyring.TENANT
        sealed = {
            c.key: keys.seal(session, tenant, owner, value)
            for c, value in zip(texts, values, strict=True)
            if value and not crypto.is_sealed(value)
        }
        await session.execute(
            update(v).where(v.article_id == article_id, v.version == version).values(sealed)
        )
    return len(rows)


async def seal_existing(sessions: async_sessionmaker[AsyncSession]) -> int:
    """Seal every row still in clear; the number of rows sealed."""
    total = 0
    columns = (lambda s, c=c: _column(s, c) for c in _COLUMNS)
    for step in [_identities, *columns, _article_versions]:
        while True:
            async with sessions.begin() as session:
                done = await step(session)
            total += done
            if done < CHUNK:
                break
    if total:
        logger.info("sealed %d rows written before encryption at rest", total)
    return total
