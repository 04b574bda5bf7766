"""The fax channel's composition root: the only place its adapters are built."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from switchboard.core import sender_keys, tls
from switchboard.core.bus import Bus
from switchboard.core.quarantine import QuarantineIndex
from switchboard.core.quarantine_objects import Quarantine, QuarantineEraser
from switchboard.core.service import Service, Servicers
from switchboard.fax.adapters.hylafax import HylaFaxConfig
from switchboard.fax.adapters.jobs import Jobs
from switchboard.fax.adapters.objects import Objects
from switchboard.fax.adapters.ocr import Tesseract, parse_scripts
from switchboard.fax.domain import rules
from switchboard.fax.domain.document import Limits
from switchboard.fax.entrypoints import nats_consumer
from switchboard.fax.entrypoints.http_upload import HttpServer, UploadEndpoint
from switchboard.fax.entrypoints.spool import SpoolWatcher
from switchboard.fax.handlers import FaxReader, ReadingConfig
from switchboard.fax.intake import accept
from switchboard.fax.notifier import FaxNotifier
from switchboard.fax.outbound import FaxSender, ReplyConfig
from switchboard.fax.settings import FaxSettings
from switchboard.v1 import fax_pb2

logger = logging.getLogger(__name__)

QUARANTINE_INDEX = (
    "fax_quarantine_index"  # switchboard.core.quarantine: quarantined faxes by sender
)


def limits_from(s: FaxSettings) -> Limits:
    return Limits(
        max_bytes=s.max_bytes,
        max_pages=s.max_pages,
        max_page_pixels=s.max_page_pixels,
        max_total_pixels=s.max_total_pixels,
        pdf_dpi=s.pdf_dpi,
    )


@dataclass
class FaxApp(Service):
    """The fax channel; a `bus` given here is used instead of a connection of its own."""

    name: ClassVar[str] = "fax"
    settings: FaxSettings
    reader: FaxReader | None = None
    sender: FaxSender | None = None
    spool: SpoolWatcher | None = None
    http: HttpServer | None = None
    http_port: int = 0
    book: rules.RuleBook | None = None  # read before connecting: a bad file stops the start
    quarantine: Quarantine | None = None

    async def _load(self) -> None:
        self.book = rules.load(self.settings.rules_file)

    async def _build(self, bus: Bus) -> Servicers:
        s = self.settings
        book = self.book or rules.load(s.rules_file)
        objects = Objects(bus.js, s.nats_stream_replicas)
        index = await QuarantineIndex.open(bus.js, QUARANTINE_INDEX, s.nats_stream_replicas)
        self.quarantine = Quarantine(
            QuarantineEraser(
                index,
                objects.stores,
                s.quarantine_retention,
                channel="fax",
                # The fax as received and its FaxQuarantined name the caller's number.
                js=bus.js,
                event_types=(fax_pb2.FaxReceived, fax_pb2.FaxQuarantined),
            ),
            s.quarantine_sweep_seconds,
            "faxes",
        )
        notifier = FaxNotifier(bus)
        ocr = Tesseract(
            s.tesseract,
            s.ocr_workers,
            parse_scripts(s.ocr_scripts) or None,
            s.ocr_fallback,
            s.ocr_timeout_seconds,
        )
        addresses = frozenset(a.strip().lower() for a in s.email_addresses.split(",") if a.strip())
        self.reader = FaxReader(
            objects,
            notifier,
            ocr,
            book,
            ReadingConfig(
                s.bucket,
                s.quarantine_bucket,
                limits_from(s),
                s.default_region,
                addresses,
                sender_keys.secret_key(s.auth_secret),
            ),
            s.ocr_workers,
            index,
        )
        hylafax = (
            HylaFaxConfig(
                s.hylafax_host,
                s.hylafax_port,
                s.hylafax_user,
                s.hylafax_password,
                kill_minutes=s.hylafax_kill_minutes,
                max_tries=s.hylafax_max_tries,
            )
            if s.hylafax_host
            else None
        )
        self.sender = FaxSender(
            objects,
            notifier,
            ReplyConfig(
                s.bucket,
                s.font,
                s.reply_format,
                hylafax,
                s.send_attempts,
                poll_seconds=s.status_poll_seconds,
                poll_limit=s.status_poll_limit,
                region=s.default_region,
            ),
            jobs=await Jobs.open(bus.js, s.nats_stream_replicas),
        )
        resumed = await self.sender.resume()
        if resumed:
            logger.info("following %d fax replies submitted before the restart", resumed)
        nats_consumer.subscribe(
            bus, self.reader, self.sender, self.quarantine, s.consumer_name, bool(addresses)
        )

        async def take(tenant: str, fax_id: str, data: bytes, origin: fax_pb2.FaxOrigin) -> object:
            return await accept(objects, notifier, s.bucket, tenant, fax_id, data, origin)

        if s.spool_dir:

            async def take_spooled(fax_id: str, data: bytes, origin: fax_pb2.FaxOrigin) -> object:
                return await take(s.tenant, fax_id, data, origin)

            self.spool = SpoolWatcher(
                Path(s.spool_dir),
                take_spooled,
                s.spool_poll_seconds,
                s.spool_settle_seconds,
                hard_limit_bytes=4 * s.max_bytes,
            )
        endpoint = UploadEndpoint(
            take,
            s.upload_secrets,
            s.max_bytes,
            s.known_tenants,
            s.webhook_max_skew_seconds,
        )
        https = tls.server_context(s.tls_cert_file, s.tls_key_file)
        self.http = HttpServer(endpoint.app(), s.http_host, s.http_port, https)
        self.http_port = await self.http.start()
        return []

    async def _started(self) -> None:
        s = self.settings
        if self.spool is not None:
            await self.spool.start()
        if self.quarantine is not None:
            self.quarantine.start()
        logger.info(
            "fax: upload on %s://%s:%d/fax, gRPC health on %s:%d, spool %s",
            "https" if s.tls_cert_file else "http", s.http_host, self.http_port, s.grpc_host, self.grpc_port, s.spool_dir or "(none)",
        )  # fmt: skip

    async def _stop_taking(self) -> None:
        """Stop taking faxes in (then gRPC stops and the bus drains)."""
        spool, http = self.spool, self.http
        self.spool = self.http = None
        if spool is not None:
            await spool.stop()
        if http is not None:
            await http.stop()

    async def _close(self) -> None:
        if self.quarantine is not None:
            await self.quarantine.stop()
        if self.sender is not None:
            await self.sender.close()
        if self.reader is not None:
            self.reader.close()


def bootstrap(settings: FaxSettings | None = None, *, bus: Bus | None = None) -> FaxApp:
    """The fax channel, with the real adapters for those not given."""
    return FaxApp(settings or FaxSettings(), bus=bus)
