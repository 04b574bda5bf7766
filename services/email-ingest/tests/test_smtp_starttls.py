"""STARTTLS on the SMTP listener: with EMAIL_SMTP_TLS_CERT_FILE and _KEY_FILE it offers the
upgrade, and with EMAIL_SMTP_REQUIRE_STARTTLS it takes no mail before it."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from switchboard.testing.tls import self_signed
from switchboard.v1 import events_pb2


async def test_mail_is_taken_only_after_starttls_when_it_is_required(
    make_app: Any, make_config: Any, make_mail: Any, collector: Any, tmp_path: Path
) -> None:
    key, cert = await asyncio.to_thread(self_signed, tmp_path)
    app = await make_app(
        make_config(None),
        EMAIL_SMTP_TLS_CERT_FILE=str(cert),
        EMAIL_SMTP_TLS_KEY_FILE=str(key),
        EMAIL_SMTP_REQUIRE_STARTTLS=True,
    )
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=app.smtp_port, start_tls=False)
    await client.connect()
    try:
        await client.ehlo()
        assert client.supports_extension("starttls")
        with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
            await client.mail("customer@example.com")
        assert refused.value.code == 530
        await client.starttls(tls_context=ssl.create_default_context(cafile=str(cert)))
        assert client.get_transport_info("sslcontext") is not None
        await client.sendmail(
            "customer@example.com",
            ["billing@demo.example"],
            make_mail("결제 오류", "결제가 안 됩니다.", to="billing@demo.example"),
        )
    finally:
        await client.quit()
    await collector.wait(lambda c: c.of(events_pb2.ContactCreated))


async def test_without_a_certificate_no_starttls_is_offered(
    make_app: Any, make_config: Any
) -> None:
    app = await make_app(make_config(None))
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=app.smtp_port, start_tls=False)
    await client.connect()
    try:
        await client.ehlo()
        assert not client.supports_extension("starttls")
    finally:
        await client.quit()
