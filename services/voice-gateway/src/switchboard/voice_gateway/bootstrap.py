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
from switchboard.voice_gateway.entrypoints.sip_server import SipServer
from switchboard.voice_gateway.handlers.agent_leg import AgentLeg
from switchboard.voice_gateway.handlers.call_flow import CallFlow
from switchboard.voice_gateway.handlers.gateway import Gateway
from switchboard.voice_gateway.media.prompts import Prompts
from switchboard.voice_gateway.media.rtp import MediaEngine
from switchboard.voice_gateway.notifier import VoiceNotifier
from switchboard.voice_gateway.settings import VoiceGatewaySettings
from switchboard.voice_gateway.sip.keepalive import Keepalive
from switchboard.voice_gateway.sip.registrar import Registrar
from switchboard.voice_gateway.sip.transactions import TransactionLayer

logger = logging.getLogger(__name__)


@dataclass
class VoiceGatewayApp:
    """The gateway's parts; `bus`, `sip`, `media` and `router` given here are used instead of
    the real ones (and are closed by `stop()` like them)."""

    settings: VoiceGatewaySettings
    bus: Bus | None = None
    sip: TransactionLayer | None = None
    media: MediaEngine | None = None
    gateway: Gateway | None = None
    router: RouterClient | None = None
    keepalive: Keepalive | None = None
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
        if self.bus is None:
            self.bus = await Bus.connect(
                s.nats_url, source="voice-gateway", replicas=s.nats_stream_replicas
            )
        self.sip = self.sip or TransactionLayer(s.sip_host, s.advertised_host or s.sip_host)
        self.media = self.media or MediaEngine(s.media_host or s.sip_host)
        self.router = self.router or RouterClient(s.router_addr, s.auth_secret)
        registrar = Registrar(cfg.realm, cfg.phones)
        self.gateway = Gateway(
            cfg,
            self.sip,
            self.media,
            prompts,
            VoiceNotifier(self.bus),
            self.router,
            registrar,
            max_calls=s.max_calls,
            retry_after=s.retry_after_seconds,
            ring_timeout=s.ring_timeout_seconds,
            position_poll=s.position_poll_seconds,
        )
        flow = CallFlow(self.gateway)
        agent_leg = AgentLeg(self.gateway, flow)
        SipServer(self.gateway, flow, agent_leg).serve()
        self.keepalive = Keepalive(self.sip, registrar, s.options_ping_seconds)
        tls = None
        if s.sip_tls_cert:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(s.sip_tls_cert, s.sip_tls_key or None)
        await self.sip.transport.start(s.sip_port, s.sip_tls_port if tls else None, tls)
        self.sip_port = self.sip.port
        self.tls_port = self.sip.transport.ports.get("tls", 0)
        self.media.start()
        self.keepalive.start()
        durable = s.consumer_name + (f"-{s.replica_id}" if s.replica_id else "")
        nats_consumer.subscribe(self.bus, agent_leg, durable)
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
        server, bus, keepalive = self.grpc_server, self.bus, self.keepalive
        self.gateway = self.sip = self.media = self.router = None
        self.grpc_server = self.bus = self.keepalive = None
        if keepalive is not None:
            await keepalive.stop()
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


def bootstrap(
    settings: VoiceGatewaySettings | None = None,
    *,
    bus: Bus | None = None,
    sip: TransactionLayer | None = None,
    media: MediaEngine | None = None,
    router: RouterClient | None = None,
) -> VoiceGatewayApp:
    """The gateway, with the real adapters for those not given."""
    return VoiceGatewayApp(
        settings or VoiceGatewaySettings(), bus=bus, sip=sip, media=media, router=router
    )
