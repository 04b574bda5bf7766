"""Email ingest from a real Dovecot: the channel's messages/s beside the raw aioimaplib fetch rate
of the same mailbox, measured in the same run. Part of the mail is customers' replies to earlier
mail (see REPLY_GAP), threaded through the thread index as in a real mailbox."""

from __future__ import annotations

import asyncio
import os
import pathlib
import time
from email import policy
from email.message import EmailMessage

from switchboard.core import language
from switchboard.email_ingest import config as email_config
from switchboard.email_ingest.bootstrap import EmailApp
from switchboard.email_ingest.devtools.dovecot import Dovecot
from switchboard.email_ingest.entrypoints.imap import _Client, parse_fetch
from switchboard.email_ingest.settings import EmailIngestSettings

MESSAGES = int(os.environ.get("BENCH_EMAIL_MESSAGES", "1000"))
# Mails per IMAP FETCH, in the raw fetch and in the ingest alike (EMAIL_FETCH_BATCH's default).
FETCH_BATCH = int(
    os.environ.get(
        "BENCH_EMAIL_FETCH_BATCH", EmailIngestSettings.model_fields["fetch_batch"].default
    )
)
# Every second mail from the REPLY_GAP-th on answers the mail REPLY_GAP before it (In-Reply-To,
# References, a "Re:" subject), as customers' replies do: it is threaded by the thread index, into
# which the mail it answers was written one or more batches earlier.
REPLY_GAP = 2 * FETCH_BATCH
_TEXTS = [
    "안녕하세요. 주문한 상품이 아직 도착하지 않았습니다. 확인 부탁드립니다.",
    "你好，我的订单还没有到。请帮忙查询退款。",
    "Hello, the invoice I received is wrong. Could you correct it?",
    "こんにちは。注文した商品がまだ届いていません。",
]


def _mail(i: int) -> bytes:
    msg = EmailMessage()
    answered = i - REPLY_GAP if i >= REPLY_GAP and i % 2 else None
    customer = i if answered is None else answered
    msg["From"] = f"Customer {customer} <customer{customer}@example.com>"
    msg["To"] = "support@bench.example"
    msg["Message-ID"] = f"<bench-{i}@example.com>"
    if answered is None:
        msg["Subject"] = f"Question {i}"
    else:
        msg["Subject"] = f"Re: Question {answered}"
        msg["In-Reply-To"] = f"<bench-{answered}@example.com>"
        msg["References"] = f"<bench-{answered}@example.com>"
    text = _TEXTS[i % len(_TEXTS)] + "\n\n-- \nCustomer"
    msg.set_content(text)
    if i % 2:
        msg.add_alternative(f"<html><body><p>{text}</p></body></html>", subtype="html")
    return msg.as_bytes(policy=policy.SMTP)


async def _raw_fetch_rate(dovecot: Dovecot, count: int, batch: int) -> float:
    """The same messages over the same kind of connection the watcher opens (its IMAP client,
    connect, LOGIN, SELECT), bodies fetched by UID range in batches of the watcher's size: the
    transport's own rate, with nothing decoded, stored or published."""
    start = time.monotonic()
    client = _Client(dovecot.host, dovecot.port, timeout=30)
    await client.wait_hello_from_server()
    await client.login("support", dovecot.users["support"])
    try:
        await client.select("INBOX")
        fetched = 0
        for first in range(1, count + 1, batch):
            response = await client.uid(
                "fetch", f"{first}:{min(count, first + batch - 1)}", "(UID BODY.PEEK[])"
            )
            fetched += len(parse_fetch(response.lines))
        elapsed = time.monotonic() - start
    finally:
        await client.logout()
    assert fetched == count, f"fetched {fetched} of {count}"
    return count / elapsed


async def run(work: pathlib.Path, nats_url: str) -> dict[str, float]:
    dovecot = Dovecot().start()
    try:
        await dovecot.append([_mail(i) for i in range(MESSAGES)])
        raw = await _raw_fetch_rate(dovecot, MESSAGES, FETCH_BATCH)
        config = email_config.parse(
            {
                "mailboxes": [
                    {
                        "name": "bench",
                        "tenant": "bench",
                        "address": "support@bench.example",
                        "imap": {
                            "host": dovecot.host,
                            "port": dovecot.port,
                            "username": "support",
                            "password": "secret",
                        },
                    }
                ]
            }
        )
        settings = EmailIngestSettings(
            NATS_URL=nats_url,
            EMAIL_GRPC_PORT=0,
            EMAIL_SMTP_PORT=-1,
            EMAIL_FETCH_BATCH=FETCH_BATCH,  # type: ignore[call-arg]
        )
        app = EmailApp(settings, config=config)
        language.warm()  # the process's one-time model load is not ingest time
        start = time.monotonic()
        await app.start()
        app_start = time.monotonic() - start
        try:
            watcher = app.watchers[0]
            while watcher.status.last_uid < MESSAGES:  # noqa: ASYNC110 - polling a counter
                await asyncio.sleep(0.005)
            # From the watcher's start (its connect, LOGIN and SELECT included, as in the raw
            # fetch) to the last batch acknowledged and checkpointed; the service's own start
            # (NATS buckets, gRPC) is reported apart.
            elapsed = time.monotonic() - watcher.status.started
        finally:
            await app.stop()
    finally:
        dovecot.close()
    ingest = MESSAGES / elapsed
    return {
        "email_messages": float(MESSAGES),
        "email_app_start_s": app_start,
        "email_ingest_msgs_per_s": ingest,
        "raw_imap_fetch_msgs_per_s": raw,
        "email_ingest_over_raw_imap_fetch": ingest / raw,
    }


if __name__ == "__main__":
    import sys
    import tempfile

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
    from switchboard.core.embedded_nats import NatsServer

    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(pathlib.Path(tmp) / "nats").start()
        try:
            print(asyncio.run(run(pathlib.Path(tmp), server.url)))
        finally:
            server.stop()
