"""The case service's policies as they are now: the policy file's, with each tenant's part changed
at run time from the admin console (`tenant_policy`).

The parts are kept in the NATS key-value bucket ``admin_case_policy``: key ``<tenant>`` holds the
tenant's part as its YAML, each write a new revision (the version), made only on the revision it
was based on. Every case replica watches the bucket and takes a change at once into the one
`Policies` object the SLA engine, records, scheduler, portal and reports hold. A tenant with no
key keeps the file's entries.

Each write carries its audit record (`switchboard.core.audit`): who made it (the caller), when,
and the lines it changed, in the entry's header ``Switchboard-Audit``; the chat publishes it to
the admin console's audit stream as ``policy.<tenant>.<version>``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

import yaml
from nats.js import api as js_api
from nats.js.client import JetStreamContext
from nats.js.errors import APIError
from nats.js.kv import KeyValue

from switchboard.case.sla import policy, tenant_policy
from switchboard.core import audit, stores
from switchboard.core.errors import FailedPrecondition, InvalidArgument

logger = logging.getLogger(__name__)

BUCKET = "admin_case_policy"
HISTORY = 64
STALE = "the policies changed meanwhile: reload and make the change again"


ACTION = "policy.apply"


class LivePolicies:
    def __init__(
        self,
        policies: policy.Policies,
        file_doc: Mapping[str, Any],
        kv: KeyValue,
        js: JetStreamContext,
    ) -> None:
        self.js = js
        self.policies = policies
        self.file_doc = file_doc
        self.kv = kv
        self.parts: dict[str, tuple[str, dict[str, Any], int]] = {}  # tenant -> text, part, rev
        self._lock = asyncio.Lock()
        self._watch: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls, js: JetStreamContext, policies: policy.Policies, file_doc: Mapping[str, Any],
        replicas: int = 1,
    ) -> LivePolicies:  # fmt: skip
        kv = await stores.key_value(js, BUCKET, history=HISTORY, replicas=replicas)
        live = cls(policies, file_doc, kv, js)
        async for found in stores.current(kv):
            if found.key and found.value:
                live._take(found.key, found.value.decode(), int(found.revision or 0))
        return live

    def _base(self, tenant: str) -> dict[str, Any]:
        """The file's document with every other tenant's stored part in place."""
        doc = dict(self.file_doc)
        for other, (_, part, _) in sorted(self.parts.items()):
            if other != tenant:
                doc = tenant_policy.merge(doc, other, part)
        return doc

    def _take(self, tenant: str, text: str, revision: int) -> None:
        if revision <= self.parts.get(tenant, ("", {}, 0))[2]:
            return  # taken already (this replica's own write)
        try:
            part, made = tenant_policy.load(self._base(tenant), tenant, text)
        except policy.PolicyError as exc:  # written checked: only a hand-made value gets here
            logger.error("stored policies of %s ignored: %s", tenant, exc)
            return
        self.parts[tenant] = (text, part, revision)
        self.policies.become(made)
        logger.info("policies of %s now at version %d", tenant, revision)

    def current(self, tenant: str) -> tuple[str, int]:
        """`tenant`'s part as YAML (as stored, else the file's entries) and its version."""
        if tenant in self.parts:
            text, _, revision = self.parts[tenant]
            return text, revision
        return tenant_policy.dump(tenant_policy.section(self.file_doc, tenant)), 0

    async def apply(
        self, tenant: str, text: str, dry_run: bool, version: int | None, actor: str = ""
    ) -> tuple[str, int]:
        """Check `text` as `tenant`'s part, and unless `dry_run` store it, with the audit
        record of `actor`'s change, and take it."""
        if not text.strip():
            raise InvalidArgument("yaml", "is required")
        async with self._lock:
            try:
                tenant_policy.load(self._base(tenant), tenant, text)
            except policy.PolicyError as exc:
                raise InvalidArgument(f"{exc.source}:{exc.line}: {exc.path}", exc.problem) from None
            before, last = self.current(tenant)
            if version is not None and version != last:
                raise FailedPrecondition(STALE)
            if dry_run:
                return text, last
            record = audit.header(
                actor, ACTION, tenant, time.time(), {"diff": audit.diff(before, text)}
            )
            headers = {
                js_api.Header.EXPECTED_LAST_SUBJECT_SEQUENCE.value: str(last),
                audit.HEADER: record,
            }
            try:
                ack = await self.js.publish(
                    f"$KV.{BUCKET}.{tenant}", text.encode(), headers=headers
                )
            except APIError as err:
                if err.err_code in (10071, 10164):  # not at revision `last`
                    raise FailedPrecondition(STALE) from None
                raise
            revision = int(ack.seq)
            self._take(tenant, text, revision)
            return text, revision

    async def watch(self) -> None:
        """Take the other replicas' changes as they are made, until `stop`."""
        self._watch = await stores.follow(self.kv, self._take, "case-policy-watch")

    async def stop(self) -> None:
        task, self._watch = self._watch, None
        await stores.stop_following(task)


def file_document(path: str | None) -> dict[str, Any]:
    """The policy file's document (already checked by `policy.load` at start)."""
    _, text = policy.read(path)
    doc = yaml.safe_load(text) or {}
    return dict(doc)
