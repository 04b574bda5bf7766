"""The voice gateway's composition root: the only place its adapters are built."""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc

from switchboard.core import grpc as sb_grpc
from switchboard.core import telemetry
from switchboard.core.bus import Bus
from switchboard.voice_gateway import config as voice_config
from switchboard.voice_gateway.adapters import RouterClient
from switchboard.voice_gateway.entrypoints import nats_consumer
from switchboard.voice_gateway.gateway import Gateway
from switchboard.voice_gateway.media.prompts import Prompts
from switchboard.voice_gateway.media.rtp import MediaEngine
from switchboard.voice_gateway.notifier import VoiceNotifier
from switchboard.voice_gateway.settings import VoiceGatewaySettings
from switchboard.voice_gateway.sip.transactions import TransactionLayer

logger = logging.getLogger(__name__)


@dataclass
class VoiceGatewayApp:
    settings: VoiceGatewaySettings
    bus: Bus | None = None
    sip: TransactionLayer | None = None
    media: MediaEngine | None = None
    gateway: Gateway | None = None
    router: RouterClient | None = None
    grpc_server: grpc.aio.Server | None = None
    grpc_port: int = 0
    sip_port: int = 0
    tls_port: int = 0

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        s = self.settings
        telemetry.setup_tracing("voice-gateway", s.otel_exporter_otlp_endpoint)
        cfg = voice_config.load(s.config_path)
        prompts = Prompts(Path(s.prompts_dir))
        prompts.load(tuple(cfg.prompts))
        self.bus = await Bus.connect(
            s.nats_url, source="voice-gateway", replicas=s.nats_stream_replicas
        )
        advertised = s.advertised_host or s.sip_host
        self.sip = TransactionLayer(s.sip_host, advertised)
        self.media = MediaEngine(s.media_host or s.sip_host)
        self.router = RouterClient(s.router_addr, s.auth_secret)
        self.gateway = Gateway(
            cfg,
            self.sip,
            self.media,
            prompts,
            VoiceNotifier(self.bus),
            self.router,
            max_calls=s.max_calls,
            retry_after=s.retry_after_seconds,
            ring_timeout=s.ring_timeout_seconds,
            position_poll=s.position_poll_seconds,
            options_ping=s.options_ping_seconds,
        )
        tls = None
        if s.sip_tls_cert:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(s.sip_tls_cert, s.sip_tls_key or None)
        await self.sip.transport.start(s.sip_port, s.sip_tls_port if tls else None, tls)
        self.sip_port = self.sip.port
        self.tls_port = self.sip.transport.ports.get("tls", 0)
        self.media.start()
        self.gateway.start()
        durable = s.consumer_name + (f"-{s.replica_id}" if s.replica_id else "")
        nats_consumer.subscribe(self.bus, self.gateway, durable)
        self.grpc_server, self.grpc_port, _ = await sb_grpc.start_server(
            [], s.grpc_host, s.grpc_port, s.auth_secret, s.known_tenants, bus=self.bus
        )
        await self.bus.start()
        logger.info(
            "voice gateway: SIP on %s:%d (UDP/TCP%s), gRPC health on %d",
            s.sip_host,
            self.sip_port,
            f", TLS {self.tls_port}" if self.tls_port else "",
            self.grpc_port,
        )

    async def stop(self) -> None:
        """Hang up live calls, close SIP and media, stop gRPC, then drain the bus."""
        gateway, sip, media, router = self.gateway, self.sip, self.media, self.router
        server, bus = self.grpc_server, self.bus
        self.gateway = self.sip = self.media = self.router = None
        self.grpc_server = self.bus = None
        if gateway is not None:
            await gateway.stop()
        if sip is not None:
            await sip.transport.stop()
        if media is not None:
            await media.stop()
        if server is not None:
            await sb_grpc.stop_server(server, self.settings.shutdown_grace_seconds)
        if router is not None:
            await router.close()
        if bus is not None:
            await bus.drain()


def bootstrap(settings: VoiceGatewaySettings | None = None) -> VoiceGatewayApp:
    return VoiceGatewayApp(settings or VoiceGatewaySettings())
