"""The mail quarantine's erasure and retention: a quarantined mail (its raw message, and the
message itself where it was kept on IMAP) is deleted when its sender is erased (CustomerErased
names the sender's address by sender key) and when its tenant's retention has passed, whatever
its sender."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from switchboard.core.quarantine import Kept
from switchboard.core.quarantine_objects import ForgetElsewhere, QuarantineEraser
from switchboard.email_ingest.config import EmailConfig
from switchboard.email_ingest.entrypoints.imap_quarantine import delete_message
from switchboard.v1 import case_events_pb2

logger = logging.getLogger(__name__)


class MailQuarantine:
    def __init__(self, eraser: QuarantineEraser, sweep_seconds: float) -> None:
        self.eraser = eraser
        self.sweep_seconds = sweep_seconds
        self._sweeping: asyncio.Task[None] | None = None

    async def on_customer_erased(self, event: case_events_pb2.CustomerErased) -> None:
        """Delete the erased customer's quarantined mail (none when delivered again)."""
        deleted = await self.eraser.erase_senders(event.meta.tenant, list(event.sender_keys))
        if deleted:
            logger.info("deleted %d quarantined mails of an erased customer", deleted)

    def start(self) -> None:
        self._sweeping = asyncio.create_task(self._sweep(), name="email-quarantine-retention")

    async def _sweep(self) -> None:
        while True:
            try:
                await self.eraser.sweep()
            except Exception:  # the next round tries again
                logger.exception("the mail quarantine's retention sweep failed")
            await asyncio.sleep(self.sweep_seconds)

    async def stop(self) -> None:
        task, self._sweeping = self._sweeping, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


def imap_deleter(config: EmailConfig, timeout: float) -> ForgetElsewhere:
    """What deletes a quarantined mail kept on IMAP: its `where` names the mailbox, folder,
    UIDVALIDITY and uid (a mail that came over SMTP names none)."""

    async def delete(kept: Kept) -> None:
        where = kept.where
        if not where.get("uid"):
            return
        try:
            mailbox = config.mailbox(str(where["mailbox"]))
        except Exception:
            logger.warning("quarantined mail %s: its mailbox is configured no more", kept.item)
            return
        if mailbox.imap is None:
            return
        deleted = await delete_message(
            mailbox.imap,
            str(where.get("folder") or mailbox.imap.folder),
            int(where["uidvalidity"]),
            int(where["uid"]),
            timeout,
        )
        if not deleted:
            logger.warning("quarantined mail %s: its folder was renumbered; left", kept.item)

    return delete
