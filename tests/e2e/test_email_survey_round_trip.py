"""CSAT by email, end to end: a customer's mail arrives over SMTP at the email channel, the case is
resolved over gRPC, the case service's survey goes out through the email channel to a real SMTP
relay, and the customer's reply to it (over SMTP, quoting the survey) becomes the case's rating
without reopening it. A reply that is only the rating is offered to no agent; a reply with more to
say is rated and reaches an agent like any other mail."""

from __future__ import annotations

import asyncio
import email
from collections.abc import AsyncIterator
from email import policy
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import pytest
from aiosmtpd.smtp import SMTP
from sqlalchemy import select

from switchboard.case import csat
from switchboard.case.adapters import orm
from switchboard.case.reports.orm import CsatRating
from switchboard.core import auth
from switchboard.core import grpc as sb_grpc
from switchboard.email_ingest import config as email_config
from switchboard.email_ingest.bootstrap import EmailApp
from switchboard.email_ingest.settings import EmailIngestSettings
from switchboard.testing.waiting import eventually
from switchboard.v1 import case_pb2, case_pb2_grpc

Platform = Any  # tests/e2e/conftest.py: the platform fixture


class Relay:
    """A real SMTP server standing for the outgoing relay: keeps what it is given."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.server: Any = None
        self.port = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content, policy=policy.default))  # type: ignore[arg-type]
        return "250 OK queued"


@pytest.fixture
async def relay() -> AsyncIterator[Relay]:
    r = Relay()
    r.server = await asyncio.get_running_loop().create_server(lambda: SMTP(r), "127.0.0.1", 0)
    r.port = r.server.sockets[0].getsockname()[1]
    yield r
    r.server.close()
    await r.server.wait_closed()


@pytest.fixture
async def mail_channel(platform: Platform, relay: Relay) -> AsyncIterator[EmailApp]:
    config = email_config.parse(
        {
            "mailboxes": [
                {
                    "name": "support",
                    "tenant": "demo",
                    "address": "support@demo.example",
                    "display_name": "Demo Support",
                    "queue": "email",
                }
            ]
        }
    )
    settings = EmailIngestSettings(  # type: ignore[call-arg]
        NATS_URL=platform.nats_url,
        EMAIL_GRPC_PORT=0,
        EMAIL_SMTP_PORT=0,
        EMAIL_RELAY_HOST="127.0.0.1",
        EMAIL_RELAY_PORT=relay.port,
        EMAIL_SEND_BACKOFF_SECONDS=0.05,
        SHUTDOWN_GRACE_SECONDS=0.5,
    )
    app = EmailApp(settings, config=config)
    await app.start()
    yield app
    await app.stop()


def customer_mail(subject: str, text: str, message_id: str, **headers: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Kim <kim@example.kr>"
    msg["To"] = "support@demo.example"
    msg["Subject"] = subject
    msg["Message-ID"] = message_id
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(text)
    return msg.as_bytes(policy=policy.SMTP)


async def send(app: EmailApp, raw: bytes) -> None:
    await aiosmtplib.send(
        raw,
        sender="kim@example.kr",
        recipients=["support@demo.example"],
        hostname="127.0.0.1",
        port=app.smtp_port,
    )


async def test_a_reply_to_the_survey_mail_rates_the_case(
    platform: Platform, mail_channel: EmailApp, relay: Relay
) -> None:
    await send(
        mail_channel, customer_mail("청구서 문의", "청구서가 두 번 왔어요.", "<kim-1@example.kr>")
    )
    token = auth.mint(platform.secret, "demo", "agent-1", ["agent"])
    async with sb_grpc.channel(platform.case_target, token) as ch:
        stub: Any = case_pb2_grpc.CaseServiceStub(ch)

        async def the_case() -> case_pb2.Case | None:
            listed = await stub.ListCases(case_pb2.ListCasesRequest())
            return listed.cases[0] if listed.cases else None

        case = await eventually(the_case)
        await stub.UpdateCaseStatus(
            case_pb2.UpdateCaseStatusRequest(
                case_id=case.case_id, status=case_pb2.CASE_STATUS_RESOLVED
            )
        )

        async def survey() -> EmailMessage | None:
            return next((m for m in relay.messages if "[CSAT]" in str(m["Subject"])), None)

        sent = await eventually(survey, "the survey mail")
        assert sent["To"] == "kim@example.kr" and case.reference in str(sent["Subject"])
        # The customer answers on the first line; the mail client quotes the survey below.
        quoted = "\n".join(
            f"> {line}" for line in sent.get_body(("plain",)).get_content().splitlines()
        )
        quoting = f"2025년 3월 3일 Demo Support 작성:\n{quoted}"

        def reply(text: str, message_id: str) -> bytes:
            return customer_mail(
                f"RE: {sent['Subject']}",
                text,
                message_id,
                In_Reply_To=sent["Message-ID"],
                References=f"<kim-1@example.kr> {sent['Message-ID']}",
            )

        await send(mail_channel, reply(f"４점\n\n{quoting}", "<kim-2@example.kr>"))
        assert platform.case.sessions is not None

        async def rated(score: int) -> CsatRating | None:
            async with platform.case.sessions() as session:
                rows = list(await session.scalars(select(CsatRating)))
            return rows[0] if len(rows) == 1 and rows[0].score == score else None

        rating = await eventually(lambda: rated(4), "the rating")
        assert (rating.case_id, rating.channel) == (case.case_id, "email")
        after = await stub.GetCase(case_pb2.GetCaseRequest(case_id=case.case_id))
        assert after.status == case_pb2.CASE_STATUS_RESOLVED and after.reopened_count == 0
        assert len(after.contacts) == 2
        first, answer = (c.contact_id for c in after.contacts)

        # The customer changes their mind and says why: rated, and a request for an agent.
        await send(
            mail_channel,
            reply(f"1\n청구서가 또 두 번 왔어요.\n\n{quoting}", "<kim-3@example.kr>"),
        )
        await eventually(lambda: rated(1), "the second rating")
        after = await stub.GetCase(case_pb2.GetCaseRequest(case_id=case.case_id))
        assert after.status == case_pb2.CASE_STATUS_IN_PROGRESS and after.reopened_count == 1
        [again] = [c.contact_id for c in after.contacts if c.contact_id not in (first, answer)]
        assert platform.router.router is not None
        engine = platform.router.router.engine

        async def queued() -> bool:
            return again in engine.contacts

        # The router takes contacts in the order they were created: by the time it queues the
        # third mail it has seen the bare answer, and left it out.
        await eventually(queued, "the reply with words queued")
        assert first in engine.contacts
        assert answer not in engine.contacts


async def test_a_bare_rating_naming_an_unknown_case_is_kept_and_ended(
    platform: Platform, mail_channel: EmailApp
) -> None:
    """A bare rating in answer to a survey of a case the case service does not know (another
    deployment's, or one long gone): the router offers it to no agent, and the case service ends
    it as it arrives, keeping the customer's message in a case of its own, resolved; it does not
    stay queued."""
    await send(
        mail_channel,
        customer_mail("RE: How did we do? [#C-7K3M9Q] [CSAT]", "5", "<kim-9@example.kr>"),
    )
    assert platform.case.sessions is not None

    async def ended() -> orm.Contact | None:
        async with platform.case.sessions() as session:
            rows = list(await session.scalars(select(orm.Contact)))
        return rows[0] if len(rows) == 1 and rows[0].status == "ended" else None

    contact = await eventually(ended, "the answer ended")
    assert contact.wrap_up_code == csat.SURVEY_REPLY_UNMATCHED
    token = auth.mint(platform.secret, "demo", "agent-1", ["agent"])
    async with sb_grpc.channel(platform.case_target, token) as ch:
        stub: Any = case_pb2_grpc.CaseServiceStub(ch)
        case = await stub.GetCase(case_pb2.GetCaseRequest(case_id=contact.case_id))
        assert case.status == case_pb2.CASE_STATUS_RESOLVED
        [kept] = case.contacts
        assert kept.contact_id == contact.contact_id
    async with platform.case.sessions() as session:
        [message] = await session.scalars(select(orm.Message))
        assert message.contact_id == contact.contact_id
    async with platform.case.sessions() as session:
        assert list(await session.scalars(select(CsatRating))) == []
    assert platform.router.router is not None
    assert contact.contact_id not in platform.router.router.engine.contacts
