"""The chat's composition root: the only place its adapters are built."""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass
from functools import partial
from typing import ClassVar

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
from switchboard.chat.adapters.shared_limits import SharedSpending
from switchboard.chat.admin.console import AdminConsole
from switchboard.chat.admin.http import AdminHttp
from switchboard.chat.admin.store import AdminStore
from switchboard.chat.entrypoints import nats_consumer, socket_server
from switchboard.chat.entrypoints.api import Api
from switchboard.chat.entrypoints.clients import trusted_networks
from switchboard.chat.entrypoints.engine import LeanSocketServer
from switchboard.chat.entrypoints.http_server import HttpServer
from switchboard.chat.entrypoints.socket_common import ChatLimits, cors_allows
from switchboard.chat.entrypoints.web import build_asgi
from switchboard.chat.handlers import Chat
from switchboard.chat.inbox import directory as agents_directory
from switchboard.chat.inbox.http import InboxHttp
from switchboard.chat.inbox.oidc import OidcSignIn
from switchboard.chat.inbox.service import Inbox
from switchboard.chat.notifier import ChatNotifier
from switchboard.chat.portal.http import PortalHttp
from switchboard.chat.portal.service import Portal
from switchboard.chat.portal.used_links import InMemoryUsedLinks, JetStreamUsedLinks, UsedLinks
from switchboard.chat.settings import ChatSettings
from switchboard.core import tls
from switchboard.core.bus import Bus
from switchboard.core.service import Service, Servicers

logger = logging.getLogger(__name__)

# Young objects the collector lets accumulate before a young collection (CPython's default: 700).
# A busy chat allocates a hundred or so per message, nearly all short-lived; with a larger young
# generation fewer of them outlive two young collections and reach the oldest generation, and a
# full collection (which walks every socket's objects: hundreds of milliseconds at 2,000 sockets)
# comes about thirty times less often.
YOUNG_COLLECTION_THRESHOLD = 20_000


def tune_collector() -> None:
    """Take everything alive after start-up (modules, configuration, the adapters) out of the
    collector's generations, so no collection walks it again, and collect young objects less
    often. Full collections still run (sockets that left may hold reference cycles)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(max(YOUNG_COLLECTION_THRESHOLD, gc.get_threshold()[0]), middle, old)


@dataclass
class ChatApp(Service):
    """The chat; a `bus` and a `store` given here are used instead of the real ones."""

    name: ClassVar[str] = "chat"
    settings: ChatSettings
    store: ConversationStore | None = None
    sio: socketio.AsyncServer | None = None
    chat: Chat | None = None
    http: HttpServer | None = None
    http_port: int = 0
    config: chat_config.ChatConfig | None = None
    router: RouterClient | None = None
    manager: NatsClientManager | None = None
    inbox: Inbox | None = None
    limits: ChatLimits | None = None
    spending: SharedSpending | None = None
    admin: AdminConsole | None = None
    portal: Portal | None = None

    async def _load(self) -> None:
        self.config = self.config or chat_config.load(self.settings.config_file or None)

    async def _build(self, bus: Bus) -> Servicers:
        s = self.settings
        assert self.config is not None  # read by _load
        replicas = s.nats_stream_replicas
        if self.store is None:
            if s.store == "jetstream":
                self.store = await JetStreamConversations.open(bus.js, replicas)
            else:
                self.store = InMemoryConversations()
        files = await FileStore.open(bus.js, replicas)
        self.manager = NatsClientManager(bus.nc, s.socketio_subject)
        await self.manager.subscribe()
        self.limits = ChatLimits(self.config.limits, trusted_networks(s.trusted_proxies))
        self.spending = SharedSpending(bus.nc, self.limits.limiter, f"{s.socketio_subject}.limits")
        await self.spending.start()
        # A Socket.IO frame holds one message plus JSON framing; anything far bigger is abuse.
        buffer = max(64 * 1024, 8 * s.max_message_bytes)
        self.sio = LeanSocketServer(
            async_mode="asgi",
            client_manager=self.manager,
            max_http_buffer_size=buffer,
            # The handshake is open to the chat's own origin and the tenants' configured ones;
            # which tenant's origins apply is checked at namespace connect, with a reason.
            cors_allowed_origins=partial(cors_allows, config=self.config),
            cors_credentials=False,  # sockets authenticate with tokens, never with cookies
            logger=False,
            engineio_logger=False,
        )
        router_target = s.router_targets(s.router_target)
        self.router = RouterClient(router_target, s.auth_secret, s.grpc_tls())
        self.chat = Chat(
            self.store,
            ChatNotifier(bus),
            socket_server.SocketDelivery(self.sio),
            s.max_message_bytes,
            s.assignment_wait_seconds,
            router=self.router,
            config=self.config,
        )
        self.inbox = Inbox(
            self.chat,
            bus,
            agents_directory.load(s.agents_file or None),
            s.auth_secret,
            s.known_tenants,
            router_target,
            s.case_target,
            s.desk_grace_seconds,
            surge_of=self.router.surge,
            token_max_lifetime=s.token_max_lifetime,
            revocations=self.revocations,
            tls=s.grpc_tls(),
            time_zone_of=lambda tenant: self.config.tenant(tenant).time_zone,  # type: ignore[union-attr]
            recording_key=s.recording_keys(),
            voice_targets=s.voice_targets(),
            voice_service=s.voice_service,
            supervise_timeout=s.voice_supervise_timeout_seconds,
        )
        await self.inbox.calls.follow(bus.nc, f"{s.socketio_subject}.calls")
        await self.inbox.follow(bus.nc, f"{s.socketio_subject}.desks")
        socket_server.register(
            self.sio,
            self.chat,
            s.auth_secret,
            s.known_tenants,
            self.config,
            self.inbox,
            s.token_max_lifetime,
            self.revocations,
            self.limits,
        )
        # The admin console's agents (a shared bucket every replica follows) over the file's.
        self.admin = AdminConsole(
            await AdminStore.open(bus.js, replicas),
            self.inbox,
            router_target,
            s.grpc_tls(),
            case_target=s.case_target,
            revocations=self.revocations,
        )
        await self.admin.start()
        used_links: UsedLinks = (
            await JetStreamUsedLinks.open(bus.js, replicas)
            if s.store == "jetstream"
            else InMemoryUsedLinks()
        )
        # An OIDC sign-in's state is used once, whichever replica the provider sends it back to.
        self.inbox.oidc = OidcSignIn(s.auth_secret, used_links.claim)
        self.portal = Portal(
            s.auth_secret,
            s.known_tenants,
            s.case_target,
            ChatNotifier(bus),
            used_links,
            tls=s.grpc_tls(),
        )
        limits = self.limits
        portal_http = PortalHttp(
            self.portal,
            s.portal_url,
            lambda scope: limits.address(
                (scope.get("client") or ("", 0))[0],
                dict(scope.get("headers", [])).get(b"x-forwarded-for", b"").decode("latin-1"),
            ),
        )
        api = Api(
            self.chat,
            files,
            s.auth_secret,
            s.known_tenants,
            self.config,
            self.limits,
            portal=portal_http,
        )
        nats_consumer.subscribe(bus, self.chat, s.consumer_name, self.inbox)
        proxies = trusted_networks(s.trusted_proxies)
        site = build_asgi(
            self.sio, s.default_tenant, s.max_message_bytes, api=api, config=self.config
        )
        self.http = HttpServer(
            AdminHttp(self.admin, self.inbox, InboxHttp(self.inbox, site, proxies), proxies),
            s.http_host,
            s.http_port,
            s.shutdown_grace_seconds,
            ws_max_size=buffer,
            ws_compression=s.ws_compression,
            ssl=tls.server_context(s.tls_cert_file, s.tls_key_file),
        )
        # Health and reflection only, so `switchboard status` and probes can check the chat.
        return []

    async def _serve(self) -> None:
        assert self.http is not None
        await self.http.start()
        self.http_port = self.http.port

    async def _started(self) -> None:
        tune_collector()
        logger.info("chat gRPC health on %s:%d", self.settings.grpc_host, self.grpc_port)

    async def _stop_taking(self) -> None:
        """Close clients and stop HTTP (then gRPC stops and the bus drains)."""
        sio, http, self.sio, self.http = self.sio, self.http, None, None
        manager, self.manager = self.manager, None
        router, self.router = self.router, None
        inbox, self.inbox = self.inbox, None
        portal, self.portal = self.portal, None
        if portal is not None:
            await portal.close()
        spending, self.spending = self.spending, None
        admin, self.admin = self.admin, None
        if admin is not None:
            await admin.stop()
        if spending is not None:
            await spending.stop()
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
        if isinstance(self.store, JetStreamConversations):
            await self.store.close()
        if manager is not None:
            await manager.unsubscribe()
            thread = getattr(manager, "thread", None)
            if thread is not None:
                thread.cancel()
        if inbox is not None:
            await inbox.calls.stop()
            await inbox.unfollow()
            await inbox.close()
        if router is not None:
            await router.close()


def bootstrap(
    settings: ChatSettings | None = None,
    *,
    bus: Bus | None = None,
    store: ConversationStore | None = None,
) -> ChatApp:
    """The chat, with the real adapters for those not given."""
    return ChatApp(settings or ChatSettings(), bus=bus, store=store)
