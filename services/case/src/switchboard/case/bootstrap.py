"""The case service's composition root: the only place its adapters are built."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from switchboard.case.adapters import database
from switchboard.case.entrypoints import nats_consumer
from switchboard.case.entrypoints.grpc_server import CaseServicer
from switchboard.case.handlers import CaseHandlers
from switchboard.case.migrate import migrate
from switchboard.case.pagination import PageTokens
from switchboard.case.settings import CaseSettings
from switchboard.case.views import CaseViews
from switchboard.core import grpc as sb_grpc
from switchboard.core import telemetry
from switchboard.core.bus import Bus
from switchboard.v1 import case_pb2, case_pb2_grpc

logger = logging.getLogger(__name__)


@dataclass
class CaseApp:
    settings: CaseSettings
    engine: AsyncEngine | None = None
    sessions: async_sessionmaker[AsyncSession] | None = None
    bus: Bus | None = None
    handlers: CaseHandlers | None = None
    server: grpc.aio.Server | None = None
    port: int = 0

    async def start(self) -> None:
        s = self.settings
        telemetry.setup_tracing("case", s.otel_exporter_otlp_endpoint)
        await migrate(s.database_url)
        self.engine = database.create_engine(s.database_url)
        self.sessions = database.sessionmaker(self.engine)
        self.bus = await Bus.connect(s.nats_url, source="case")
        self.handlers = CaseHandlers(self.sessions, s.consumer_name)
        nats_consumer.subscribe(self.bus, self.handlers, s.consumer_name)
        self.server, self.port, _ = await sb_grpc.start_server(
            [
                (
                    case_pb2_grpc.add_CaseServiceServicer_to_server,
                    CaseServicer(CaseViews(self.sessions), PageTokens(s.auth_secret)),
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
        logger.info("case gRPC on %s:%d", s.grpc_host, self.port)

    async def stop(self) -> None:
        if self.server:
            await self.server.stop(self.settings.shutdown_grace_seconds)
        if self.bus:
            await self.bus.drain()
        if self.engine:
            await self.engine.dispose()


def bootstrap(settings: CaseSettings | None = None) -> CaseApp:
    return CaseApp(settings or CaseSettings())
