"""Escalation emails over SMTP (aiosmtplib)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from email.message import EmailMessage
from typing import Protocol

import aiosmtplib

logger = logging.getLogger(__name__)


class Mailer(Protocol):
    async def send(self, to: Sequence[str], subject: str, text: str, key: str) -> None:
        """Send one mail; `key` names it (the same key gives the same Message-ID)."""
        ...


def message_id(key: str, sender: str) -> str:
    """The Message-ID of the mail named `key`: the same on every attempt, so a receiver can drop
    a copy sent again after a crash."""
    domain = sender.rpartition("@")[2] or "switchboard.invalid"
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:40]}@{domain}>"


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

    async def send(self, to: Sequence[str], subject: str, text: str, key: str) -> None:
        message = EmailMessage()
        message["Message-ID"] = message_id(key, self.sender)
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
    """No SMTP server configured: a mail still in the outbox fails (and waits its back-off)."""

    async def send(self, to: Sequence[str], subject: str, text: str, key: str) -> None:
        raise RuntimeError("no SMTP server configured (CASE_SMTP_HOST)")
