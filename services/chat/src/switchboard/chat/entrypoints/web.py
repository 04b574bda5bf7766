"""The HTTP side of the chat: the customer page at /, its assets under /static/, /healthz.

Assets are read once at start-up into a fixed table, so no request path ever reaches the file
system. Socket.IO itself is mounted in front of this app by ``build_asgi``.
"""

from __future__ import annotations

import html
import mimetypes
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import socketio

from switchboard.chat.config import ChatConfig
from switchboard.chat.entrypoints.api import Api
from switchboard.core.events import TENANT_RE

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".map": "application/json",
}

# The page needs nothing but its own origin (scripts, styles and the Socket.IO connection).
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'"
)


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    extra_headers: tuple[tuple[bytes, bytes], ...] = ()


def _content_type(path: Path) -> str:
    if path.suffix in _TYPES:
        return _TYPES[path.suffix]
    if path.name == "LICENSE":
        return "text/plain; charset=utf-8"
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def load_assets(static_dir: Path, default_tenant: str, max_message_bytes: int) -> dict[str, Asset]:
    """URL path -> asset, for the page at / and every file under `static_dir` at /static/."""
    assets: dict[str, Asset] = {}
    for path in sorted(static_dir.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            url = "/static/" + path.relative_to(static_dir).as_posix()
            assets[url] = Asset(path.read_bytes(), _content_type(path))
    page = (static_dir / "index.html").read_text(encoding="utf-8")
    page = page.replace("__DEFAULT_TENANT__", html.escape(default_tenant, quote=True))
    page = page.replace("__MAX_MESSAGE_BYTES__", str(int(max_message_bytes)))
    assets["/"] = Asset(
        page.encode("utf-8"),
        _TYPES[".html"],
        ((b"content-security-policy", PAGE_CSP.encode()), (b"cache-control", b"no-cache")),
    )
    # The widget's panel, framed by the customer's site (frame-ancestors is set per request).
    assets["/widget"] = Asset(
        page.encode("utf-8"), _TYPES[".html"], ((b"cache-control", b"no-cache"),)
    )
    if "/static/widget.js" in assets:
        # The one script tag customers embed: <script src="https://host/widget.js" data-tenant=...>
        assets["/widget.js"] = Asset(
            assets["/static/widget.js"].body,
            _TYPES[".js"],
            (
                (b"cache-control", b"public, max-age=300"),
                (b"cross-origin-resource-policy", b"cross-origin"),
            ),
        )
    # The agents' inbox, the supervisors' wallboard, the QA screen, the knowledge-base authoring
    # screen and the administrators' console (inbox/: their CSP allows blob: images).
    from switchboard.chat.inbox.http import INBOX_CSP

    for name in ("inbox", "wallboard", "qa", "kb", "admin"):
        if (static_dir / f"{name}.html").is_file():
            assets[f"/{name}"] = Asset(
                (static_dir / f"{name}.html").read_bytes(),
                _TYPES[".html"],
                ((b"content-security-policy", INBOX_CSP.encode()), (b"cache-control", b"no-cache")),
            )
    # The customer portal: its own page, under the customer page's CSP; like the widget's panel,
    # framed only by the chat itself and the tenant's origins (frame-ancestors, per request).
    if (static_dir / "portal.html").is_file():
        portal = (static_dir / "portal.html").read_text(encoding="utf-8")
        portal = portal.replace("__DEFAULT_TENANT__", html.escape(default_tenant, quote=True))
        assets["/portal"] = Asset(
            portal.encode("utf-8"),
            _TYPES[".html"],
            ((b"cache-control", b"no-cache"),),
        )
    assets["/healthz"] = Asset(
        b"ok", "text/plain; charset=utf-8", ((b"cache-control", b"no-store"),)
    )
    return assets


def widget_csp(frame_ancestors: frozenset[str]) -> bytes:
    """The panel's CSP: like the page's, framed only by the chat itself and the tenant's origins."""
    ancestors = " ".join(["'self'", *sorted(frame_ancestors)])
    return f"{PAGE_CSP}; frame-ancestors {ancestors}".encode()


class Site:
    """A minimal ASGI app serving a fixed table of assets (GET and HEAD only), with the chat's
    HTTP API (entrypoints/api.py) in front of it."""

    def __init__(
        self, assets: dict[str, Asset], api: Api | None = None, config: ChatConfig | None = None
    ) -> None:
        self.assets = assets
        self.api = api
        self.config = config or ChatConfig()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":  # a websocket to anywhere but /socket.io/
            await send({"type": "websocket.close", "code": 1008})
            return
        method = scope.get("method", "GET")
        path = scope.get("path", "")
        if self.api is not None and self.api.handles(path):
            await self.api(scope, receive, send)
            return
        asset = self.assets.get(path)
        if asset is not None and path in ("/widget", "/portal"):
            asset = Asset(
                asset.body, asset.content_type, (*asset.extra_headers, self._widget_csp(scope))
            )
        if asset is None:
            await self._respond(send, 404, b"not found", "text/plain; charset=utf-8")
        elif method not in ("GET", "HEAD"):
            await self._respond(
                send,
                405,
                b"method not allowed",
                "text/plain; charset=utf-8",
                ((b"allow", b"GET, HEAD"),),
            )
        else:
            body = b"" if method == "HEAD" else asset.body
            await self._respond(
                send, 200, body, asset.content_type, asset.extra_headers, len(asset.body)
            )

    def _widget_csp(self, scope: Scope) -> tuple[bytes, bytes]:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        tenant = (query.get("tenant") or [""])[0]
        origins = (
            self.config.tenant(tenant).allowed_origins if TENANT_RE.match(tenant) else frozenset()
        )
        return (b"content-security-policy", widget_csp(origins))

    async def _respond(
        self,
        send: Send,
        status: int,
        body: bytes,
        content_type: str,
        extra: tuple[tuple[bytes, bytes], ...] = (),
        length: int | None = None,
    ) -> None:
        headers = [
            (b"content-type", content_type.encode()),
            (b"content-length", str(len(body) if length is None else length).encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            *extra,
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


def build_asgi(
    sio: socketio.AsyncServer,
    default_tenant: str,
    max_message_bytes: int,
    static_dir: Path = STATIC_DIR,
    api: Api | None = None,
    config: ChatConfig | None = None,
) -> socketio.ASGIApp:
    """Socket.IO at /socket.io/, the API at /api/ and /files/, everything else from the site."""
    site = Site(load_assets(static_dir, default_tenant, max_message_bytes), api, config)
    return socketio.ASGIApp(sio, other_asgi_app=site)
