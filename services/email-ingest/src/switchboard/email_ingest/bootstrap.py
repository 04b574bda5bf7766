"""The email channel's composition root: the only place its adapters are built."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from dataclasses import dataclass, field
from typing import Any, ClassVar

from switchboard.core import language, sender_keys, stores, tls
from switchboard.core.bus import Bus, ConsumerOptions
from switchboard.core.publishing import Publisher
from switchboard.core.quarantine import QuarantineIndex
from switchboard.core.quarantine_objects import Quarantine, QuarantineEraser
from switchboard.core.service import Service, Servicers
from switchboard.email_ingest import config as email_config
from switchboard.email_ingest.acknowledge import Acknowledger
from switchboard.email_ingest.adapters.jetstream import EmailObjects, EmailState
from switchboard.email_ingest.decoding import Decoder, default_workers
from switchboard.email_ingest.entrypoints.grpc_server import EmailServicer, registration
from switchboard.email_ingest.entrypoints.imap import MailboxWatcher, WatchOptions
from switchboard.email_ingest.entrypoints.smtp import ReceiveHandler, ReceiveServer
from switchboard.email_ingest.ingest import Ingestor, Limits
from switchboard.email_ingest.leasing import MailboxLeases
from switchboard.email_ingest.notifier import EmailNotifier
from switchboard.email_ingest.outbound import Relay, Sender
from switchboard.email_ingest.quarantine import imap_deleter
from switchboard.email_ingest.settings import EmailIngestSettings
from switchboard.v1 import case_events_pb2, email_pb2, events_pb2

logger = logging.getLogger(__name__)

# switchboard.core.quarantine: quarantined mail by sender
QUARANTINE_INDEX = "email_quarantine_index"


@dataclass
class EmailApp(Service):
    """The email channel; a `bus` given here is used instead of a connection of its own."""

    name: ClassVar[str] = "email-ingest"
    settings: EmailIngestSettings
    config: email_config.EmailConfig | None = None
    # Test seam: wraps the bus the notifier publishes through (e.g. to stop the process
    # mid-batch).
    publisher_wrapper: Any = None
    state: EmailState | None = None
    objects: EmailObjects | None = None
    ingestor: Ingestor | None = None
    decoder: Decoder | None = None
    sender: Sender | None = None
    acknowledger: Acknowledger | None = None
    quarantine: Quarantine | None = None
    watchers: list[MailboxWatcher] = field(default_factory=list)
    receivers: list[ReceiveServer] = field(default_factory=list)
    leases: MailboxLeases | None = None
    replica: str = ""
    smtp_port: int = 0
    lmtp_port: int = 0
    _watchdog: asyncio.Task[None] | None = None
    _unhealthy: tuple[str, ...] | None = None

    async def _load(self) -> None:
        self.config = self.config or email_config.load(self.settings.config_file or None)
        self.replica = (
            self.settings.replica_id or f"{socket.gethostname()}-{os.getpid()}-{id(self):x}"
        )
        s = self.settings
        self.decoder = Decoder(default_workers() if s.decode_workers < 0 else s.decode_workers)
        if self.config.mailboxes:
            self.decoder.start()  # its processes start in the background while the rest does
        await asyncio.to_thread(language.warm)  # not on the first mail, inside the event loop

    async def _build(self, bus: Bus) -> Servicers:
        s = self.settings
        assert self.config is not None
        replicas = s.nats_stream_replicas
        self.state = await EmailState.open(bus.js, replicas, bus.acks)
        self.objects = await EmailObjects.open(bus.js, replicas, bus.acks)
        publisher: Publisher = bus
        if self.publisher_wrapper is not None:
            publisher = self.publisher_wrapper(bus)
        self.notifier = EmailNotifier(publisher)
        limits = Limits(s.max_message_bytes, s.max_attachment_bytes, s.max_attachments)
        index = await QuarantineIndex.open(bus.js, QUARANTINE_INDEX, replicas)
        self.quarantine = Quarantine(
            QuarantineEraser(
                index,
                stores.ObjectStores(bus.js, replicas),
                s.quarantine_retention,
                imap_deleter(self.config, s.imap_timeout_seconds),
                channel="email",
                # EmailQuarantined names the sender's address and the subject.
                js=bus.js,
                event_types=(email_pb2.EmailQuarantined,),
            ),
            s.quarantine_sweep_seconds,
            "mails",
        )
        self.ingestor = Ingestor(
            self.config,
            self.state,
            self.objects,
            self.notifier,
            limits,
            self.decoder,
            index,
            sender_keys.secret_key(s.auth_secret),
        )
        relay = Relay(
            s.relay_host,
            s.relay_port,
            s.relay_username,
            s.relay_password,
            s.relay_security,
            s.relay_timeout_seconds,
            s.send_attempts,
            s.send_backoff_seconds,
            s.relay_ca_file,
        )
        self.sender = Sender(self.config, self.state, self.objects, self.notifier, relay, bus.js)
        # A send may wait out its retries: the command stays unacknowledged meanwhile.
        budget = (
            s.send_attempts * (s.relay_timeout_seconds + 1)
            + s.send_backoff_seconds * 2**s.send_attempts
        )
        bus.subscribe(
            s.outbound_consumer,
            events_pb2.OutboundEmail,
            self.sender.handle,
            ConsumerOptions(batch=8, ack_wait=max(60.0, budget), max_deliver=5),
        )
        self.acknowledger = Acknowledger(self.config, self.state, self.notifier)
        bus.subscribe(
            f"{s.outbound_consumer}-ack",
            case_events_pb2.CaseCreated,
            self.acknowledger.on_case_created,
        )
        # An erased customer's thread-index entries (docs/security.md, "Erasure on the bus"):
        # on the same durable as CaseCreated, so a case's acknowledgement, which writes the
        # index, comes before its customer's erasure.
        bus.subscribe(
            f"{s.outbound_consumer}-ack",
            case_events_pb2.CustomerErased,
            self.acknowledger.on_customer_erased,
        )
        # And their quarantined mail, which never became a contact: a durable of its own.
        bus.subscribe(
            f"{s.outbound_consumer}-quarantine",
            case_events_pb2.CustomerErased,
            self.quarantine.on_customer_erased,
        )
        return [registration(EmailServicer(self.statuses))]  # type: ignore[list-item]

    async def _serve(self) -> None:
        s = self.settings
        # Built by _build: the receivers and the mailbox watchers start once gRPC serves.
        assert self.bus is not None and self.config is not None
        assert self.ingestor is not None and self.state is not None
        self.bus.watch(self._bus_changed)
        for port, lmtp in ((s.smtp_port, False), (s.lmtp_port, True)):
            if port < 0 or (lmtp and port == 0):
                continue
            server = ReceiveServer(
                ReceiveHandler(self.config, self.ingestor, lmtp=lmtp),
                s.smtp_host,
                port,
                s.max_message_bytes,
                self.config.mailboxes[0].domain if self.config.mailboxes else "switchboard.local",
                tls.server_context(s.smtp_tls_cert_file, s.smtp_tls_key_file),
                s.smtp_require_starttls,
            )
            bound = await server.start()
            self.receivers.append(server)
            if lmtp:
                self.lmtp_port = bound
            else:
                self.smtp_port = bound
            logger.info("%s receive on %s:%d", "LMTP" if lmtp else "SMTP", s.smtp_host, bound)
        options = WatchOptions(
            idle_renew_seconds=s.idle_renew_seconds,
            poll_seconds=s.poll_seconds,
            stall_seconds=s.stall_seconds,
            reconnect_max_seconds=s.reconnect_max_seconds,
            timeout_seconds=s.imap_timeout_seconds,
            fetch_batch=s.fetch_batch,
            max_message_bytes=s.max_message_bytes,
        )
        for mailbox in self.config.mailboxes:
            if mailbox.imap is not None:
                self.watchers.append(MailboxWatcher(mailbox, self.ingestor, self.state, options))
        if self.watchers:
            # The watchers of this replica's share of the mailboxes start now (the first
            # round); the rest wait for a lease to be free and theirs.
            self.leases = await MailboxLeases.open(
                self.bus.js,
                self.replica,
                s.lease_ttl_seconds,
                self.watchers,
                s.nats_stream_replicas,
            )
            await self.leases.balance()
            self.leases.start()

    async def _started(self) -> None:
        s = self.settings
        self._watchdog = asyncio.create_task(self._watch_health(), name="email-health")
        if self.quarantine is not None:
            self.quarantine.start()
        logger.info(
            "email-ingest replica %s: %d IMAP mailbox(es), %d read here, gRPC on %s:%d",
            self.replica,
            len(self.watchers),
            len(self.leases.held) if self.leases else 0,
            s.grpc_host,
            self.grpc_port,
        )

    def statuses(self, tenant: str) -> tuple[list[email_pb2.MailboxStatus], bool]:
        """`tenant`'s mailboxes, and whether they (and NATS) are all healthy."""
        mailboxes = [w.snapshot() for w in self.watchers if w.mailbox.tenant == tenant]
        connected = self.bus is not None and self.bus.nc.is_connected
        return mailboxes, connected and all(m.healthy for m in mailboxes)

    async def _bus_changed(self, connected: bool) -> None:
        if connected:
            for w in self.watchers:
                w.wake()

    async def _apply_health(self) -> None:
        """The condition "mailboxes": every mailbox is making progress (NATS is the server's)."""
        if self.readiness is None:
            return
        mailboxes = [w.snapshot() for w in self.watchers]
        unhealthy = tuple(m.reason for m in mailboxes if not m.healthy)
        if unhealthy == self._unhealthy:
            return
        self._unhealthy = unhealthy
        for reason in unhealthy:
            logger.error("email-ingest mailbox not making progress: %s", reason)
        await self.readiness.set("mailboxes", not unhealthy, "; ".join(unhealthy))

    async def _watch_health(self) -> None:
        interval = max(0.2, min(5.0, self.settings.stall_seconds / 4))
        while True:
            await asyncio.sleep(interval)
            await self._apply_health()

    async def _stop_taking(self) -> None:
        """Stop taking mail (then gRPC stops and the bus drains)."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(BaseException):
                await self._watchdog
            self._watchdog = None
        for receiver in self.receivers:
            await receiver.stop()
        self.receivers = []
        leases, self.leases = self.leases, None
        if leases is not None:
            await leases.stop()  # the watchers, then the leases: the others take over at once
        for watcher in self.watchers:
            await watcher.stop()
        self.watchers = []

    async def _close(self) -> None:
        if self.quarantine is not None:
            await self.quarantine.stop()
        decoder, self.decoder = self.decoder, None
        if decoder is not None:
            await decoder.close()


def bootstrap(settings: EmailIngestSettings | None = None, *, bus: Bus | None = None) -> EmailApp:
    """The email channel, with the real adapters for those not given."""
    return EmailApp(settings or EmailIngestSettings(), bus=bus)
