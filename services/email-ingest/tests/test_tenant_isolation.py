"""What one tenant may learn of another's mail: ListMailboxes shows a token only its tenant's
mailboxes (and the last error only to managers), and the SMTP listener refuses recipients no
tenant's mailbox claims instead of accepting mail for any domain."""

from __future__ import annotations

import asyncio
import smtplib
from typing import Any

import grpc
import pytest

from switchboard.core import grpc as sb_grpc
from switchboard.core.auth import mint
from switchboard.core.embedded_nats import free_port
from switchboard.email_ingest import config as email_config
from switchboard.testing.waiting import until
from switchboard.v1 import email_pb2, email_pb2_grpc


def _box(name: str, tenant: str, address: str, imap_port: int | None = None) -> dict[str, Any]:
    box: dict[str, Any] = {"name": name, "tenant": tenant, "address": address}
    if imap_port is not None:
        box["imap"] = {
            "host": "127.0.0.1",
            "port": imap_port,
            "username": name,
            "password": "secret",
        }
    return box


async def _list(target: str, token: str) -> email_pb2.ListMailboxesResponse:
    async with sb_grpc.channel(target, token) as ch:
        return await email_pb2_grpc.EmailServiceStub(ch).ListMailboxes(
            email_pb2.ListMailboxesRequest()
        )


async def test_list_mailboxes_shows_a_token_only_its_tenants_mailboxes(make_app: Any) -> None:
    port = free_port()  # nothing listens: the mailboxes' IMAP logins fail, so each has an error
    config = email_config.parse(
        {
            "mailboxes": [
                _box("demo-support", "demo", "support@demo.example", port),
                _box("acme-help", "acme", "help@acme.example", port),
            ]
        }
    )
    app = await make_app(config, EMAIL_STALL_SECONDS=1.0)
    await until(lambda: all("refused" in w.snapshot().reason for w in app.watchers), seconds=20)
    target = f"127.0.0.1:{app.grpc_port}"
    secret = app.settings.auth_secret

    # Agents do not ask (the role table: the last error names the mail server).
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await _list(target, mint(secret, "acme", "a1", ["agent"]))
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED

    demo_admin = await _list(target, mint(secret, "demo", "ops", ["admin"]))
    assert [m.mailbox for m in demo_admin.mailboxes] == ["demo-support"]
    assert "refused" in demo_admin.mailboxes[0].reason
    acme_supervisor = await _list(target, mint(secret, "acme", "lead", ["supervisor"]))
    assert [m.mailbox for m in acme_supervisor.mailboxes] == ["acme-help"]
    assert [m.tenant for m in acme_supervisor.mailboxes] == ["acme"]
    assert "refused" in acme_supervisor.mailboxes[0].reason
    assert not acme_supervisor.mailboxes[0].healthy

    # A tenant with no mailbox here sees none (and not everyone's).
    other = await _list(target, mint(secret, "globex", "a1", ["admin"]))
    assert list(other.mailboxes) == []

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _list(target, "sb1.forged.token")
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def _rcpt(port: int, recipient: str) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("sender.example")
        code, _ = client.mail("customer@example.com")
        assert code == 250
        return client.rcpt(recipient)


async def test_smtp_refuses_recipients_outside_the_configured_mailboxes_even_with_a_catch_all(
    make_app: Any, make_mail: Any, collector: Any
) -> None:
    config = email_config.parse(
        {
            "catch_all": "demo-support",
            "mailboxes": [
                {
                    **_box("demo-support", "demo", "support@demo.example"),
                    "routes": [{"address": "*@kr.demo.example", "queue": "email-ko"}],
                },
                _box("acme-help", "acme", "help@acme.example"),
            ],
        }
    )
    app = await make_app(config)
    port = app.smtp_port

    for foreign in ("victim@elsewhere.example", "postmaster@gmail.com", "help@acme.example.org"):
        code, text = await asyncio.to_thread(_rcpt, port, foreign)
        assert code == 550, (foreign, code, text)
        assert text.startswith(b"5.1.1"), text
    # What the tenants configured is taken: their addresses, routes and (through the catch-all)
    # other addresses in their own domains.
    for ours in (
        "help@acme.example",
        "support@demo.example",
        "anyone@kr.demo.example",
        "sales@demo.example",
    ):
        code, text = await asyncio.to_thread(_rcpt, port, ours)
        assert code == 250, (ours, code, text)

    # A whole message: the refused recipient is not delivered, the configured one is.
    def send() -> dict[str, tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            return client.sendmail(
                "customer@example.com",
                ["victim@elsewhere.example", "help@acme.example"],
                make_mail(to="help@acme.example"),
            )

    refused = await asyncio.to_thread(send)
    assert set(refused) == {"victim@elsewhere.example"}
    assert refused["victim@elsewhere.example"][0] == 550
    await collector.wait(lambda c: len(c.events) >= 1)
