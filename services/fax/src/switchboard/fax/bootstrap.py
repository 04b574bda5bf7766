"""The fax channel's composition root: the only place its adapters are built."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import grpc

from switchboard.core import grpc as sb_grpc
from switchboard.core import telemetry
from switchboard.core.bus import Bus
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


def limits_from(s: FaxSettings) -> Limits:
    return Limits(
        max_bytes=s.max_bytes,
        max_pages=s.max_pages,
        max_page_pixels=s.max_page_pixels,
        max_total_pixels=s.max_total_pixels,
        pdf_dpi=s.pdf_dpi,
    )


@dataclass
class FaxApp:
    settings: FaxSettings
    bus: Bus | None = None
    reader: FaxReader | None = None
    sender: FaxSender | None = None
    spool: SpoolWatcher | None = None
    http: HttpServer | None = None
    grpc_server: grpc.aio.Server | None = None
    grpc_port: int = 0
    http_port: int = 0

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        s = self.settings
        telemetry.setup_tracing("fax", s.otel_exporter_otlp_endpoint)
        book = rules.load(s.rules_file)  # a bad rules file stops the start, saying where
        self.bus = await Bus.connect(s.nats_url, source="fax", replicas=s.nats_stream_replicas)
        objects = Objects(self.bus.js, s.nats_stream_replicas)
        notifier = FaxNotifier(self.bus)
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
                s.bucket, s.quarantine_bucket, limits_from(s), s.default_region, addresses
            ),
            s.ocr_workers,
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
            jobs=await Jobs.open(self.bus.js, s.nats_stream_replicas),
        )
        resumed = await self.sender.resume()
        if resumed:
            logger.info("following %d fax replies submitted before the restart", resumed)
        nats_consumer.subscribe(
            self.bus, self.reader, self.sender, s.consumer_name, bool(addresses)
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
            s.webhook_secret,
            s.tenant,
            s.max_bytes,
            s.known_tenants,
            s.webhook_max_skew_seconds,
        )
        self.http = HttpServer(endpoint.app(), s.http_host, s.http_port)
        self.http_port = await self.http.start()
        self.grpc_server, self.grpc_port, _ = await sb_grpc.start_server(
            [], s.grpc_host, s.grpc_port, s.auth_secret, s.known_tenants, bus=self.bus
        )
        await self.bus.start()
        if self.spool is not None:
            await self.spool.start()
        logger.info(
            "fax: upload on http://%s:%d/fax, gRPC health on %s:%d, spool %s",
            s.http_host, self.http_port, s.grpc_host, self.grpc_port, s.spool_dir or "(none)",
        )  # fmt: skip

    async def stop(self) -> None:
        """Stop taking faxes in, then drain the bus. Safe to call twice."""
        spool, http, server, bus = self.spool, self.http, self.grpc_server, self.bus
        self.spool = self.http = self.grpc_server = self.bus = None
        if spool is not None:
            await spool.stop()
        if http is not None:
            await http.stop()
        if server is not None:
            await sb_grpc.stop_server(server, self.settings.shutdown_grace_seconds)
        if bus is not None:
            await bus.drain()
        if self.sender is not None:
            await self.sender.close()
        if self.reader is not None:
            self.reader.close()


def bootstrap(settings: FaxSettings | None = None) -> FaxApp:
    return FaxApp(settings or FaxSettings())
