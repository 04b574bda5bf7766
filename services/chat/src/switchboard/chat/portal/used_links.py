"""Which sign-in links have been used: a link's id is claimed once, by whichever replica opens it
first (a JetStream key-value create succeeds once per key), and forgotten after the link's own
lifetime, when the link is refused as expired anyway."""

from __future__ import annotations

import time
from typing import Protocol

from nats.js.client import JetStreamContext

from switchboard.core import stores
from switchboard.core.portal_tokens import LINK_TTL_SECONDS

BUCKET = "chat_portal_links"


class UsedLinks(Protocol):
    async def claim(self, link_id: str) -> bool:
        """True the first time `link_id` is claimed, False ever after (within its lifetime)."""
        ...


class InMemoryUsedLinks:
    def __init__(self) -> None:
        self._used: dict[str, float] = {}

    async def claim(self, link_id: str) -> bool:
        now = time.monotonic()
        self._used = {k: t for k, t in self._used.items() if now - t < LINK_TTL_SECONDS * 2}
        if link_id in self._used:
            return False
        self._used[link_id] = now
        return True


class JetStreamUsedLinks:
    def __init__(self, kv: object) -> None:
        self._kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext, replicas: int = 1) -> JetStreamUsedLinks:
        # Kept a little longer than a link lives, so an expired link is refused for its expiry.
        kv = await stores.key_value(js, BUCKET, replicas=replicas, ttl=LINK_TTL_SECONDS * 2)
        return cls(kv)

    async def claim(self, link_id: str) -> bool:
        return await stores.create(self._kv, link_id, b"1") is not None  # type: ignore[arg-type]
