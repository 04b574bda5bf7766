"""`switchboard run`'s mail catcher: mail handed to it over real SMTP is listed on its page,
newest first, with decoded headers and text; it is kept in the run directory across restarts."""

from __future__ import annotations

import asyncio
import smtplib
from email.message import EmailMessage
from pathlib import Path

import aiohttp

from switchboard.cli.mailcatcher import MailCatcher


def send(port: int, message: EmailMessage) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.send_message(message)


async def page(catcher: MailCatcher) -> str:
    async with aiohttp.ClientSession() as session, session.get(catcher.url) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/html")
        return await resp.text()


async def test_sent_mail_is_listed_newest_first_with_its_text_decoded(tmp_path: Path) -> None:
    catcher = await MailCatcher(tmp_path).start()
    try:
        assert "No mail sent yet" in await page(catcher)
        first = EmailMessage()
        first["From"] = "Demo Support <support@demo.switchboard.local>"
        first["To"] = "김민지 <minji@example.kr>"
        first["Subject"] = "[#C-1001] 환불 요청을 접수했습니다"
        first["Date"] = "Thu, 03 Dec 2026 12:00:00 +0900"
        first.set_content("환불 요청을 접수했습니다.\n담당자가 곧 답변드리겠습니다.", cte="base64")
        second = EmailMessage()
        second["From"] = "support@demo.switchboard.local"
        second["To"] = "li@example.cn"
        second["Subject"] = "聊天记录 <transcript>"
        second.set_content(
            "<html><head><style>p{}</style></head><body><p>您好 &amp; 再见</p>"
            "<script>x()</script></body></html>",
            subtype="html",
            cte="quoted-printable",
        )
        await asyncio.to_thread(send, catcher.smtp_port, first)
        await asyncio.to_thread(send, catcher.smtp_port, second)
        text = await page(catcher)
        # newest first
        assert text.index("聊天记录 &lt;transcript&gt;") < text.index("[#C-1001] 환불 요청")
        assert "김민지 &lt;minji@example.kr&gt;" in text
        assert "Thu, 03 Dec 2026 12:00:00 +0900" in text
        assert "담당자가 곧 답변드리겠습니다." in text  # decoded from base64
        assert "您好 &amp; 再见" in text  # the HTML part's text, without its markup
        assert "x()" not in text and "p{}" not in text
    finally:
        await catcher.stop()
    again = await MailCatcher(tmp_path).start()
    try:
        third = EmailMessage()
        third["From"], third["To"], third["Subject"] = "a@b.c", "d@e.f", "third"
        third.set_content("after the restart")
        await asyncio.to_thread(send, again.smtp_port, third)
        text = await page(again)
        assert text.index("third") < text.index("聊天记录") < text.index("[#C-1001]")
        assert "Sent mail (3)" in text
    finally:
        await again.stop()
