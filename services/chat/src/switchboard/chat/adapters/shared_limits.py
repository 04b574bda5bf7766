"""The replicas' spending of the abuse limits, shared over plain NATS: each replica publishes what
its visitors and agents spent, batched a few times a second, on `<CHAT_SOCKETIO_SUBJECT>.limits`,
and takes what the others published from its own buckets. Lost messages only make a limit a
little looser for a moment; nothing else depends on them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import defaultdict
from typing import Any

from nats.aio.client import Client as NATS

from switchboard.chat.domain.rate_limit import Limiter
from switchboard.core import tasks

logger = logging.getLogger(__name__)

FLUSH_SECONDS = 0.05


class SharedSpending:
    def __init__(self, nc: NATS, limiter: Limiter, subject: str) -> None:
        self.nc = nc
        self.limiter = limiter
        self.subject = subject
        self.replica = uuid.uuid4().hex
        self._pending: defaultdict[tuple[str, str], float] = defaultdict(float)
        self._flushing: asyncio.Task[None] | None = None
        self._sub: Any = None

    async def start(self) -> None:
        self.limiter.share = self.spent
        self._sub = await self.nc.subscribe(self.subject, cb=self._received)

    def spent(self, name: str, who: str, cost: float) -> None:
        self._pending[(name, who)] += cost
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        await asyncio.sleep(FLUSH_SECONDS)
        batch, self._pending = self._pending, defaultdict(float)
        if not batch:
            return
        body = {"replica": self.replica, "spent": [[n, w, c] for (n, w), c in batch.items()]}
        try:
            await self.nc.publish(self.subject, json.dumps(body).encode())
        except Exception as exc:  # the limits stay local until NATS is back
            logger.debug("sharing rate-limit spending failed: %s", exc)

    async def _received(self, msg: Any) -> None:
        try:
            body = json.loads(msg.data)
            if body.get("replica") == self.replica:
                return
            for name, who, cost in body.get("spent", []):
                self.limiter.spent_elsewhere(str(name), str(who), float(cost))
        except (ValueError, TypeError, AttributeError) as exc:
            logger.warning("ignored a malformed rate-limit message: %s", exc)

    async def stop(self) -> None:
        self.limiter.share = None
        task, self._flushing = self._flushing, None
        await tasks.cancel_and_wait(task)
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
