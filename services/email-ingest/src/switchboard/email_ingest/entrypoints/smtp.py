"""Direct receive: an SMTP (and optionally LMTP) listener for mail handed over by a mail server.

A mail is answered 250 only once JetStream has stored its events; a failure to store it is a 451
(the sending server retries), an unknown recipient a 550, and mail over the size limit a 552
(aiosmtpd enforces the limit on SIZE= and on the data itself). With a TLS context the listener
offers STARTTLS, and can require it before anything else.

aiosmtpd logs every command of a session at INFO (logger "mail.log"); the listener keeps that
logger at WARNING and logs one INFO line per session itself: the peer and each mail's answer.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session

from switchboard.email_ingest.config import EmailConfig, Mailbox
from switchboard.email_ingest.ingest import Incoming, Ingestor
from switchboard.v1 import email_pb2

logger = logging.getLogger(__name__)

# aiosmtpd's own logger: a line per command at INFO.
AIOSMTPD_LOGGER = "mail.log"


def _record(session: Session, status: str) -> None:
    """Note a mail's answer on its session, for the one line logged when the session ends."""
    answers: list[str] = getattr(session, "switchboard_answers", [])
    answers.append(status.split(" ", 1)[0])
    session.switchboard_answers = answers  # type: ignore[attr-defined]


class _OneLinePerSession:
    """Logs one INFO line when a session that carried mail ends (none for a bare connection)."""

    session: Session | None

    def connection_lost(self, error: Exception | None) -> None:
        session = self.session
        super().connection_lost(error)  # type: ignore[misc]
        answers = getattr(session, "switchboard_answers", None)
        if session is not None and answers:
            peer = session.peer[0] if isinstance(session.peer, tuple) else session.peer
            protocol = "LMTP" if isinstance(self, LMTP) else "SMTP"
            logger.info(
                "%s session from %s: %d mail(s), answered %s",
                protocol,
                peer,
                len(answers),
                ", ".join(answers),
            )


class _SMTP(_OneLinePerSession, SMTP):
    pass


class _LMTP(_OneLinePerSession, LMTP):
    pass


class ReceiveHandler:
    def __init__(self, config: EmailConfig, ingestor: Ingestor, lmtp: bool = False) -> None:
        self.config = config
        self.ingestor = ingestor
        self.lmtp = lmtp

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if self.config.for_recipient(address) is None:
            return "550 5.1.1 No such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        groups: dict[str, tuple[Mailbox, list[str]]] = {}
        for rcpt in envelope.rcpt_tos:
            mailbox = self.config.for_recipient(rcpt)
            if mailbox is not None:
                groups.setdefault(mailbox.name, (mailbox, []))[1].append(rcpt)
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        intake = email_pb2.EMAIL_INTAKE_LMTP if self.lmtp else email_pb2.EMAIL_INTAKE_SMTP
        statuses: dict[str, str] = {}
        for mailbox, rcpts in groups.values():
            origin = email_pb2.EmailOrigin(
                intake=intake, mailbox=mailbox.name, peer=peer, recipients=rcpts
            )
            try:
                await self.ingestor.ingest(Incoming(bytes(raw), mailbox, origin, recipients=rcpts))
                status = "250 2.0.0 Message accepted"
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning(
                    "mail for %s not stored (%s); asking the sender to retry", mailbox.name, exc
                )
                status = "451 4.3.0 Could not store the message; try again later"
            for rcpt in rcpts:
                statuses[rcpt] = status
        if self.lmtp:
            # LMTP answers once per recipient, in RCPT order.
            answers = [statuses.get(r, "451 4.3.0 try again later") for r in envelope.rcpt_tos]
            for answer in answers:
                _record(session, answer)
            return "\r\n".join(answers)
        failed = [s for s in statuses.values() if not s.startswith("250")]
        answer = failed[0] if failed else "250 2.0.0 Message accepted"
        _record(session, answer)
        return answer


class ReceiveServer:
    def __init__(
        self,
        handler: ReceiveHandler,
        host: str,
        port: int,
        max_bytes: int,
        hostname: str,
        tls_context: ssl.SSLContext | None = None,
        require_starttls: bool = False,
    ) -> None:
        if require_starttls and tls_context is None:
            raise ValueError("STARTTLS cannot be required without a certificate")
        self.tls_context = tls_context
        self.require_starttls = require_starttls
        self.handler = handler
        self.host = host
        self.port = port
        self.max_bytes = max_bytes
        self.hostname = hostname
        self.server: asyncio.base_events.Server | None = None

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        cls: Any = _LMTP if self.handler.lmtp else _SMTP
        quiet = logging.getLogger(AIOSMTPD_LOGGER)
        if quiet.getEffectiveLevel() < logging.WARNING:
            quiet.setLevel(logging.WARNING)

        def factory() -> SMTP:
            return cls(
                self.handler,
                data_size_limit=self.max_bytes,
                enable_SMTPUTF8=True,
                decode_data=False,
                hostname=self.hostname,
                ident="Switchboard email-ingest",
                tls_context=self.tls_context,
                require_starttls=self.require_starttls,
            )

        self.server = await loop.create_server(factory, self.host, self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
