"""The case service's composition root: the only place its adapters are built."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import grpc
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from switchboard.case.adapters import database
from switchboard.case.adapters.mailer import Mailer, NoMailer, SmtpMailer
from switchboard.case.adapters.orm import utc_now
from switchboard.case.commands import CaseCommands
from switchboard.case.entrypoints import nats_consumer
from switchboard.case.entrypoints.grpc_server import CaseServicer
from switchboard.case.entrypoints.kb_reports_rpc import build_kb_reports, subscribe_kb_reports
from switchboard.case.handlers import CaseHandlers
from switchboard.case.mail_outbox import MailRelay
from switchboard.case.migrate import migrate
from switchboard.case.outbox import OutboxRelay
from switchboard.case.pagination import PageTokens
from switchboard.case.records import CaseRecords
from switchboard.case.scheduler import Scheduler
from switchboard.case.settings import CaseSettings
from switchboard.case.sla import policy as sla_policy
from switchboard.case.sla.engine import SlaEngine
from switchboard.case.views import CaseViews
from switchboard.core import grpc as sb_grpc
from switchboard.core import telemetry
from switchboard.core.bus import Bus
from switchboard.v1 import case_pb2, case_pb2_grpc

logger = logging.getLogger(__name__)


def build_mailer(s: CaseSettings) -> Mailer:
    if not s.smtp_host:
        return NoMailer()
    return SmtpMailer(
        s.smtp_host, s.smtp_port, s.smtp_from, s.smtp_username, s.smtp_password, s.smtp_starttls
    )


@dataclass
class CaseApp:
    settings: CaseSettings
    # Tests pass a controllable clock; `run_scheduler=False` leaves the rounds to them.
    clock: Callable[[], datetime] = utc_now
    run_scheduler: bool = True
    engine: AsyncEngine | None = None
    sessions: async_sessionmaker[AsyncSession] | None = None
    bus: Bus | None = None
    handlers: CaseHandlers | None = None
    records: CaseRecords | None = None
    scheduler: Scheduler | None = None
    relay: OutboxRelay | None = None
    server: grpc.aio.Server | None = None
    port: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        s = self.settings
        telemetry.setup_tracing("case", s.otel_exporter_otlp_endpoint)
        policies = sla_policy.load(s.policy_file or None)
        await migrate(s.database_url)
        self.engine = database.create_engine(s.database_url)
        self.sessions = database.sessionmaker(self.engine)
        self.bus = await Bus.connect(s.nats_url, source="case", replicas=s.nats_stream_replicas)
        self.relay = OutboxRelay(self.sessions, self.bus, MailRelay(self.sessions, build_mailer(s)))
        sla = SlaEngine(policies, mail=bool(s.smtp_host))
        self.records = CaseRecords(policies, sla, self.clock)
        self.handlers = CaseHandlers(
            self.sessions, s.consumer_name, self.clock, self.records, self.relay.wake
        )
        nats_consumer.subscribe(
            self.bus, self.handlers, s.consumer_name, s.consumer_ack_wait_seconds
        )
        kb_reports = build_kb_reports(self.sessions, self.bus, s.consumer_name)
        subscribe_kb_reports(self.bus, kb_reports, s.consumer_name)
        self.scheduler = Scheduler(self.sessions, self.records, self.clock, self.relay.wake)
        servicer = CaseServicer(
            CaseViews(self.sessions, sla, self.clock),
            PageTokens(s.auth_secret),
            CaseCommands(self.sessions, self.records, self.clock, self.relay.wake),
        )
        servicer.kb_reports = kb_reports
        self.server, self.port, _ = await sb_grpc.start_server(
            [
                (
                    case_pb2_grpc.add_CaseServiceServicer_to_server,
                    servicer,
                    case_pb2.DESCRIPTOR.services_by_name["CaseService"].full_name,
                )
            ],
            s.grpc_host,
            s.grpc_port,
            s.auth_secret,
            s.known_tenants,
            bus=self.bus,
        )
        await self.bus.start()
        self._tasks.append(asyncio.create_task(self.relay.run(self._stop)))
        if self.run_scheduler:
            self._tasks.append(
                asyncio.create_task(self.scheduler.run(self._stop, s.scheduler_interval_seconds))
            )
        logger.info("case gRPC on %s:%d", s.grpc_host, self.port)

    async def stop(self) -> None:
        self._stop.set()
        if self.relay:
            self.relay.wake()
        for task in self._tasks:
            # Past the grace, wait_for cancels the task: a relay waiting on an ack or a lock
            # must not hold the shutdown (the outbox keeps what it had not published).
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, self.settings.shutdown_grace_seconds)
        if self.server:
            await sb_grpc.stop_server(self.server, self.settings.shutdown_grace_seconds)
        if self.bus:
            with contextlib.suppress(Exception):
                if self.relay:
                    await self.relay.drain()  # events and mails staged by the last changes
            await self.bus.drain()
        if self.engine:
            await self.engine.dispose()


def bootstrap(
    settings: CaseSettings | None = None,
    clock: Callable[[], datetime] = utc_now,
    run_scheduler: bool = True,
) -> CaseApp:
    return CaseApp(settings or CaseSettings(), clock=clock, run_scheduler=run_scheduler)
