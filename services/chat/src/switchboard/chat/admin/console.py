"""The admin console's service: one tenant's agents, routing and case policies, for its administrators (change)
and supervisors (view), with every change versioned and audited.

Agents live in the `AdminStore` bucket, which every chat replica watches: a change reaches the
inbox's sign-in at once, everywhere, without a restart. Routing (queues, steps) is the router's
own run-time configuration (RouterAdminService, with the caller's token): the router validates
it with the same reader as router.yaml, journals it, and keeps its queued contacts through it.
The tenant's policies (business hours, holidays, SLA and escalation rules, templates) are the
case service's (CaseService GetTenantPolicy/ApplyTenantPolicy, with the caller's token): it
checks a change with its policy file's reader and takes it at once.
Who may do what is the role table's (`switchboard.core.roles`): the ``GetConfig``/``ApplyConfig``
rules, and their ``:agents`` parts for the directory. Every call is for the caller's own tenant.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, date
from datetime import time as dt_time
from typing import Any

import yaml

from switchboard.chat.admin import agents as changes
from switchboard.chat.admin.store import AdminStore, AuditRecord
from switchboard.chat.inbox import directory as agents_directory
from switchboard.chat.inbox import qa as qa_wire
from switchboard.chat.inbox.service import Inbox
from switchboard.core import audit as sb_audit
from switchboard.core import auth as sb_auth
from switchboard.core import grpc as sb_grpc
from switchboard.core import roles
from switchboard.core.config import ConfigError
from switchboard.core.errors import (
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
)
from switchboard.core.revocation import Revocations
from switchboard.core.service_client import call
from switchboard.core.tls import GrpcTls
from switchboard.v1 import case_pb2, case_pb2_grpc, contact_pb2, router_pb2, router_pb2_grpc

logger = logging.getLogger(__name__)

TIMEOUT_SECONDS = 5.0
_ADMIN = "/switchboard.v1.RouterAdminService/"
VIEW_AGENTS = _ADMIN + "GetConfig:agents"
CHANGE_AGENTS = _ADMIN + "ApplyConfig:agents"
VIEW_ROUTING = _ADMIN + "GetConfig"
CHANGE_ROUTING = _ADMIN + "ApplyConfig"
PREVIEW_ROUTING = _ADMIN + "PreviewRouting"
VIEW_POLICY = "/switchboard.v1.CaseService/GetTenantPolicy"
CHANGE_POLICY = "/switchboard.v1.CaseService/ApplyTenantPolicy"
VIEW_QA_FORMS = "/switchboard.v1.CaseService/ListQaForms"
CHANGE_QA_FORMS = "/switchboard.v1.CaseService/PutQaForm"
MAX_QA_ITEMS = 200
CHANNELS = {
    "voice": contact_pb2.CHANNEL_VOICE,
    "chat": contact_pb2.CHANNEL_CHAT,
    "email": contact_pb2.CHANNEL_EMAIL,
    "fax": contact_pb2.CHANNEL_FAX,
}
REASONS = {
    router_pb2.EXCLUSION_REASON_LANGUAGE: "language",
    router_pb2.EXCLUSION_REASON_SKILL: "skill",
    router_pb2.EXCLUSION_REASON_CAPACITY: "capacity",
    router_pb2.EXCLUSION_REASON_PRESENCE: "presence",
    router_pb2.EXCLUSION_REASON_STEP: "step",
    router_pb2.EXCLUSION_REASON_RESERVED: "reserved",
    router_pb2.EXCLUSION_REASON_DECLINED: "declined",
    router_pb2.EXCLUSION_REASON_NOT_CONNECTED: "not_connected",
}


def _require(p: sb_auth.Principal, rule: str) -> None:
    if not roles.RULES[rule].admits(p):
        raise PermissionDenied(f"{', '.join(sorted(p.roles)) or 'this role'} may not do this")


def revokes(entry: AuditRecord) -> bool:
    """Whether a change ends the agent's sign-ins: disabled (alone or with other fields), a new
    password, or a role that may do less than the one its tokens name. Its tokens issued until
    then are refused everywhere (a role that may do more comes with the next sign-in)."""
    if entry.action in ("agent.disable", "agent.password", "agent.delete"):
        return True
    if entry.action != "agent.edit":
        return False
    if entry.changes.get("disabled") is True:
        return True
    old, new = entry.changes.get("role_before"), entry.changes.get("role")
    return isinstance(old, str) and not _may(new or "agent") >= _may(old)


def _may(role: str) -> frozenset[str]:
    """The role table's rules a token of `role` passes."""
    p = sb_auth.Principal("-", "-", frozenset({role}))
    return frozenset(name for name, rule in roles.RULES.items() if rule.admits(p))


def routing_file(tenant: str, text: str) -> str:
    """A tenant's routing configuration as router.yaml: ``tenants: {<tenant>: ...}``."""
    body = "".join(f"    {line}\n" if line.strip() else "\n" for line in text.splitlines())
    return f"tenants:\n  {tenant}:\n{body}"


class AdminConsole:
    def __init__(
        self,
        store: AdminStore,
        inbox: Inbox,
        router_target: Any,
        tls: GrpcTls | None = None,
        case_target: str = "",
        revocations: Revocations | None = None,
    ) -> None:
        self.store = store
        self.revocations = revocations
        self.case_target = case_target
        self.inbox = inbox
        self.router_target = router_target  # an address, or tenant -> its router group's
        self.tls = tls
        self.revisions: dict[str, int] = {}
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Take the stored directories before the inbox takes a sign-in, then follow their
        changes."""
        for tenant, (text, revision) in (await self.store.agents()).items():
            try:
                await self._changed(tenant, text, revision)
            except ConfigError as exc:  # written checked: only a hand-made value gets here
                logger.error("stored agents of %s ignored, the file's kept: %s", tenant, exc)
        await self.reconcile()
        await self.store.watch(self._changed)

    async def stop(self) -> None:
        await self.store.stop()

    async def _changed(self, tenant: str, text: str, revision: int) -> None:
        if revision <= self.revisions.get(tenant, 0):
            return  # applied already (this replica's own write)
        part = agents_directory.load_text(text, f"{tenant} (stored)")
        before = self.inbox.directory
        self.inbox.directory = before.with_tenant(tenant, part)
        self.revisions[tenant] = revision
        logger.info("agents of %s now at version %d", tenant, revision)
        await self.inbox.profiles_changed(before, self.inbox.directory)

    # ---- agents --------------------------------------------------------------------------

    def agents(self, p: sb_auth.Principal) -> dict[str, Any]:
        _require(p, VIEW_AGENTS)
        part = self.inbox.directory.tenant(p.tenant)
        return {
            "tenant": p.tenant,
            "version": self.revisions.get(p.tenant, 0),
            "agents": changes.listing(part, p.tenant),
            "wrap_up_codes": list(part.codes(p.tenant)),
            "oidc": provider.to_yaml() if (provider := part.provider(p.tenant)) else None,
            "teams": [t.to_yaml() for t in part.teams_of(p.tenant)],
            "may_change": roles.RULES[CHANGE_AGENTS].admits(p),
        }

    async def save_agent(
        self,
        p: sb_auth.Principal,
        agent_id: Any,
        data: dict[str, Any],
        create: bool,
        token: str = "",
    ) -> dict[str, Any]:
        """Add (`create`, with a password) or edit an agent of the caller's tenant. Skills must
        be the tenant's routing skills (the router refuses others at sign-in)."""
        _require(p, CHANGE_AGENTS)
        if token and isinstance(data.get("skills"), dict):
            await self._check_skills(p, token, data["skills"])
        fields = {k: v for k, v in data.items() if k not in ("password", "version")}
        hashed = ""
        if create:
            hashed = await asyncio.to_thread(
                agents_directory.hash_password, changes.check_password(data.get("password"))
            )
        async with self._lock:
            self._check_version(p.tenant, data.get("version"))
            part = self.inbox.directory.tenant(p.tenant)
            _, text, change = changes.save(
                part, p.tenant, agent_id, fields, create=create, password_hash=hashed
            )
            return await self._commit(p, text, change)

    async def set_password(
        self, p: sb_auth.Principal, agent_id: Any, password: Any
    ) -> dict[str, Any]:
        _require(p, CHANGE_AGENTS)
        hashed = await asyncio.to_thread(
            agents_directory.hash_password, changes.check_password(password)
        )
        async with self._lock:
            part = self.inbox.directory.tenant(p.tenant)
            _, text, change = changes.set_password(part, p.tenant, str(agent_id), hashed)
            return await self._commit(p, text, change)

    async def set_codes(self, p: sb_auth.Principal, data: dict[str, Any]) -> dict[str, Any]:
        """Replace the tenant's wrap-up codes (checked as the agents file's ``wrap_up_codes``)."""
        _require(p, CHANGE_AGENTS)
        return await self._change(
            p, data, lambda part: changes.set_codes(part, p.tenant, data.get("wrap_up_codes"))
        )

    async def set_oidc(self, p: sb_auth.Principal, data: dict[str, Any]) -> dict[str, Any]:
        """Set (or remove, with ``oidc: null``) the tenant's company sign-in (the agents file's
        ``oidc``, checked as the file is)."""
        _require(p, CHANGE_AGENTS)
        if "oidc" not in data:
            raise InvalidArgument("oidc", "is required (null removes the company sign-in)")
        return await self._change(
            p, data, lambda part: changes.set_oidc(part, p.tenant, data["oidc"])
        )

    async def set_teams(self, p: sb_auth.Principal, data: dict[str, Any]) -> dict[str, Any]:
        """Replace the tenant's teams (the agents file's ``teams``: id, name, leads), checked as
        the file is: a lead must be an agent of the tenant, an id appears once."""
        _require(p, CHANGE_AGENTS)
        if "teams" not in data:
            raise InvalidArgument("teams", "is required: a list of {id, name, leads}")
        return await self._change(
            p, data, lambda part: changes.set_teams(part, p.tenant, data["teams"])
        )

    async def _change(
        self, p: sb_auth.Principal, data: dict[str, Any], make: Callable[[Any], Any]
    ) -> dict[str, Any]:
        """A change of the tenant's whole directory part, on the version `data` was based on."""
        async with self._lock:
            self._check_version(p.tenant, data.get("version"))
            _, text, change = make(self.inbox.directory.tenant(p.tenant))
            return await self._commit(p, text, change)

    async def _check_skills(self, p: sb_auth.Principal, token: str, skills: dict[str, Any]) -> None:
        channel, stub = self._router(token, p.tenant)
        try:
            got = await call("GetConfig", stub.GetConfig(router_pb2.GetConfigRequest()))
        except DomainError as exc:  # the router away: its sign-in still checks
            logger.warning("skills of %s not checked against the routing: %s", p.tenant, exc)
            return
        finally:
            await channel.close()
        known = (yaml.safe_load(got.yaml) or {}).get("skills") or []
        unknown = [name for name in skills if known and name not in known]
        if unknown:
            raise InvalidArgument(
                f"skills.{unknown[0]}",
                f"unknown skill {unknown[0]!r} (the tenant's routing has: {', '.join(known)})",
            )

    def _check_version(self, tenant: str, version: Any) -> None:
        if version is None:
            return
        if not isinstance(version, int) or isinstance(version, bool):
            raise InvalidArgument("version", "must be a number")
        if version != self.revisions.get(tenant, 0):
            raise FailedPrecondition(
                "the agents changed meanwhile: reload and make the change again"
            )

    async def _commit(
        self, p: sb_auth.Principal, text: str, change: changes.Change
    ) -> dict[str, Any]:
        """Store the tenant's directory and the change's audit record in one write, apply it
        here, refuse the tokens it revokes, and publish the record (`AdminStore.reconcile`
        publishes it if this process dies first)."""
        entry = AuditRecord(
            p.tenant, time.time(), p.subject, change.action, change.agent_id, 0, change.changes
        )
        revision = await self.store.save_agents(
            p.tenant, text, self.revisions.get(p.tenant, 0), entry
        )
        entry = dataclasses.replace(entry, version=revision)
        await self._changed(p.tenant, text, revision)
        await self._follow_up(entry)
        logger.info("%s: %s of %s by %s", p.tenant, change.action, change.agent_id, p.subject)
        return self.agents(p)

    async def _follow_up(self, entry: AuditRecord) -> None:
        """What follows a stored change: the tokens it revokes are refused in every service
        (the revocation list), and its audit record is published."""
        if self.revocations is not None and revokes(entry):
            known = self.revocations.revoked_before(entry.tenant, entry.target)
            if known is None or known < int(entry.at):
                await self.revocations.revoke(entry.tenant, entry.target, entry.at)
                logger.info("%s: tokens of %s revoked", entry.tenant, entry.target)
        await self.store.record(entry)

    async def reconcile(self, tenant: str | None = None) -> None:
        """Finish the stored changes whose follow-up a stopped process did not: their audit
        records and revocations."""
        for entry in await self.store.reconcile(tenant):
            await self._follow_up(entry)

    def export_agents(self, p: sb_auth.Principal) -> str:
        """The caller's tenant's agents as the agents file (CHAT_AGENTS_FILE) would hold them."""
        _require(p, VIEW_AGENTS)
        return agents_directory.dump(self.inbox.directory, [p.tenant])

    async def audit(self, p: sb_auth.Principal, token: str = "") -> list[dict[str, Any]]:
        _require(p, VIEW_AGENTS)
        await self.reconcile(p.tenant)
        if token and roles.RULES[VIEW_ROUTING].admits(p):
            try:
                await self.reconcile_routing(p, token)
            except DomainError as exc:  # the router down: its changes' records wait
                logger.warning("routing records of %s not reconciled: %s", p.tenant, exc)
        if token and self.case_target and roles.RULES[VIEW_QA_FORMS].admits(p):
            try:
                await self.reconcile_qa_forms(p, token)
            except DomainError as exc:  # the case service down: its forms' records wait
                logger.warning("QA form records of %s not reconciled: %s", p.tenant, exc)
        return [asdict(r) for r in await self.store.audit(p.tenant)]

    async def reconcile_qa_forms(self, p: sb_auth.Principal, token: str) -> list[AuditRecord]:
        """Publish the record of every stored version of the tenant's QA forms that the audit
        stream lacks (made from who stored it, when, and its difference from the version
        before); the records published are returned."""
        audited = {
            (r.target, r.version)
            for r in await self.store.audit(p.tenant, limit=1 << 30)
            if r.action == "qa_form.put"
        }
        published: list[AuditRecord] = []
        channel, stub = self._case(token)
        try:
            listed = await call("ListQaForms", stub.ListQaForms(case_pb2.ListQaFormsRequest()))
            for latest in listed.forms:
                if not latest.created_by:
                    continue  # a built-in form: nobody changed it
                before_text = ""
                for version in range(1, latest.version + 1):
                    if (latest.form_id, version) in audited:
                        before_text = ""  # fetched only when a later one is missing
                        continue
                    form = latest
                    if version != latest.version:
                        form = await call(
                            "GetQaForm",
                            stub.GetQaForm(
                                case_pb2.GetQaFormRequest(form_id=latest.form_id, version=version)
                            ),
                        )
                    if not form.created_by:  # a built-in version: nobody made it
                        before_text = qa_form_yaml(qa_form_wire(form))
                        continue
                    if version > 1 and not before_text:
                        before = await call(
                            "GetQaForm",
                            stub.GetQaForm(
                                case_pb2.GetQaFormRequest(
                                    form_id=latest.form_id, version=version - 1
                                )
                            ),
                        )
                        before_text = qa_form_yaml(qa_form_wire(before))
                    entry = qa_form_record(p.tenant, before_text, form)
                    await self.store.record(entry)
                    published.append(entry)
                    logger.warning(
                        "audit record of %s QA form %s (version %d) published late",
                        p.tenant,
                        form.form_id,
                        version,
                    )
                    before_text = qa_form_yaml(qa_form_wire(form))
        finally:
            await channel.close()
        return published

    # ---- routing -------------------------------------------------------------------------

    def _router(
        self, token: str, tenant: str
    ) -> tuple[Any, router_pb2_grpc.RouterAdminServiceStub]:
        target = (
            self.router_target
            if isinstance(self.router_target, str)
            else self.router_target(tenant)
        )
        channel = sb_grpc.channel(target, token, TIMEOUT_SECONDS, self.tls)
        return channel, router_pb2_grpc.RouterAdminServiceStub(channel)

    async def routing(self, p: sb_auth.Principal, token: str) -> dict[str, Any]:
        _require(p, VIEW_ROUTING)
        channel, stub = self._router(token, p.tenant)
        try:
            got = await call("GetConfig", stub.GetConfig(router_pb2.GetConfigRequest()))
        finally:
            await channel.close()
        return {
            "tenant": p.tenant,
            "yaml": got.yaml,
            "version": got.version,
            "may_change": roles.RULES[CHANGE_ROUTING].admits(p),
        }

    async def apply_routing(
        self, p: sb_auth.Principal, token: str, text: Any, dry_run: bool
    ) -> dict[str, Any]:
        """Check (`dry_run`) or apply the tenant's routing YAML; the router says what is wrong."""
        _require(p, CHANGE_ROUTING)
        if not isinstance(text, str) or not text.strip():
            raise InvalidArgument("yaml", "is required")
        channel, stub = self._router(token, p.tenant)
        try:
            got = await call(
                "ApplyConfig",
                stub.ApplyConfig(router_pb2.ApplyConfigRequest(yaml=text, dry_run=dry_run)),
            )
        finally:
            await channel.close()
        if not dry_run:
            # The router journaled the change with who made it and the lines it changed; its
            # record is published from there (`reconcile_routing` does if this process dies).
            await self.reconcile_routing(p, token, got)
            logger.info("%s: routing version %d by %s", p.tenant, got.version, p.subject)
        return {"tenant": p.tenant, "yaml": got.yaml, "version": got.version, "checked": True}

    async def reconcile_routing(
        self, p: sb_auth.Principal, token: str, config: Any = None
    ) -> list[AuditRecord]:
        """Publish the record of every change the router keeps (`config`: its answer, else
        asked) that the audit stream lacks; the records published are returned."""
        if config is None or not config.changes:
            channel, stub = self._router(token, p.tenant)
            try:
                config = await call("GetConfig", stub.GetConfig(router_pb2.GetConfigRequest()))
            finally:
                await channel.close()
        audited = {
            r.version
            for r in await self.store.audit(p.tenant, limit=1 << 30)
            if r.action == "routing.apply"
        }
        published: list[AuditRecord] = []
        for change in config.changes:
            if change.version in audited or not change.actor:
                continue
            entry = AuditRecord(
                p.tenant,
                change.applied_at.ToDatetime(tzinfo=UTC).timestamp(),
                change.actor,
                "routing.apply",
                p.tenant,
                change.version,
                {"diff": change.diff},
            )
            await self.store.record(entry)
            published.append(entry)
        return published

    async def set_languages(
        self, p: sb_auth.Principal, token: str, languages: Any
    ) -> dict[str, Any]:
        """Replace the tenant's languages (the routing's ``languages``); the router checks them."""
        _require(p, CHANGE_ROUTING)
        if not isinstance(languages, list) or not all(isinstance(x, str) for x in languages):
            raise InvalidArgument("languages", "must be a list of language codes")
        current = await self.routing(p, token)
        text = with_languages(current["yaml"], languages)
        return await self.apply_routing(p, token, text, dry_run=False)

    async def export_routing(self, p: sb_auth.Principal, token: str) -> str:
        got = await self.routing(p, token)
        return routing_file(p.tenant, got["yaml"])

    async def preview(
        self, p: sb_auth.Principal, token: str, data: dict[str, Any]
    ) -> dict[str, Any]:
        """Who the router would offer a sample contact now, and why not the others."""
        _require(p, PREVIEW_ROUTING)
        channel_name = data.get("channel", "chat")
        if channel_name not in CHANNELS:
            raise InvalidArgument("channel", f"must be one of {', '.join(CHANNELS)}")
        skills = data.get("skills") or []
        if isinstance(skills, str):
            skills = [s.strip() for s in skills.split(",") if s.strip()]
        if not isinstance(skills, list) or not all(isinstance(s, str) for s in skills):
            raise InvalidArgument("skills", "must be a list of skill names")
        language, queue = data.get("language", ""), data.get("queue", "")
        if not isinstance(language, str) or not isinstance(queue, str):
            raise InvalidArgument("language", "must be text")
        channel, stub = self._router(token, p.tenant)
        try:
            got = await call(
                "PreviewRouting",
                stub.PreviewRouting(
                    router_pb2.PreviewRoutingRequest(
                        channel=CHANNELS[channel_name],
                        language=language,
                        skills=skills,
                        queue=queue,
                    )
                ),
            )
        finally:
            await channel.close()
        attempt = got.attempts[0]
        return {
            "queue": got.queue,
            "outcome": attempt.outcome,
            "agent_id": attempt.agent_id,
            "candidates": [
                {"agent_id": c.agent_id, "score": c.proficiency, "sticky": c.sticky}
                for c in attempt.candidates
            ],
            "excluded": [
                {
                    "agent_id": e.agent_id,
                    "reasons": [REASONS.get(r, "other") for r in e.reasons],
                    "detail": e.detail,
                }
                for e in attempt.excluded
            ],
            "excluded_total": attempt.excluded_total,
        }

    # ---- the case service's policies -----------------------------------------------------

    def _case(self, token: str) -> tuple[Any, case_pb2_grpc.CaseServiceStub]:
        channel = sb_grpc.channel(self.case_target, token, TIMEOUT_SECONDS, self.tls)
        return channel, case_pb2_grpc.CaseServiceStub(channel)

    async def case_policy(self, p: sb_auth.Principal, token: str) -> dict[str, Any]:
        """The tenant's part of the case policy file, and its business hours as form fields."""
        _require(p, VIEW_POLICY)
        channel, stub = self._case(token)
        try:
            got = await call(
                "GetTenantPolicy", stub.GetTenantPolicy(case_pb2.GetTenantPolicyRequest())
            )
        finally:
            await channel.close()
        return {
            "tenant": p.tenant,
            "yaml": got.yaml,
            "version": got.version,
            "hours": business_hours(p.tenant, got.yaml),
            "may_change": roles.RULES[CHANGE_POLICY].admits(p),
        }

    async def apply_case_policy(
        self, p: sb_auth.Principal, token: str, data: dict[str, Any]
    ) -> dict[str, Any]:
        """Check (`dry_run`) or apply the tenant's policies: `yaml` (the part as text), or
        `hours` (the business-hours form) put into the current part."""
        _require(p, CHANGE_POLICY)
        dry_run = data.get("dry_run") is True
        version = data.get("version")
        if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
            raise InvalidArgument("version", "must be a number")
        channel, stub = self._case(token)
        try:
            before = await call(
                "GetTenantPolicy", stub.GetTenantPolicy(case_pb2.GetTenantPolicyRequest())
            )
            given = data.get("yaml")
            if "hours" in data:
                text = with_business_hours(p.tenant, before.yaml, data["hours"])
            elif isinstance(given, str) and given.strip():
                text = given
            else:
                raise InvalidArgument("yaml", "is required")
            request = case_pb2.ApplyTenantPolicyRequest(yaml=text, dry_run=dry_run)
            if version is not None:
                request.version = version
            got = await call("ApplyTenantPolicy", stub.ApplyTenantPolicy(request))
        finally:
            await channel.close()
        if not dry_run:
            # The case service stored the change with its record (who, when, the lines changed);
            # publish it (`AdminStore.reconcile` does if this process dies first).
            await self.store.publish_policy(p.tenant, got.version)
            logger.info("%s: case policies version %d by %s", p.tenant, got.version, p.subject)
        return {
            "tenant": p.tenant,
            "yaml": got.yaml,
            "version": got.version,
            "hours": business_hours(p.tenant, got.yaml),
            "checked": True,
        }

    async def export_case_policy(self, p: sb_auth.Principal, token: str) -> str:
        return str((await self.case_policy(p, token))["yaml"])

    async def templates(self, p: sb_auth.Principal, token: str) -> dict[str, Any]:
        """The tenant's own case templates (its portal request forms among them), as its part
        of the policy file holds them."""
        got = await self.case_policy(p, token)
        part = yaml.safe_load(got["yaml"]) or {}
        return {
            "tenant": p.tenant,
            "version": got["version"],
            "templates": [t for t in part.get("templates") or [] if isinstance(t, dict)],
            "may_change": got["may_change"],
        }

    async def save_template(
        self, p: sb_auth.Principal, token: str, name: str, data: dict[str, Any]
    ) -> dict[str, Any]:
        """Put the template `name` {template, version} into the tenant's part (replacing its
        own of that name, else added) and apply the part: the case service checks it as the
        policy file, naming the entry and field."""
        _require(p, CHANGE_POLICY)
        template = data.get("template")
        if not isinstance(template, dict):
            raise InvalidArgument("template", "must be the template's fields")
        if not name or not isinstance(name, str):
            raise InvalidArgument("name", "is required")
        current = await self.case_policy(p, token)
        part = yaml.safe_load(current["yaml"]) or {}
        if not isinstance(part, dict):
            part = {}
        entry = {"name": name, "tenant": p.tenant, **template}
        entry["name"], entry["tenant"] = name, p.tenant  # the URL's name, the caller's tenant
        templates = [t for t in part.get("templates") or [] if isinstance(t, dict)]
        index = next((i for i, t in enumerate(templates) if t.get("name") == name), None)
        if index is None:
            templates.append(entry)
        else:
            templates[index] = entry
        part["templates"] = templates
        text = yaml.safe_dump(part, allow_unicode=True, sort_keys=False, width=100)
        version = data.get("version", current["version"])
        await self.apply_case_policy(p, token, {"yaml": text, "version": version})
        return await self.templates(p, token)

    async def _entries(
        self, p: sb_auth.Principal, token: str, key: str
    ) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
        """The tenant's policies, its part parsed, and the part's `key` entries."""
        current = await self.case_policy(p, token)
        part = yaml.safe_load(current["yaml"]) or {}
        if not isinstance(part, dict):
            part = {}
        return current, part, [e for e in part.get(key) or [] if isinstance(e, dict)]

    async def _listed(
        self, p: sb_auth.Principal, token: str, key: str
    ) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
        """As `_entries`, the entries as JSON holds them (a date as its ISO text)."""
        current, part, entries = await self._entries(p, token, key)
        return current, part, [_plain(e) for e in entries]

    async def _put_entry(
        self,
        p: sb_auth.Principal,
        token: str,
        key: str,
        name: str,
        entry: Any,
        version: Any,
    ) -> None:
        """Put the entry `name` of list `key` (replacing the tenant's own of that name, else
        added) into the tenant's part and apply it: the case service checks it as the policy
        file, naming the entry and field."""
        _require(p, CHANGE_POLICY)
        if not isinstance(entry, dict):
            raise InvalidArgument(key, "must be the entry's fields")
        if not name or not isinstance(name, str):
            raise InvalidArgument("name", "is required")
        current, part, entries = await self._entries(p, token, key)
        made = {"name": name, "tenant": p.tenant, **entry}
        made["name"], made["tenant"] = name, p.tenant  # the URL's name, the caller's tenant
        index = next((i for i, e in enumerate(entries) if e.get("name") == name), None)
        if index is None:
            entries.append(made)
        else:
            entries[index] = made
        part[key] = entries
        text = yaml.safe_dump(part, allow_unicode=True, sort_keys=False, width=100)
        based_on = current["version"] if version is None else version
        await self.apply_case_policy(p, token, {"yaml": text, "version": based_on})

    async def sla_policies(self, p: sb_auth.Principal, token: str) -> dict[str, Any]:
        """The tenant's own SLA policies (targets, calendar, escalation rules), and the
        calendars it may name."""
        current, part, entries = await self._listed(p, token, "sla_policies")
        calendars = ["24x7", *sorted(str(c) for c in part.get("calendars") or {})]
        return {
            "tenant": p.tenant,
            "version": current["version"],
            "policies": entries,
            "calendars": calendars,
            "may_change": current["may_change"],
        }

    async def save_sla_policy(
        self, p: sb_auth.Principal, token: str, name: str, data: dict[str, Any]
    ) -> dict[str, Any]:
        """Put the SLA policy `name` {policy, version} into the tenant's policies."""
        await self._put_entry(
            p, token, "sla_policies", name, data.get("policy"), data.get("version")
        )
        return await self.sla_policies(p, token)

    async def recurring(self, p: sb_auth.Principal, token: str) -> dict[str, Any]:
        """The tenant's recurring tasks, and the templates they may open cases from."""
        current, part, entries = await self._listed(p, token, "recurring")
        templates = [str(t.get("name")) for t in part.get("templates") or [] if isinstance(t, dict)]
        return {
            "tenant": p.tenant,
            "version": current["version"],
            "tasks": entries,
            "templates": templates,
            "may_change": current["may_change"],
        }

    async def save_recurring(
        self, p: sb_auth.Principal, token: str, name: str, data: dict[str, Any]
    ) -> dict[str, Any]:
        """Put the recurring task `name` {task, version} into the tenant's policies."""
        await self._put_entry(p, token, "recurring", name, data.get("task"), data.get("version"))
        return await self.recurring(p, token)

    # ---- QA scoring forms (the case service's) ---------------------------------------------

    async def qa_forms(self, p: sb_auth.Principal, token: str) -> dict[str, Any]:
        """The tenant's QA forms, each at its latest version (built-in ones included)."""
        _require(p, VIEW_POLICY)  # the console's own viewers ...
        _require(p, VIEW_QA_FORMS)  # ... as far as the role table lets them see forms
        channel, stub = self._case(token)
        try:
            got = await call("ListQaForms", stub.ListQaForms(case_pb2.ListQaFormsRequest()))
        finally:
            await channel.close()
        return {
            "tenant": p.tenant,
            "forms": [qa_form_wire(f) for f in got.forms],
            "may_change": roles.RULES[CHANGE_QA_FORMS].admits(p),
        }

    async def qa_form(
        self, p: sb_auth.Principal, token: str, form_id: str, version: Any = 0
    ) -> dict[str, Any]:
        """One version of one of the tenant's forms (0: the latest)."""
        _require(p, VIEW_POLICY)
        _require(p, VIEW_QA_FORMS)
        try:
            number = int(version or 0)
        except (TypeError, ValueError):
            raise InvalidArgument("version", "must be a number") from None
        channel, stub = self._case(token)
        try:
            got = await call(
                "GetQaForm",
                stub.GetQaForm(case_pb2.GetQaFormRequest(form_id=form_id, version=number)),
            )
        finally:
            await channel.close()
        return qa_form_wire(got)

    async def save_qa_form(
        self, p: sb_auth.Principal, token: str, data: dict[str, Any]
    ) -> dict[str, Any]:
        """Store the form `data` {form_id, title, items: [{item_id, text, fatal, weight}],
        version?} as the next version of its form; the case service checks it as a form file.
        `version`: the version the change was based on (0 or absent for a new form)."""
        _require(p, VIEW_POLICY)
        _require(p, CHANGE_QA_FORMS)
        text = qa_form_yaml(data)
        form_id = str(data["form_id"])
        based_on = data.get("version")
        if based_on is not None and (not isinstance(based_on, int) or isinstance(based_on, bool)):
            raise InvalidArgument("version", "must be a number")
        channel, stub = self._case(token)
        try:
            before_text, before_version = "", 0
            try:
                before = await call(
                    "GetQaForm", stub.GetQaForm(case_pb2.GetQaFormRequest(form_id=form_id))
                )
                before_text, before_version = qa_form_yaml(qa_form_wire(before)), before.version
            except InvalidArgument:  # a new form
                pass
            if based_on is not None and based_on != before_version:
                raise FailedPrecondition(
                    f"form {form_id} changed meanwhile (now version {before_version}): reload "
                    "and make the change again"
                )
            got = await call("PutQaForm", stub.PutQaForm(case_pb2.PutQaFormRequest(yaml=text)))
        finally:
            await channel.close()
        # The case service keeps who made each version; the record is made from what it
        # stored (`reconcile_qa_forms` makes it if this process dies first).
        await self.store.record(qa_form_record(p.tenant, before_text, got))
        logger.info("%s: QA form %s version %d by %s", p.tenant, form_id, got.version, p.subject)
        return qa_form_wire(got)

    async def export_qa_forms(self, p: sb_auth.Principal, token: str) -> str:
        """The tenant's forms at their latest versions, one YAML document each (the format of
        a form file, forms/qa_default.yaml)."""
        forms = (await self.qa_forms(p, token))["forms"]
        return "---\n".join(qa_form_yaml(f) for f in forms)


def _plain(value: Any) -> Any:
    """`value` (parsed YAML) as JSON holds it: dates and times as their ISO text."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, date | dt_time):
        return value.isoformat()
    return value


def qa_form_record(tenant: str, before_text: str, form: case_pb2.QaForm) -> AuditRecord:
    """The audit record of one stored version of a QA form: who stored it, when, and the lines
    it changed from `before_text` (the version before, empty for the first)."""
    text = qa_form_yaml(qa_form_wire(form))
    at = form.created_at.ToDatetime(tzinfo=UTC).timestamp() if form.HasField("created_at") else 0.0
    return AuditRecord(
        tenant,
        at,
        form.created_by,
        "qa_form.put",
        form.form_id,
        form.version,
        {"diff": sb_audit.diff(before_text, text)},
    )


def qa_form_wire(f: case_pb2.QaForm) -> dict[str, Any]:
    """A form as the QA screen shows it, and whether it is the built-in one."""
    return {**qa_wire.form(f), "built_in": not f.created_by}


def _number(value: Any) -> Any:
    """A whole weight as an integer (as a form file writes it); anything else as given."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def qa_form_yaml(data: Any) -> str:
    """A form {form_id, title, items: [{item_id, text, fatal, weight}]} as a form file's YAML
    (id, title, items of id/text/fatal/weight). Its values are the case service's to check:
    what is refused here is only what is no form at all."""
    if not isinstance(data, dict):
        raise InvalidArgument("form", "must be an object")
    form_id, title, items = data.get("form_id"), data.get("title", ""), data.get("items")
    if not isinstance(form_id, str) or not form_id.strip():
        raise InvalidArgument("id", "is required")
    if not isinstance(title, str):
        raise InvalidArgument("title", "must be text")
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise InvalidArgument("items", "must be a list of items")
    if len(items) > MAX_QA_ITEMS:
        raise InvalidArgument("items", f"at most {MAX_QA_ITEMS}")
    out: list[dict[str, Any]] = []
    for item in items:
        entry: dict[str, Any] = {"id": item.get("item_id", ""), "text": item.get("text", "")}
        if item.get("fatal"):
            entry["fatal"] = item["fatal"]
        else:
            entry["weight"] = _number(item.get("weight", 1))
        out.append(entry)
    doc = {"id": form_id.strip(), "title": title, "items": out}
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False, width=1000)


def business_hours(tenant: str, text: str) -> dict[str, Any] | None:
    """The tenant's business-hours calendar in a part, as the console's form shows it:
    {calendar, timezone, hours: {days: "HH:MM-HH:MM"}, holidays: [YYYY-MM-DD]}; None if it has
    none of its own."""
    try:
        part = yaml.safe_load(text) or {}
        name = str(part["business_hours"][tenant])
        spec = part["calendars"][name]
    except (yaml.YAMLError, KeyError, TypeError):
        return None
    if not isinstance(spec, dict):
        return None
    return {
        "calendar": name,
        "timezone": str(spec.get("timezone", "UTC")),
        "hours": {str(k): str(v) for k, v in (spec.get("hours") or {}).items()},
        "holidays": [str(d) for d in spec.get("holidays") or []],
    }


def with_languages(text: str, languages: list[str]) -> str:
    """The routing YAML `text` with its top-level ``languages`` replaced (the line itself when
    it is one line, so comments stay)."""
    line = f"languages: [{', '.join(languages)}]"
    lines = text.splitlines()
    for i, old in enumerate(lines):
        if old.startswith("languages:"):
            rest = old[len("languages:") :].split("#", 1)
            if rest[0].strip().startswith("["):
                comment = f"  #{rest[1]}" if len(rest) > 1 else ""
                lines[i] = line + comment
                return "\n".join(lines) + "\n"
            break
    if not any(x.startswith("languages:") for x in lines):
        return f"{line}\n{text}"
    doc = yaml.safe_load(text) or {}
    doc["languages"] = languages
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False, default_flow_style=None)


def _day(text: str) -> date | str:
    """A date as YAML writes dates; anything else as given, for the case service to refuse."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        return text


def with_business_hours(tenant: str, text: str, form: Any) -> str:
    """The part `text` with the tenant's business-hours calendar replaced by the form's (the
    case service checks the result as its policy file's reader does)."""
    if not isinstance(form, dict):
        raise InvalidArgument("hours", "must be the business-hours form")
    part = yaml.safe_load(text) or {}
    name = form.get("calendar") or (business_hours(tenant, text) or {}).get("calendar")
    if not isinstance(name, str) or not name:
        name = f"{tenant}-hours"
    hours = form.get("hours")
    holidays = form.get("holidays") or []
    if not isinstance(hours, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in hours.items()
    ):
        raise InvalidArgument("hours.hours", "must map days to HH:MM-HH:MM")
    if not isinstance(holidays, list) or not all(isinstance(d, str) for d in holidays):
        raise InvalidArgument("hours.holidays", "must be a list of dates (YYYY-MM-DD)")
    spec: dict[str, Any] = {"timezone": form.get("timezone") or "UTC", "hours": hours}
    if holidays:
        spec["holidays"] = [_day(d) for d in sorted(set(holidays))]
    part.setdefault("calendars", {})[name] = spec
    part.setdefault("business_hours", {})[tenant] = name
    return yaml.safe_dump(part, allow_unicode=True, sort_keys=False, width=100)
