"""The write side of a case: every change goes through here, so every change is audited, staged
as an event in the outbox, and seen by the SLA clocks. All methods work in the caller's
transaction and take the time of the change explicitly."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from google.protobuf.message import Message
from sqlalchemy import Select, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from switchboard.case import audit, mail_outbox, outbox
from switchboard.case.adapters import bulk, keyring
from switchboard.case.adapters.orm import Case, CaseNote, Customer, new_id
from switchboard.case.domain import lifecycle
from switchboard.case.domain.reference import new_reference
from switchboard.case.sla.engine import SlaEngine
from switchboard.case.sla.policy import REVIEW, Policies
from switchboard.core.errors import FailedPrecondition
from switchboard.v1 import case_events_pb2, case_pb2, events_pb2

logger = logging.getLogger(__name__)

SYSTEM = "system"
REFERENCE_ATTEMPTS = 8


@functools.cache
def _references_taken() -> Select[str]:
    """Which of `references` a case of `tenant` has (built once: every batch checks its own)."""
    return select(Case.reference).where(
        Case.tenant == bindparam("tenant"),
        Case.reference.in_(bindparam("references", expanding=True)),
    )


class CaseRecords:
    def __init__(self, policies: Policies, sla: SlaEngine, clock: Callable[[], datetime]) -> None:
        self.policies = policies
        self.sla = sla
        self.clock = clock

    # ---- audit and outbox -------------------------------------------------------------------

    async def audit(
        self,
        session: AsyncSession,
        case: Case,
        actor: str,
        action: str,
        data: dict[str, Any],
        at: datetime,
    ) -> audit.Appended:
        return await audit.append(
            session, case.tenant, audit.CASE, case.id, actor, action, data, at, case.customer_id
        )

    def stage(
        self, session: AsyncSession, case: Case, event: Message, key: str, at: datetime
    ) -> None:
        """Stage a case event; `key` makes its id deterministic, so a retried change re-stages
        the same event rather than a second one."""
        meta: events_pb2.EventMeta = event.meta  # type: ignore[attr-defined]
        meta.Clear()
        meta.event_id = key[:255]
        meta.tenant = case.tenant
        meta.source = "case"
        meta.occurred_at.FromDatetime(at)
        outbox.stage(session, event)

    async def mail(
        self,
        session: AsyncSession,
        case: Case,
        key: str,
        to: Sequence[str],
        subject: str,
        text: str,
        at: datetime,
    ) -> None:
        """Stage a mail, sent after the commit; `key` makes a retried change stage it once."""
        await mail_outbox.stage(session, key, case.tenant, case.id, to, subject, text, at)

    # ---- cases ------------------------------------------------------------------------------

    async def open_case(
        self,
        session: AsyncSession,
        customer: Customer,
        actor: str,
        at: datetime,
        subject: str = "",
        case_type: int = case_pb2.CASE_TYPE_INQUIRY,
        priority: int = case_pb2.CASE_PRIORITY_NORMAL,
        queue: str = "",
        template: str = "",
        extra: dict[str, Any] | None = None,
        contact_id: str = "",
    ) -> Case:
        reference = await self._free_reference(session, customer.tenant)
        case = bulk.new(
            session,
            Case,
            {
                "id": new_id(),
                "tenant": customer.tenant,
                "customer_id": customer.id,
                "status": lifecycle.NEW,
                "subject": keyring.of(session).seal(session, customer.tenant, customer.id, subject),
                "assigned_agent_id": "",
                "created_at": at,
                "updated_at": at,
                "reference": reference,
                "case_type": case_type or case_pb2.CASE_TYPE_INQUIRY,
                "priority": priority or case_pb2.CASE_PRIORITY_NORMAL,
                "queue": queue,
                "template": template,
                "status_changed_at": at,
                "reopened_count": 0,
            },
        )
        audit.new_chain(session, audit.CASE, case.id)
        session.info.setdefault("sla_timers", {})[case.id] = {}  # a new case has none yet
        # The customer has a case now: the next contact of theirs looks it up.
        session.info.get("new_customers", set()).discard(customer.id)
        index = session.info.get("open_cases")
        if index is not None and customer.id in index:
            index[customer.id].append(case)
        await self.audit(
            session,
            case,
            actor,
            "created",
            {
                "reference": reference,
                "customer_id": customer.id,
                "subject": subject,
                "case_type": case_pb2.CaseType.Name(case.case_type),  # type: ignore[arg-type]
                "priority": case_pb2.CasePriority.Name(case.priority),  # type: ignore[arg-type]
                "queue": queue,
                "template": template,
                **(extra or {}),
            },
            at,
        )
        self.stage(
            session,
            case,
            case_events_pb2.CaseCreated(
                case_id=case.id,
                reference=reference,
                customer_id=customer.id,
                case_type=case.case_type,  # type: ignore[arg-type]
                priority=case.priority,  # type: ignore[arg-type]
                queue=queue,
                template=template,
                actor=actor,
                contact_id=contact_id,
            ),
            f"case-created:{case.id}",
            at,
        )
        await self.sla.start(self, session, case, "first_response", at)
        await self.sla.start(self, session, case, "resolution", at)
        return case

    @staticmethod
    async def reserve_references(session: AsyncSession, wanted: dict[str, int]) -> None:
        """Check fresh references for the cases a batch may open (`wanted` per tenant) in one
        query per tenant; `open_case` then takes them instead of checking one at a time."""
        pools: dict[str, list[str]] = session.info.setdefault("free_references", {})
        for tenant, n in wanted.items():
            if n <= 0:
                continue
            fresh = {new_reference() for _ in range(n)}
            taken = set(
                await session.scalars(
                    _references_taken(), {"tenant": tenant, "references": sorted(fresh)}
                )
            )
            pools.setdefault(tenant, []).extend(sorted(fresh - taken))

    async def _free_reference(self, session: AsyncSession, tenant: str) -> str:
        # ~10^9 references per tenant: a clash is rare, and the unique key catches a race.
        pool = session.info.get("free_references", {}).get(tenant)
        if pool:
            return str(pool.pop())
        for _ in range(REFERENCE_ATTEMPTS):
            reference = new_reference()
            taken = await session.scalar(
                select(Case.id).where(Case.tenant == tenant, Case.reference == reference)
            )
            if taken is None:
                return reference
        raise RuntimeError("no free case reference found")

    async def change_status(
        self,
        session: AsyncSession,
        case: Case,
        target: int,
        actor: str,
        at: datetime,
        reason: str = "",
        action: str = "",
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Move the case to `target`; FailedPrecondition naming the transition if not allowed.
        Audited as `action` (default: reopened or status_changed) with `extra` in its data."""
        current = case.status
        lifecycle.check(current, target)
        reopen = lifecycle.is_reopen(current, target)
        case.status = target
        case.status_changed_at = at
        case.updated_at = at
        if target == lifecycle.RESOLVED:
            case.resolved_at = at
        elif target == lifecycle.CLOSED:
            case.closed_at = at
        if reopen:
            case.reopened_count += 1
            case.resolved_at = None
        data: dict[str, Any] = {"from": lifecycle.name(current), "to": lifecycle.name(target)}
        if reason:
            data["reason"] = reason
        data.update(extra or {})
        action = action or ("reopened" if reopen else "status_changed")
        entry = await self.audit(session, case, actor, action, data, at)
        self.stage(
            session,
            case,
            case_events_pb2.CaseStatusChanged(
                case_id=case.id,
                reference=case.reference,
                from_status=current,  # type: ignore[arg-type]
                to_status=target,  # type: ignore[arg-type]
                actor=actor,
                reason=reason,
            ),
            f"case-status:{case.id}:{entry.seq}",
            at,
        )
        if target == lifecycle.PENDING:
            await self.sla.pause(self, session, case, at)
        elif current == lifecycle.PENDING and target != lifecycle.RESOLVED:
            await self.sla.resume(self, session, case, at)
        if target == lifecycle.RESOLVED:
            await self.sla.met(self, session, case, "resolution", at)
            for metric in ("first_response", "next_response"):
                await self.sla.cancel(self, session, case, metric, at)
        elif target == lifecycle.CLOSED:
            for metric in ("first_response", "next_response", "resolution"):
                await self.sla.cancel(self, session, case, metric, at)
        elif reopen:
            await self.sla.resume(self, session, case, at, ("resolution",), reopen=True)

    async def resolve(
        self, session: AsyncSession, case: Case, actor: str, at: datetime, reason: str = ""
    ) -> None:
        """A person resolved the case: resolved, then, where the tenant's closure policy asks
        for it (by case type), on to pending_review or pending_confirmation, in the same
        transaction and under the same actor."""
        await self.change_status(session, case, lifecycle.RESOLVED, actor, at, reason)
        rule = self.policies.closure_for(case.tenant, case.case_type)
        if rule is None:
            return
        if rule.require == REVIEW:
            target, why = lifecycle.PENDING_REVIEW, "the closure needs a reviewer's sign-off"
        else:
            target, why = (
                lifecycle.PENDING_CONFIRMATION,
                "the closure needs the customer's confirmation",
            )
        await self.change_status(session, case, target, actor, at, why)

    async def assign(
        self, session: AsyncSession, case: Case, agent_id: str, actor: str, at: datetime
    ) -> None:
        if case.status == lifecycle.CLOSED:
            raise FailedPrecondition(f"case {case.reference} is closed")
        previous = case.assigned_agent_id
        if previous != agent_id:
            case.assigned_agent_id = agent_id
            case.updated_at = at
            entry = await self.audit(
                session, case, actor, "assigned", {"agent_id": agent_id, "previous": previous}, at
            )
            self.stage(
                session,
                case,
                case_events_pb2.CaseAssigned(
                    case_id=case.id, reference=case.reference, agent_id=agent_id, actor=actor
                ),
                f"case-assigned:{case.id}:{entry.seq}",
                at,
            )
        if case.status == lifecycle.NEW:
            await self.change_status(session, case, lifecycle.ASSIGNED, actor, at)

    async def reassign(
        self,
        session: AsyncSession,
        case: Case,
        agent_id: str,
        queue: str,
        actor: str,
        at: datetime,
    ) -> None:
        if queue and queue != case.queue:
            await self.audit(
                session, case, actor, "queue_changed", {"queue": queue, "previous": case.queue}, at
            )
            case.queue = queue
        if agent_id:
            await self.assign(session, case, agent_id, actor, at)

    async def set_priority(
        self, session: AsyncSession, case: Case, priority: int, actor: str, at: datetime
    ) -> None:
        if priority == case.priority:
            return
        await self.audit(
            session,
            case,
            actor,
            "priority_changed",
            {
                "priority": case_pb2.CasePriority.Name(priority),  # type: ignore[arg-type]
                "previous": case_pb2.CasePriority.Name(case.priority),  # type: ignore[arg-type]
            },
            at,
        )
        case.priority = priority
        case.updated_at = at

    async def add_note(
        self, session: AsyncSession, case: Case, author: str, text: str, at: datetime
    ) -> CaseNote:
        note = CaseNote(
            id=new_id(),
            case_id=case.id,
            tenant=case.tenant,
            author=author,
            text=keyring.of(session).seal(session, case.tenant, case.customer_id, text),
            created_at=at,
        )
        session.add(note)
        case.updated_at = at
        await self.audit(session, case, author, "note_added", {"note_id": note.id}, at)
        return note

    async def acted(self, session: AsyncSession, case: Case, actor: str, at: datetime) -> None:
        """A person acted on the case: escalation reminders stop."""
        await self.sla.acknowledge(self, session, case, actor, at)

    async def lock(self, session: AsyncSession, case_id: str) -> Case | None:
        return await session.get(Case, case_id, with_for_update=True)
