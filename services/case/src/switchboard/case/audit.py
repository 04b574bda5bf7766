"""The append-only audit trail: one SHA-256 hash chain per case (and per customer, for merges and
splits).

Each entry's hash covers the previous entry's hash and the entry's own canonical JSON as stored,
sealed with the data key of the customer it concerns (switchboard.core.hash_chain, shared with
`switchboard case verify`), so editing, deleting or reordering any stored entry breaks the chain
from there on, and the chain still verifies once that key is destroyed (erasure). Entries are
only ever inserted; a correction is a new entry.
"""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from switchboard.case.adapters import bulk, crypto, keyring
from switchboard.case.adapters.orm import AuditEntry
from switchboard.core import hash_chain
from switchboard.core.hash_chain import GENESIS, Break, canonical, entry_hash

CASE = "case"
CUSTOMER = "customer"


class Appended(NamedTuple):
    """The position of an entry just appended to its chain."""

    seq: int
    hash: str


async def append(
    session: AsyncSession,
    tenant: str,
    entity: str,
    entity_id: str,
    actor: str,
    action: str,
    data: dict[str, Any],
    at: datetime,
    owner: str = keyring.TENANT,
) -> Appended:
    """Append one entry to the entity's chain in the caller's transaction, its data sealed with
    the key of customer `owner`. Two writers appending to one chain at once collide on (entity,
    entity_id, seq): one of them fails and retries.

    The chain's head is read once per transaction; later appends in it extend the head kept in
    the session (forgotten when the transaction or a savepoint ends), so a batch of events
    touching one case reads its chain once."""
    info = session.info
    heads: dict[tuple[str, str], tuple[int, str]] | None = info.get("audit_heads")
    if heads is None:
        heads = info["audit_heads"] = {}
    head = heads.get((entity, entity_id))
    if head is None:
        last = (
            await session.execute(
                select(AuditEntry.seq, AuditEntry.hash)
                .where(AuditEntry.entity == entity, AuditEntry.entity_id == entity_id)
                .order_by(AuditEntry.seq.desc())
                .limit(1)
            )
        ).first()
        head = (last.seq, last.hash) if last is not None else (0, GENESIS)
    seq, prev = head[0] + 1, head[1]
    keys: keyring.Keyring = info[keyring.KEY]
    payload = crypto.seal(keys.key_id(session, tenant, owner), canonical(data))
    if at.tzinfo is not UTC:
        at = at.astimezone(UTC)
    hash_ = entry_hash(prev, tenant, entity, entity_id, seq, at, actor, action, payload)
    # Written with the next query or flush, or the commit.
    bulk.add_row(
        session,
        AuditEntry,
        {
            "entity": entity,
            "entity_id": entity_id,
            "seq": seq,
            "tenant": tenant,
            "at": at,
            "actor": actor,
            "action": action,
            "data": payload,
            "prev_hash": prev,
            "hash": hash_,
        },
    )
    heads[(entity, entity_id)] = (seq, hash_)
    return Appended(seq, hash_)


def data_json(entry: AuditEntry) -> str:
    """An entry's data as JSON, opened; a JSON string "[erased]" once its key was destroyed."""
    data = crypto.open_(entry.data)
    return json.dumps(data) if data == crypto.ERASED else data


def new_chain(session: AsyncSession, entity: str, entity_id: str) -> None:
    """The entity was created in this transaction with a fresh id: its chain starts empty, and
    its first append needs no read."""
    session.info.setdefault("audit_heads", {})[(entity, entity_id)] = (0, GENESIS)


@functools.cache
def head_columns(entity: str, entity_id: Any) -> tuple[Any, Any]:
    """The seq and hash of the head of the chain of `entity_id` (a column of an enclosing
    query), as two correlated scalar subqueries (NULL for an empty chain); `known_heads` then
    keeps what they read. (Built once per column: a statement is immutable.)"""
    last = (
        select(AuditEntry.seq, AuditEntry.hash)
        .where(AuditEntry.entity == entity, AuditEntry.entity_id == entity_id)
        .order_by(AuditEntry.seq.desc())
        .limit(1)
    )
    return (
        last.with_only_columns(AuditEntry.seq).scalar_subquery(),
        last.with_only_columns(AuditEntry.hash).scalar_subquery(),
    )


def known_heads(
    session: AsyncSession, entity: str, heads: dict[str, tuple[int | None, str | None]]
) -> None:
    """Keep heads read with `head_columns`, by entity id, for `append` to extend."""
    known: dict[tuple[str, str], tuple[int, str]] = session.info.setdefault("audit_heads", {})
    for entity_id, (seq, hash_) in heads.items():
        known.setdefault(
            (entity, entity_id), (seq, hash_) if seq is not None and hash_ else (0, GENESIS)
        )


_HEADS_BY_PROBE = text(
    "SELECT w.id, h.seq, h.hash FROM unnest(CAST(:ids AS text[])) AS w(id)"
    " CROSS JOIN LATERAL (SELECT seq, hash FROM audit_entries"
    " WHERE entity = :entity AND entity_id = w.id ORDER BY seq DESC LIMIT 1) AS h"
)


async def preload_heads(session: AsyncSession, entity: str, entity_ids: set[str]) -> None:
    """Read the heads of many chains at once (a batch's cases), for `append` to extend."""
    heads: dict[tuple[str, str], tuple[int, str]] = session.info.setdefault("audit_heads", {})
    wanted = {i for i in entity_ids if (entity, i) not in heads}
    if not wanted:
        return
    if session.get_bind().dialect.name == "postgresql":
        # One backward index probe per chain, whatever the planner believes of the table's size
        # (with stale statistics, a fresh store's planner scanned every chain for the IN list).
        rows = await session.execute(_HEADS_BY_PROBE, {"entity": entity, "ids": sorted(wanted)})
        for entity_id, seq, hash_ in rows:
            heads[(entity, entity_id)] = (seq, hash_)
        for entity_id in wanted:
            heads.setdefault((entity, entity_id), (0, GENESIS))
        return
    last = (
        select(AuditEntry.entity_id, func.max(AuditEntry.seq).label("seq"))
        .where(AuditEntry.entity == entity, AuditEntry.entity_id.in_(wanted))
        .group_by(AuditEntry.entity_id)
        .subquery()
    )
    rows = await session.execute(
        select(AuditEntry.entity_id, AuditEntry.seq, AuditEntry.hash).join(
            last,
            (AuditEntry.entity == entity)
            & (AuditEntry.entity_id == last.c.entity_id)
            & (AuditEntry.seq == last.c.seq),
        )
    )
    for entity_id, seq, hash_ in rows:
        heads[(entity, entity_id)] = (seq, hash_)
    for entity_id in wanted:
        heads.setdefault((entity, entity_id), (0, GENESIS))


async def trail(session: AsyncSession, entity: str, entity_id: str) -> list[AuditEntry]:
    return list(
        await session.scalars(
            select(AuditEntry)
            .where(AuditEntry.entity == entity, AuditEntry.entity_id == entity_id)
            .order_by(AuditEntry.seq)
        )
    )


async def verify(
    session: AsyncSession, entity: str | None = None, entity_id: str | None = None
) -> tuple[int, list[Break]]:
    """Recompute every chain (or one): the number of chains checked and every break found."""
    stmt = select(AuditEntry).order_by(AuditEntry.entity, AuditEntry.entity_id, AuditEntry.seq)
    if entity is not None:
        stmt = stmt.where(AuditEntry.entity == entity)
    if entity_id is not None:
        stmt = stmt.where(AuditEntry.entity_id == entity_id)
    return await hash_chain.verify(
        await session.stream_scalars(stmt.execution_options(yield_per=1000))
    )


async def count(session: AsyncSession, entity: str, entity_id: str) -> int:
    return int(
        await session.scalar(
            select(func.count())
            .select_from(AuditEntry)
            .where(AuditEntry.entity == entity, AuditEntry.entity_id == entity_id)
        )
        or 0
    )
