"""A service that is deployed and healthy but has no work yet (its channel is not built).

It connects to NATS (so health means the bus is reachable) and serves gRPC health and
reflection, and nothing else. It says so in its log at start.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc

from switchboard.core import grpc as sb_grpc
from switchboard.core.bus import Bus
from switchboard.core.settings import ServiceSettings

logger = logging.getLogger(__name__)


@dataclass
class IdleServiceApp:
    name: str
    settings: ServiceSettings
    bus: Bus | None = None
    server: grpc.aio.Server | None = None
    port: int = 0

    async def start(self) -> None:
        s = self.settings
        self.bus = await Bus.connect(
            s.nats_url, source=self.name, replicas=s.nats_stream_replicas, **s.nats_options()
        )
        self.server, self.port, _ = await sb_grpc.start_service_server(s, [], bus=self.bus)
        logger.warning(
            "%s has no channel to serve yet: it reports healthy on gRPC %s:%d and does nothing else",
            self.name,
            s.grpc_host,
            self.port,
        )

    async def stop(self) -> None:
        if self.server:
            await sb_grpc.stop_server(self.server, self.settings.shutdown_grace_seconds)
        if self.bus:
            await self.bus.drain()
