"""HTTP upload of received faxes, in the style of fax providers' inbound webhooks.

POST /fax, multipart/form-data: a file part (`file`, `media` or `document`) and form fields
`from`, `to`, `csid`, `fax_id`, `pages`, `tenant` (all optional). Signed with a tenant's secret:

    X-Fax-Timestamp: <unix seconds>
    X-Fax-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + raw body)>

The secret that signs the upload makes it that tenant's (a `tenant` field naming another tenant is
refused). The timestamp must be a finite number of seconds within FAX_WEBHOOK_MAX_SKEW_SECONDS of
now (replays are refused). 202 means the fax is stored in JetStream; 503 means it is not, and the
provider should retry.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from email import policy
from email.parser import BytesParser
from ssl import SSLContext

from aiohttp import web

from switchboard.core.errors import DomainError
from switchboard.fax.intake import fax_id_for
from switchboard.v1 import fax_pb2

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Fax-Signature"
TIMESTAMP_HEADER = "X-Fax-Timestamp"
FILE_FIELDS = ("file", "media", "document")

Accept = Callable[[str, str, bytes, fax_pb2.FaxOrigin], Awaitable[object]]


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header's value for `body` sent at `timestamp`."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


# The last second of the year 9999: no genuine upload is stamped later (or before 1970).
MAX_TIMESTAMP = 253402300799


def parse_timestamp(text: str) -> float:
    """The timestamp header as unix seconds; ValueError saying what is wrong with it."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{TIMESTAMP_HEADER} must be unix seconds, got {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(
            f"{TIMESTAMP_HEADER} must be a finite number of unix seconds, got {text!r}"
        )
    if not 0 <= value <= MAX_TIMESTAMP:
        raise ValueError(
            f"{TIMESTAMP_HEADER} {text} is out of range (0 to {MAX_TIMESTAMP} unix seconds)"
        )
    return value


def _refuse(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=status)


def _form(content_type: str, body: bytes) -> tuple[dict[str, str], tuple[str, bytes] | None]:
    """Fields and the first file part of a multipart/form-data body."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise ValueError("the body is not multipart/form-data")
    fields: dict[str, str] = {}
    upload: tuple[str, bytes] | None = None
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if not isinstance(name, str) or not isinstance(payload, bytes):
            continue
        filename = part.get_filename()
        if filename is not None or name in FILE_FIELDS:
            if upload is None and payload:
                upload = (filename or name, payload)
        else:
            fields[name] = payload.decode("utf-8", errors="replace").strip()
    return fields, upload


class UploadEndpoint:
    def __init__(
        self,
        accept: Accept,
        secrets: Mapping[str, str],
        max_bytes: int,
        known_tenants: frozenset[str] | None = None,
        max_skew_seconds: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.accept = accept
        self.secrets = dict(secrets)  # tenant -> its upload secret
        self.max_bytes = max_bytes
        self.known_tenants = known_tenants
        self.max_skew_seconds = max_skew_seconds
        self.clock = clock

    def app(self) -> web.Application:
        # Room for the multipart framing and the form fields around a document at the limit.
        app = web.Application(client_max_size=self.max_bytes + 256 * 1024)
        app.router.add_post("/fax", self.upload)
        app.router.add_get("/healthz", self.health)
        return app

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    def _signer(self, request: web.Request, body: bytes) -> str | web.Response:
        """The tenant whose secret signed the upload, or the refusal."""
        if not self.secrets:
            return _refuse(
                403,
                "uploads are disabled: neither FAX_WEBHOOK_SECRETS nor FAX_WEBHOOK_SECRET is set",
            )
        signature = request.headers.get(SIGNATURE_HEADER, "")
        timestamp = request.headers.get(TIMESTAMP_HEADER, "")
        if not signature or not timestamp:
            return _refuse(401, f"missing {SIGNATURE_HEADER} or {TIMESTAMP_HEADER} header")
        try:
            skew = abs(self.clock() - parse_timestamp(timestamp))
        except ValueError as exc:
            return _refuse(400, str(exc))
        if skew > self.max_skew_seconds:
            return _refuse(
                401,
                f"{TIMESTAMP_HEADER} is {skew:.0f}s away from now (limit {self.max_skew_seconds:.0f}s)",
            )
        signer = None
        for tenant, secret in self.secrets.items():  # every one compared, in constant time
            if hmac.compare_digest(signature.strip(), sign(secret, timestamp, body)):
                signer = tenant
        if signer is None:
            return _refuse(
                403,
                f"{SIGNATURE_HEADER} does not match the body (HMAC-SHA256 with a tenant's secret)",
            )
        return signer

    async def upload(self, request: web.Request) -> web.Response:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _refuse(413, f"the upload is over the limit of {self.max_bytes:,} bytes")
        signer = self._signer(request, body)
        if isinstance(signer, web.Response):
            return signer
        try:
            fields, upload = _form(request.headers.get("Content-Type", ""), body)
        except Exception as exc:
            return _refuse(400, f"cannot read the form: {exc}")
        if upload is None:
            return _refuse(400, f"no document: send it in a file part named one of {FILE_FIELDS}")
        filename, data = upload
        tenant = fields.get("tenant") or signer
        if tenant != signer:
            return _refuse(
                403, f"this upload is signed with tenant {signer}'s secret, not tenant {tenant}'s"
            )
        if self.known_tenants is not None and tenant not in self.known_tenants:
            return _refuse(403, f"tenant {tenant!r} is not served here")
        try:
            pages = int(fields.get("pages") or 0)
        except ValueError:
            return _refuse(400, "pages must be a number")
        reference = fields.get("fax_id", "")
        origin = fax_pb2.FaxOrigin(
            intake=fax_pb2.FAX_INTAKE_HTTP,
            reference=reference,
            caller_id_number=fields.get("from", ""),
            caller_id_name=fields.get("from_name", ""),
            csid=fields.get("csid", ""),
            destination=fields.get("to", ""),
            filename=filename,
            reported_pages=pages,
            status=fields.get("status", ""),
        )
        fax_id = fax_id_for("http", tenant, reference, data)
        try:
            await self.accept(tenant, fax_id, data, origin)
        except DomainError as exc:
            return _refuse(400, str(exc))
        except Exception as exc:
            logger.warning("upload %s not stored: %r", fax_id, exc)
            return _refuse(503, "the fax could not be stored yet; retry later")
        return web.json_response({"fax_id": fax_id, "status": "accepted"}, status=202)


class HttpServer:
    def __init__(
        self, app: web.Application, host: str, port: int, ssl: SSLContext | None = None
    ) -> None:
        self.runner = web.AppRunner(app, access_log=None)
        self.host = host
        self.port = port
        self.ssl = ssl  # HTTPS when given

    async def start(self) -> int:
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, self.port, ssl_context=self.ssl)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        await self.runner.cleanup()
