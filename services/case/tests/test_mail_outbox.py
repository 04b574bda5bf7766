"""The mail outbox against the real database: a staged mail is sent once, by one of several
relays; a failed attempt waits its back-off and is tried again; staging a key again is a no-op."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from switchboard.case import mail_outbox
from switchboard.case.adapters.orm import OutboxMail
from switchboard.case.mail_outbox import MailRelay
from switchboard.testing.fakes import FakeClock, FakeMailer


async def staged(sessions: async_sessionmaker[AsyncSession], key: str, at: datetime) -> bool:
    async with sessions.begin() as session:
        return await mail_outbox.stage(
            session, key, "acme", "case-1", ["ops@acme.example"], "Escalated", "…", at
        )


async def test_two_relays_send_a_mail_once_and_staging_it_again_changes_nothing(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    clock = FakeClock(datetime(2026, 12, 1, 9, 0, tzinfo=UTC))
    assert await staged(sessions, "escalation-mail:case-1:a", clock.now)
    assert await staged(sessions, "escalation-mail:case-1:b", clock.now)
    mailer = FakeMailer()
    relays = [MailRelay(sessions, mailer, clock), MailRelay(sessions, mailer, clock)]
    counts = await asyncio.gather(*(r.drain() for r in relays))
    assert sum(counts) == 2
    assert sorted(mailer.sent) == ["escalation-mail:case-1:a", "escalation-mail:case-1:b"]

    assert not await staged(sessions, "escalation-mail:case-1:a", clock.now)
    clock.now += timedelta(hours=2)
    assert await relays[0].drain() == 0
    assert len(mailer.sent) == 2


async def test_a_failed_mail_waits_its_back_off_then_is_sent_once(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    clock = FakeClock(datetime(2026, 12, 1, 9, 0, tzinfo=UTC))
    await staged(sessions, "escalation-mail:case-1:a", clock.now)
    mailer = FakeMailer(failures=1)
    relay = MailRelay(sessions, mailer, clock)
    assert await relay.drain() == 0
    async with sessions() as session:
        row = await session.scalar(select(OutboxMail))
    assert row is not None and row.attempts == 1 and row.sent_at is None
    assert row.last_error == "ConnectionRefusedError: smtp is away"

    clock.now += mail_outbox.FIRST_BACKOFF - timedelta(seconds=1)
    assert await relay.drain() == 0  # still backing off
    clock.now += timedelta(seconds=1)
    assert await relay.drain() == 1
    assert await relay.drain() == 0
    assert mailer.sent == ["escalation-mail:case-1:a"]
    async with sessions() as session:
        row = await session.scalar(select(OutboxMail))
    assert row is not None and row.attempts == 2 and row.sent_at == clock.now
    assert row.last_error == ""
