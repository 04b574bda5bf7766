"""The mail outbox: a mail a change calls for (an SLA escalation) is written in the change's own
transaction and sent by the relay after the commit, so a change that is rolled back or retried
sends nothing, and its retry stages the same mail under the same key, which is sent once.

A relay claims a mail before sending it (a conditional UPDATE: one replica wins), sends it with a
Message-ID derived from its key, then marks it sent. A relay that dies between the SMTP server's
acceptance and the mark leaves the claim to lapse; the mail is then sent again with the same
Message-ID, which receiving systems use to drop the copy."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from switchboard.case.adapters.database import insert_ignore
from switchboard.case.adapters.mailer import Mailer
from switchboard.case.adapters.orm import OutboxMail, utc_now

logger = logging.getLogger(__name__)

BATCH = 50
# Longer than a send may take (the SMTP timeout), so a live relay never loses its claim.
CLAIM = timedelta(seconds=60)
FIRST_BACKOFF = timedelta(seconds=5)
MAX_BACKOFF = timedelta(hours=1)


STAGED = "outbox_mail_staged"  # session.info (database.TRANSACTION_CACHES): a mail to send


async def stage(
    session: AsyncSession,
    key: str,
    tenant: str,
    case_id: str,
    to: Sequence[str],
    subject: str,
    text: str,
    at: datetime,
) -> bool:
    """Write a mail to the outbox in the caller's transaction; False if `key` was staged before."""
    session.info[STAGED] = True  # the relay sends it once the transaction commits
    return await insert_ignore(
        session,
        OutboxMail,
        {
            "key": key[:255],
            "tenant": tenant,
            "case_id": case_id,
            "recipients": list(to),
            "subject": subject,
            "body": text,
            "created_at": at,
            "not_before": None,
            "attempts": 0,
            "last_error": "",
            "sent_at": None,
        },
        ["key"],
    )


def backoff(attempts: int) -> timedelta:
    """How long a mail waits after its `attempts`-th failed attempt."""
    return min(FIRST_BACKOFF * 2 ** max(attempts - 1, 0), MAX_BACKOFF)


class MailRelay:
    """Sends the mails staged in the outbox, each once, oldest first."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        mailer: Mailer,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._sessions = sessions
        self._mailer = mailer
        self._clock = clock

    async def drain(self) -> int:
        """Send every mail that is due; the number sent. A failed one waits out its back-off."""
        sent = 0
        while True:
            now = self._clock()
            async with self._sessions() as session:
                keys = list(
                    await session.scalars(
                        select(OutboxMail.key)
                        .where(OutboxMail.sent_at.is_(None), _due(now))
                        .order_by(OutboxMail.created_at, OutboxMail.key)
                        .limit(BATCH)
                    )
                )
            for key in keys:
                sent += await self._send(key)
            if len(keys) < BATCH:
                return sent

    async def _send(self, key: str) -> int:
        now = self._clock()
        async with self._sessions.begin() as session:
            claimed = (
                await session.execute(
                    update(OutboxMail)
                    .where(OutboxMail.key == key, OutboxMail.sent_at.is_(None), _due(now))
                    .values(not_before=now + CLAIM, attempts=OutboxMail.attempts + 1)
                    .returning(
                        OutboxMail.recipients,
                        OutboxMail.subject,
                        OutboxMail.body,
                        OutboxMail.attempts,
                    )
                )
            ).first()
        if claimed is None:
            return 0  # another relay has it, or has sent it
        recipients, subject, body, attempts = claimed
        try:
            await self._mailer.send(recipients, subject, body, key)
        except Exception as exc:
            wait = backoff(attempts)
            logger.warning("mail %s failed (attempt %d, next in %s): %s", key, attempts, wait, exc)
            async with self._sessions.begin() as session:
                await session.execute(
                    update(OutboxMail)
                    .where(OutboxMail.key == key)
                    .values(
                        not_before=self._clock() + wait,
                        last_error=f"{type(exc).__name__}: {exc}"[:1000],
                    )
                )
            return 0
        async with self._sessions.begin() as session:
            await session.execute(
                update(OutboxMail)
                .where(OutboxMail.key == key)
                .values(sent_at=self._clock(), not_before=None, last_error="")
            )
        logger.info("mail %s sent", key)
        return 1


def _due(now: datetime) -> ColumnElement[bool]:
    return or_(OutboxMail.not_before.is_(None), OutboxMail.not_before <= now)
