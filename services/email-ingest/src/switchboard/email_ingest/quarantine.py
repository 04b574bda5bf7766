"""What the mail quarantine keeps outside the object stores: a quarantined mail kept on IMAP is
deleted there too, when its sender is erased or its tenant's retention has passed
(switchboard.core.quarantine_objects.Quarantine)."""

from __future__ import annotations

import logging

from switchboard.core.quarantine import Kept
from switchboard.core.quarantine_objects import ForgetElsewhere
from switchboard.email_ingest.config import EmailConfig
from switchboard.email_ingest.entrypoints.imap_quarantine import delete_message

logger = logging.getLogger(__name__)


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
