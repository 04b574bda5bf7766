"""One customer across channels: identities resolve to one customer; customers merge and split.
Merges and splits are recorded in each customer's own audit chain and in every moved case's."""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, bindparam, delete, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import flag_modified

from switchboard.case import audit, object_erasure, outbox
from switchboard.case.adapters import bulk, crypto, keyring
from switchboard.case.adapters.database import peek_locked, preload_locked
from switchboard.case.adapters.orm import (
    Case,
    CaseNote,
    Contact,
    Customer,
    CustomerIdentity,
    Message,
    new_id,
)
from switchboard.case.domain import identity as identity_rules
from switchboard.case.knowledge.orm import KbArticle, KbArticleVersion
from switchboard.case.records import CaseRecords
from switchboard.case.reports.orm import CsatRating, QaEvaluation
from switchboard.core import sender_keys
from switchboard.core.errors import FailedPrecondition, InvalidArgument, NotFound
from switchboard.v1 import case_events_pb2, contact_pb2, events_pb2

logger = logging.getLogger(__name__)

Identity = tuple[int, str]

# Contact ids one CustomerErased names at most: a customer with more is announced in several
# events, each well under NATS's default 1 MB payload.
ERASED_CONTACTS_PER_EVENT = 5000


def _kind_name(kind: int) -> str:
    return contact_pb2.IdentityKind.Name(kind)  # type: ignore[arg-type]


def normalise_identities(
    identities: Sequence[contact_pb2.CustomerIdentity], region: str, strict: bool
) -> list[Identity]:
    """Normalised, de-duplicated identities in order. An identity that cannot be normalised (a
    caller id such as "anonymous") is InvalidArgument when `strict`, otherwise dropped: it
    recognises nobody, and the contact is still recorded."""
    seen: dict[Identity, None] = {}
    for i, ident in enumerate(identities):
        if not ident.value.strip():
            continue
        try:
            value = identity_rules.normalise(ident.kind, ident.value, region or None)
        except InvalidArgument as exc:
            if strict:
                raise InvalidArgument(f"identities[{i}].value", exc.args[-1]) from None
            logger.info("identity of kind %d dropped: not normalisable", ident.kind)
            continue
        if len(value) > 255:
            raise InvalidArgument(f"identities[{i}].value", "is longer than 255 characters")
        seen[(ident.kind, value)] = None
    return list(seen)


async def _audit(
    session: AsyncSession,
    customer: Customer,
    actor: str,
    action: str,
    data: dict[str, object],
    at: datetime,
) -> None:
    await audit.append(
        session, customer.tenant, audit.CUSTOMER, customer.id, actor, action, data, at, customer.id
    )


async def preload(session: AsyncSession, tenant: str, identities: Sequence[Identity]) -> set[str]:
    """Read which customers many identities of a tenant belong to (a batch's contacts), and lock
    those customers, in two queries; `resolve` then answers from the session. The customers
    found."""
    cache: dict[tuple[str, int, str], str | None] = session.info.setdefault("identities", {})
    wanted = {(k, _index(session, tenant, v)) for k, v in identities}
    wanted = {(k, i) for k, i in wanted if (tenant, k, i) not in cache}
    if not wanted:
        return set()
    # One expanding IN of (kind, blind index) pairs: compiled once, whatever the batch's size.
    rows = await session.execute(_owners_of(), {"tenant": tenant, "identities": sorted(wanted)})
    owners: set[str] = set()
    for kind, value, customer_id in rows:
        cache[(tenant, kind, value)] = customer_id
        owners.add(customer_id)
    for kind, value in wanted:
        cache.setdefault((tenant, kind, value), None)
    await preload_locked(session, Customer, owners)
    return owners


@functools.cache
def _owners_of() -> Select[int, str, str]:
    """The customers of `tenant` whose identities are among the (kind, blind index) pairs
    `identities` (built once: every batch of new contacts runs it)."""
    return select(
        CustomerIdentity.kind, CustomerIdentity.value, CustomerIdentity.customer_id
    ).where(
        CustomerIdentity.tenant == bindparam("tenant"),
        tuple_(CustomerIdentity.kind, CustomerIdentity.value).in_(
            bindparam("identities", expanding=True)
        ),
    )


def _index(session: AsyncSession, tenant: str, value: str) -> str:
    return keyring.of(session).index(session, tenant, value)


async def _known(
    session: AsyncSession, tenant: str, identities: list[Identity]
) -> dict[Identity, str]:
    """The customer each of `identities` (blind indexes) already belongs to, for those that
    belong to one."""
    if not identities:
        return {}
    cache: dict[tuple[str, int, str], str | None] | None = session.info.get("identities")
    if cache is not None and all((tenant, k, v) in cache for k, v in identities):
        return {
            (k, v): owner for k, v in identities if (owner := cache[(tenant, k, v)]) is not None
        }
    matches = or_(
        *(and_(CustomerIdentity.kind == k, CustomerIdentity.value == v) for k, v in identities)
    )
    rows = await session.execute(
        select(CustomerIdentity.kind, CustomerIdentity.value, CustomerIdentity.customer_id).where(
            CustomerIdentity.tenant == tenant, matches
        )
    )
    return {(kind, value): customer_id for kind, value, customer_id in rows}


async def _oldest(session: AsyncSession, customer_ids: set[str]) -> Customer:
    """The oldest of `customer_ids`, locked: the lock serialises two contacts of one customer
    choosing (or opening) its case."""
    rows = [await peek_locked(session, Customer, i) for i in customer_ids]
    if all(r is not None for r in rows):
        return min(rows, key=lambda c: (c.created_at, c.id))  # type: ignore[union-attr]
    customer: Customer = (
        await session.execute(
            select(Customer)
            .where(Customer.id.in_(customer_ids))
            .order_by(Customer.created_at, Customer.id)
            .limit(1)
            .with_for_update()
        )
    ).scalar_one()
    return customer


async def resolve(
    session: AsyncSession,
    tenant: str,
    identities: list[Identity],
    name: str,
    at: datetime,
    actor: str,
) -> Customer:
    """The customer any of `identities` belongs to (the oldest, if they name several), or a new one
    (always, for no identities); identities not known yet are added to it."""
    keys = keyring.of(session)
    indexed = {(k, _index(session, tenant, v)): (k, v) for k, v in identities}
    known = await _known(session, tenant, list(indexed))
    added = [(key, identity) for key, identity in indexed.items() if key not in known]
    # A new customer's chain starts with one entry naming the identities it was created with;
    # identities added later to a known customer are an entry of their own.
    listed: dict[str, object] = {}
    if added:
        listed["identities"] = [[_kind_name(k), v] for _, (k, v) in added]
    if known:
        customer = await _oldest(session, set(known.values()))
        if name and not customer.display_name:
            customer.display_name = keys.seal(session, tenant, customer.id, name)
        if added:
            await _audit(session, customer, actor, "identities_added", listed, at)
    else:
        customer_id = new_id()
        customer = bulk.new(
            session,
            Customer,
            {
                "id": customer_id,
                "tenant": tenant,
                "display_name": keys.seal(session, tenant, customer_id, name),
                "created_at": at,
                "merged_into": None,
            },
        )
        audit.new_chain(session, audit.CUSTOMER, customer.id)
        session.info.setdefault("new_customers", set()).add(customer.id)
        index = session.info.get("open_cases")
        if index is not None:
            index[customer.id] = []  # it has no case yet
        await _audit(session, customer, actor, "created", listed, at)
    cache: dict[tuple[str, int, str], str | None] | None = session.info.get("identities")
    for (kind, index), (_, value) in added:
        bulk.add_row(
            session,
            CustomerIdentity,
            {
                "tenant": tenant,
                "kind": kind,
                "value": index,
                "sealed": keys.seal(session, tenant, customer.id, value),
                "customer_id": customer.id,
            },
        )
        if cache is not None:
            cache[(tenant, kind, index)] = customer.id
    return customer


async def get(session: AsyncSession, tenant: str, customer_id: str, lock: bool = False) -> Customer:
    """A customer of `tenant`, following merges to the customer it became."""
    for _ in range(16):
        stmt = select(Customer).where(Customer.id == customer_id, Customer.tenant == tenant)
        customer = await session.scalar(stmt.with_for_update() if lock else stmt)
        if customer is None:
            raise NotFound("customer", customer_id)
        if not customer.merged_into:
            return customer
        customer_id = customer.merged_into
    raise FailedPrecondition(f"customer {customer_id}: merge chain too long")


async def _move_cases(
    session: AsyncSession,
    records: CaseRecords,
    case_ids: Sequence[str],
    to: Customer,
    actor: str,
    at: datetime,
    action: str,
) -> None:
    for case_id in case_ids:
        case = await session.get(Case, case_id, with_for_update=True)
        if case is None:
            continue
        previous = case.customer_id
        case.customer_id = to.id
        case.updated_at = at
        await records.audit(
            session, case, actor, action, {"customer_id": to.id, "previous": previous}, at
        )
    if case_ids:
        await session.execute(
            update(Contact).where(Contact.case_id.in_(case_ids)).values(customer_id=to.id)
        )


async def _reseal(
    session: AsyncSession,
    tenant: str,
    customer_id: str,
    identities: Sequence[CustomerIdentity],
    case_ids: Sequence[str],
) -> None:
    """Seal what a split moved with its new customer's key, so that erasing that customer
    reaches it (and erasing the original does not): the identities, and of the cases their
    subjects, contacts, notes and messages, and what may quote the customer beside them (the
    ratings' comments, the QA evaluations' free text, the articles drafted from the cases while
    they are the customer's, not yet published as the tenant's). Audit entries stay as they
    were written: their hashes cover their ciphertext."""
    keys = keyring.of(session)
    rows: list[tuple[Any, str]] = [(i, "sealed") for i in identities]
    if case_ids:
        rows += [
            (c, "subject") for c in await session.scalars(select(Case).where(Case.id.in_(case_ids)))
        ]
        contacts = list(await session.scalars(select(Contact).where(Contact.case_id.in_(case_ids))))
        rows += [(c, "subject") for c in contacts]
        rows += [
            (n, "text")
            for n in await session.scalars(select(CaseNote).where(CaseNote.case_id.in_(case_ids)))
        ]
        contact_ids = [c.contact_id for c in contacts]
        rows += [
            (m, "text")
            for m in await session.scalars(
                select(Message).where(Message.contact_id.in_(contact_ids))
            )
        ]
        rows += [
            (r, "comment")
            for r in await session.scalars(
                select(CsatRating).where(
                    CsatRating.tenant == tenant, CsatRating.case_id.in_(case_ids)
                )
            )
        ]
        evaluations = await session.scalars(
            select(QaEvaluation).where(
                QaEvaluation.tenant == tenant, QaEvaluation.contact_id.in_(contact_ids)
            )
        )
        rows += [
            (e, attribute)
            for e in evaluations
            for attribute in ("comment", "dispute_reason", "decision_note")
        ]
        drafted = (
            select(KbArticle.id)
            .where(KbArticle.tenant == tenant, KbArticle.source_case_id.in_(case_ids))
            .scalar_subquery()
        )
        versions = await session.scalars(
            select(KbArticleVersion).where(KbArticleVersion.article_id.in_(drafted))
        )
        # A published version is sealed with the tenant's own key: not the customer's.
        published = keys.key_id(session, tenant)
        rows += [
            (v, attribute)
            for v in versions
            for attribute in ("title", "body", "review_comment")
            if getattr(getattr(v, attribute), "key_id", None) != published
        ]
    for row, attribute in rows:
        value = getattr(row, attribute)
        if value and value != crypto.ERASED:
            setattr(row, attribute, keys.seal(session, tenant, customer_id, value))
            flag_modified(row, attribute)  # the same text: written again, under the new key


async def merge(
    session: AsyncSession,
    records: CaseRecords,
    tenant: str,
    target_id: str,
    source_id: str,
    actor: str,
    at: datetime,
) -> Customer:
    """Move every identity and case of the source customer to the target; the source remains as
    a pointer to the target, so its id keeps resolving."""
    if not target_id or not source_id:
        raise InvalidArgument("target_customer_id" if not target_id else "source_customer_id")
    target = await get(session, tenant, target_id, lock=True)
    source = await get(session, tenant, source_id, lock=True)
    if target.id == source.id:
        raise FailedPrecondition("the customers are already one customer")
    moved = list(
        await session.scalars(
            select(CustomerIdentity).where(CustomerIdentity.customer_id == source.id)
        )
    )
    await session.execute(
        update(CustomerIdentity)
        .where(CustomerIdentity.customer_id == source.id)
        .values(customer_id=target.id)
    )
    case_ids = list(await session.scalars(select(Case.id).where(Case.customer_id == source.id)))
    await _move_cases(session, records, case_ids, target, actor, at, "customer_merged")
    source.merged_into = target.id
    if not target.display_name and source.display_name:
        target.display_name = source.display_name
    identities = [[_kind_name(i.kind), i.sealed or i.value] for i in moved]
    await _audit(
        session,
        target,
        actor,
        "merged_from",
        {"customer_id": source.id, "identities": identities, "cases": case_ids},
        at,
    )
    await _audit(session, source, actor, "merged_into", {"customer_id": target.id}, at)
    return target


async def split(
    session: AsyncSession,
    records: CaseRecords,
    tenant: str,
    customer_id: str,
    identities: list[Identity],
    case_ids: Sequence[str],
    display_name: str,
    actor: str,
    at: datetime,
) -> tuple[Customer, Customer]:
    """Move the given identities (and cases) of a customer to a new customer."""
    original = await get(session, tenant, customer_id, lock=True)
    if not identities and not case_ids:
        raise InvalidArgument("identities", "name the identities or cases to split off")
    owned = {
        (i.kind, i.value): i
        for i in await session.scalars(
            select(CustomerIdentity).where(CustomerIdentity.customer_id == original.id)
        )
    }
    indexes = [(k, _index(session, tenant, v)) for k, v in identities]
    for n, key in enumerate(indexes):
        if key not in owned:
            raise FailedPrecondition(f"identities[{n}] does not belong to customer {original.id}")
    cases = set(
        await session.scalars(
            select(Case.id).where(Case.customer_id == original.id, Case.id.in_(list(case_ids)))
        )
    )
    for n, case_id in enumerate(case_ids):
        if case_id not in cases:
            raise FailedPrecondition(f"case_ids[{n}] is not a case of customer {original.id}")
    new_customer_id = new_id()
    new = Customer(
        id=new_customer_id,
        tenant=tenant,
        display_name=keyring.of(session).seal(session, tenant, new_customer_id, display_name),
        created_at=at,
    )
    session.add(new)
    await session.flush()
    for key in indexes:
        owned[key].customer_id = new.id
    await _move_cases(session, records, list(case_ids), new, actor, at, "customer_split")
    await _reseal(session, tenant, new.id, [owned[key] for key in indexes], list(case_ids))
    names = [[_kind_name(k), v] for k, v in identities]
    await _audit(
        session,
        original,
        actor,
        "split_into",
        {"customer_id": new.id, "identities": names, "cases": list(case_ids)},
        at,
    )
    await _audit(
        session,
        new,
        actor,
        "split_from",
        {"customer_id": original.id, "identities": names, "cases": list(case_ids)},
        at,
    )
    return original, new


async def erase(
    session: AsyncSession,
    tenant: str,
    customer_id: str,
    actor: str,
    at: datetime,
    sender_key: bytes | None = None,
) -> tuple[Customer, int]:
    """Destroy the data keys of a customer and of every customer merged into it, and forget their
    identities' blind indexes: their names, identities, messages, subjects, notes, audit data, the
    QA text on their contacts and the unpublished articles drafted from their cases read as
    "[erased]" from now on, everywhere the store's rows are (backups too). The objects
    their contacts left in the object stores are staged for deletion in the same transaction
    (object_erasure), and so is CustomerErased, for the channels to forget the contacts in their
    own stores; it names their identities by sender key (switchboard.core.sender_keys, keyed
    with `sender_key`), for the channels to delete what they quarantined from them. The customer
    and the number of keys destroyed."""
    customer = await get(session, tenant, customer_id, lock=True)
    ids, frontier = {customer.id}, {customer.id}
    while frontier:
        frontier = (
            set(
                await session.scalars(select(Customer.id).where(Customer.merged_into.in_(frontier)))
            )
            - ids
        )
        ids |= frontier
    senders: list[str] = []
    if sender_key is not None:
        identities = await session.execute(
            select(CustomerIdentity.kind, CustomerIdentity.sealed).where(
                CustomerIdentity.tenant == tenant, CustomerIdentity.customer_id.in_(ids)
            )
        )
        senders = sorted(
            {
                key
                for kind, value in identities
                if value
                and value != crypto.ERASED
                and (key := sender_keys.sender_key(sender_key, tenant, kind, value))
            }
        )
    await session.execute(
        delete(CustomerIdentity).where(
            CustomerIdentity.tenant == tenant, CustomerIdentity.customer_id.in_(ids)
        )
    )
    # Locked: an event of one of these contacts naming an object waits for this erasure, then
    # sees it (object_erasure.is_erased) and stages the object itself.
    contact_ids = list(
        await session.scalars(
            select(Contact.contact_id)
            .where(Contact.tenant == tenant, Contact.customer_id.in_(ids))
            .order_by(Contact.contact_id)
            .with_for_update()
        )
    )
    destroyed = await keyring.of(session).erase(session, tenant, ids)
    await object_erasure.stage_contacts(session, tenant, contact_ids, at)
    _stage_erased(session, tenant, customer.id, contact_ids, senders, at)
    # Sealed with the tenant's key: it names no personal data, and outlives the customer's.
    data: dict[str, Any] = {"customers": sorted(ids), "sender_keys": len(senders)}
    await audit.append(session, tenant, audit.CUSTOMER, customer.id, actor, "erased", data, at)
    return customer, destroyed


def _stage_erased(
    session: AsyncSession,
    tenant: str,
    customer_id: str,
    contact_ids: Sequence[str],
    senders: Sequence[str],
    at: datetime,
) -> None:
    """Stage CustomerErased in the erasure's transaction (the outbox): published after the commit,
    never lost by a crash, never published for an erasure rolled back."""
    erasure = new_id()  # each erasure is announced again: the channels' forgetting is idempotent
    parts = [
        contact_ids[i : i + ERASED_CONTACTS_PER_EVENT]
        for i in range(0, len(contact_ids), ERASED_CONTACTS_PER_EVENT)
    ] or [[]]
    for n, part in enumerate(parts):
        meta = events_pb2.EventMeta(
            event_id=f"customer-erased:{erasure}:{n}", tenant=tenant, source="case"
        )
        meta.occurred_at.FromDatetime(at)
        event = case_events_pb2.CustomerErased(
            meta=meta,
            customer_id=customer_id,
            contact_ids=list(part),
            sender_keys=list(senders) if n == 0 else [],
        )
        outbox.stage(session, event)
