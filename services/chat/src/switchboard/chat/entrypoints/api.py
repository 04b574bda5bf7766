"""The chat's HTTP API for the widget: visitor tokens, availability, offline messages, uploads,
and the files served back.

- ``POST /api/visitor-token`` {tenant, token?} -> {token, visitor_id, expires_at}: a signed
  visitor token (a still-valid or expired-but-genuine ``token`` keeps its visitor id).
- ``GET /api/availability?tenant=&language=`` -> {available, reason}.
- ``POST /api/offline`` (Bearer visitor token) {name, email, language, topic, text}.
- ``POST /api/upload?filename=`` (Bearer visitor token, body = the file, Content-Type = its type).
- ``GET /files/<tenant>/<file id>/<name>``: images inline, anything else as an attachment;
  always ``X-Content-Type-Options: nosniff`` and a sandboxing CSP.

Cross-origin callers are held to the same per-tenant origin rule as the sockets.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, unquote

from switchboard.chat.adapters.files import FileStore
from switchboard.chat.config import ChatConfig
from switchboard.chat.domain import visitor_token
from switchboard.chat.domain.model import CustomerProfile, parse_customer_auth
from switchboard.chat.domain.rate_limit import Throttled
from switchboard.chat.entrypoints import payloads
from switchboard.chat.entrypoints.socket_common import ChatLimits, check_origin, cors_allows
from switchboard.chat.handlers import Chat
from switchboard.core.errors import (
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from switchboard.core.events import TENANT_RE

if TYPE_CHECKING:
    from switchboard.chat.portal.http import PortalHttp

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

# Served inline only if they cannot carry script (so never SVG).
INLINE_IMAGES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
FILE_CSP = b"default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; sandbox"
MAX_JSON_BYTES = 64 * 1024
FILE_ID_RE = re.compile(r"^[0-9a-f]{32}$")
FILENAME_BAD = re.compile(r"[\x00-\x1f\x7f/\\]")


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


_STATUS = {
    InvalidArgument: 400,
    Unauthenticated: 401,
    PermissionDenied: 403,
    FailedPrecondition: 409,
    ResourceExhausted: 429,
    NotFound: 404,
    Unavailable: 503,
}


def _status_of(exc: DomainError) -> int:
    for kind, status in _STATUS.items():
        if isinstance(exc, kind):
            return status
    return 400


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _environ(scope: Scope) -> dict[str, Any]:
    """The WSGI-style view check_origin reads (as engine.io builds it for sockets)."""
    env: dict[str, Any] = {}
    for k, v in _headers(scope).items():
        env["HTTP_" + k.upper().replace("-", "_")] = v
    env["wsgi.url_scheme"] = env.get("HTTP_X_FORWARDED_PROTO", scope.get("scheme", "http"))
    return env


async def _body(receive: Receive, limit: int) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise HttpError(400, "request body incomplete")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise HttpError(413, f"too large: limit {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise HttpError(400, "body: must be JSON") from None
    if not isinstance(data, dict):
        raise HttpError(400, "body: must be a JSON object")
    return data


class Api:
    def __init__(
        self,
        chat: Chat,
        files: FileStore | None,
        secret: str,
        known_tenants: frozenset[str] | None,
        config: ChatConfig,
        limits: ChatLimits | None = None,
        portal: PortalHttp | None = None,
    ) -> None:
        self.chat = chat
        self.portal = portal
        self.files = files
        self.secret = secret
        self.known_tenants = known_tenants
        self.config = config
        self.limits = limits or ChatLimits(config.limits)
        self.routes: dict[tuple[str, str], Callable[..., Awaitable[tuple[int, Any, list[Any]]]]] = {
            ("POST", "/api/visitor-token"): self.visitor_token,
            ("GET", "/api/availability"): self.availability,
            ("POST", "/api/offline"): self.offline,
            ("POST", "/api/upload"): self.upload,
        }

    def handles(self, path: str) -> bool:
        return path.startswith("/api/") or path.startswith("/files/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope.get("path", ""), scope.get("method", "GET")
        cors: list[tuple[bytes, bytes]] = []
        try:
            environ = _environ(scope)
            origin = environ.get("HTTP_ORIGIN")
            cors = [(b"vary", b"Origin")]
            if origin is not None and cors_allows(origin, environ, self.config):
                cors.append((b"access-control-allow-origin", origin.encode("latin-1")))
            if method == "OPTIONS":
                cors += [
                    (b"access-control-allow-methods", b"GET, POST"),
                    (b"access-control-allow-headers", b"authorization, content-type"),
                    (b"access-control-max-age", b"600"),
                ]
                await self._send(send, 204, b"", "text/plain", cors)
                return
            if path.startswith("/files/") and method in ("GET", "HEAD"):
                await self.serve_file(scope, send)
                return
            route = self.routes.get((method, path))
            if route is None and self.portal is not None and self.portal.handles(path):
                route = self.portal.route
            if route is None:
                known = {m for (m, p) in self.routes if p == path}
                raise HttpError(
                    405 if known else 404, "method not allowed" if known else "not found"
                )
            status, payload, extra = await route(scope, receive)
            body = json.dumps(payload, ensure_ascii=False).encode()
            await self._send(send, status, body, "application/json", cors + extra)
        except HttpError as exc:
            await self._error(send, exc.status, str(exc), cors)
        except DomainError as exc:
            if isinstance(exc, Throttled):
                cors = [*cors, (b"retry-after", str(max(1, round(exc.retry_after))).encode())]
            await self._error(send, _status_of(exc), str(exc), cors)
        except Exception:
            logger.exception("%s %s failed", method, path)
            await self._error(send, 500, "internal error, please try again", cors)

    async def _error(self, send: Send, status: int, message: str, cors: list[Any]) -> None:
        body = json.dumps({"ok": False, "error": message}, ensure_ascii=False).encode()
        await self._send(send, status, body, "application/json", cors)

    async def _send(
        self, send: Send, status: int, body: bytes, content_type: str, extra: list[Any]
    ) -> None:
        headers = [
            (b"content-type", content_type.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"cache-control", b"no-store"),
            *extra,
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _visitor(self, scope: Scope) -> visitor_token.Visitor:
        auth = _headers(scope).get("authorization", "")
        if not auth.lower().startswith("bearer "):
            raise Unauthenticated("authorization: a Bearer visitor token is required")
        visitor = visitor_token.verify(self.secret, auth[7:].strip(), self.known_tenants)
        check_origin(_environ(scope), visitor.tenant, self.config)
        return visitor

    def _address(self, scope: Scope) -> str:
        peer = (scope.get("client") or ("", 0))[0]
        return self.limits.address(peer, _headers(scope).get("x-forwarded-for", ""))

    def _tenant(self, value: Any) -> str:
        if not isinstance(value, str) or not TENANT_RE.match(value):
            raise InvalidArgument("tenant", "is not a valid tenant name")
        if self.known_tenants is not None and value not in self.known_tenants:
            raise PermissionDenied(f"tenant {value!r} is not served here")
        return value

    async def visitor_token(self, scope: Scope, receive: Receive) -> tuple[int, Any, list[Any]]:
        data = _json(await _body(receive, MAX_JSON_BYTES))
        tenant = self._tenant(data.get("tenant"))
        check_origin(_environ(scope), tenant, self.config)
        self.limits.visitor_token(self._address(scope))
        visitor_id = visitor_token.new_visitor_id()
        old = data.get("token")
        if isinstance(old, str) and old:
            try:  # renewing: keep the visitor (an expired token still proves who it was)
                prior = visitor_token.verify(
                    self.secret, old, self.known_tenants, allow_expired=True
                )
                if prior.tenant == tenant:
                    visitor_id = prior.visitor_id
            except DomainError:
                pass
        ttl = self.config.limits.visitor_token_ttl_seconds
        token = visitor_token.mint(self.secret, tenant, visitor_id, ttl)
        expires = int(time.time()) + ttl
        return 200, {"token": token, "visitor_id": visitor_id, "expires_at": expires}, []

    async def availability(self, scope: Scope, receive: Receive) -> tuple[int, Any, list[Any]]:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        tenant = self._tenant((query.get("tenant") or [""])[0])
        language = (query.get("language") or ["en"])[0]
        return 200, await self.chat.availability(tenant, language), []

    async def offline(self, scope: Scope, receive: Receive) -> tuple[int, Any, list[Any]]:
        visitor = self._visitor(scope)
        data = _json(await _body(receive, MAX_JSON_BYTES))
        profile = parse_customer_auth(data, visitor.tenant, visitor.visitor_id)
        text = payloads.text(data, self.chat.max_message_bytes)
        sent = await self.chat.offline_message(profile, text)
        return 202, {"ok": True, "contact_id": sent.contact_id}, []

    async def upload(self, scope: Scope, receive: Receive) -> tuple[int, Any, list[Any]]:
        if self.files is None:
            raise HttpError(503, "uploads are not available")
        visitor = self._visitor(scope)
        self.limits.upload(visitor.tenant, visitor.visitor_id, self._address(scope))
        headers = _headers(scope)
        limits = self.config.limits
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in limits.upload_types:
            allowed = ", ".join(sorted(limits.upload_types))
            raise HttpError(
                415, f"content type {content_type or '(none)'} is not accepted ({allowed})"
            )
        declared = headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limits.upload_max_bytes:
            raise HttpError(413, f"too large: limit {limits.upload_max_bytes} bytes")
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        filename = unquote((query.get("filename") or ["file"])[0]).strip()[:200] or "file"
        if FILENAME_BAD.search(filename):
            raise HttpError(400, "filename: must not contain control characters or slashes")
        caption = (query.get("caption") or [""])[0][: self.chat.max_message_bytes]
        data = await _body(receive, limits.upload_max_bytes)
        if not data:
            raise HttpError(400, "body: the file is empty")
        profile = CustomerProfile(visitor.tenant, "", "", visitor_id=visitor.visitor_id)
        if (await self.chat.store.open_for_visitor(visitor.tenant, visitor.visitor_id)) is None:
            raise FailedPrecondition("start the chat with a message before sending a file")
        ref = await self.files.put(visitor.tenant, filename, content_type, data)
        sent = await self.chat.customer_attachment(profile, ref, caption)
        url = f"/files/{visitor.tenant}/{ref.object_name.rsplit('/', 1)[-1]}/{quote(filename, safe='')}"
        return 201, {"ok": True, "message_id": sent.message_id, "url": url}, []

    async def serve_file(self, scope: Scope, send: Send) -> None:
        parts = scope.get("path", "").split("/")  # "", "files", tenant, id, name
        if len(parts) != 5 or not TENANT_RE.match(parts[2]) or not FILE_ID_RE.match(parts[3]):
            raise HttpError(404, "not found")
        stored = await self.files.get(parts[2], parts[3]) if self.files else None
        if stored is None:
            raise HttpError(404, "not found")
        ascii_name = re.sub(r"[^A-Za-z0-9._-]", "_", stored.filename) or "file"
        disposition_name = (
            f"filename=\"{ascii_name}\"; filename*=UTF-8''{quote(stored.filename, safe='')}"
        )
        if stored.content_type in INLINE_IMAGES:
            content_type, disposition = stored.content_type, f"inline; {disposition_name}"
        else:
            content_type, disposition = (
                "application/octet-stream",
                f"attachment; {disposition_name}",
            )
        extra = [
            (b"content-disposition", disposition.encode("latin-1")),
            (b"content-security-policy", FILE_CSP),
            (b"cross-origin-resource-policy", b"same-site"),
        ]
        body = b"" if scope.get("method") == "HEAD" else stored.data
        await self._send(send, 200, body, content_type, extra)
