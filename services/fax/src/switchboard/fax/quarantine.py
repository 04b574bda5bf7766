"""The fax quarantine's erasure and retention: a quarantined fax (its file, its reason, the
document as received) is deleted when its sender is erased (CustomerErased names the sender's
numbers by sender key) and when its tenant's retention has passed, whatever its sender."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from switchboard.core.quarantine_objects import QuarantineEraser
from switchboard.v1 import case_events_pb2

logger = logging.getLogger(__name__)


class FaxQuarantine:
    def __init__(self, eraser: QuarantineEraser, sweep_seconds: float) -> None:
        self.eraser = eraser
        self.sweep_seconds = sweep_seconds
        self._sweeping: asyncio.Task[None] | None = None

    async def on_customer_erased(self, event: case_events_pb2.CustomerErased) -> None:
        """Delete the erased customer's quarantined faxes (none when delivered again)."""
        deleted = await self.eraser.erase_senders(event.meta.tenant, list(event.sender_keys))
        if deleted:
            logger.info("deleted %d quarantined faxes of an erased customer", deleted)

    def start(self) -> None:
        self._sweeping = asyncio.create_task(self._sweep(), name="fax-quarantine-retention")

    async def _sweep(self) -> None:
        while True:
            try:
                await self.eraser.sweep()
            except Exception:  # the next round tries again
                logger.exception("the fax quarantine's retention sweep failed")
            await asyncio.sleep(self.sweep_seconds)

    async def stop(self) -> None:
        task, self._sweeping = self._sweeping, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
