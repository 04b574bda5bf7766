"""Agents' replies: OutboundFax on the bus -> a G4 fax with the case number -> HylaFAX's client
protocol (against a small fake hfaxd: no real HylaFAX server is installed here) -> DeliveryStatus."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from switchboard.core import events
from switchboard.core.bus import Bus
from switchboard.fax.adapters.ocr import Tesseract
from switchboard.fax.bootstrap import FaxApp
from switchboard.fax.domain.document import Limits, inspect_tiff, normalise
from switchboard.fax.settings import FaxSettings
from switchboard.v1 import contact_pb2, events_pb2

TENANT = "demo"


@pytest.fixture
async def hylafax(fake_hylafax: Any) -> AsyncIterator[Any]:
    yield fake_hylafax


async def statuses(bus: Bus, command_id: str, final: set[int]) -> list[events_pb2.DeliveryStatus]:
    seen: list[events_pb2.DeliveryStatus] = []
    done = asyncio.Event()

    async def keep(event: events_pb2.DeliveryStatus) -> None:
        if event.command_id == command_id:
            seen.append(event)
            if event.state in final:
                done.set()

    bus.subscribe(f"test-delivery-{command_id[:8]}", events_pb2.DeliveryStatus, keep)
    await bus.start()
    await asyncio.wait_for(done.wait(), 60)
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
    app = FaxApp(
        FaxSettings(
            NATS_URL=nats_url,
            FAX_GRPC_PORT=0,
            FAX_HTTP_PORT=0,
            FAX_STATUS_POLL_SECONDS=0.05,
            FAX_SEND_ATTEMPTS=2,
            SHUTDOWN_GRACE_SECONDS=1.0,
            **extra,
        )
    )
    await app.start()
    return app


async def test_a_reply_is_rendered_sent_through_hylafax_and_reported_delivered(
    nats_url: str, tmp_path: Path, bus: Bus, hylafax: Any
) -> None:
    app = await start_fax(
        nats_url,
        tmp_path,
        FAX_HYLAFAX_HOST="127.0.0.1",
        FAX_HYLAFAX_PORT=hylafax.port,
        FAX_HYLAFAX_PASSWORD=hylafax.password,
    )
    try:
        await bus.publish(outbound("reply-1", "+82 2 1234 5678"))
        seen = await statuses(
            bus, "reply-1", {events_pb2.DELIVERY_STATE_DELIVERED, events_pb2.DELIVERY_STATE_FAILED}
        )
    finally:
        await app.stop()
    assert [s.state for s in seen] == [
        events_pb2.DELIVERY_STATE_SENT,
        events_pb2.DELIVERY_STATE_DELIVERED,
    ]
    job = seen[0].message_id
    assert hylafax.jobs[job]["DIALSTRING"] == "82212345678"
    document = hylafax.files[hylafax.jobs[job]["DOCUMENT"]]
    assert [p.compression for p in inspect_tiff(document, Limits())] == ["group4"]
    # the case number is on the page, readable by OCR
    page = normalise(document, Limits()).pages[0]
    text = (await Tesseract().read(page.png)).text
    assert "C-7K3M9Q" in text


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
