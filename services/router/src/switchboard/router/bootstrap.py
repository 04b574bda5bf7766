"""The router's composition root: the only place its adapters are built."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc

from switchboard.core import grpc as sb_grpc
from switchboard.core import telemetry
from switchboard.core.bus import Bus
from switchboard.router.domain.model import Engine
from switchboard.router.entrypoints import nats_consumer
from switchboard.router.entrypoints.grpc_server import RouterServicer
from switchboard.router.handlers import Router, wall_clock
from switchboard.router.notifier import RoutingNotifier
from switchboard.router.settings import RouterSettings
from switchboard.v1 import router_pb2, router_pb2_grpc

logger = logging.getLogger(__name__)


@dataclass
class RouterApp:
    settings: RouterSettings
    bus: Bus | None = None
    router: Router | None = None
    server: grpc.aio.Server | None = None
    port: int = 0

    async def start(self) -> None:
        s = self.settings
        telemetry.setup_tracing("router", s.otel_exporter_otlp_endpoint)
        self.bus = await Bus.connect(s.nats_url, source="router")
        engine = Engine(wall_clock, accept_timeout=s.accept_timeout_seconds)
        self.router = Router(engine, RoutingNotifier(self.bus))
        nats_consumer.subscribe(self.bus, self.router, s.consumer_name)
        self.server, self.port, _ = await sb_grpc.start_server(
            [
                (
                    router_pb2_grpc.add_RouterServiceServicer_to_server,
                    RouterServicer(self.router),
                    router_pb2.DESCRIPTOR.services_by_name["RouterService"].full_name,
                )
            ],
            s.grpc_host,
            s.grpc_port,
            s.auth_secret,
            s.known_tenants,
            bus=self.bus,
        )
        await self.bus.start()
        logger.info("router gRPC on %s:%d", s.grpc_host, self.port)

    async def stop(self) -> None:
        if self.router:
            self.router.close_streams()
        if self.server:
            await self.server.stop(self.settings.shutdown_grace_seconds)
        if self.bus:
            await self.bus.drain()


def bootstrap(settings: RouterSettings | None = None) -> RouterApp:
    return RouterApp(settings or RouterSettings())
