"""Escalation emails over SMTP (aiosmtplib)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from email.message import EmailMessage
from typing import Protocol

import aiosmtplib

logger = logging.getLogger(__name__)


class Mailer(Protocol):
    async def send(self, to: Sequence[str], subject: str, text: str) -> None: ...


class SmtpMailer:
    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        username: str = "",
        password: str = "",
        starttls: bool = False,
        timeout: float = 10.0,
    ) -> None:
        self.host, self.port, self.sender = host, port, sender
        self._username, self._password = username, password
        self._starttls, self._timeout = starttls, timeout

    async def send(self, to: Sequence[str], subject: str, text: str) -> None:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = ", ".join(to)
        message["Subject"] = subject
        message.set_content(text)
        await aiosmtplib.send(
            message,
            hostname=self.host,
            port=self.port,
            username=self._username or None,
            password=self._password or None,
            start_tls=self._starttls,
            timeout=self._timeout,
        )


class NoMailer:
    """No SMTP server configured: escalation emails are skipped (and say so in the audit)."""

    async def send(self, to: Sequence[str], subject: str, text: str) -> None:
        raise RuntimeError("no SMTP server configured (CASE_SMTP_HOST)")
