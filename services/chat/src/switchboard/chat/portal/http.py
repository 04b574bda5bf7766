"""The portal's HTTP API, under /api/portal/ (the page itself is /portal):

- ``POST /api/portal/link`` {tenant, email, language} -> 202 {ok}: the same answer whether or not
  the email is a customer's; a customer's gets a one-time link by mail. Rate-limited per email and
  per client address (429).
- ``POST /api/portal/session`` {token} -> {session, email, expires_at}: a link, once.
- ``POST /api/portal/code`` {tenant, reference, language} -> 202 {ok}: the same answer whether or
  not the case exists; its customer gets a 6-digit code by mail. Rate-limited (429).
- ``POST /api/portal/code/session`` {tenant, reference, code} -> as ``/session``; 401 for any
  wrong, expired, used or locked code and for an unknown case.
- ``POST /api/portal/kb/seen`` {draft_id, event, article_id}: suggestions shown, one opened
  (Bearer session); ``POST /api/portal/requests`` takes the draft's ``draft_id`` too.
- ``GET /api/portal/cases``, ``GET /api/portal/cases/<id>``, ``POST /api/portal/cases/<id>/reply``
  {text}, ``POST /api/portal/requests`` {subject, text, language}, ``GET /api/portal/catalogue``,
  ``POST /api/portal/catalogue/<template>`` {fields, language} (400 names the wrong field):
  Bearer session.
- ``GET /api/portal/kb/search?tenant=&q=&language=``, ``GET /api/portal/kb/suggest?tenant=&text=``,
  ``POST /api/portal/kb/vote`` {tenant, article_id, helpful} (Bearer session optional).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from switchboard.chat.entrypoints.api import MAX_JSON_BYTES, HttpError, _body, _headers, _json
from switchboard.chat.portal.service import Portal, visible_channel
from switchboard.core.errors import InvalidArgument, PermissionDenied, Unauthenticated
from switchboard.core.portal_tokens import PortalGrant
from switchboard.v1 import case_pb2, contact_pb2

PREFIX = "/api/portal/"
Reply = tuple[int, Any, list[Any]]
_AUTHORS = {contact_pb2.AUTHOR_CUSTOMER: "customer", contact_pb2.AUTHOR_AGENT: "agent"}


def _ms(ts: Any) -> int | None:
    return ts.seconds * 1000 + ts.nanos // 1_000_000 if ts.seconds or ts.nanos else None


def _status(value: int) -> str:
    return case_pb2.CaseStatus.Name(value).removeprefix("CASE_STATUS_").lower()  # type: ignore[arg-type]


def case_summary(c: case_pb2.Case) -> dict[str, Any]:
    return {
        "case_id": c.case_id,
        "reference": c.reference,
        "subject": c.subject or next((k.subject for k in c.contacts if k.subject), ""),
        "status": _status(c.status),
        "created_at": _ms(c.created_at),
        "updated_at": _ms(c.updated_at),
        "channels": sorted({visible_channel(k.channel) for k in c.contacts}),
    }


def catalogue_item(item: case_pb2.CatalogueItem) -> dict[str, Any]:
    return {
        "template": item.template,
        "name": dict(item.name),
        "description": dict(item.description),
        "fields": [
            {
                "name": f.name,
                "kind": f.kind,
                "required": f.required,
                "label": dict(f.label),
                "choices": [{"value": c.value, "label": dict(c.label)} for c in f.choices],
                "max_length": f.max_length,
                "pattern": f.pattern,
            }
            for f in item.fields
        ],
    }


def field_error(message: str) -> dict[str, Any]:
    """A refused form as the page shows it: the message, and the field it names."""
    found = re.match(r"fields\.([a-z0-9_]+): (.*)", message)
    if found is None:
        return {"ok": False, "error": message}
    return {"ok": False, "error": message, "field": found.group(1), "problem": found.group(2)}


def case_detail(c: case_pb2.Case) -> dict[str, Any]:
    messages = [
        {
            "author": _AUTHORS[m.author],
            "text": "\n".join(p.text for p in m.parts if p.content_type in ("", "text/plain")),
            "at": _ms(m.sent_at),
            "channel": visible_channel(k.channel),
        }
        for k in c.contacts
        for m in k.messages
        if m.author in _AUTHORS
    ]
    messages.sort(key=lambda m: m["at"] or 0)
    return {**case_summary(c), "messages": messages}


def _hit(h: case_pb2.KnowledgeHit) -> dict[str, Any]:
    a = h.article
    return {
        "article_id": a.article_id,
        "title": a.title,
        "body": a.body,
        "language": a.language,
        "snippet": h.snippet,
        "helpful": a.helpful_votes,
        "not_helpful": a.not_helpful_votes,
    }


def _development_host(host: str) -> bool:
    name = (
        host.rsplit(":", 1)[0].strip("[]") if not host.startswith("[") else host[1:].split("]")[0]
    )
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class PortalHttp:
    def __init__(
        self, portal: Portal, portal_url: str, address_of: Callable[[dict[str, Any]], str]
    ) -> None:
        self.portal = portal
        self.portal_url = portal_url.rstrip("/")
        self._address_of = address_of

    def handles(self, path: str) -> bool:
        return path.startswith(PREFIX)

    async def route(self, scope: dict[str, Any], receive: Any) -> Reply:
        method, path = scope.get("method", "GET"), scope.get("path", "")
        parts = path[len(PREFIX) :].split("/")
        query = {k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}
        match (method, parts):
            case ("POST", ["link"]):
                return await self.link(scope, receive)
            case ("POST", ["session"]):
                data = _json(await _body(receive, MAX_JSON_BYTES))
                session = await self.portal.sign_in(data.get("token"))
                payload = {
                    "session": session.token,
                    "email": session.email,
                    "expires_at": session.expires_at,
                }
                return 200, payload, []
            case ("POST", ["code"]):
                data = _json(await _body(receive, MAX_JSON_BYTES))
                self.portal.request_code(
                    data.get("tenant"),
                    data.get("reference"),
                    data.get("language"),
                    self._address_of(scope),
                )
                return 202, {"ok": True}, []
            case ("POST", ["code", "session"]):
                data = _json(await _body(receive, MAX_JSON_BYTES))
                session = await self.portal.sign_in_with_code(
                    data.get("tenant"),
                    data.get("reference"),
                    data.get("code"),
                    self._address_of(scope),
                )
                payload = {
                    "session": session.token,
                    "email": session.email,
                    "expires_at": session.expires_at,
                }
                return 200, payload, []
            case ("POST", ["kb", "seen"]):
                data = _json(await _body(receive, MAX_JSON_BYTES))
                await self.portal.suggestion_seen(
                    self._grant(scope),
                    data.get("draft_id"),
                    data.get("event"),
                    data.get("article_id"),
                )
                return 202, {"ok": True}, []
            case ("GET", ["cases"]):
                cases = await self.portal.cases(self._grant(scope))
                return 200, {"cases": [case_summary(c) for c in cases]}, []
            case ("GET", ["cases", case_id]) if case_id:
                return 200, case_detail(await self.portal.case(self._grant(scope), case_id)), []
            case ("POST", ["cases", case_id, "reply"]) if case_id:
                data = _json(await _body(receive, MAX_JSON_BYTES))
                await self.portal.reply(self._grant(scope), case_id, data.get("text"))
                return 202, {"ok": True}, []
            case ("POST", ["requests"]):
                data = _json(await _body(receive, MAX_JSON_BYTES))
                await self.portal.new_request(
                    self._grant(scope),
                    data.get("subject"),
                    data.get("text"),
                    data.get("language"),
                    data.get("draft_id"),
                )
                return 202, {"ok": True}, []
            case ("GET", ["catalogue"]):
                items = await self.portal.catalogue(self._grant(scope))
                return 200, {"items": [catalogue_item(i) for i in items]}, []
            case ("POST", ["catalogue", template]) if template:
                data = _json(await _body(receive, MAX_JSON_BYTES))
                try:
                    await self.portal.catalogue_request(
                        self._grant(scope), template, data.get("fields"), data.get("language")
                    )
                except InvalidArgument as exc:
                    return 400, field_error(str(exc)), []
                return 202, {"ok": True}, []
            case ("GET", ["kb", "search"]):
                hits = await self.portal.search(
                    query.get("tenant"), query.get("q"), query.get("language")
                )
                return 200, {"hits": [_hit(h) for h in hits]}, []
            case ("GET", ["kb", "suggest"]):
                hits = await self.portal.suggest(query.get("tenant"), query.get("text"))
                return 200, {"hits": [_hit(h) for h in hits]}, []
            case ("POST", ["kb", "vote"]):
                data = _json(await _body(receive, MAX_JSON_BYTES))
                voter = self._voter(scope, data.get("tenant"))
                article = await self.portal.vote(
                    data.get("tenant"), voter, data.get("article_id"), data.get("helpful")
                )
                votes = {"helpful": article.helpful_votes, "not_helpful": article.not_helpful_votes}
                return 200, votes, []
        raise HttpError(404, "not found")

    async def link(self, scope: dict[str, Any], receive: Any) -> Reply:
        data = _json(await _body(receive, MAX_JSON_BYTES))
        self.portal.request_link(
            data.get("tenant"),
            data.get("email"),
            data.get("language"),
            self._address_of(scope),
            self._url(scope),
        )
        return 202, {"ok": True}, []

    def _url(self, scope: dict[str, Any]) -> str:
        """Where links point: CHAT_PORTAL_URL; unset, the address the request came to, but
        only on a developer's machine (a loopback host), as a forged Host must not choose it."""
        if self.portal_url:
            return self.portal_url
        host = _headers(scope).get("host", "")
        if not _development_host(host):
            raise HttpError(503, "sign-in by email is not configured (CHAT_PORTAL_URL)")
        return f"{scope.get('scheme', 'http')}://{host}/portal"

    def _session(self, scope: dict[str, Any]) -> str:
        auth = _headers(scope).get("authorization", "")
        return auth[7:].strip() if auth.lower().startswith("bearer ") else ""

    def _grant(self, scope: dict[str, Any]) -> PortalGrant:
        token = self._session(scope)
        if not token:
            raise Unauthenticated("authorization: a Bearer portal session is required")
        return self.portal.session(token)

    def _voter(self, scope: dict[str, Any], tenant: Any) -> str:
        if self._session(scope):
            grant = self._grant(scope)
            if grant.tenant != tenant:
                raise PermissionDenied("a customer votes in its own tenant's knowledge base")
            return grant.customer_id
        address = self._address_of(scope)
        return "visitor:" + hashlib.sha256(address.encode()).hexdigest()[:32]
