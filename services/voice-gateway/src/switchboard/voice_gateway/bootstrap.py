"""The voice gateway's composition root: the only place its adapters are built."""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from switchboard.core import stores, tasks
from switchboard.core.bus import Bus
from switchboard.core.service import Service, Servicers
from switchboard.voice_gateway import config as voice_config
from switchboard.voice_gateway.adapters import RouterClient
from switchboard.voice_gateway.adapters.replicas import NatsReplicas
from switchboard.voice_gateway.entrypoints import nats_consumer
from switchboard.voice_gateway.entrypoints.grpc_server import VoiceServicer, registration
from switchboard.voice_gateway.entrypoints.sip_server import SipServer
from switchboard.voice_gateway.handlers.agent_leg import AgentLeg
from switchboard.voice_gateway.handlers.call_flow import CallFlow
from switchboard.voice_gateway.handlers.gateway import Gateway
from switchboard.voice_gateway.handlers.supervision import Supervision
from switchboard.voice_gateway.media.prompts import Prompts
from switchboard.voice_gateway.media.rtp import MediaEngine
from switchboard.voice_gateway.notifier import VoiceNotifier
from switchboard.voice_gateway.recording.calls import CallRecordings
from switchboard.voice_gateway.recording.store import RecordingStore
from switchboard.voice_gateway.settings import VoiceGatewaySettings
from switchboard.voice_gateway.sip.keepalive import Keepalive
from switchboard.voice_gateway.sip.registrar import Registrar
from switchboard.voice_gateway.sip.transactions import TransactionLayer

logger = logging.getLogger(__name__)


@dataclass
class VoiceGatewayApp(Service):
    """The gateway's parts; `bus`, `sip`, `media` and `router` given here are used instead of
    the real ones (and are closed by `stop()` like them)."""

    name: ClassVar[str] = "voice-gateway"
    settings: VoiceGatewaySettings
    sip: TransactionLayer | None = None
    media: MediaEngine | None = None
    gateway: Gateway | None = None
    router: RouterClient | None = None
    keepalive: Keepalive | None = None
    sip_port: int = 0
    tls_port: int = 0
    config: voice_config.VoiceConfig | None = None
    prompts: Prompts | None = None
    recordings: RecordingStore | None = None
    _purging: asyncio.Task[None] | None = None

    async def _load(self) -> None:
        s = self.settings
        cfg = self.config = voice_config.load(s.config_path)
        self.prompts = Prompts(
            Path(s.prompts_dir),
            cache_dir=Path(s.prompt_cache_dir) if s.prompt_cache_dir else None,
            overrides=Path(cfg.prompt_overrides) if cfg.prompt_overrides else None,
            music_on_hold=Path(cfg.music_on_hold) if cfg.music_on_hold else None,
            espeak=s.espeak,
        )
        # espeak-ng runs in threads: the event loop (and any other service in the process)
        # goes on meanwhile.
        await asyncio.to_thread(self.prompts.load, tuple(cfg.prompts), cfg.prompt_keys)

    async def _build(self, bus: Bus) -> Servicers:
        s, cfg = self.settings, self.config
        assert cfg is not None and self.prompts is not None
        self.sip = self.sip or TransactionLayer(s.sip_host, s.advertised_host or s.sip_host)
        self.media = self.media or MediaEngine(s.media_host or s.sip_host)
        self.router = self.router or RouterClient(
            s.router_targets(s.router_addr), s.auth_secret, s.grpc_tls()
        )
        registrar = Registrar(cfg.realm, cfg.phones)
        keys = s.recording_keys()
        logger.info(
            "recordings sealed under the key %s; %d old keys open older ones",
            keys.current_id,
            len(keys.old),
        )
        self.recordings = RecordingStore(
            stores.ObjectStores(bus.js, s.nats_stream_replicas), bus, cfg.recording, keys
        )
        self.gateway = Gateway(
            cfg,
            self.sip,
            self.media,
            self.prompts,
            VoiceNotifier(bus),
            self.router,
            registrar,
            max_calls=s.max_calls,
            retry_after=s.retry_after_seconds,
            ring_timeout=s.ring_timeout_seconds,
            position_poll=s.position_poll_seconds,
            recordings=CallRecordings(cfg.recording, self.recordings, s.recordings_dir or None),
        )
        flow = CallFlow(self.gateway)
        agent_leg = AgentLeg(self.gateway, flow)
        replicas = NatsReplicas(bus.nc, s.replica_lookup_seconds)
        supervision = Supervision(self.gateway, replicas)
        SipServer(self.gateway, flow, agent_leg, supervision).serve()
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
        self._purging = asyncio.create_task(self.recordings.purge_forever())
        durable = s.consumer_name + (f"-{s.replica_id}" if s.replica_id else "")
        nats_consumer.subscribe(bus, agent_leg, durable)
        await nats_consumer.answer_replicas(replicas, supervision)
        return [registration(VoiceServicer(supervision))]  # type: ignore[list-item]

    async def _started(self) -> None:
        s = self.settings
        logger.info(
            "voice gateway: SIP on %s:%d (UDP/TCP%s), gRPC on %d",
            s.sip_host,
            self.sip_port,
            f", TLS {self.tls_port}" if self.tls_port else "",
            self.grpc_port,
        )

    async def _stop_taking(self) -> None:
        """Hang up live calls, close SIP, media and the router client (then gRPC stops and the
        bus drains)."""
        gateway, sip, media, keepalive = self.gateway, self.sip, self.media, self.keepalive
        self.gateway = self.sip = self.media = self.keepalive = None
        if keepalive is not None:
            await keepalive.stop()
        await tasks.cancel_and_wait(self._purging)
        if gateway is not None:
            await gateway.stop()
        if sip is not None:
            await sip.transport.stop()
        if media is not None:
            await media.stop()
        router, self.router = self.router, None
        if router is not None:
            await router.close()


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
