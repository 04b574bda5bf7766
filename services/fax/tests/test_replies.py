"""Agents' replies: OutboundFax on the bus -> a G4 fax with the case number -> HylaFAX's client
protocol -> DeliveryStatus. Against a real hfaxd + faxq (Debian's hylafax-server, started per test,
no modem): the job is accepted, lands in the spool, waits for a modem and fails at its kill time.
What needs a modem (a failed call retried, a fax sent) runs against a stand-in that answers as
the real server does."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import pytest
from nats.js.errors import KeyNotFoundError, NotFoundError

from switchboard.core import events, stores
from switchboard.core.bus import Bus
from switchboard.fax.adapters.jobs import BUCKET as JOBS
from switchboard.fax.adapters.jobs import Job, Jobs
from switchboard.fax.adapters.ocr import Tesseract
from switchboard.fax.bootstrap import FaxApp
from switchboard.fax.domain.document import Limits, inspect_tiff, normalise
from switchboard.fax.settings import FaxSettings
from switchboard.testing.streams import published
from switchboard.testing.waiting import eventually
from switchboard.v1 import case_events_pb2, contact_pb2, events_pb2

TENANT = "demo"


async def statuses(
    bus: Bus, command_id: str, final: set[int], wait: float = 60
) -> list[events_pb2.DeliveryStatus]:
    seen: list[events_pb2.DeliveryStatus] = []
    done = asyncio.Event()

    async def keep(event: events_pb2.DeliveryStatus) -> None:
        if event.command_id == command_id:
            seen.append(event)
            if event.state in final:
                done.set()

    bus.subscribe(f"test-delivery-{command_id[:8]}", events_pb2.DeliveryStatus, keep)
    await bus.start()
    await asyncio.wait_for(done.wait(), wait)
    return seen


def outbound(command_id: str, to: str) -> events_pb2.OutboundFax:
    return events_pb2.OutboundFax(
        meta=events.new_meta(TENANT, contact_pb2.CHANNEL_FAX, "inbox", command_id),
        contact_id="c-1",
        case_id="case-1",
        case_reference="C-7K3M9Q",
        agent_id="agent-ko",
        to_number=to,
        text="안녕하세요. 청구서를 다시 확인했습니다.\nThe corrected invoice follows.",
    )


async def start_fax(nats_url: str, tmp_path: Path, **extra: Any) -> FaxApp:
    settings: dict[str, Any] = {
        "NATS_URL": nats_url,
        "FAX_GRPC_PORT": 0,
        "FAX_HTTP_PORT": 0,
        "FAX_STATUS_POLL_SECONDS": 0.05,
        "FAX_SEND_ATTEMPTS": 2,
        "SHUTDOWN_GRACE_SECONDS": 1.0,
    }
    app = FaxApp(FaxSettings(**(settings | extra)))
    await app.start()
    return app


@pytest.mark.timeout(180)
async def test_a_real_hylafax_server_accepts_the_reply_and_fails_it_when_no_modem_sends_it(
    nats_url: str, tmp_path: Path, bus: Bus, hylafax_server: Any
) -> None:
    app = await start_fax(
        nats_url,
        tmp_path,
        FAX_HYLAFAX_HOST="127.0.0.1",
        FAX_HYLAFAX_PORT=hylafax_server.port,
        FAX_HYLAFAX_PASSWORD=hylafax_server.password,
        FAX_HYLAFAX_KILL_MINUTES=1,  # HylaFAX's shortest kill time: faxq gives up after a minute
        FAX_STATUS_POLL_SECONDS=1,
    )
    try:
        seen: list[events_pb2.DeliveryStatus] = []
        states = {
            events_pb2.DELIVERY_STATE_SENT: asyncio.Event(),
            events_pb2.DELIVERY_STATE_FAILED: asyncio.Event(),
        }

        async def keep(event: events_pb2.DeliveryStatus) -> None:
            if event.command_id == "reply-1":
                seen.append(event)
                if event.state in states:
                    states[event.state].set()

        bus.subscribe("test-delivery-reply-1", events_pb2.DeliveryStatus, keep)
        await bus.start()
        await bus.publish(outbound("reply-1", "+82 2 1234 5678"))
        await asyncio.wait_for(states[events_pb2.DELIVERY_STATE_SENT].wait(), 60)
        job_id = seen[0].message_id
        queued = hylafax_server.job(job_id)  # while faxq still holds it
        await asyncio.wait_for(states[events_pb2.DELIVERY_STATE_FAILED].wait(), 150)
    finally:
        await app.stop()
    # hfaxd accepted the job: faxq queued it in sendq for our user, to the number we asked for,
    # with our rendered G4 reply (the case number readable on the page) in docq
    assert job_id.isdigit()
    assert queued["queue"] == "sendq"
    assert queued["owner"] == "switchboard"
    assert queued["number"] == "82212345678"
    document = hylafax_server.document(queued)
    assert [p.compression for p in inspect_tiff(document, Limits())] == ["group4"]
    page = normalise(document, Limits()).pages[0]
    assert "C-7K3M9Q" in (await Tesseract().read(page.png)).text
    # no modem took it (no call was tried, so no RETRYING); faxq failed it at its kill time and
    # our polling reported what hfaxd said
    assert [s.state for s in seen] == [
        events_pb2.DELIVERY_STATE_SENT,
        events_pb2.DELIVERY_STATE_FAILED,
    ]
    assert seen[-1].detail == f"HylaFAX job {job_id} failed: Kill time expired"
    done = hylafax_server.job(job_id)
    assert (done["queue"], done["status"]) == ("doneq", "Kill time expired")


async def test_a_real_hylafax_server_refuses_a_wrong_password(
    nats_url: str, tmp_path: Path, bus: Bus, hylafax_server: Any
) -> None:
    app = await start_fax(
        nats_url,
        tmp_path,
        FAX_HYLAFAX_HOST="127.0.0.1",
        FAX_HYLAFAX_PORT=hylafax_server.port,
        FAX_HYLAFAX_PASSWORD="not-the-password",
    )
    try:
        await bus.publish(outbound("reply-5", "+82 2 1234 5678"))
        seen = await statuses(bus, "reply-5", {events_pb2.DELIVERY_STATE_FAILED})
    finally:
        await app.stop()
    assert [s.state for s in seen] == [
        events_pb2.DELIVERY_STATE_RETRYING,
        events_pb2.DELIVERY_STATE_FAILED,
    ]
    assert seen[-1].detail.startswith("HylaFAX: login refused: 530")
    assert not list((hylafax_server.spool / "docq").glob("doc*"))


async def test_a_call_hylafax_retries_then_sends_is_reported_retrying_then_delivered(
    nats_url: str, tmp_path: Path, bus: Bus, fake_hylafax: Any
) -> None:
    hylafax = fake_hylafax
    app = await start_fax(
        nats_url,
        tmp_path,
        FAX_HYLAFAX_HOST="127.0.0.1",
        FAX_HYLAFAX_PORT=hylafax.port,
        FAX_HYLAFAX_PASSWORD=hylafax.password,
    )
    try:
        await bus.publish(outbound("reply-6", "+82 2 1234 5678"))
        seen = await statuses(
            bus, "reply-6", {events_pb2.DELIVERY_STATE_DELIVERED, events_pb2.DELIVERY_STATE_FAILED}
        )
    finally:
        await app.stop()
    job = seen[0].message_id
    assert [(s.state, s.detail) for s in seen] == [
        (events_pb2.DELIVERY_STATE_SENT, f"HylaFAX job {job} submitted to +82212345678"),
        (
            events_pb2.DELIVERY_STATE_RETRYING,
            f"HylaFAX job {job} sleeping after try 1: No carrier detected",
        ),
        (events_pb2.DELIVERY_STATE_DELIVERED, f"HylaFAX job {job} done"),
    ]
    # sendfax's defaults, as the real server needs them
    assert {"FORM TIFF", "JPARM LASTTIME 000259", "JPARM MAXTRIES 3"} <= set(hylafax.commands)
    assert hylafax.jobs[job]["DIALSTRING"] == "82212345678"


async def test_an_unreachable_fax_server_is_retried_then_reported_failed(
    nats_url: str, tmp_path: Path, bus: Bus
) -> None:
    app = await start_fax(nats_url, tmp_path, FAX_HYLAFAX_HOST="127.0.0.1", FAX_HYLAFAX_PORT=9)
    try:
        await bus.publish(outbound("reply-2", "+82 2 1234 5678"))
        seen = await statuses(bus, "reply-2", {events_pb2.DELIVERY_STATE_FAILED})
    finally:
        await app.stop()
    assert [s.state for s in seen] == [
        events_pb2.DELIVERY_STATE_RETRYING,
        events_pb2.DELIVERY_STATE_FAILED,
    ]
    assert "cannot connect to HylaFAX" in seen[-1].detail


async def test_without_a_fax_server_the_reply_is_kept_and_reported_failed(
    nats_url: str, tmp_path: Path, bus: Bus
) -> None:
    app = await start_fax(nats_url, tmp_path)
    try:
        await bus.publish(outbound("reply-3", "+82 2 1234 5678"))
        await bus.publish(outbound("reply-4", "call me"))
        kept = await statuses(bus, "reply-3", {events_pb2.DELIVERY_STATE_FAILED})
        bad = await statuses(bus, "reply-4", {events_pb2.DELIVERY_STATE_FAILED})
    finally:
        await app.stop()
    assert "FAX_HYLAFAX_HOST" in kept[-1].detail
    assert "fax-documents/demo/outbound/reply-3.tif" in kept[-1].detail
    assert "not a valid phone number" in bad[-1].detail


@pytest.mark.timeout(120)
async def test_a_restart_neither_resends_a_reply_nor_stops_following_it(
    nats_url: str, tmp_path: Path, bus: Bus, fake_hylafax: Any
) -> None:
    hylafax = fake_hylafax
    server = {
        "FAX_HYLAFAX_HOST": "127.0.0.1",
        "FAX_HYLAFAX_PORT": hylafax.port,
        "FAX_HYLAFAX_PASSWORD": hylafax.password,
    }
    # The first process submits the job and stops before it asks how the job went.
    first = await start_fax(nats_url, tmp_path, FAX_STATUS_POLL_SECONDS=60, **server)
    try:
        await bus.publish(outbound("reply-9", "+82 2 1234 5678"))
        sent = await statuses(bus, "reply-9", {events_pb2.DELIVERY_STATE_SENT})
    finally:
        await first.stop()
    job = sent[-1].message_id
    assert len(hylafax.jobs) == 1
    # The next one follows it to the end, and a redelivered command is not submitted again.
    second = await start_fax(nats_url, tmp_path, **server)
    try:
        await bus.publish(outbound("reply-9", "+82 2 1234 5678"))
        seen = await statuses(
            bus, "reply-9", {events_pb2.DELIVERY_STATE_DELIVERED, events_pb2.DELIVERY_STATE_FAILED}
        )
    finally:
        await second.stop()
    assert seen[-1].state == events_pb2.DELIVERY_STATE_DELIVERED
    assert seen[-1].detail == f"HylaFAX job {job} done"
    assert list(hylafax.jobs) == [job]


def customer_erased(tenant: str, *contact_ids: str) -> case_events_pb2.CustomerErased:
    return case_events_pb2.CustomerErased(
        meta=events.new_meta(tenant, 0, "case"), customer_id="cust-1", contact_ids=contact_ids
    )


async def test_customer_erased_purges_the_customers_reply_jobs(
    nats_url: str, tmp_path: Path, bus: Bus
) -> None:
    """The jobs of an erased customer's replies (their number and the reply's text) are purged
    with their history; another contact's, or another tenant's, stay; a replica still following
    a purged job cannot write it back."""
    jobs = await Jobs.open(bus.js)
    commands = {
        "reply-a1": outbound("reply-a1", "+82 2 1234 5678"),
        "reply-a2": outbound("reply-a2", "+82 2 1234 5678"),
        "reply-b": outbound("reply-b", "+82 31 765 4321"),
        "reply-other": outbound("reply-other", "+82 2 1234 5678"),
    }
    commands["reply-b"].contact_id = "c-2"
    commands["reply-other"].meta.tenant = "acme"
    revisions = {}
    for n, (command_id, command) in enumerate(commands.items()):
        revisions[command_id] = await jobs.put(
            command_id, Job(command.SerializeToString(), str(100 + n), 1)
        )
    # Followed a while: the first job was written twice.
    first = await jobs.get("reply-a1")
    assert first is not None
    followed = await jobs.replace(
        "reply-a1", Job(first.command, first.job, 1, tries=1), first.revision
    )
    assert followed is not None
    erased = {"reply-a1": [revisions["reply-a1"], followed], "reply-a2": [revisions["reply-a2"]]}

    app = await start_fax(nats_url, tmp_path)
    try:
        await bus.publish(customer_erased(TENANT, "c-1", "mail-7"))

        async def purged() -> bool:
            return all([await jobs.get(c) is None for c in erased])

        await eventually(purged)
    finally:
        await app.stop()
    for command_id, stored in erased.items():
        key = hashlib.sha256(command_id.encode()).hexdigest()[:40]
        with pytest.raises(KeyNotFoundError):
            await jobs.kv.get(key)
        assert [e.operation for e in await stores.history(jobs.kv, key)] == ["PURGE"]
        for revision in stored:
            with pytest.raises(NotFoundError):
                await bus.js.get_msg(f"KV_{JOBS}", revision)
    for command_id in ("reply-b", "reply-other"):
        kept = await jobs.get(command_id)
        assert kept is not None and kept.command == commands[command_id].SerializeToString()
    # A replica following the purged job: its next write finds it gone and writes nothing.
    assert (
        await jobs.replace("reply-a1", Job(first.command, first.job, 1, 2, True), followed) is None
    )
    assert await jobs.get("reply-a1") is None
    assert await jobs.unfinished() == [
        Job(commands[c].SerializeToString(), j, 1)
        for c, j in (("reply-b", "102"), ("reply-other", "103"))
    ]
    # Delivered again: harmless.
    assert await jobs.forget_contacts(TENANT, ["c-1"]) == 0


@pytest.mark.timeout(120)
async def test_a_reply_followed_when_its_customer_is_erased_is_reported_no_more(
    nats_url: str, tmp_path: Path, bus: Bus, fake_hylafax: Any
) -> None:
    hylafax = fake_hylafax
    hylafax.script.clear()  # the jobs wait for a modem until the test moves them on
    app = await start_fax(
        nats_url,
        tmp_path,
        FAX_HYLAFAX_HOST="127.0.0.1",
        FAX_HYLAFAX_PORT=hylafax.port,
        FAX_HYLAFAX_PASSWORD=hylafax.password,
    )
    jobs = await Jobs.open(bus.js)
    try:
        assert app.sender is not None
        sender = app.sender

        async def delivery(command_id: str) -> list[int]:
            found = await published(bus, "contact.demo.fax.delivery", events_pb2.DeliveryStatus)
            return [s.state for s in found if s.command_id == command_id]

        async def followed(command_id: str) -> bool:
            return await jobs.get(command_id) is not None and bool(sender._follow)

        async def not_followed() -> bool:
            return not sender._follow

        # Erased on another replica (it purged the job): this one, following it, stops at the
        # job's next change without reporting it or writing the job back.
        await bus.publish(outbound("reply-e", "+82 2 1234 5678"))
        await eventually(lambda: followed("reply-e"))
        assert await jobs.forget_contacts(TENANT, ["c-1"]) == 1
        hylafax.script.append(("DONE", "", 1))
        await eventually(not_followed)
        assert await delivery("reply-e") == [events_pb2.DELIVERY_STATE_SENT]
        assert await jobs.get("reply-e") is None

        # Erased with this replica receiving the event: it stops following the job at once.
        command = outbound("reply-f", "+82 2 1234 5678")
        command.contact_id = "c-3"
        await bus.publish(command)
        await eventually(lambda: followed("reply-f"))
        await bus.publish(customer_erased(TENANT, "c-3"))
        await eventually(not_followed)
        assert await jobs.get("reply-f") is None
    finally:
        await app.stop()
    assert await delivery("reply-f") == [events_pb2.DELIVERY_STATE_SENT]
