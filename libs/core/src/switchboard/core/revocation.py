"""Revoked access tokens: a JetStream key-value bucket, `auth_revocations`, in which a principal
(tenant and subject) names the time up to which its tokens are no longer accepted. Revoking an
agent who has left, a stolen partner token or a lost laptop's CLI token refuses every token of
that principal issued until then (tokens minted afterwards work again).

Every service watches the bucket, so a revocation reaches every replica within moments, and
checks each token it verifies against what it has seen (`Revocations.check`). Tokens minted
before tokens carried their issue time count as issued at 0: a revocation refuses them too."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from switchboard.core import auth, stores, tasks
from switchboard.core.errors import Unauthenticated
from switchboard.core.events import validate_tenant

logger = logging.getLogger(__name__)

BUCKET = "auth_revocations"


def key(tenant: str, subject: str) -> str:
    """The bucket key of a principal (the subject hex-encoded: any text is a valid subject)."""
    return f"{tenant}.{subject.encode().hex() or '-'}"


class Revocations:
    """What a service knows of revoked principals: tenant, subject -> tokens issued at or
    before this second are refused."""

    def __init__(self) -> None:
        self._before: dict[str, int] = {}
        self._kv: KeyValue | None = None
        self._watcher: KeyValue.KeyWatcher | None = None
        self._watching: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, js: JetStreamContext, replicas: int = 1) -> Revocations:
        """Bind to (or create) the bucket, read what it holds, and follow it from then on."""
        self = cls()
        self._kv = await stores.key_value(js, BUCKET, replicas=replicas)
        watcher = self._watcher = await self._kv.watchall()
        while (entry := await watcher.updates(timeout=10)) is not None:
            self._apply(entry)
        self._watching = asyncio.create_task(self._follow(watcher), name="revocations")
        return self

    def _apply(self, entry: KeyValue.Entry) -> None:
        if entry.operation in ("DEL", "PURGE") or not entry.value:
            self._before.pop(entry.key, None)
            return
        try:
            self._before[entry.key] = int(entry.value)
        except ValueError:
            logger.warning("revocation %s holds %r, not a time: ignored", entry.key, entry.value)

    async def _follow(self, watcher: KeyValue.KeyWatcher) -> None:
        async for entry in watcher:
            if entry is not None:
                self._apply(entry)

    def check(self, principal: auth.Principal) -> None:
        """Raise Unauthenticated if the principal's token was issued before its revocation."""
        before = self._before.get(key(principal.tenant, principal.subject))
        if before is not None and principal.issued_at <= before:
            raise Unauthenticated("token has been revoked: sign in again for a new one")

    def revoked_before(self, tenant: str, subject: str) -> int | None:
        """The second up to which the principal's tokens are refused, if they are."""
        return self._before.get(key(tenant, subject))

    async def revoke(self, tenant: str, subject: str, at: float | None = None) -> int:
        """Refuse every token of `subject` of `tenant` issued up to `at` (default: now); the
        second recorded is returned. Applied here at once, and by the other services as their
        watch delivers it."""
        assert self._kv is not None, "open() first"
        validate_tenant(tenant)
        before = int(time.time() if at is None else at)
        await self._kv.put(key(tenant, subject), str(before).encode())
        self._before[key(tenant, subject)] = before
        return before

    async def close(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            with contextlib.suppress(Exception):
                await watcher.stop()
        task, self._watching = self._watching, None
        await tasks.cancel_and_wait(task)
