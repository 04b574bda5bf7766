from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable, Iterator
from email import policy
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import pytest
from nats.js.errors import NotFoundError

from switchboard.core import bus as sb_bus
from switchboard.core import stores
from switchboard.core.embedded_nats import free_port
from switchboard.email_ingest import config as email_config
from switchboard.email_ingest.bootstrap import EmailApp
from switchboard.email_ingest.devtools.dovecot import Dovecot, available
from switchboard.email_ingest.leasing import BUCKET as LEASE_BUCKET
from switchboard.email_ingest.leasing import lease_key
from switchboard.email_ingest.settings import EmailIngestSettings
from switchboard.testing.processes import ServiceProcess
from switchboard.testing.streams import EventCollector


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    if not available():
        pytest.fail("Dovecot is not installed: run `make system-deps` (dovecot-imapd)")
    server = Dovecot().start()
    try:
        yield server
    finally:
        server.close()


def mailbox_config(
    dovecot: Dovecot | None, auto_acknowledge: bool = False, **imap: Any
) -> email_config.EmailConfig:
    box: dict[str, Any] = {
        "name": "support",
        "tenant": "demo",
        "address": "support@demo.example",
        "display_name": "Demo Support",
        "queue": "email",
        "routes": [{"address": "billing@demo.example", "queue": "billing", "skills": ["billing"]}],
        "skills": [{"skill": "technical", "keywords": ["error", "오류"]}],
        "auto_acknowledge": auto_acknowledge,
    }
    if dovecot is not None:
        box["imap"] = {
            "host": dovecot.host,
            "port": dovecot.port,
            "username": "support",
            "password": "secret",
            **imap,
        }
    return email_config.parse({"mailboxes": [box]})


def settings(nats_url: str, **overrides: Any) -> EmailIngestSettings:
    values: dict[str, Any] = {
        "NATS_URL": nats_url,
        "EMAIL_GRPC_PORT": 0,
        "EMAIL_SMTP_PORT": 0,
        "EMAIL_STALL_SECONDS": 30,
        "EMAIL_RECONNECT_MAX_SECONDS": 0.5,
        "EMAIL_IMAP_TIMEOUT_SECONDS": 10,
        "EMAIL_SEND_BACKOFF_SECONDS": 0.05,
        "EMAIL_POLL_SECONDS": 0.3,
        "SHUTDOWN_GRACE_SECONDS": 0.5,
    }
    values.update(overrides)
    return EmailIngestSettings(**values)


@pytest.fixture
async def make_app(nats_url: str) -> AsyncIterator[Callable[..., Any]]:
    apps: list[EmailApp] = []

    async def factory(
        config: email_config.EmailConfig, wrapper: Any = None, **overrides: Any
    ) -> EmailApp:
        app = EmailApp(settings(nats_url, **overrides), config=config, publisher_wrapper=wrapper)
        await app.start()
        apps.append(app)
        return app

    yield factory
    for app in apps:
        try:
            await asyncio.wait_for(app.stop(), 30)
        except TimeoutError:
            for task in asyncio.all_tasks():
                print(task)
                with contextlib.suppress(Exception):  # compiled frames (grpc) have no line
                    task.print_stack()
            raise


@pytest.fixture
def email_process() -> Iterator[Callable[..., ServiceProcess]]:
    """`email_process(nats_url, log, **env)`: `python -m switchboard.email_ingest` as a real
    process (not started yet; no SMTP listener), with `env` over the defaults; every one is
    stopped at the end."""
    started: list[ServiceProcess] = []

    def make(nats_url: str, log: Path, **env: str) -> ServiceProcess:
        port = free_port()
        process = ServiceProcess(
            "switchboard.email_ingest",
            {
                **os.environ,
                "NATS_URL": nats_url,
                "EMAIL_GRPC_PORT": str(port),
                "EMAIL_SMTP_PORT": "-1",
                "EMAIL_RECONNECT_MAX_SECONDS": "0.5",
                "EMAIL_POLL_SECONDS": "0.3",
                "SHUTDOWN_GRACE_SECONDS": "0.5",
                "METRICS_PORT": "0",
                "SWITCHBOARD_AUTH_SECRET": "email-ingest-process-tests-secret",
                **env,
            },
            f"127.0.0.1:{port}",
            "switchboard.v1.EmailService",
            log,
        )
        started.append(process)
        return process

    yield make
    for process in started:
        process.stop()


@pytest.fixture
async def collector(bus: sb_bus.Bus) -> AsyncIterator[EventCollector]:
    c = await EventCollector.start(bus, "contact.>")
    yield c
    await c.stop()


def mail(
    subject: str = "Hello",
    text: str = "Hello, I need help.",
    sender: str = "customer@example.com",
    to: str = "support@demo.example",
    message_id: str | None = None,
    **headers: str,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Customer <{sender}>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = message_id or make_msgid(domain="example.com")
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(text)
    return msg.as_bytes(policy=policy.SMTP)


@pytest.fixture
def make_mail() -> Callable[..., bytes]:
    return mail


@pytest.fixture
def make_config() -> Callable[..., email_config.EmailConfig]:
    return mailbox_config


# Four mailboxes of one tenant, for the tests of several replicas and their leases.
BOXES = [f"box{i}" for i in range(4)]


@pytest.fixture
def four_boxes() -> Iterator[Dovecot]:
    if not available():
        pytest.fail("Dovecot is not installed: run `make system-deps` (dovecot-imapd)")
    server = Dovecot(users=dict.fromkeys(BOXES, "secret")).start()
    try:
        yield server
    finally:
        server.close()


def four_mailboxes(dovecot: Dovecot) -> dict[str, Any]:
    """The mailbox configuration (as its YAML has it) of BOXES on `dovecot`."""
    return {
        "mailboxes": [
            {
                "name": box,
                "tenant": "demo",
                "address": f"{box}@demo.example",
                "imap": {
                    "host": dovecot.host,
                    "port": dovecot.port,
                    "username": box,
                    "password": "secret",
                },
            }
            for box in BOXES
        ]
    }


async def lease_holders(bus: sb_bus.Bus) -> dict[str, str]:
    """mailbox -> the replica its lease names (none while there is no lease)."""
    try:
        kv = await bus.js.key_value(LEASE_BUCKET)
    except NotFoundError:
        return {}
    out = {}
    for box in BOXES:
        value = await stores.value(kv, lease_key("demo", box))
        if value:
            out[box] = value.decode()
    return out
