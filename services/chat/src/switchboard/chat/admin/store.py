"""Where the admin console keeps what it changes: a JetStream key-value bucket every chat replica
watches, and an audit stream.

- bucket ``admin_agents``: key ``<tenant>`` holds that tenant's part of the agents directory as
  the agents file's YAML; each write is a new revision (the version the console shows), made
  only if the key is still at the revision the change was based on. A tenant with no key yet
  keeps the file's agents (CHAT_AGENTS_FILE, or the embedded demo).
- stream ``ADMIN_AUDIT``, subjects ``admin.audit.<tenant>``: one JSON record per change, saying
  who made it, when, and what it changed (never a password or its hash).

A change of the agents and its audit record are one write: the record (without its version) rides
in the bucket entry's header ``Switchboard-Audit``, so no change is stored without it and no record
exists of a change that was not stored. It is then published to the audit stream with the
message id ``agents.<tenant>.<revision>``; `reconcile` publishes, with the same id, the record of
any stored revision whose publication did not happen (the process died between the two), and the
stream's de-duplication keeps a record published twice at the same time once.

The case service's policy changes are kept the same way in its bucket ``admin_case_policy``
(its entries' header holds their record, ``policy.<tenant>.<revision>``); QA forms keep who made
each version (``qa_form.<tenant>.<form>.<version>``); both are reconciled here too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from nats.js import api as js_api
from nats.js.client import JetStreamContext
from nats.js.errors import APIError, BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from switchboard.core import audit, stores
from switchboard.core.errors import FailedPrecondition

logger = logging.getLogger(__name__)

BUCKET = "admin_agents"
AUDIT_STREAM = "ADMIN_AUDIT"
AUDIT_SUBJECTS = "admin.audit.>"
HISTORY = 64  # revisions kept per tenant
AUDIT_MAX_AGE_SECONDS = 400 * 24 * 3600  # the audit outlives a year's reviews
STALE = "changed by someone else meanwhile: reload and make the change again"
AUDIT_HEADER = audit.HEADER
# The actions that are the agents bucket's changes (their version is the bucket's revision).
AGENT_ACTIONS = ("agent.", "codes.", "oidc.", "teams.")
# The case service's policies: its bucket's revisions, each stored with its record.
POLICY_BUCKET = "admin_case_policy"
POLICY_ACTION = "policy.apply"

Changed = Callable[[str, str, int], Awaitable[None] | None]


@dataclass(frozen=True)
class AuditRecord:
    tenant: str
    at: float
    actor: str  # the signed-in user's id
    # agent.add, agent.edit, agent.password, agent.disable, agent.enable, codes.set, oidc.set,
    # oidc.remove, teams.set,
    # routing.apply, policy.apply
    action: str
    target: str  # the agent id, or the tenant for routing and wrap-up codes
    version: int  # the revision the change made
    changes: dict[str, Any]  # field -> new value (passwords only as "changed")


class AdminStore:
    def __init__(self, js: JetStreamContext, kv: KeyValue) -> None:
        self.js = js
        self.kv = kv
        self._watch: asyncio.Task[None] | None = None
        self._policy_kv: KeyValue | None = None

    @classmethod
    async def open(cls, js: JetStreamContext, replicas: int = 1) -> AdminStore:
        """Create (or bind to) the bucket and the audit stream, with `replicas` copies."""
        kv = await stores.key_value(js, BUCKET, history=HISTORY, replicas=replicas)
        try:
            await js.stream_info(AUDIT_STREAM)
        except NotFoundError:
            await js.add_stream(
                js_api.StreamConfig(
                    name=AUDIT_STREAM,
                    subjects=[AUDIT_SUBJECTS],
                    storage=js_api.StorageType.FILE,
                    max_age=AUDIT_MAX_AGE_SECONDS,
                    num_replicas=replicas,
                )
            )
        return cls(js, kv)

    async def agents(self) -> dict[str, tuple[str, int]]:
        """Every tenant's stored directory: tenant -> (YAML, revision)."""
        out: dict[str, tuple[str, int]] = {}
        async for found in stores.current(self.kv):
            if found.key and found.value:
                out[found.key] = (found.value.decode(), int(found.revision or 0))
        return out

    async def revision(self, tenant: str) -> int:
        found = await stores.entry(self.kv, tenant)
        return int(found.revision or 0) if found is not None else 0

    async def save_agents(
        self, tenant: str, text: str, last: int, audit: AuditRecord | None = None
    ) -> int:
        """Store `tenant`'s directory if it is still at revision `last` (0: never stored), with
        the `audit` record of the change in the same entry (its version is the revision made;
        `publish` it next)."""
        headers: dict[str, Any] = {js_api.Header.EXPECTED_LAST_SUBJECT_SEQUENCE.value: str(last)}
        if audit is not None:
            body = {k: v for k, v in asdict(audit).items() if k != "version"}
            # One line of ASCII: what a header holds.
            headers[AUDIT_HEADER] = json.dumps(body, ensure_ascii=True)
        try:
            ack = await self.js.publish(f"$KV.{BUCKET}.{tenant}", text.encode(), headers=headers)
        except APIError as err:
            if err.err_code in (10071, 10164):  # not at revision `last`
                raise FailedPrecondition(STALE) from None
            raise
        return int(ack.seq)

    async def watch(self, changed: Changed) -> None:
        """Call `changed(tenant, yaml, revision)` for each tenant's directory as it is now and
        whenever it changes, until `stop`."""
        self._watch = await stores.follow(self.kv, changed, "admin-agents-watch")

    async def stop(self) -> None:
        task, self._watch = self._watch, None
        await stores.stop_following(task)

    async def record(self, entry: AuditRecord) -> None:
        """Publish a record (an agents change's with its message id: once, however often)."""
        key = message_id(entry)
        headers = {"Nats-Msg-Id": key} if key else None
        await self.js.publish(
            f"admin.audit.{entry.tenant}",
            json.dumps(asdict(entry), ensure_ascii=False).encode(),
            stream=AUDIT_STREAM,
            headers=headers,
        )

    async def reconcile(self, tenant: str | None = None) -> list[AuditRecord]:
        """Publish the audit record of every stored revision (of `tenant`, or of every tenant)
        that the audit stream lacks: the agents' (this bucket) and the case policies' (the case
        service's bucket ``admin_case_policy``, each write with its record in the same header).
        The records published are returned, oldest first. Revisions older than the audit
        keeps, and values written by hand (no record), are left alone."""
        published = await self._reconcile(BUCKET, self.kv, tenant, AGENT_ACTIONS)
        policies = await self._policies()
        if policies is not None:
            published += await self._reconcile(POLICY_BUCKET, policies, tenant, (POLICY_ACTION,))
        return published

    async def publish_policy(self, tenant: str, revision: int) -> AuditRecord | None:
        """Publish the record the case service stored with `tenant`'s policies at `revision`
        (once, however often)."""
        raw = await self.js.get_msg(f"KV_{POLICY_BUCKET}", seq=revision)
        entry = _stored(raw.headers, tenant, revision)
        if entry is not None:
            await self.record(entry)
        return entry

    async def _policies(self) -> KeyValue | None:
        """The case service's policy bucket (None before the case service made it)."""
        if self._policy_kv is None:
            try:
                self._policy_kv = await self.js.key_value(POLICY_BUCKET)
            except (NotFoundError, BucketNotFoundError):
                return None
        return self._policy_kv

    async def _reconcile(
        self, bucket: str, kv: KeyValue, tenant: str | None, actions: tuple[str, ...]
    ) -> list[AuditRecord]:
        tenants = [tenant] if tenant is not None else await stores.keys(kv)
        published: list[AuditRecord] = []
        oldest = time.time() - AUDIT_MAX_AGE_SECONDS + 24 * 3600
        for name in tenants:
            history = await stores.history(kv, name)
            revisions = [int(e.revision or 0) for e in history if e.operation in (None, "PUT")]
            if not revisions:
                continue
            audited = {r.version for r in await self._records(name) if r.action.startswith(actions)}
            for revision in revisions:
                if revision in audited:
                    continue
                raw = await self.js.get_msg(f"KV_{bucket}", seq=revision)
                entry = _stored(raw.headers, name, revision)
                if entry is None:
                    logger.warning("%s of %s at %d have no audit record", bucket, name, revision)
                    continue
                if entry.at < oldest:
                    continue  # its record has aged out of the stream
                await self.record(entry)
                published.append(entry)
                logger.warning(
                    "audit record of %s %s (version %d) published late",
                    name,
                    entry.action,
                    revision,
                )
        return published

    async def audit(self, tenant: str, limit: int = 200) -> list[AuditRecord]:
        """`tenant`'s last `limit` audit records, newest first."""
        return list(reversed(await self._records(tenant)))[:limit]

    async def _records(self, tenant: str) -> list[AuditRecord]:
        """Every audit record of `tenant`, oldest first."""
        msgs = await stores.subject_messages(self.js, AUDIT_STREAM, f"admin.audit.{tenant}")
        return [AuditRecord(**json.loads(msg.data)) for msg in msgs]


def message_id(entry: AuditRecord) -> str | None:
    """The audit stream's message id of a versioned change's record: one record per stored
    version, however often it is published."""
    if entry.action.startswith(AGENT_ACTIONS):
        return f"agents.{entry.tenant}.{entry.version}"
    if entry.action == POLICY_ACTION:
        return f"policy.{entry.tenant}.{entry.version}"
    if entry.action == "routing.apply":
        return f"routing.{entry.tenant}.{entry.version}"
    if entry.action == "qa_form.put":
        return f"qa_form.{entry.tenant}.{entry.target}.{entry.version}"
    return None


def _stored(headers: dict[str, str] | None, tenant: str, revision: int) -> AuditRecord | None:
    """The audit record stored in an entry's header (None: written without one)."""
    header = (headers or {}).get(AUDIT_HEADER)
    if not header:
        return None
    body = json.loads(header)
    return AuditRecord(**{**body, "tenant": tenant, "version": revision})
