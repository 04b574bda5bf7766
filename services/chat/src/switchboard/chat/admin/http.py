"""The admin console's HTTP API (``Authorization: Bearer <inbox token>`` of an admin or a
supervisor; changes same-origin only). Everything is the caller's own tenant's:

- ``GET /api/admin/agents`` -> {tenant, version, agents, wrap_up_codes, oidc, teams, may_change}
- ``POST /api/admin/agents`` {id, password, name, role, ui_language, languages, skills, capacity}
  adds an agent; ``PUT /api/admin/agents/<id>`` {fields to change, version?} edits one
  (``disabled: true`` disables it); ``POST /api/admin/agents/<id>/password`` {password}
- ``PUT /api/admin/wrap-up-codes`` {wrap_up_codes: [...], version?}: the codes the inbox offers
- ``PUT /api/admin/oidc`` {oidc: {name, issuer, client_id, client_secret_file, agent_claim,
  email_domain} | null, version?}: the tenant's company sign-in (OIDC), or none
- ``PUT /api/admin/teams`` {teams: [{id, name, leads: [agent ids]}], version?}: the tenant's
  teams (an agent joins one with ``PUT /api/admin/agents/<id>`` {team})
- ``GET /api/admin/agents.yaml``: the agents file (CHAT_AGENTS_FILE) of the tenant
- ``GET /api/admin/routing`` -> {yaml, version, may_change}; ``POST /api/admin/routing``
  {yaml, dry_run} checks or applies it; ``GET /api/admin/routing.yaml``: as router.yaml;
  ``PUT /api/admin/languages`` {languages}: the routing's languages alone
- ``GET /api/admin/case-policy`` -> {yaml, version, hours, may_change}; ``POST
  /api/admin/case-policy`` {yaml | hours, dry_run, version?} checks or applies the tenant's
  policies (business hours, holidays, SLA, escalation, templates); ``GET
  /api/admin/case-policy.yaml``: the tenant's part of the case policy file
- ``GET /api/admin/templates`` -> {version, templates, may_change}: the tenant's own case
  templates (portal request forms); ``PUT /api/admin/templates/<name>`` {template, version}
  puts one into the tenant's policies (checked and applied as the policy YAML is)
- ``GET /api/admin/sla-policies`` -> {version, policies, calendars, may_change}; ``PUT
  /api/admin/sla-policies/<name>`` {policy, version}: one SLA policy (targets, calendar,
  escalation rules) into the tenant's policies; ``GET /api/admin/recurring`` -> {version, tasks,
  templates, may_change}; ``PUT /api/admin/recurring/<name>`` {task, version}: one recurring task
- ``GET /api/admin/qa-forms`` -> {forms (each at its latest version), may_change}; ``GET
  /api/admin/qa-forms/<id>?version=<n>`` one version; ``POST /api/admin/qa-forms`` {form_id,
  title, items: [{item_id, text, fatal, weight}], version?} stores the next version; ``GET
  /api/admin/qa-forms.yaml``: the forms as form files (one YAML document each)
- ``POST /api/admin/preview`` {channel, language, skills, queue} -> who would be offered it
- ``GET /api/admin/audit`` -> the changes, newest first: who, when, what

Errors are {ok: false, error} with 400 (a field: what is wrong with it), 401, 403, 404, 409.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import parse_qs, unquote

from switchboard.chat.admin.console import AdminConsole
from switchboard.chat.entrypoints.api import Receive, Scope, Send
from switchboard.chat.entrypoints.clients import Network
from switchboard.chat.inbox.http import _STATUS, App, InboxHttp, _BadBody, _headers, _same_origin
from switchboard.chat.inbox.service import Inbox
from switchboard.core import auth as sb_auth
from switchboard.core.errors import DomainError, PermissionDenied, Unauthenticated

logger = logging.getLogger(__name__)

PREFIX = "/api/admin/"


MAX_ADMIN_BODY = 256 * 1024  # a routing configuration


def _query(scope: Scope) -> dict[str, str]:
    raw = scope.get("query_string", b"").decode("latin-1")
    return {k: v[-1] for k, v in parse_qs(raw).items()}


class AdminHttp(InboxHttp):
    def __init__(
        self,
        console: AdminConsole,
        inbox: Inbox,
        app: App,
        trusted_proxies: tuple[Network, ...] = (),
    ) -> None:
        super().__init__(inbox, app, trusted_proxies)
        self.console = console

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not path.startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        method = scope.get("method", "GET")
        try:
            if method != "GET" and not _same_origin(scope):
                raise PermissionDenied(
                    "change the configuration from the admin page of this server"
                )
            token = self._token(scope)
            p = self.inbox.verify(token)
            await self._route(scope, receive, send, method, path[len(PREFIX) :], p, token)
        except DomainError as exc:
            status = next((s for k, s in _STATUS.items() if isinstance(exc, k)), 409)
            await self._error(send, status, str(exc))
        except _BadBody as exc:
            await self._error(send, 400, str(exc))
        except Exception:
            logger.exception("%s %s failed", method, path)
            await self._error(send, 500, "internal error, please try again")

    def _token(self, scope: Scope) -> str:
        auth = _headers(scope).get("authorization", "")
        if not auth.lower().startswith("bearer "):
            raise Unauthenticated("authorization: a Bearer token is required")
        return auth[7:].strip()

    async def _route(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        method: str,
        rest: str,
        p: sb_auth.Principal,
        token: str,
    ) -> None:
        c = self.console
        parts = [unquote(x) for x in rest.split("/")]
        result: Any
        if parts == ["agents"] and method == "GET":
            result = c.agents(p)
        elif parts == ["agents"] and method == "POST":
            data = await self._json(receive, MAX_ADMIN_BODY)
            result = await c.save_agent(p, data.pop("id", None), data, True, token)
        elif len(parts) == 2 and parts[0] == "agents" and method == "PUT":
            result = await c.save_agent(
                p, parts[1], await self._json(receive, MAX_ADMIN_BODY), False, token
            )
        elif len(parts) == 3 and parts[::2] == ["agents", "password"] and method == "POST":
            data = await self._json(receive, MAX_ADMIN_BODY)
            result = await c.set_password(p, parts[1], data.get("password"))
        elif parts == ["wrap-up-codes"] and method == "PUT":
            result = await c.set_codes(p, await self._json(receive, MAX_ADMIN_BODY))
        elif parts == ["teams"] and method == "PUT":
            result = await c.set_teams(p, await self._json(receive, MAX_ADMIN_BODY))
        elif parts == ["oidc"] and method == "PUT":
            result = await c.set_oidc(p, await self._json(receive, MAX_ADMIN_BODY))
        elif parts == ["agents.yaml"] and method == "GET":
            await self._yaml(send, c.export_agents(p), "agents.yaml")
            return
        elif parts == ["audit"] and method == "GET":
            result = {"entries": await c.audit(p, token)}
        elif parts == ["routing"] and method == "GET":
            result = await c.routing(p, token)
        elif parts == ["routing"] and method == "POST":
            data = await self._json(receive, MAX_ADMIN_BODY)
            result = await c.apply_routing(p, token, data.get("yaml"), data.get("dry_run") is True)
        elif parts == ["languages"] and method == "PUT":
            data = await self._json(receive, MAX_ADMIN_BODY)
            result = await c.set_languages(p, token, data.get("languages"))
        elif parts == ["routing.yaml"] and method == "GET":
            await self._yaml(send, await c.export_routing(p, token), "router.yaml")
            return
        elif parts == ["case-policy"] and method == "GET":
            result = await c.case_policy(p, token)
        elif parts == ["case-policy"] and method == "POST":
            result = await c.apply_case_policy(p, token, await self._json(receive, MAX_ADMIN_BODY))
        elif parts == ["case-policy.yaml"] and method == "GET":
            await self._yaml(send, await c.export_case_policy(p, token), "policy.yaml")
            return
        elif parts == ["templates"] and method == "GET":
            result = await c.templates(p, token)
        elif len(parts) == 2 and parts[0] == "templates" and method == "PUT":
            data = await self._json(receive, MAX_ADMIN_BODY)
            result = await c.save_template(p, token, parts[1], data)
        elif parts == ["sla-policies"] and method == "GET":
            result = await c.sla_policies(p, token)
        elif len(parts) == 2 and parts[0] == "sla-policies" and method == "PUT":
            data = await self._json(receive, MAX_ADMIN_BODY)
            result = await c.save_sla_policy(p, token, parts[1], data)
        elif parts == ["recurring"] and method == "GET":
            result = await c.recurring(p, token)
        elif len(parts) == 2 and parts[0] == "recurring" and method == "PUT":
            data = await self._json(receive, MAX_ADMIN_BODY)
            result = await c.save_recurring(p, token, parts[1], data)
        elif parts == ["qa-forms"] and method == "GET":
            result = await c.qa_forms(p, token)
        elif parts == ["qa-forms"] and method == "POST":
            result = await c.save_qa_form(p, token, await self._json(receive, MAX_ADMIN_BODY))
        elif len(parts) == 2 and parts[0] == "qa-forms" and method == "GET":
            version = _query(scope).get("version", "0")
            result = await c.qa_form(p, token, parts[1], version)
        elif parts == ["qa-forms.yaml"] and method == "GET":
            await self._yaml(send, await c.export_qa_forms(p, token), "qa-forms.yaml")
            return
        elif parts == ["preview"] and method == "POST":
            result = await c.preview(p, token, await self._json(receive, MAX_ADMIN_BODY))
        else:
            await self._error(send, 404 if method in ("GET", "POST", "PUT") else 405, "not found")
            return
        await self._send(send, 200, json.dumps(result, ensure_ascii=False).encode())

    async def _yaml(self, send: Send, text: str, filename: str) -> None:
        await self._send(
            send,
            200,
            text.encode(),
            "application/yaml; charset=utf-8",
            [(b"content-disposition", f'attachment; filename="{filename}"'.encode())],
        )
