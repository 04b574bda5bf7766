"""The email notifier on a fake publisher (no nats-server): what each call publishes."""

from __future__ import annotations

from switchboard.core import events
from switchboard.email_ingest.notifier import EmailNotifier
from switchboard.testing.fakes import FakePublisher
from switchboard.v1 import contact_pb2, events_pb2


def command(kind: str = "") -> events_pb2.OutboundEmail:
    return events_pb2.OutboundEmail(
        meta=events.new_meta("acme", contact_pb2.CHANNEL_EMAIL, "case", "cmd-1"),
        contact_id="c-1",
        agent_id="agent-7",
        text="Your printer is fixed.",
        html="<p>Your printer is fixed.</p>",
        kind=kind,
    )


async def test_one_acknowledgement_per_case_whatever_the_redeliveries() -> None:
    bus = FakePublisher()
    notifier = EmailNotifier(bus)
    for _ in range(2):  # the CaseCreated delivered twice
        await notifier.acknowledgement("acme", "case-1", "c-1", "ACME-7", "case ACME-7 opened")
    [ack] = bus.of(events_pb2.OutboundEmail)
    assert ack.meta.event_id == "case-1:ack"
    assert (ack.kind, ack.case_reference, ack.contact_id) == ("acknowledgement", "ACME-7", "c-1")


async def test_a_delivery_status_per_state_and_attempt_with_its_detail_bounded() -> None:
    bus = FakePublisher()
    notifier = EmailNotifier(bus)
    cmd = command()
    await notifier.delivery_status(cmd, "case-1", events_pb2.DELIVERY_STATE_RETRYING, "x" * 5000, 1)
    await notifier.delivery_status(
        cmd, "case-1", events_pb2.DELIVERY_STATE_SENT, "250 ok", 2, "m@x"
    )
    retrying, sent = bus.of(events_pb2.DeliveryStatus)
    assert retrying.meta.event_id == "cmd-1:retrying:1"
    assert len(retrying.detail) == 1000
    assert (sent.meta.event_id, sent.message_id, sent.case_id) == ("cmd-1:sent:2", "m@x", "case-1")


async def test_the_sent_copy_is_the_agents_message_or_the_systems_for_automatic_mail() -> None:
    bus = FakePublisher()
    notifier = EmailNotifier(bus)
    await notifier.sent_copy(command())
    await notifier.sent_copy(command("acknowledgement"))  # the same command id: one copy
    [copy] = bus.of(events_pb2.MessageAdded)
    assert copy.message.message_id == "cmd-1.sent"
    assert copy.message.author == contact_pb2.AUTHOR_AGENT
    assert [p.content_type for p in copy.message.parts] == ["text/plain", "text/html"]

    automatic = FakePublisher()
    await EmailNotifier(automatic).sent_copy(command("acknowledgement"))
    assert automatic.of(events_pb2.MessageAdded)[0].message.author == contact_pb2.AUTHOR_SYSTEM


async def test_an_empty_batch_publishes_nothing() -> None:
    bus = FakePublisher()
    await EmailNotifier(bus).mail_events([])
    assert bus.events == []
