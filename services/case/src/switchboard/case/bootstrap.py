"""The case service's composition root: the only place its adapters are built."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import ClassVar

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from switchboard.case.adapters import backfill, database, keyring
from switchboard.case.adapters.mailer import Mailer, NoMailer, SmtpMailer
from switchboard.case.adapters.orm import utc_now
from switchboard.case.commands import CaseCommands
from switchboard.case.entrypoints import nats_consumer
from switchboard.case.entrypoints.grpc_server import CaseServicer
from switchboard.case.entrypoints.kb_reports_rpc import build_kb_reports, subscribe_kb_reports
from switchboard.case.handlers import CaseHandlers
from switchboard.case.mail_outbox import MailRelay
from switchboard.case.migrate import migrate
from switchboard.case.object_erasure import ObjectEraser
from switchboard.case.outbox import OutboxRelay
from switchboard.case.pagination import PageTokens
from switchboard.case.portal import Portal
from switchboard.case.records import CaseRecords
from switchboard.case.scheduler import Scheduler
from switchboard.case.settings import CaseSettings
from switchboard.case.sla import live as live_policies
from switchboard.case.sla import policy as sla_policy
from switchboard.case.sla.engine import SlaEngine
from switchboard.case.views import CaseViews
from switchboard.core import sender_keys, stores, stream_erasure, tasks
from switchboard.core.bus import Bus
from switchboard.core.service import Service, Servicers
from switchboard.v1 import case_pb2, case_pb2_grpc

logger = logging.getLogger(__name__)


def build_mailer(s: CaseSettings) -> Mailer:
    if not s.smtp_host:
        return NoMailer()
    return SmtpMailer(
        s.smtp_host, s.smtp_port, s.smtp_from, s.smtp_username, s.smtp_password, s.smtp_starttls
    )


@dataclass
class CaseApp(Service):
    """The case service; a `bus` given here is used instead of a connection of its own."""

    name: ClassVar[str] = "case"
    settings: CaseSettings
    # Tests pass a controllable clock; `run_scheduler=False` leaves the rounds to them.
    clock: Callable[[], datetime] = utc_now
    run_scheduler: bool = True
    engine: AsyncEngine | None = None
    sessions: async_sessionmaker[AsyncSession] | None = None
    handlers: CaseHandlers | None = None
    records: CaseRecords | None = None
    scheduler: Scheduler | None = None
    relay: OutboxRelay | None = None
    policies: sla_policy.Policies | None = None
    live: live_policies.LivePolicies | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.grpc_port

    async def _load(self) -> None:
        s = self.settings
        self.policies = sla_policy.load(s.policy_file or None)  # a bad file stops the start
        await migrate(s.database_url)
        self.engine = database.create_engine(s.database_url)
        keys = keyring.Keyring(
            keyring.master_keys_from(s.master_key, s.master_key_file, s.previous_master_key_files)
        )
        self.sessions = database.sessionmaker(self.engine, keys)
        await keys.rotate(self.sessions)
        await backfill.seal_existing(self.sessions)

    async def _build(self, bus: Bus) -> Servicers:
        s = self.settings
        assert self.sessions is not None and self.policies is not None and self.engine is not None
        eraser = ObjectEraser(
            self.sessions,
            stores.ObjectStores(bus.js),
            self.clock,
            partial(stream_erasure.erase_contacts, bus.js),
        )
        # The file's policies, with the tenants' parts changed at run time (admin console).
        self.live = await live_policies.LivePolicies.open(
            bus.js, self.policies, live_policies.file_document(s.policy_file or None)
        )
        await self.live.watch()
        mail = MailRelay(self.sessions, build_mailer(s))
        self.relay = OutboxRelay(self.sessions, bus, mail, eraser)
        sla = SlaEngine(self.policies, mail=bool(s.smtp_host))
        self.records = CaseRecords(self.policies, sla, self.clock)
        self.handlers = CaseHandlers(
            self.sessions, s.consumer_name, self.clock, self.records, self.relay.wake
        )
        nats_consumer.subscribe(
            bus,
            self.handlers,
            s.consumer_name,
            s.consumer_ack_wait_seconds,
            s.batch_for(self.engine.dialect.name),
        )
        kb_reports = build_kb_reports(
            self.sessions,
            bus,
            s.consumer_name,
            calendar_for=self.policies.business_calendar,  # changed in place by self.live
            clock=self.clock,
            objects=stores.ObjectStores(bus.js),
            zone_for=self.policies.time_zone,
        )
        subscribe_kb_reports(bus, kb_reports, s.consumer_name)
        self.scheduler = Scheduler(self.sessions, self.records, self.clock, self.relay.wake)
        views = CaseViews(self.sessions, sla, self.clock)
        servicer = CaseServicer(
            views,
            PageTokens(s.auth_secret),
            CaseCommands(
                self.sessions,
                self.records,
                self.clock,
                self.relay.wake,
                sender_keys.secret_key(s.auth_secret),
            ),
        )
        servicer.kb_reports = kb_reports
        servicer.live_policies = self.live
        servicer.portal = Portal(
            self.sessions, views, build_mailer(s), s.auth_secret, self.policies, self.clock
        )
        return [
            (
                case_pb2_grpc.add_CaseServiceServicer_to_server,
                servicer,
                case_pb2.DESCRIPTOR.services_by_name["CaseService"].full_name,
            )
        ]

    async def _started(self) -> None:
        assert self.relay is not None and self.scheduler is not None
        self._tasks.append(asyncio.create_task(self.relay.run(self._stop)))
        if self.run_scheduler:
            interval = self.settings.scheduler_interval_seconds
            self._tasks.append(asyncio.create_task(self.scheduler.run(self._stop, interval)))
        logger.info("case gRPC on %s:%d", self.settings.grpc_host, self.grpc_port)

    async def _stop_taking(self) -> None:
        self._stop.set()
        if self.relay:
            self.relay.wake()
        if self._tasks:
            # Past the grace, what is left is cancelled: a relay waiting on an ack or a lock
            # must not hold the shutdown (the outbox keeps what it had not published).
            await asyncio.wait(self._tasks, timeout=self.settings.shutdown_grace_seconds)
            await tasks.cancel_and_wait(*self._tasks)  # those done: their errors logged
        self._tasks.clear()

    async def _flush(self) -> None:
        if self.relay:
            with contextlib.suppress(Exception):
                await self.relay.drain()  # events and mails staged by the last changes

    async def _close(self) -> None:
        live, self.live = self.live, None
        if live is not None:
            await live.stop()
        engine, self.engine = self.engine, None
        if engine is not None:
            await engine.dispose()


def bootstrap(
    settings: CaseSettings | None = None,
    clock: Callable[[], datetime] = utc_now,
    run_scheduler: bool = True,
) -> CaseApp:
    return CaseApp(settings or CaseSettings(), clock=clock, run_scheduler=run_scheduler)
