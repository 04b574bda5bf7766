"""Erasure of the objects a customer's contacts left in the JetStream object stores (raw mails,
fax documents and pages, chat uploads), which the channels store before the case service knows
whose they are (docs/security.md, "Stored payloads").

Every object a contact's events name is recorded by contact id (`record`). Erasing a customer
stages the deletion of its contacts' objects in the erasure's own transaction (`stage_contacts`),
and an object named for a contact whose customer is already erased is staged at once; the relay
(`ObjectEraser`) deletes them after the commit and forgets each one only once it is gone, so a
failed or interrupted deletion is tried again until it is done. Deleting is idempotent: an object
already gone counts as deleted.

The same rows, under the pseudo-bucket STREAMS (named `<tenant>/<contact id>`), erase each of the
customer's contacts from the JetStream streams (switchboard.core.stream_erasure: its events,
outbound commands, parked copies and chat history), one scan per tenant for all that are due."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from switchboard.case.adapters.database import insert_ignore
from switchboard.case.adapters.orm import (
    EXTERNAL_ID,
    OBJECT_NAME,
    ContactObject,
    DataKey,
    ObjectErasure,
    utc_now,
)
from switchboard.core import stores
from switchboard.v1 import contact_pb2

logger = logging.getLogger(__name__)

BATCH = 100
# Longer than a deletion may take, so a live relay never loses its claim.
CLAIM = timedelta(seconds=60)
FIRST_BACKOFF = timedelta(seconds=5)
MAX_BACKOFF = timedelta(minutes=15)

# The `bucket` of a contact to erase from the streams: no object store is named with a "$".
STREAMS = "$streams"
# Longer than scanning a tenant's streams may take.
STREAMS_CLAIM = timedelta(minutes=15)

STAGED = "object_erasures_staged"  # session.info (database.TRANSACTION_CACHES): wake the relay

Object = tuple[str, str]  # (bucket, object name)


def objects_of(tenant: str, refs: Iterable[contact_pb2.AttachmentRef]) -> list[Object]:
    """The objects `refs` name that belong to `tenant`: the channels name every object under
    its tenant, and an event of one tenant never makes the case service delete another's."""
    found: dict[Object, None] = {}
    for ref in refs:
        name, bucket = ref.object_name, ref.bucket
        if not bucket or not name:
            continue
        if (
            not name.startswith(f"{tenant}/")
            or len(name) > OBJECT_NAME
            or len(bucket) > EXTERNAL_ID
        ):
            logger.warning("object %s/… of another tenant, or too long: not recorded", bucket)
            continue
        found[(bucket, name)] = None
    return list(found)


async def is_erased(session: AsyncSession, tenant: str, customer_id: str | None) -> bool:
    """Whether the customer's data key was destroyed (read from the table, not the keyring's
    cache: a transaction that waited for the erasure's locks sees it)."""
    if not customer_id:
        return False
    found = await session.scalar(
        select(DataKey.seq)
        .where(
            DataKey.tenant == tenant,
            DataKey.customer_id == customer_id,
            DataKey.wrapped.is_(None),
        )
        .limit(1)
    )
    return found is not None


async def record(
    session: AsyncSession,
    tenant: str,
    contact_id: str,
    objects: Sequence[Object],
    erased: bool,
    at: datetime,
) -> None:
    """Remember that `contact_id`'s events named `objects`; when its customer is `erased`
    already (a channel was still writing), stage their deletion instead."""
    for bucket, name in objects:
        if erased:
            await stage(session, tenant, bucket, name, at)
            continue
        await insert_ignore(
            session,
            ContactObject,
            {
                "contact_id": contact_id,
                "bucket": bucket,
                "object_name": name,
                "tenant": tenant,
                "created_at": at,
            },
            ["contact_id", "bucket", "object_name"],
        )


async def stage(session: AsyncSession, tenant: str, bucket: str, name: str, at: datetime) -> None:
    """Stage the deletion of one object in the caller's transaction (due now, also when it was
    staged before: a channel may have written it again since)."""
    session.info[STAGED] = True
    values = {
        "bucket": bucket,
        "object_name": name,
        "tenant": tenant,
        "created_at": at,
        "not_before": None,
        "attempts": 0,
        "last_error": "",
    }
    if not await insert_ignore(session, ObjectErasure, values, ["bucket", "object_name"]):
        await session.execute(
            update(ObjectErasure)
            .where(ObjectErasure.bucket == bucket, ObjectErasure.object_name == name)
            .values(not_before=None)
        )


async def stage_contacts(
    session: AsyncSession, tenant: str, contact_ids: Sequence[str], at: datetime
) -> int:
    """Stage the deletion of every object recorded for `contact_ids`, except one a contact not
    among them names too (the same attachment, stored once, in another customer's mail), and
    forget the records. The number staged."""
    if not contact_ids:
        return 0
    ids = list(contact_ids)
    for contact_id in ids:  # their events, replies and chat history on the bus
        await stage(session, tenant, STREAMS, f"{tenant}/{contact_id}", at)
    owned = set(
        (bucket, name)
        for bucket, name in await session.execute(
            select(ContactObject.bucket, ContactObject.object_name).where(
                ContactObject.tenant == tenant, ContactObject.contact_id.in_(ids)
            )
        )
    )
    if not owned:
        return 0
    shared = set(
        (bucket, name)
        for bucket, name in await session.execute(
            select(ContactObject.bucket, ContactObject.object_name).where(
                tuple_(ContactObject.bucket, ContactObject.object_name).in_(sorted(owned)),
                ContactObject.contact_id.not_in(ids),
            )
        )
    )
    await session.execute(
        delete(ContactObject).where(
            ContactObject.tenant == tenant, ContactObject.contact_id.in_(ids)
        )
    )
    staged = sorted(owned - shared)
    for bucket, name in staged:
        await stage(session, tenant, bucket, name, at)
    if shared:
        logger.info("%d objects kept: other contacts name them too", len(shared))
    return len(staged)


def backoff(attempts: int) -> timedelta:
    """How long a deletion waits after its `attempts`-th failed attempt."""
    return min(FIRST_BACKOFF * 2 ** max(attempts - 1, 0), MAX_BACKOFF)


class ObjectEraser:
    """Deletes the staged objects from the object stores, each until it is gone."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        objects: stores.ObjectStores,
        clock: Callable[[], datetime] = utc_now,
        streams: Callable[[str, list[str]], Awaitable[int]] | None = None,
    ) -> None:
        """`streams(tenant, contact_ids)` erases contacts from the JetStream streams (the number
        of messages deleted); without it, those rows wait for a relay that has it."""
        self._sessions = sessions
        self._objects = objects
        self._clock = clock
        self._streams = streams

    async def pending(self) -> int:
        """How many objects (and contacts on the streams) are still to be erased."""
        async with self._sessions() as session:
            return len(list(await session.scalars(select(ObjectErasure.bucket))))

    async def drain(self) -> int:
        """Delete every staged object that is due, then erase the due contacts from the streams;
        the number of objects done. A failed one waits out its back-off, the others are deleted
        all the same."""
        done = 0
        while True:
            now = self._clock()
            async with self._sessions() as session:
                rows = list(
                    await session.execute(
                        select(ObjectErasure.bucket, ObjectErasure.object_name)
                        .where(_due(now), ObjectErasure.bucket != STREAMS)
                        .order_by(ObjectErasure.created_at, ObjectErasure.bucket)
                        .limit(BATCH)
                    )
                )
            for bucket, name in rows:
                done += await self._erase(bucket, name)
            if len(rows) < BATCH:
                break
        await self.drain_streams()
        return done

    async def drain_streams(self) -> int:
        """Erase every due contact from the streams, one scan per tenant; the number of messages
        deleted. A tenant whose scan fails waits out its back-off."""
        if self._streams is None:
            return 0
        now = self._clock()
        claim = now + STREAMS_CLAIM
        async with self._sessions.begin() as session:
            claimed = list(
                await session.execute(
                    update(ObjectErasure)
                    .where(ObjectErasure.bucket == STREAMS, _due(now))
                    .values(not_before=claim, attempts=ObjectErasure.attempts + 1)
                    .returning(
                        ObjectErasure.tenant, ObjectErasure.object_name, ObjectErasure.attempts
                    )
                )
            )
        by_tenant: dict[str, tuple[list[str], int]] = {}
        for tenant, name, attempts in claimed:
            names, most = by_tenant.get(tenant, ([], 0))
            names.append(name)
            by_tenant[tenant] = (names, max(most, attempts))
        deleted = 0
        for tenant, (names, attempts) in by_tenant.items():
            rows = (
                ObjectErasure.bucket == STREAMS,
                ObjectErasure.tenant == tenant,
                ObjectErasure.object_name.in_(names),
            )
            try:
                messages = await self._streams(tenant, [n.split("/", 1)[1] for n in names])
            except Exception as exc:
                what = f"erasing {len(names)} contacts of {tenant} from the streams"
                await self._postpone(rows, attempts, exc, what)
                continue
            deleted += messages
            async with self._sessions.begin() as session:
                await session.execute(delete(ObjectErasure).where(*rows, _claimed(claim)))
            logger.info(
                "erased %d contacts of %s from the streams: %d messages",
                len(names),
                tenant,
                messages,
            )
        return deleted

    async def _erase(self, bucket: str, name: str) -> int:
        now = self._clock()
        claim = now + CLAIM
        where = (ObjectErasure.bucket == bucket, ObjectErasure.object_name == name)
        async with self._sessions.begin() as session:
            attempts = (
                await session.execute(
                    update(ObjectErasure)
                    .where(*where, _due(now))
                    .values(not_before=claim, attempts=ObjectErasure.attempts + 1)
                    .returning(ObjectErasure.attempts)
                )
            ).scalar()
        if attempts is None:
            return 0  # another relay has it, or it is done
        try:
            await self._objects.delete(bucket, name)
        except Exception as exc:
            await self._postpone(where, attempts, exc, f"deleting an erased object from {bucket}")
            return 0
        async with self._sessions.begin() as session:
            # Unless staged again meanwhile (its claim reset): then the next round deletes again.
            await session.execute(delete(ObjectErasure).where(*where, _claimed(claim)))
        return 1

    async def _postpone(
        self, rows: Sequence[ColumnElement[bool]], attempts: int, exc: Exception, what: str
    ) -> None:
        """`what` failed on its `attempts`-th try: its rows wait out their back-off."""
        wait = backoff(attempts)
        logger.warning(
            "%s failed (attempt %d, next in %s): %s", what, attempts, wait, type(exc).__name__
        )
        async with self._sessions.begin() as session:
            await session.execute(
                update(ObjectErasure)
                .where(*rows)
                .values(
                    not_before=self._clock() + wait,
                    last_error=f"{type(exc).__name__}: {exc}"[:1000],
                )
            )


def _due(now: datetime) -> ColumnElement[bool]:
    return or_(ObjectErasure.not_before.is_(None), ObjectErasure.not_before <= now)


def _claimed(claim: datetime) -> ColumnElement[bool]:
    return ObjectErasure.not_before == claim
