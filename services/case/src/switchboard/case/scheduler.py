"""The case service's clockwork, run every few seconds (and on demand in tests, with a controllable
clock): SLA thresholds, breaches and escalation reminders; resolved cases closed after their
timeout; recurring tasks that open cases by themselves. Each case is handled in a transaction of
its own, so one failing case never holds up the others."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from switchboard.case import customers
from switchboard.case.adapters.database import insert_ignore
from switchboard.case.adapters.orm import Case, ScheduledRun, SlaTimer
from switchboard.case.domain import lifecycle
from switchboard.case.records import CaseRecords
from switchboard.case.sla.engine import RUNNING
from switchboard.case.sla.policy import RecurringTask
from switchboard.case.unit_of_work import Conflict, UnitOfWork
from switchboard.core.errors import InvalidArgument
from switchboard.v1 import contact_pb2

logger = logging.getLogger(__name__)

SCHEDULER = "scheduler"
MAX_CATCH_UP = 12  # missed occurrences of one task opened after downtime, at most


class Scheduler:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        records: CaseRecords,
        clock: Callable[[], datetime],
        on_commit: Callable[[], None] = lambda: None,
    ) -> None:
        self._sessions = sessions
        # One transaction per case; the relays are woken once a round (`run_once`).
        self._uow = UnitOfWork(sessions)
        self.records = records
        self._clock = clock
        self._on_commit = on_commit

    async def run_once(self) -> None:
        """One round: SLA checks, auto-close, recurring tasks (each step survives the others)."""
        now = self._clock()
        for step in (self.check_sla, self.auto_close, self.run_recurring):
            try:
                await step(now)
            except Exception:
                logger.exception("scheduler step %s failed", step.__name__)
        self._on_commit()

    async def run(self, stop: asyncio.Event, interval: float) -> None:
        while not stop.is_set():
            await self.run_once()
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except TimeoutError:
                pass

    async def _each_case(
        self, case_ids: list[str], work: Callable[[AsyncSession, Case], Awaitable[None]]
    ) -> None:
        for case_id in case_ids:

            async def locked(session: AsyncSession, case_id: str = case_id) -> None:
                case = await session.get(Case, case_id, with_for_update=True)
                if case is not None:
                    await work(session, case)

            try:
                await self._uow.run(locked)
            except Conflict:
                logger.info("case %s changed concurrently; checked next round", case_id)
            except InvalidArgument as exc:
                # Refused the same way every round; the other cases go on.
                logger.error("case %s: %s", case_id, exc)

    async def check_sla(self, now: datetime) -> None:
        async with self._sessions() as session:
            case_ids = list(
                await session.scalars(
                    select(SlaTimer.case_id).where(SlaTimer.state == RUNNING).distinct()
                )
            )

        async def work(session: AsyncSession, case: Case) -> None:
            await self.records.sla.check(self.records, session, case, now)

        await self._each_case(sorted(case_ids), work)

    async def auto_close(self, now: datetime) -> None:
        """Resolved cases the customer never confirmed close after the tenant's timeout; so do
        cases pending the customer's confirmation, after their closure rule's `confirm_within`.
        A case pending review waits for its reviewer."""
        policies = self.records.policies

        def after(case: Case) -> timedelta:
            if case.status == lifecycle.PENDING_CONFIRMATION:
                return policies.confirm_within(case.tenant, case.case_type)
            return policies.auto_close(case.tenant)

        shortest = min(
            [policies.auto_close(t) for t in policies.auto_close_after]
            + [r.confirm_within for r in policies.closure if r.confirm_within is not None]
            or [policies.auto_close("")]
        )
        waiting = (lifecycle.RESOLVED, lifecycle.PENDING_CONFIRMATION)
        async with self._sessions() as session:
            cases = list(
                await session.scalars(
                    select(Case).where(Case.status.in_(waiting), Case.resolved_at <= now - shortest)
                )
            )
        due = [c.id for c in cases if c.resolved_at is not None and c.resolved_at + after(c) <= now]

        async def work(session: AsyncSession, case: Case) -> None:
            if case.status not in waiting or case.resolved_at is None:
                return
            wait = after(case)
            if case.resolved_at + wait > now:
                return
            await self.records.change_status(
                session,
                case,
                lifecycle.CLOSED,
                SCHEDULER,
                now,
                reason=f"not confirmed within {_human(wait)} of resolution",
            )

        await self._each_case(due, work)

    async def run_recurring(self, now: datetime) -> None:
        for task in self.records.policies.tasks:
            async with self._sessions() as session:
                last = await session.scalar(
                    select(func.max(ScheduledRun.due_at)).where(
                        ScheduledRun.tenant == task.tenant, ScheduledRun.task == task.name
                    )
                )
            # A task seen for the first time does not open cases for its whole history.
            after = last if last is not None else now - timedelta(days=1)
            for due in task.occurrences(after, now)[-MAX_CATCH_UP:]:
                if not await self._open_recurring(task, due, now):
                    break  # a later occurrence run now would skip this one for good

    async def _open_recurring(self, task: RecurringTask, due: datetime, now: datetime) -> bool:
        """Open the case of one occurrence (or find it opened); False if it is to be tried
        again next round."""
        template = self.records.policies.template(task.tenant, task.template)
        if template is None:
            return True

        async def work(session: AsyncSession) -> None:
            ident = (contact_pb2.IDENTITY_KIND_PARTNER_ID, f"task:{task.name}")
            customer = await customers.resolve(
                session, task.tenant, [ident], task.name, now, SCHEDULER
            )
            case = await self.records.open_case(
                session,
                customer,
                SCHEDULER,
                now,
                subject=f"{template.subject} ({due.date().isoformat()})",
                case_type=template.case_type,
                priority=template.priority,
                queue=template.queue,
                template=template.name,
                extra={"task": task.name, "due_at": due.isoformat()},
            )
            # The key (tenant, task, due) makes one occurrence open one case, on any replica.
            if not await insert_ignore(
                session,
                ScheduledRun,
                {
                    "tenant": task.tenant,
                    "task": task.name,
                    "due_at": due,
                    "case_id": case.id,
                    "created_at": now,
                },
                ["tenant", "task", "due_at"],
            ):
                raise _AlreadyRun()
            if template.note:
                await self.records.add_note(session, case, SCHEDULER, template.note, now)
            logger.info("recurring task %s opened case %s", task.name, case.id)

        try:
            await self._uow.run(work)
        except _AlreadyRun:
            pass
        except Conflict:
            logger.info("recurring task %s changed concurrently; tried next round", task.name)
            return False
        except InvalidArgument as exc:
            logger.error("recurring task %s: %s", task.name, exc)
            return False
        return True


class _AlreadyRun(Exception):
    """Another replica opened this occurrence first: roll ours back."""


def _human(d: timedelta) -> str:
    seconds = int(d.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
