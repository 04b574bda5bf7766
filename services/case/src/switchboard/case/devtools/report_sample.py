"""A small sample of a morning's contacts for the reports: two customers of tenant `acme`, four
calls between 09:00 and 10:00 on 3 March 2025 (two answered, two abandoned) and one email. The
case service's report tests and the `switchboard report` command's tests read it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from switchboard.case.adapters import keyring, orm
from switchboard.v1 import case_pb2, contact_pb2

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
VOICE, EMAIL = contact_pb2.CHANNEL_VOICE, contact_pb2.CHANNEL_EMAIL


async def seed(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Two customers; four voice calls between 09:00 and 10:00 and one email."""
    async with sessions.begin() as s:
        keys = keyring.of(s)

        def sealed(customer_id: str, text: str) -> str:
            return keys.seal(s, "acme", customer_id, text)

        s.add_all(
            [
                orm.Customer(id="k1", tenant="acme", display_name=sealed("k1", "Ana"), created_at=T0),
                orm.Customer(id="k2", tenant="acme", display_name=sealed("k2", "Bo"), created_at=T0),
            ]
        )  # fmt: skip
        await s.flush()
        s.add(orm.CustomerIdentity(tenant="acme", kind=contact_pb2.IDENTITY_KIND_EMAIL,
                                   value=keys.index(s, "acme", "ana@example.com"),
                                   sealed=sealed("k1", "ana@example.com"), customer_id="k1"))  # fmt: skip
        for case_id, customer, ref in (("case1", "k1", "C-AAAAAA"), ("case2", "k2", "C-BBBBBB")):
            s.add(
                orm.Case(id=case_id, tenant="acme", customer_id=customer, reference=ref,
                         status=case_pb2.CASE_STATUS_IN_PROGRESS, subject=sealed(customer, "refund"),
                         assigned_agent_id="a1", created_at=T0, updated_at=T0)
            )  # fmt: skip
        await s.flush()

        def contact(cid: str, case: str, channel: int, at: datetime, **kw: Any) -> orm.Contact:
            return orm.Contact(contact_id=cid, tenant="acme", case_id=case, channel=channel,
                               language="ko", skills=[], queue=kw.pop("queue", "billing"),
                               subject="", agent_id=kw.pop("agent_id", ""), status="ended",
                               created_at=at, queued_at=at, **kw)  # fmt: skip

        s.add_all(
            [
                contact("v1", "case1", VOICE, T0 + timedelta(minutes=1), agent_id="a1",
                        assigned_at=T0 + timedelta(minutes=1, seconds=10), wait_ms=10_000,
                        ended_at=T0 + timedelta(minutes=6), talk_ms=290_000, hold_ms=30_000,
                        wrap_up_ms=10_000),
                contact("v2", "case2", VOICE, T0 + timedelta(minutes=20), agent_id="a2",
                        assigned_at=T0 + timedelta(minutes=20, seconds=40), wait_ms=40_000,
                        ended_at=T0 + timedelta(minutes=25), talk_ms=260_000, hold_ms=0,
                        wrap_up_ms=40_000, queue="tech"),
                contact("v3", "case2", VOICE, T0 + timedelta(minutes=30),
                        abandoned_at=T0 + timedelta(minutes=30, seconds=5)),
                contact("v4", "case2", VOICE, T0 + timedelta(minutes=40),
                        abandoned_at=T0 + timedelta(minutes=41)),
                contact("e1", "case1", EMAIL, T0 + timedelta(minutes=50), agent_id="a1",
                        first_agent_response_at=T0 + timedelta(hours=3)),
            ]
        )  # fmt: skip
        await s.flush()
        s.add(orm.Message(message_id="m1", contact_id="e1", tenant="acme",
                          author=contact_pb2.AUTHOR_CUSTOMER, agent_id="",
                          text=sealed("k1", "결제한 상품 환불요청 드립니다"), content_type="text/plain",
                          sent_at=T0 + timedelta(minutes=50)))  # fmt: skip
