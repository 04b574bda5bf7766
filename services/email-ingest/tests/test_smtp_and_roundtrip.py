"""Direct SMTP/LMTP receive, and the round trip: customer mail in over IMAP, the agent's reply out
over real SMTP, the customer's reply back into the same case."""

from __future__ import annotations

import asyncio
import email
import logging
from email import policy
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import pytest
from aiosmtpd.smtp import SMTP

from switchboard.core import events
from switchboard.email_ingest.adapters.jetstream import EmailObjects
from switchboard.testing.tls import self_signed
from switchboard.testing.waiting import until
from switchboard.v1 import contact_pb2, email_pb2, events_pb2


class Relay:
    """A real SMTP server (aiosmtpd) standing for the outgoing relay; refuses the first
    `fail_first` attempts with a 451."""

    def __init__(self, fail_first: int = 0) -> None:
        self.messages: list[EmailMessage] = []
        self.fail_first = fail_first
        self.server: Any = None
        self.port = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.fail_first > 0:
            self.fail_first -= 1
            return "451 4.3.0 try later"
        self.messages.append(email.message_from_bytes(envelope.content, policy=policy.default))  # type: ignore[arg-type]
        return "250 OK queued"

    async def start(self) -> Relay:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: SMTP(self), "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def relay():
    r = await Relay(fail_first=1).start()
    yield r
    await r.stop()


async def test_smtp_receive_publishes_and_keeps_the_raw_message(
    make_app, make_config, make_mail, collector, bus
):
    app = await make_app(make_config(None))
    raw = make_mail(
        "결제 오류",
        "결제가 안 됩니다. 오류 코드 500",
        to="billing@demo.example",
        message_id="<smtp-1@example.kr>",
    )
    await aiosmtplib.send(
        raw,
        sender="customer@example.com",
        recipients=["billing@demo.example"],
        hostname="127.0.0.1",
        port=app.smtp_port,
    )
    await collector.wait(lambda c: c.of(events_pb2.ContactCreated))
    contact = collector.of(events_pb2.ContactCreated)[0].contact
    assert contact.language == "ko" and contact.queue == "billing"
    assert set(contact.skills) == {"billing", "technical"}
    received = collector.of(email_pb2.EmailReceived)[0]
    assert received.origin.intake == email_pb2.EMAIL_INTAKE_SMTP
    stored = await (await EmailObjects.open(bus.js)).get(received.raw.object_name)
    assert stored == raw


async def test_an_smtp_session_logs_one_line_at_info(
    make_app, make_config, make_mail, collector, caplog
):
    """aiosmtpd logs each command at INFO (nine lines a mail); the listener logs one line a
    session: who handed over how many mails, and what they were answered."""
    app = await make_app(make_config(None))
    caplog.set_level(logging.INFO)
    raw = make_mail("Invoice", "Where is my invoice?", to="billing@demo.example")
    await aiosmtplib.send(
        raw,
        sender="customer@example.com",
        recipients=["billing@demo.example"],
        hostname="127.0.0.1",
        port=app.smtp_port,
    )
    await collector.wait(lambda c: c.of(events_pb2.ContactCreated))

    def session_lines() -> list[logging.LogRecord]:
        return [
            r
            for r in caplog.records
            if r.levelno >= logging.INFO
            and (r.name.startswith("mail.log") or r.name.endswith("entrypoints.smtp"))
        ]

    await until(lambda: session_lines(), "the session's line")
    lines = session_lines()
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert "127.0.0.1" in lines[0].getMessage() and "250" in lines[0].getMessage()


async def test_smtp_refuses_oversize_mail_with_552_and_unknown_recipients_with_550(
    make_app, make_config, make_mail, collector
):
    app = await make_app(make_config(None), EMAIL_MAX_MESSAGE_BYTES=50_000)
    big = make_mail("Big", "x" * 80_000)
    with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
        await aiosmtplib.send(
            big,
            sender="c@example.com",
            recipients=["support@demo.example"],
            hostname="127.0.0.1",
            port=app.smtp_port,
        )
    assert refused.value.code == 552
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as unknown:
        await aiosmtplib.send(
            make_mail(),
            sender="c@example.com",
            recipients=["nobody@elsewhere.example"],
            hostname="127.0.0.1",
            port=app.smtp_port,
        )
    assert unknown.value.recipients[0].code == 550
    await asyncio.sleep(0.2)
    assert collector.of(events_pb2.ContactCreated) == []


async def test_lmtp_answers_per_recipient(make_app, make_config, make_mail, collector):
    app = await make_app(make_config(None), EMAIL_LMTP_PORT=_free())
    reader, writer = await asyncio.open_connection("127.0.0.1", app.lmtp_port)

    async def say(line: bytes) -> list[bytes]:
        if line:
            writer.write(line + b"\r\n")
        replies = [await reader.readline()]
        while replies[-1][3:4] == b"-":
            replies.append(await reader.readline())
        return replies

    await say(b"")  # greeting
    assert (await say(b"LHLO mx.example.com"))[-1].startswith(b"250")
    assert (await say(b"MAIL FROM:<c@example.com>"))[0].startswith(b"250")
    assert (await say(b"RCPT TO:<support@demo.example>"))[0].startswith(b"250")
    assert (await say(b"RCPT TO:<billing@demo.example>"))[0].startswith(b"250")
    assert (await say(b"DATA"))[0].startswith(b"354")
    writer.write(make_mail("via lmtp", "delivered by the mail server") + b"\r\n.\r\n")
    first, second = await reader.readline(), await reader.readline()
    assert first.startswith(b"250") and second.startswith(b"250")  # one answer per recipient
    writer.close()
    await collector.wait(lambda c: c.of(email_pb2.EmailReceived))
    assert collector.of(email_pb2.EmailReceived)[0].origin.intake == email_pb2.EMAIL_INTAKE_LMTP


def _free() -> int:
    from switchboard.email_ingest.devtools.dovecot import free_port

    return free_port()


async def test_round_trip_customer_agent_customer(
    dovecot, relay, make_app, make_config, make_mail, collector, bus
):
    await make_app(
        make_config(dovecot),
        EMAIL_RELAY_HOST="127.0.0.1",
        EMAIL_RELAY_PORT=relay.port,
        EMAIL_RELAY_SECURITY="starttls",
    )
    # 1. The customer writes.
    await dovecot.append(
        [
            make_mail(
                "배송 문의",
                "주문한 상품이 아직 안 왔어요.",
                sender="kim@example.kr",
                message_id="<cust-1@example.kr>",
            )
        ]
    )
    await collector.wait(lambda c: c.of(events_pb2.ContactCreated))
    first = collector.of(events_pb2.ContactCreated)[0].contact
    assert first.language == "ko" and first.case_id == ""
    # 2. The agent replies; the case service knows the case and its reference.
    command = events_pb2.OutboundEmail(
        meta=events.new_meta("demo", contact_pb2.CHANNEL_EMAIL, "test"),
        contact_id=first.contact_id,
        case_id="case-123",
        case_reference="C-7K3M9Q",
        agent_id="ko-1",
        text="고객님, 내일 도착 예정입니다.",
        kind="reply",
    )
    await bus.publish(command)
    await collector.wait(
        lambda c: any(
            s.state == events_pb2.DELIVERY_STATE_SENT for s in c.of(events_pb2.DeliveryStatus)
        )
    )
    states = [s.state for s in collector.of(events_pb2.DeliveryStatus)]
    assert states == [
        events_pb2.DELIVERY_STATE_RETRYING,
        events_pb2.DELIVERY_STATE_SENT,
    ]  # 451, then sent
    [sent] = relay.messages
    assert sent["In-Reply-To"] == "<cust-1@example.kr>"
    assert "<cust-1@example.kr>" in sent["References"]
    assert sent["Subject"] == "Re: 배송 문의 [#C-7K3M9Q]"
    assert sent["Reply-To"] == "support+C-7K3M9Q@demo.example"
    assert sent["To"] == "kim@example.kr"
    assert sent.get_body(("plain",)).get_content().strip() == "고객님, 내일 도착 예정입니다."
    assert "내일 도착" in sent.get_body(("html",)).get_content()
    status = collector.of(events_pb2.DeliveryStatus)[-1]
    assert f"<{status.message_id}>" == sent["Message-ID"]
    await collector.wait(lambda c: c.of(events_pb2.MessageAdded))
    copy = collector.of(events_pb2.MessageAdded)[0].message
    assert (
        copy.contact_id == first.contact_id
        and copy.author == contact_pb2.AUTHOR_AGENT
        and copy.agent_id == "ko-1"
    )
    # A redelivered command is not sent twice.
    await bus.publish(command)
    await asyncio.sleep(0.5)
    assert len(relay.messages) == 1
    # 3. The customer replies to the agent's mail, with a subject of their own.
    reply = make_mail(
        "다른 질문",
        "감사합니다. 하나 더 있어요.\n\n2024년 1월 1일, Demo Support 님이 작성:\n> 고객님, 내일 도착 예정입니다.",
        sender="kim@example.kr",
        to=sent["Reply-To"],
        message_id="<cust-2@example.kr>",
        In_Reply_To=sent["Message-ID"],
        References=f"<cust-1@example.kr> {sent['Message-ID']}",
    )
    await dovecot.append([reply])
    await collector.wait(lambda c: len(c.of(events_pb2.ContactCreated)) == 2)
    second = collector.of(events_pb2.ContactCreated)[1].contact
    assert second.conversation_id == first.conversation_id
    assert second.case_id == "case-123"
    assert second.content[0].text == "감사합니다. 하나 더 있어요."
    assert collector.of(email_pb2.EmailReceived)[1].case_reference == "C-7K3M9Q"


async def test_permanent_refusal_fails_and_auto_ack_to_a_robot_is_not_sent(
    make_app, make_config, make_mail, collector, bus
):
    relay = await Relay().start()
    try:
        app = await make_app(
            make_config(None), EMAIL_RELAY_HOST="127.0.0.1", EMAIL_RELAY_PORT=relay.port
        )
        robot = make_mail(
            "Automatic reply: Out of office",
            "I am away",
            sender="kim@example.kr",
            Auto_Submitted="auto-replied",
        )
        await aiosmtplib.send(
            robot,
            sender="kim@example.kr",
            recipients=["support@demo.example"],
            hostname="127.0.0.1",
            port=app.smtp_port,
        )
        await collector.wait(lambda c: c.of(email_pb2.EmailReceived))
        received = collector.of(email_pb2.EmailReceived)[0]
        assert received.automated and "Auto-Submitted" in received.automated_reason
        ack = events_pb2.OutboundEmail(
            meta=events.new_meta("demo", contact_pb2.CHANNEL_EMAIL, "test"),
            contact_id=received.contact_id,
            text="We received your mail.",
            kind="acknowledgement",
        )
        await bus.publish(ack)
        await collector.wait(lambda c: c.of(events_pb2.DeliveryStatus))
        status = collector.of(events_pb2.DeliveryStatus)[0]
        assert status.state == events_pb2.DELIVERY_STATE_FAILED and "loop" in status.detail
        assert relay.messages == []
    finally:
        await relay.stop()


async def test_new_case_is_acknowledged_once_with_its_number_but_never_to_a_robot(
    make_app, make_config, make_mail, collector, bus
):
    relay = await Relay().start()
    try:
        app = await make_app(
            make_config(None, auto_acknowledge=True),
            EMAIL_RELAY_HOST="127.0.0.1",
            EMAIL_RELAY_PORT=relay.port,
        )
        for sender, extra in (
            ("kim@example.kr", {}),
            ("robot@example.kr", {"Auto_Submitted": "auto-replied"}),
        ):
            mail = make_mail("환불 요청", "환불해 주세요.", sender=sender, **extra)
            await aiosmtplib.send(
                mail,
                sender=sender,
                recipients=["support@demo.example"],
                hostname="127.0.0.1",
                port=app.smtp_port,
            )
        await collector.wait(lambda c: len(c.of(email_pb2.EmailReceived)) == 2)
        human, robot = sorted(collector.of(email_pb2.EmailReceived), key=lambda r: r.automated)

        def opened(received: email_pb2.EmailReceived, reference: str) -> Any:
            from switchboard.v1 import case_events_pb2

            return case_events_pb2.CaseCreated(
                meta=events.new_meta("demo", contact_pb2.CHANNEL_EMAIL, "case", f"{reference}-c"),
                case_id=f"case-{reference}",
                reference=reference,
                contact_id=received.contact_id,
            )

        # The case service opens a case for each; its CaseCreated comes twice (a redelivery).
        for event in (opened(human, "C-ACK001"), opened(robot, "C-ACK002")):
            await bus.publish(event)
        await bus.publish(opened(human, "C-ACK001"))
        await collector.wait(lambda c: c.of(events_pb2.DeliveryStatus))
        await asyncio.sleep(1.0)  # time for a second (wrong) acknowledgement to show up
        [ack] = relay.messages
        assert ack["To"] == "kim@example.kr"
        assert "[#C-ACK001]" in ack["Subject"]
        assert ack["In-Reply-To"] == f"<{human.message_id}>"
        assert ack["Auto-Submitted"] == "auto-replied"
        assert "C-ACK001" in ack.get_body(("plain",)).get_content()
        # A reply quoting only the number threads into the case.
        reply = make_mail("Re: 환불 요청 [#C-ACK001]", "감사합니다", sender="kim@example.kr")
        await aiosmtplib.send(
            reply,
            sender="kim@example.kr",
            recipients=["support@demo.example"],
            hostname="127.0.0.1",
            port=app.smtp_port,
        )
        await collector.wait(lambda c: len(c.of(email_pb2.EmailReceived)) == 3)
        assert collector.of(events_pb2.ContactCreated)[-1].contact.case_id == "case-C-ACK001"
    finally:
        await relay.stop()


async def test_replies_go_out_over_starttls_with_authentication(
    make_app, make_config, make_mail, collector, bus, tmp_path
):
    """A relay that requires STARTTLS before AUTH, with its own CA: the reply is sent encrypted,
    then authenticated."""
    import ssl

    from aiosmtpd.smtp import AuthResult

    key, cert = await asyncio.to_thread(self_signed, tmp_path, "relay")
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    sessions: list[tuple[bool, str]] = []

    class SecureRelay(Relay):
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            sessions.append(
                (session.ssl is not None, session.auth_data if session.authenticated else "")
            )
            return await super().handle_DATA(server, session, envelope)

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, auth: Any) -> Any:
        ok = auth.login == b"switchboard" and auth.password == b"s3cret"
        return AuthResult(success=ok, auth_data=auth.login.decode() if ok else None)

    relay = SecureRelay()
    loop = asyncio.get_running_loop()
    relay.server = await loop.create_server(
        lambda: SMTP(
            relay,
            tls_context=server_tls,
            require_starttls=True,
            authenticator=authenticate,
            auth_require_tls=True,
        ),
        "127.0.0.1",
        0,
    )
    relay.port = relay.server.sockets[0].getsockname()[1]
    try:
        app = await make_app(
            make_config(None),
            EMAIL_RELAY_HOST="127.0.0.1",
            EMAIL_RELAY_PORT=relay.port,
            EMAIL_RELAY_SECURITY="starttls",
            EMAIL_RELAY_USERNAME="switchboard",
            EMAIL_RELAY_PASSWORD="s3cret",
            EMAIL_RELAY_CA_FILE=str(cert),
        )
        mail = make_mail("문의", "안녕하세요", sender="kim@example.kr")
        await aiosmtplib.send(
            mail,
            sender="kim@example.kr",
            recipients=["support@demo.example"],
            hostname="127.0.0.1",
            port=app.smtp_port,
        )
        await collector.wait(lambda c: c.of(events_pb2.ContactCreated))
        contact = collector.of(events_pb2.ContactCreated)[0].contact
        await bus.publish(
            events_pb2.OutboundEmail(
                meta=events.new_meta("demo", contact_pb2.CHANNEL_EMAIL, "test"),
                contact_id=contact.contact_id,
                agent_id="ko-1",
                text="답변 드립니다.",
                kind="reply",
            )
        )
        await collector.wait(lambda c: c.of(events_pb2.DeliveryStatus))
        assert collector.of(events_pb2.DeliveryStatus)[0].state == events_pb2.DELIVERY_STATE_SENT
        assert sessions == [(True, "switchboard")]  # encrypted, then authenticated
        assert relay.messages[0]["To"] == "kim@example.kr"
    finally:
        relay.server.close()
        await relay.server.wait_closed()
