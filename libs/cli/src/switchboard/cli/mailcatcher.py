"""The embedded default's mail catcher: an SMTP server (aiosmtpd) that takes every mail the
platform sends — agents' replies, acknowledgements, chat transcripts, escalations — and keeps it
in the run directory (`.run/mail/*.eml`), and a page that lists it, newest first: each mail's
sender, recipients, subject, date and decoded text.

Nothing leaves the machine: `switchboard run` points the services' outgoing SMTP here unless
EMAIL_RELAY_HOST (email-ingest) or CASE_SMTP_HOST (case) is set.
"""

from __future__ import annotations

import asyncio
import email
import html
import logging
import re
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from pathlib import Path

from aiohttp import web
from aiosmtpd.smtp import SMTP, Envelope, Session

logger = logging.getLogger("switchboard.mailcatcher")

MAIL_DIR = "mail"
# The page shows this many of the newest mails (all stay in the directory).
PAGE_LIMIT = 200


@dataclass(frozen=True)
class CaughtMail:
    name: str  # the file name in the mail directory
    sender: str
    recipients: str
    subject: str
    date: str
    text: str


def _text_of(message: EmailMessage) -> str:
    """The readable text: the plain part, else the HTML part without its markup."""
    try:
        part = message.get_body(preferencelist=("plain", "html"))
        if part is None:
            return ""
        content = part.get_content()
    except (LookupError, ValueError, AttributeError) as exc:
        return f"(the body could not be decoded: {exc})"
    if not isinstance(content, str):
        return ""
    if part.get_content_subtype() == "html":
        content = re.sub(r"(?is)<(script|style)\b.*?</\1\s*>", "", content)
        content = re.sub(r"(?i)<br\s*/?>|</p\s*>|</div\s*>", "\n", content)
        content = html.unescape(re.sub(r"<[^>]*>", "", content))
    return content.strip()


def read_mail(path: Path) -> CaughtMail:
    message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
    assert isinstance(message, EmailMessage)

    def header(name: str) -> str:
        try:
            return str(message.get(name, "") or "")
        except (ValueError, IndexError):  # a header the policy cannot parse: shown raw
            return str(message.get_all(name, [""])[0])

    return CaughtMail(
        name=path.name,
        sender=header("From"),
        recipients=", ".join(filter(None, (header("To"), header("Cc")))),
        subject=header("Subject"),
        date=header("Date"),
        text=_text_of(message),
    )


class MailCatcher:
    """The SMTP server and the page, on 127.0.0.1 (ports chosen by the caller)."""

    def __init__(self, directory: Path, host: str = "127.0.0.1") -> None:
        self.dir = directory / MAIL_DIR
        self.host = host
        self.smtp_port = 0
        self.http_port = 0
        self._smtp: asyncio.base_events.Server | None = None
        self._runner: web.AppRunner | None = None
        self._count = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.http_port}/"

    async def start(self, smtp_port: int = 0, http_port: int = 0) -> MailCatcher:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._count = len(list(self.dir.glob("*.eml")))
        quiet = logging.getLogger("mail.log")  # aiosmtpd: a line per command at INFO
        if quiet.getEffectiveLevel() < logging.WARNING:
            quiet.setLevel(logging.WARNING)
        loop = asyncio.get_running_loop()
        self._smtp = await loop.create_server(
            lambda: SMTP(self, hostname="switchboard-mail-catcher", enable_SMTPUTF8=True),
            self.host,
            smtp_port,
        )
        self.smtp_port = int(self._smtp.sockets[0].getsockname()[1])
        app = web.Application()
        app.router.add_get("/", self._page)
        app.router.add_get("/healthz", self._healthz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, http_port)
        await site.start()
        self.http_port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._smtp is not None:
            self._smtp.close()
            await self._smtp.wait_closed()
            self._smtp = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ---- SMTP --------------------------------------------------------------------------------

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        self._count += 1
        # Names sort in arrival order: the page lists them newest first.
        path = self.dir / f"{self._count:08d}.eml"
        await asyncio.to_thread(path.write_bytes, bytes(raw))
        # Prefixed like the services' lines in `switchboard run`'s output.
        logger.info(
            "%13s | caught mail from %s to %s",
            "mail-catcher",
            envelope.mail_from,
            ", ".join(envelope.rcpt_tos),
        )
        return "250 2.0.0 Caught (see the mail page)"

    # ---- the page ----------------------------------------------------------------------------

    def mails(self) -> list[CaughtMail]:
        """The newest mails first."""
        paths = sorted(self.dir.glob("*.eml"), reverse=True)[:PAGE_LIMIT]
        return [read_mail(p) for p in paths]

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _page(self, request: web.Request) -> web.Response:
        mails = await asyncio.to_thread(self.mails)
        return web.Response(text=render(mails), content_type="text/html", charset="utf-8")


def render(mails: list[CaughtMail]) -> str:
    e = html.escape
    items = [
        "<article class='mail'>"
        f"<h2 class='subject'>{e(m.subject) or '(no subject)'}</h2>"
        "<dl>"
        f"<dt>From</dt><dd class='from'>{e(m.sender)}</dd>"
        f"<dt>To</dt><dd class='to'>{e(m.recipients)}</dd>"
        f"<dt>Date</dt><dd class='date'>{e(m.date)}</dd>"
        "</dl>"
        f"<pre class='body'>{e(m.text)}</pre>"
        "</article>"
        for m in mails
    ]
    body = "\n".join(items) or "<p>No mail sent yet.</p>"
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        "<meta http-equiv='refresh' content='10'>"
        "<title>Switchboard: sent mail</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:1em auto}"
        "article{border-bottom:1px solid #ccc;padding:.5em 0}dl{display:grid;"
        "grid-template-columns:5em 1fr;margin:0}dt{color:#666}dd{margin:0}"
        "pre{white-space:pre-wrap;font-family:inherit}</style></head><body>"
        f"<h1>Sent mail ({len(mails)})</h1>\n{body}\n</body></html>"
    )
