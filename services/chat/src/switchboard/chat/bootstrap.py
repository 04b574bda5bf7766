"""The chat's composition root: the only place its adapters are built."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc
import socketio

from switchboard.chat import config as chat_config
from switchboard.chat.adapters.conversations import (
    ConversationStore,
    InMemoryConversations,
    JetStreamConversations,
)
from switchboard.chat.adapters.files import FileStore
from switchboard.chat.adapters.nats_manager import NatsClientManager
from switchboard.chat.adapters.router_client import RouterClient
from switchboard.chat.entrypoints import nats_consumer, socket_server
from switchboard.chat.entrypoints.api import Api
from switchboard.chat.entrypoints.http_server import HttpServer
from switchboard.chat.entrypoints.web import build_asgi
from switchboard.chat.handlers import Chat
from switchboard.chat.inbox import directory as agents_directory
from switchboard.chat.inbox.http import InboxHttp
from switchboard.chat.inbox.service import Inbox
from switchboard.chat.notifier import ChatNotifier
from switchboard.chat.settings import ChatSettings
from switchboard.core import grpc as sb_grpc
from switchboard.core import telemetry
from switchboard.core.bus import Bus

logger = logging.getLogger(__name__)


@dataclass
class ChatApp:
    settings: ChatSettings
    store: ConversationStore | None = None
    bus: Bus | None = None
    sio: socketio.AsyncServer | None = None
    chat: Chat | None = None
    grpc_server: grpc.aio.Server | None = None
    http: HttpServer | None = None
    http_port: int = 0
    grpc_port: int = 0
    config: chat_config.ChatConfig | None = None
    router: RouterClient | None = None
    manager: NatsClientManager | None = None
    inbox: Inbox | None = None

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        s = self.settings
        telemetry.setup_tracing("chat", s.otel_exporter_otlp_endpoint)
        self.config = self.config or chat_config.load(s.config_file or None)
        replicas = s.nats_stream_replicas
        self.bus = await Bus.connect(s.nats_url, source="chat", replicas=replicas)
        if self.store is None:
            if s.store == "jetstream":
                self.store = await JetStreamConversations.open(self.bus.js, replicas)
            else:
                self.store = InMemoryConversations()
        files = await FileStore.open(self.bus.js, replicas)
        self.manager = NatsClientManager(self.bus.nc, s.socketio_subject)
        await self.manager.subscribe()
        # A Socket.IO frame holds one message plus JSON framing; anything far bigger is abuse.
        buffer = max(64 * 1024, 8 * s.max_message_bytes)
        self.sio = socketio.AsyncServer(
            async_mode="asgi",
            client_manager=self.manager,
            max_http_buffer_size=buffer,
            # Origins are checked per tenant at namespace connect, so a refusal has a reason.
            cors_allowed_origins="*",
            logger=False,
            engineio_logger=False,
        )
        self.router = RouterClient(s.router_target, s.auth_secret)
        self.chat = Chat(
            self.store,
            ChatNotifier(self.bus),
            socket_server.SocketDelivery(self.sio),
            s.max_message_bytes,
            s.assignment_wait_seconds,
            router=self.router,
            config=self.config,
        )
        self.inbox = Inbox(
            self.chat,
            self.bus,
            agents_directory.load(s.agents_file or None),
            s.auth_secret,
            s.known_tenants,
            s.router_target,
            s.case_target,
            s.desk_grace_seconds,
        )
        socket_server.register(
            self.sio, self.chat, s.auth_secret, s.known_tenants, self.config, self.inbox
        )
        api = Api(self.chat, files, s.auth_secret, s.known_tenants, self.config)
        nats_consumer.subscribe(self.bus, self.chat, s.consumer_name)
        # Health and reflection only, so `switchboard status` and probes can check the chat.
        self.grpc_server, self.grpc_port, _ = await sb_grpc.start_server(
            [], s.grpc_host, s.grpc_port, s.auth_secret, s.known_tenants, bus=self.bus
        )
        self.http = HttpServer(
            InboxHttp(
                self.inbox,
                build_asgi(
                    self.sio, s.default_tenant, s.max_message_bytes, api=api, config=self.config
                ),
            ),
            s.http_host,
            s.http_port,
            s.shutdown_grace_seconds,
            ws_max_size=buffer,
        )
        await self.http.start()
        self.http_port = self.http.port
        await self.bus.start()
        logger.info("chat gRPC health on %s:%d", s.grpc_host, self.grpc_port)

    async def stop(self) -> None:
        """Close clients, stop HTTP and gRPC, then drain the bus. Safe to call twice."""
        sio, http, server, bus = self.sio, self.http, self.grpc_server, self.bus
        self.sio = self.http = self.grpc_server = self.bus = None
        manager, self.manager = self.manager, None
        router, self.router = self.router, None
        inbox, self.inbox = self.inbox, None
        if sio is not None:
            # Close every client first, so they reconnect (to another replica) instead of
            # keeping uvicorn waiting on open connections.
            try:
                await sio.shutdown()
                if sio.eio.sockets:
                    await sio.eio.disconnect()
            except Exception as exc:
                logger.warning("closing Socket.IO clients: %s", exc)
        if http is not None:
            await http.stop()
        if manager is not None:
            await manager.unsubscribe()
            thread = getattr(manager, "thread", None)
            if thread is not None:
                thread.cancel()
        if inbox is not None:
            await inbox.close()
        if router is not None:
            await router.close()
        if server is not None:
            await sb_grpc.stop_server(server, self.settings.shutdown_grace_seconds)
        if bus is not None:
            await bus.drain()


def bootstrap(settings: ChatSettings | None = None) -> ChatApp:
    return ChatApp(settings or ChatSettings())
