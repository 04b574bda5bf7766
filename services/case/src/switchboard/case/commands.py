"""CaseService's write operations: each is one transaction on the case store, in the caller's
tenant, recorded in the audit trail under the caller's name."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TypeVar

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from switchboard.case import audit, customers
from switchboard.case.adapters.orm import AuditEntry, Case, CaseNote, Customer
from switchboard.case.domain import lifecycle
from switchboard.case.domain.reference import looks_like_reference, normalise
from switchboard.case.records import CaseRecords
from switchboard.case.unit_of_work import UnitOfWork
from switchboard.core import sender_keys
from switchboard.core.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from switchboard.core.settings import DEV_AUTH_SECRET
from switchboard.v1 import case_pb2, contact_pb2

ATTEMPTS = 3  # a concurrent write to the same audit chain is retried

T = TypeVar("T")
MAX_NOTE_CHARS = 20_000
MAX_SUBJECT_CHARS = 1000
CUSTOMER = "customer"  # the author of what a customer said, recorded by an agent or a channel


async def find_case(
    session: AsyncSession, tenant: str, case_id_or_reference: str, lock: bool = False
) -> Case:
    """A case of `tenant` by id or by reference; another tenant's case does not exist."""
    key = case_id_or_reference.strip()
    conditions = [Case.id == key]
    if looks_like_reference(key):
        conditions.append(Case.reference == normalise(key))
    stmt = select(Case).where(Case.tenant == tenant, or_(*conditions))
    case = await session.scalar(stmt.with_for_update() if lock else stmt)
    if case is None:
        raise NotFound("case", case_id_or_reference)
    return case


def _check_enum(value: int, enum: type, field: str) -> None:
    if value not in enum.values():  # type: ignore[attr-defined]
        raise InvalidArgument(field, f"{value} is not a valid value")


class CaseCommands:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        records: CaseRecords,
        clock: Callable[[], datetime],
        on_commit: Callable[[], None] = lambda: None,
        sender_key: bytes = sender_keys.secret_key(DEV_AUTH_SECRET),
    ) -> None:
        """`sender_key` names an erased customer's identities to the channels
        (switchboard.core.sender_keys), from the deployment's shared secret."""
        self._uow = UnitOfWork(sessions, on_commit)
        self._sender_key = sender_key
        self.records = records
        self._clock = clock

    async def _run(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """`work` in one transaction, tried again on a write conflict; a value the database
        refuses is INVALID_ARGUMENT."""
        return await self._uow.run(work, attempts=ATTEMPTS)

    async def create_case(
        self, tenant: str, actor: str, request: case_pb2.CreateCaseRequest
    ) -> str:
        template = None
        if request.template:
            template = self.records.policies.template(tenant, request.template)
            if template is None:
                raise InvalidArgument("template", f"{request.template!r} is not a template")
        _check_enum(request.case_type, case_pb2.CaseType, "case_type")
        _check_enum(request.priority, case_pb2.CasePriority, "priority")
        if len(request.subject) > MAX_SUBJECT_CHARS:
            raise InvalidArgument("subject", f"is longer than {MAX_SUBJECT_CHARS} characters")
        if len(request.queue) > 255:
            raise InvalidArgument("queue", "is longer than 255 characters")
        subject = request.subject or (template.subject if template else "")
        if not subject:
            raise InvalidArgument("subject", "is required without a template")
        identities = customers.normalise_identities(
            request.identities, self.records.policies.default_phone_region, strict=True
        )
        if not request.customer_id and not identities:
            raise InvalidArgument("customer_id", "name a customer or give identities")
        note = request.note or (template.note if template else "")
        if len(note) > MAX_NOTE_CHARS:
            raise InvalidArgument("note", f"is longer than {MAX_NOTE_CHARS} characters")

        async def work(session: AsyncSession) -> str:
            now = self._clock()
            customer: Customer
            if request.customer_id:
                customer = await customers.get(session, tenant, request.customer_id, lock=True)
            else:
                customer = await customers.resolve(
                    session, tenant, identities, request.customer_name, now, actor
                )
            case = await self.records.open_case(
                session,
                customer,
                actor,
                now,
                subject=subject,
                case_type=request.case_type or (template.case_type if template else 0),
                priority=request.priority or (template.priority if template else 0),
                queue=request.queue or (template.queue if template else ""),
                template=template.name if template else "",
            )
            if note:
                await self.records.add_note(session, case, actor, note, now)
            return case.id

        return await self._run(work)

    async def update_status(
        self, tenant: str, actor: str, case_id: str, status: int, reason: str
    ) -> str:
        if status not in lifecycle.NAMES:
            raise InvalidArgument("status", "must be a case status")
        if len(reason) > MAX_SUBJECT_CHARS:
            raise InvalidArgument("reason", f"is longer than {MAX_SUBJECT_CHARS} characters")

        async def work(session: AsyncSession) -> str:
            now = self._clock()
            case = await find_case(session, tenant, case_id, lock=True)
            if case.status in lifecycle.AWAITING_CLOSURE and status == lifecycle.CLOSED:
                raise FailedPrecondition(
                    f"case {case.reference} is {lifecycle.name(case.status)}: it closes through "
                    "ReviewClosure or ConfirmClosure"
                )
            if status in lifecycle.AWAITING_CLOSURE:
                raise FailedPrecondition(
                    f"{lifecycle.name(status)} is set by the closure policy on resolution"
                )
            lifecycle.check(case.status, status)
            await self.records.acted(session, case, actor, now)
            if status == lifecycle.RESOLVED:
                await self.records.resolve(session, case, actor, now, reason)
            else:
                await self.records.change_status(session, case, status, actor, now, reason)
            return case.id

        return await self._run(work)

    async def review_closure(
        self, tenant: str, actor: str, case_id: str, approve: bool, note: str
    ) -> str:
        """A reviewer's sign-off (closed) or rejection (back in progress to its agent, with the
        note). Nobody signs off a resolution of their own."""
        if not approve and not note.strip():
            raise InvalidArgument("note", "is required to reject a closure")
        if len(note) > MAX_NOTE_CHARS:
            raise InvalidArgument("note", f"is longer than {MAX_NOTE_CHARS} characters")

        async def work(session: AsyncSession) -> str:
            now = self._clock()
            case = await find_case(session, tenant, case_id, lock=True)
            if case.status != lifecycle.PENDING_REVIEW:
                raise FailedPrecondition(
                    f"case {case.reference} is {lifecycle.name(case.status)}, not pending_review"
                )
            if await self._resolved_by(session, case) == actor:
                raise PermissionDenied(
                    f"{actor} resolved case {case.reference}: another reviews it"
                )
            await self.records.acted(session, case, actor, now)
            extra: dict[str, str] = {}
            if note.strip():
                extra["note"] = note
                await self.records.add_note(session, case, actor, note, now)
            if approve:
                await self.records.change_status(
                    session, case, lifecycle.CLOSED, actor, now,
                    action="closure_approved", extra=extra,
                )  # fmt: skip
            else:
                await self.records.change_status(
                    session, case, lifecycle.IN_PROGRESS, actor, now,
                    action="closure_rejected", extra=extra,
                )  # fmt: skip
            return case.id

        return await self._run(work)

    async def confirm_closure(
        self, tenant: str, actor: str, case_id: str, confirmed: bool, comment: str
    ) -> str:
        """The customer's answer, as an agent or a channel records it: confirmed (closed) or
        disputed (back in progress). The customer's words become a note, sealed with their key;
        the audit names the note."""
        if not confirmed and not comment.strip():
            raise InvalidArgument("comment", "is required to dispute a closure")
        if len(comment) > MAX_NOTE_CHARS:
            raise InvalidArgument("comment", f"is longer than {MAX_NOTE_CHARS} characters")

        async def work(session: AsyncSession) -> str:
            now = self._clock()
            case = await find_case(session, tenant, case_id, lock=True)
            if case.status != lifecycle.PENDING_CONFIRMATION:
                raise FailedPrecondition(
                    f"case {case.reference} is {lifecycle.name(case.status)}, "
                    "not pending_confirmation"
                )
            extra: dict[str, str] = {}
            if comment.strip():
                note = await self.records.add_note(session, case, CUSTOMER, comment, now)
                extra["note_id"] = note.id
            await self.records.change_status(
                session, case,
                lifecycle.CLOSED if confirmed else lifecycle.IN_PROGRESS, actor, now,
                action="closure_confirmed" if confirmed else "closure_disputed", extra=extra,
            )  # fmt: skip
            return case.id

        return await self._run(work)

    @staticmethod
    async def _resolved_by(session: AsyncSession, case: Case) -> str:
        """Who resolved a case pending review: the actor of its latest status change, the one
        that put it there (any later change would have taken it out of pending_review)."""
        actor = await session.scalar(
            select(AuditEntry.actor)
            .where(
                AuditEntry.entity == audit.CASE,
                AuditEntry.entity_id == case.id,
                AuditEntry.action == "status_changed",
            )
            .order_by(AuditEntry.seq.desc())
            .limit(1)
        )
        return actor or ""

    async def add_note(self, tenant: str, actor: str, case_id: str, text: str) -> CaseNote:
        if not text.strip():
            raise InvalidArgument("text")
        if len(text) > MAX_NOTE_CHARS:
            raise InvalidArgument("text", f"is longer than {MAX_NOTE_CHARS} characters")

        async def work(session: AsyncSession) -> CaseNote:
            now = self._clock()
            case = await find_case(session, tenant, case_id, lock=True)
            if case.status == lifecycle.CLOSED:
                raise FailedPrecondition(f"case {case.reference} is closed")
            note = await self.records.add_note(session, case, actor, text, now)
            await self.records.acted(session, case, actor, now)
            return note

        return await self._run(work)

    async def assign(self, tenant: str, actor: str, case_id: str, agent_id: str) -> str:
        if len(agent_id) > 255:
            raise InvalidArgument("agent_id", "is longer than 255 characters")

        async def work(session: AsyncSession) -> str:
            now = self._clock()
            case = await find_case(session, tenant, case_id, lock=True)
            await self.records.assign(session, case, agent_id, actor, now)
            await self.records.acted(session, case, actor, now)
            return case.id

        return await self._run(work)

    async def set_priority(self, tenant: str, actor: str, case_id: str, priority: int) -> str:
        if priority not in case_pb2.CasePriority.values() or not priority:
            raise InvalidArgument("priority", "must be a case priority")

        async def work(session: AsyncSession) -> str:
            now = self._clock()
            case = await find_case(session, tenant, case_id, lock=True)
            if case.status == lifecycle.CLOSED:
                raise FailedPrecondition(f"case {case.reference} is closed")
            await self.records.set_priority(session, case, priority, actor, now)
            await self.records.acted(session, case, actor, now)
            return case.id

        return await self._run(work)

    async def merge(self, tenant: str, actor: str, target_id: str, source_id: str) -> str:
        async def work(session: AsyncSession) -> str:
            customer = await customers.merge(
                session, self.records, tenant, target_id, source_id, actor, self._clock()
            )
            return customer.id

        return await self._run(work)

    async def erase(self, tenant: str, actor: str, customer_id: str) -> tuple[str, int]:
        """Erase a customer (customers.erase): its id and the number of data keys destroyed."""

        async def work(session: AsyncSession) -> tuple[str, int]:
            customer, destroyed = await customers.erase(
                session, tenant, customer_id, actor, self._clock(), self._sender_key
            )
            return customer.id, destroyed

        return await self._run(work)

    async def split(
        self,
        tenant: str,
        actor: str,
        customer_id: str,
        identities: Sequence[contact_pb2.CustomerIdentity],
        case_ids: Sequence[str],
        display_name: str,
    ) -> tuple[str, str]:
        if not customer_id:
            raise InvalidArgument("customer_id")
        keys = customers.normalise_identities(
            identities, self.records.policies.default_phone_region, strict=True
        )

        async def work(session: AsyncSession) -> tuple[str, str]:
            original, new = await customers.split(
                session,
                self.records,
                tenant,
                customer_id,
                keys,
                case_ids,
                display_name,
                actor,
                self._clock(),
            )
            return original.id, new.id

        return await self._run(work)
