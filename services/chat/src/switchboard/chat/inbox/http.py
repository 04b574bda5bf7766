"""The inbox's HTTP routes, in front of the chat's site:

- ``POST /api/agent/login`` {tenant, agent_id, password} -> {token, expires_at, agent}; a wrong id
  or password is 401 ``wrong agent id or password``. Same-origin only.
- ``GET /api/agent/oidc?tenant=`` -> {tenant, name}: the company whose directory signs the
  tenant's agents in (`name` null when it has none); ``GET /api/agent/oidc/start?tenant=&page=``,
  ``GET /api/agent/oidc/callback`` and ``POST /api/agent/oidc/result`` -> as the login's answer:
  the OIDC sign-in (inbox/oidc.py).
- ``GET /api/agent/attachment?contact_id=&index=`` (``Authorization: Bearer <inbox token>``): a
  file of one of the agent's contacts (fax pages, email attachments). Images that cannot carry
  script are served inline; anything else as a download; always nosniff and a sandboxing CSP.
  A file deleted by its customer's erasure is 404 ``attachment '<index>' was erased``.
- ``POST /api/qa/<action>`` (``Authorization: Bearer <inbox token>``): the QA evaluator screen's
  calls to the case service (inbox/qa.py), made with the caller's token.
- ``POST /api/kb/<action>`` (Bearer inbox token): the knowledge-base authoring screen's calls to
  the case service (inbox/kb.py), made with the caller's token.
- ``GET /api/agent/recording/player?contact_id=`` (Bearer inbox token) -> {url, expires_at,
  duration, channels, peaks}: what the case panel's player needs to play a call recording (the
  `url` carries a ticket for an hour; `peaks` per channel, customer then agent, 0 to 1). A
  player's playback is audited on the contact's case (a ``RecordingPlayed`` event) when its audio
  is first asked for with the ticket, not when the player is shown.
- ``GET /api/agent/recording?contact_id=`` (Bearer inbox token, or ``&ticket=``): the recording as
  ``audio/wav``, with ``Range: bytes=`` requests answered 206 (a player seeking). 403 for a role
  that may not hear it, 404 when the tenant has no recording of that contact (inbox/recordings.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, quote

from switchboard.chat.entrypoints.api import Receive, Scope, Send
from switchboard.chat.entrypoints.clients import Network, client_address
from switchboard.chat.inbox import oidc, recordings
from switchboard.chat.inbox.kb import MAX_BODY as MAX_KB_BODY
from switchboard.chat.inbox.kb import PREFIX as KB_PREFIX
from switchboard.chat.inbox.kb import KbApi
from switchboard.chat.inbox.qa import PREFIX as QA_PREFIX
from switchboard.chat.inbox.qa import QaApi
from switchboard.chat.inbox.service import Inbox
from switchboard.core import recording_seal
from switchboard.core.errors import (
    DomainError,
    Erased,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

logger = logging.getLogger(__name__)

App = Callable[[Scope, Receive, Send], Awaitable[None]]

LOGIN = "/api/agent/login"
OIDC = "/api/agent/oidc"
OIDC_START = "/api/agent/oidc/start"
OIDC_CALLBACK = "/api/agent/oidc/callback"
OIDC_RESULT = "/api/agent/oidc/result"
ATTACHMENT = "/api/agent/attachment"
RECORDING = "/api/agent/recording"
PLAYER = "/api/agent/recording/player"
RECORDING_CSP = b"default-src 'none'; sandbox"
RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
MAX_BODY = 16 * 1024
MAX_QA_BODY = 96 * 1024  # a scoring form's YAML
INLINE_IMAGES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
FILE_CSP = b"default-src 'none'; img-src 'self'; sandbox"
# The inbox and wallboard pages: only their own origin; fax pages are shown from blob: URLs.
INBOX_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
_STATUS = {
    InvalidArgument: 400,
    Unauthenticated: 401,
    PermissionDenied: 403,
    NotFound: 404,
    ResourceExhausted: 429,
    Unavailable: 503,
}


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _secure(scope: Scope) -> bool:
    proto = _headers(scope).get("x-forwarded-proto", "").split(",")[0].strip()
    return (proto or scope.get("scheme", "http")) == "https"


def _cookies(scope: Scope) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in _headers(scope).get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name and name not in out:
            out[name] = value
    return out


def _cookie(name: str, value: str, path: str, max_age: int, secure: bool) -> tuple[bytes, bytes]:
    """An HttpOnly cookie for `path` only (Max-Age 0 deletes it)."""
    flags = f"; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax"
    return (b"set-cookie", f"{name}={value}{flags}{'; Secure' if secure else ''}".encode())


def _same_origin(scope: Scope) -> bool:
    headers = _headers(scope)
    origin = headers.get("origin")
    if not origin:
        return True
    host = headers.get("x-forwarded-host", headers.get("host", "")).split(",")[0].strip()
    origin = origin.strip().lower().rstrip("/")
    return origin.split("://", 1)[-1] == host.lower()


class InboxHttp:
    def __init__(self, inbox: Inbox, app: App, trusted_proxies: tuple[Network, ...] = ()) -> None:
        self.inbox = inbox
        self.app = app
        self.trusted_proxies = trusted_proxies
        self.qa = QaApi(inbox._backends, lambda: inbox.directory)
        self.kb = KbApi(inbox._backends)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path not in (
            LOGIN,
            ATTACHMENT,
            RECORDING,
            PLAYER,
            OIDC,
            OIDC_START,
            OIDC_CALLBACK,
            OIDC_RESULT,
        ) and not path.startswith((QA_PREFIX, KB_PREFIX)):
            await self.app(scope, receive, send)
            return
        method = scope.get("method", "GET")
        try:
            if path == LOGIN and method == "POST":
                if not _same_origin(scope):
                    raise PermissionDenied("sign in from the inbox page of this server")
                data = await self._json(receive)
                result = await self.inbox.login(
                    data.get("tenant"),
                    data.get("agent_id"),
                    data.get("password"),
                    self._client(scope),
                )
                await self._send(send, 200, json.dumps(result, ensure_ascii=False).encode())
            elif path == OIDC and method == "GET":
                tenant = self._query(scope).get("tenant", "")
                provider = self.inbox.directory.provider(tenant)
                result = {"tenant": tenant, "name": provider.name if provider else None}
                await self._send(send, 200, json.dumps(result, ensure_ascii=False).encode())
            elif path == OIDC_START and method == "GET":
                await self._oidc_start(scope, send)
            elif path == OIDC_CALLBACK and method == "GET":
                await self._oidc_callback(scope, send)
            elif path == OIDC_RESULT and method == "POST":
                if not _same_origin(scope):
                    raise PermissionDenied("sign in from the inbox page of this server")
                token = _cookies(scope).get(oidc.RESULT_COOKIE, "")
                if not token:
                    raise Unauthenticated("no company sign-in to finish: sign in again")
                result = self.inbox.oidc_result(token)
                clear = _cookie(oidc.RESULT_COOKIE, "", OIDC_RESULT, 0, _secure(scope))
                await self._send(
                    send, 200, json.dumps(result, ensure_ascii=False).encode(), extra=[clear]
                )
            elif path == ATTACHMENT and method in ("GET", "HEAD"):
                await self._attachment(scope, send)
            elif path.startswith(QA_PREFIX) and method == "POST":
                principal, token = self._bearer(scope)
                data = await self._json(receive, MAX_QA_BODY)
                result = await self.qa(token, principal.tenant, path[len(QA_PREFIX) :], data)
                await self._send(send, 200, json.dumps(result, ensure_ascii=False).encode())
            elif path.startswith(KB_PREFIX) and method == "POST":
                principal, token = self._bearer(scope)
                data = await self._json(receive, MAX_KB_BODY)
                result = await self.kb(token, principal.tenant, path[len(KB_PREFIX) :], data)
                await self._send(send, 200, json.dumps(result, ensure_ascii=False).encode())
            elif path == PLAYER and method == "GET":
                await self._player(scope, send)
            elif path == RECORDING and method in ("GET", "HEAD"):
                await self._recording(scope, send)
            else:
                await self._error(send, 405, "method not allowed")
        except DomainError as exc:
            status = next((s for k, s in _STATUS.items() if isinstance(exc, k)), 409)
            await self._error(send, status, str(exc))
        except _BadBody as exc:
            await self._error(send, 400, str(exc))
        except Exception:
            logger.exception("%s %s failed", method, path)
            await self._error(send, 500, "internal error, please try again")

    def _query(self, scope: Scope) -> dict[str, str]:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        return {k: v[0] for k, v in query.items() if v}

    def _origin(self, scope: Scope) -> str:
        """This server as the browser reaches it (the provider sends the browser back here)."""
        headers = _headers(scope)
        host = headers.get("x-forwarded-host", headers.get("host", "")).split(",")[0].strip()
        return f"{'https' if _secure(scope) else 'http'}://{host}"

    async def _redirect(
        self, send: Send, location: str, cookies: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 303,
                "headers": [
                    (b"location", location.encode()),
                    (b"content-length", b"0"),
                    (b"cache-control", b"no-store"),
                    (b"referrer-policy", b"no-referrer"),
                    *(cookies or []),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})

    def _page_url(self, page: str, tenant: str, fragment: str) -> str:
        page = page if page in oidc.PAGES else "inbox"
        query = f"?tenant={quote(tenant, safe='')}" if tenant else ""
        return f"/{page}{query}#{fragment}"

    async def _oidc_start(self, scope: Scope, send: Send) -> None:
        q = self._query(scope)
        tenant, page = q.get("tenant", ""), q.get("page", "inbox")
        page = page if page in oidc.PAGES else "inbox"
        redirect_uri = self._origin(scope) + OIDC_CALLBACK
        try:
            known = self.inbox.known_tenants
            if known is not None and tenant not in known:
                raise oidc.Refused("unavailable", f"tenant {tenant!r} is not served here")
            started = await self.inbox.oidc.start(self.inbox.directory, tenant, page, redirect_uri)
        except oidc.Refused as exc:
            logger.warning("OIDC sign-in to %r not started: %s", tenant, exc)
            await self._redirect(send, self._page_url(page, tenant, f"oidc-error={exc.reason}"))
            return
        cookie = _cookie(
            oidc.STATE_COOKIE, started.cookie, OIDC, oidc.STATE_TTL_SECONDS, _secure(scope)
        )
        await self._redirect(send, started.location, [cookie])

    async def _oidc_callback(self, scope: Scope, send: Send) -> None:
        state_cookie = _cookies(scope).get(oidc.STATE_COOKIE, "")
        tenant, page = self.inbox.oidc.page_of(state_cookie)
        secure = _secure(scope)
        clear = _cookie(oidc.STATE_COOKIE, "", OIDC, 0, secure)
        try:
            done = await self.inbox.oidc.finish(
                self.inbox.directory, state_cookie, self._query(scope)
            )
        except oidc.Refused as exc:
            logger.warning("OIDC sign-in to %r refused: %s", tenant, exc)
            await self._redirect(
                send, self._page_url(page, tenant, f"oidc-error={exc.reason}"), [clear]
            )
            return
        profile = self.inbox.directory.profile(done.tenant, done.agent_id)
        assert profile is not None  # finish checked it
        token = self.inbox.issue(profile)["token"]
        logger.info("inbox sign-in of %s (%s) by OIDC", done.agent_id, done.tenant)
        result = _cookie(oidc.RESULT_COOKIE, token, OIDC_RESULT, oidc.RESULT_TTL_SECONDS, secure)
        await self._redirect(
            send, self._page_url(done.page, done.tenant, "oidc=done"), [clear, result]
        )

    def _client(self, scope: Scope) -> str:
        peer = (scope.get("client") or ("", 0))[0]
        forwarded = _headers(scope).get("x-forwarded-for", "")
        return client_address(peer, forwarded, self.trusted_proxies)

    async def _json(self, receive: Receive, limit: int = MAX_BODY) -> dict[str, Any]:
        chunks, size = [], 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _BadBody(f"too large: limit {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        try:
            data = json.loads(b"".join(chunks) or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise _BadBody("body: must be JSON") from None
        if not isinstance(data, dict):
            raise _BadBody("body: must be a JSON object")
        return data

    async def _attachment(self, scope: Scope, send: Send) -> None:
        principal, _ = self._bearer(scope)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        contact_id = (query.get("contact_id") or [""])[0]
        index = (query.get("index") or [""])[0]
        if not index.isdigit():
            raise InvalidArgument("index", "must be a number")
        desk = self.inbox.desk(principal)
        c = desk.contact(contact_id)  # only the agent's own contacts
        refs = c.refs
        if int(index) >= len(refs):
            raise NotFound("attachment", index)
        ref = refs[int(index)]
        try:
            data = await self.inbox.read_object(ref.bucket, ref.object_name)
        except Erased:
            raise Erased("attachment", index) from None  # 404, saying why
        if data is None:
            raise NotFound("attachment", index)
        name = re.sub(r"[^A-Za-z0-9._-]", "_", ref.filename) or "file"
        encoded = quote(ref.filename, safe="")
        if ref.content_type in INLINE_IMAGES:
            ctype, disposition = (
                ref.content_type,
                f"inline; filename=\"{name}\"; filename*=UTF-8''{encoded}",
            )
        else:
            ctype = "application/octet-stream"
            disposition = f"attachment; filename=\"{name}\"; filename*=UTF-8''{encoded}"
        body = b"" if scope.get("method") == "HEAD" else data
        await self._send(
            send,
            200,
            body,
            ctype,
            [
                (b"content-disposition", disposition.encode("latin-1")),
                (b"content-security-policy", FILE_CSP),
            ],
        )

    # ---- call recordings ----------------------------------------------------------------------

    def _bearer(self, scope: Scope) -> tuple[Any, str]:
        auth = _headers(scope).get("authorization", "")
        if not auth.lower().startswith("bearer "):
            raise Unauthenticated("authorization: a Bearer inbox token is required")
        token = auth[7:].strip()
        return self.inbox.verify(token), token

    async def _may_hear(self, scope: Scope, contact_id: str) -> Any:
        principal, token = self._bearer(scope)
        desk = self.inbox.desks.get((principal.tenant, principal.subject))
        on_desk = desk is not None and contact_id in desk.contacts
        await self.inbox.recordings.check_access(principal, token, contact_id, on_desk)
        return principal

    async def _audit_request(self, who: Any, contact_id: str, start: int) -> None:
        """Audit a request for a recording's audio, from byte `start`, as the playback it is."""
        rec = self.inbox.recordings
        if isinstance(who, recordings.Ticket):
            if not rec.audited(who):  # the player's first request: its playback starts
                await self._audit_playback(who, contact_id, "player", who.playback_id)
                rec.mark_audited(who)
            elif start == 0:  # played again from the start: the same playback, logged
                rec.played(who, contact_id, "ticket")
        elif start == 0:  # a download by a tool: a playback session of its own
            await self._audit_playback(who, contact_id, "download")
        else:  # a tool fetching by ranges: one playback for that token and recording
            await self._audit_playback(
                who, contact_id, "download", recordings.ranged_download_id(who, contact_id)
            )

    async def _audit_playback(
        self, who: Any, contact_id: str, via: str, event_id: str | None = None
    ) -> None:
        """Log a playback starting and announce it for the case's audit trail: once per ticket
        (`event_id`, the ticket's playback id, the same from every replica), or per download;
        never per byte range. A playback that cannot be audited is not served (the bus refuses:
        the error goes back to the user, whose player asks again)."""
        self.inbox.recordings.played(who, contact_id, via)
        try:
            await self.inbox.chat.notifier.recording_played(
                who.tenant, contact_id, who.subject, sorted(who.roles), via, event_id
            )
        except Exception as exc:  # the bus did not store it (down, timed out, refused)
            logger.warning("playback of %s not audited: %r", contact_id, exc)
            raise Unavailable("the playback could not be audited: try again") from exc

    async def _player(self, scope: Scope, send: Send) -> None:
        """What a player shows (the waveform, the duration) and the URL it plays from. Showing a
        player is no playback: the inbox shows one on every recorded call it opens. The playback
        is audited when the audio is first asked for with the URL's ticket."""
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        contact_id = recordings.check_contact_id((query.get("contact_id") or [""])[0])
        principal = await self._may_hear(scope, contact_id)
        rec = self.inbox.recordings
        duration, peaks = await rec.waveform(principal.tenant, contact_id)
        ticket = rec.ticket(principal, contact_id)
        url = (
            f"{RECORDING[1:]}?contact_id={quote(contact_id, safe='')}"
            f"&ticket={quote(rec.seal_ticket(ticket), safe='')}"
        )
        body = {
            "url": url,
            "expires_at": ticket.expires_at,
            "duration": duration,
            "channels": list(recordings.CHANNELS),
            "peaks": peaks,
        }
        await self._send(send, 200, json.dumps(body).encode())

    async def _recording(self, scope: Scope, send: Send) -> None:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        contact_id = recordings.check_contact_id((query.get("contact_id") or [""])[0])
        rec = self.inbox.recordings
        given = (query.get("ticket") or [""])[0]
        if given and "authorization" not in _headers(scope):
            ticket = rec.open_ticket(given, contact_id)
            if self.inbox.verify.revocations is not None:  # the user's tokens were revoked
                self.inbox.verify.revocations.check(ticket.principal)
            if (
                self.inbox.known_tenants is not None
                and ticket.tenant not in self.inbox.known_tenants
            ):
                raise PermissionDenied(f"tenant {ticket.tenant!r} is not served here")
            tenant, who = ticket.tenant, ticket
        else:  # a download by a tool or a script
            principal = await self._may_hear(scope, contact_id)
            tenant, who = principal.tenant, principal
        opened = await rec.open(tenant, contact_id)
        size = opened.size
        headers = [
            (b"content-type", b"audio/wav"),
            (b"accept-ranges", b"bytes"),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"cache-control", b"private, no-store"),
            (b"content-security-policy", RECORDING_CSP),
            (b"content-disposition", f'inline; filename="{contact_id}.wav"'.encode("latin-1")),
        ]
        start, stop, status = 0, size, 200
        wanted = _headers(scope).get("range", "").strip()
        match = RANGE_RE.match(wanted.replace(" ", "")) if wanted else None
        if match and (match.group(1) or match.group(2)):
            first, last = match.group(1), match.group(2)
            if first:
                start = int(first)
                stop = min(size, int(last) + 1) if last else size
            else:  # the last N bytes
                start, stop = max(0, size - int(last)), size
            if start >= size or stop <= start:
                await send(
                    {
                        "type": "http.response.start",
                        "status": 416,
                        "headers": [
                            (b"content-range", f"bytes */{size}".encode()),
                            (b"content-length", b"0"),
                            *headers[2:],
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": b""})
                return
            status = 206
            headers.append((b"content-range", f"bytes {start}-{stop - 1}/{size}".encode()))
        head = scope.get("method") == "HEAD"  # its headers only: nothing heard
        if not head:
            await self._audit_request(who, contact_id, start)
        headers.append((b"content-length", str(stop - start).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        if head:
            await send({"type": "http.response.body", "body": b""})
            return
        pos = start
        while True:
            end = min(stop, pos + recording_seal.CHUNK)
            piece = await asyncio.to_thread(opened.read, pos, end) if end > pos else b""
            pos = end
            more = pos < stop
            await send({"type": "http.response.body", "body": piece, "more_body": more})
            if not more:
                return

    async def _error(self, send: Send, status: int, message: str) -> None:
        body = json.dumps({"ok": False, "error": message}, ensure_ascii=False).encode()
        await self._send(send, status, body)

    async def _send(
        self,
        send: Send,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        headers = [
            (b"content-type", content_type.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"cache-control", b"no-store"),
            *(extra or []),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class _BadBody(Exception):
    pass
