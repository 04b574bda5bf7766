"""The fax channel's subscriptions on the bus."""

from __future__ import annotations

from switchboard.core.bus import Bus, ConsumerOptions
from switchboard.core.quarantine_objects import Quarantine
from switchboard.fax.handlers import FaxReader
from switchboard.fax.outbound import FaxSender
from switchboard.v1 import case_events_pb2, email_pb2, events_pb2, fax_pb2

# One fax at a time per replica (its pages are read in parallel); OCR of a long fax takes a while,
# so the ack deadline is generous.
READING = ConsumerOptions(batch=1, ack_wait=600.0, max_deliver=5)
REPLIES = ConsumerOptions(batch=1, ack_wait=120.0, max_deliver=5)


def subscribe(
    bus: Bus,
    reader: FaxReader,
    sender: FaxSender,
    quarantine: Quarantine,
    durable: str,
    email: bool,
) -> None:
    bus.subscribe(durable, fax_pb2.FaxReceived, reader.on_fax_received, READING)
    # An erased customer's reply jobs (docs/security.md, "Erasure on the bus"); this durable, as
    # the replies' own is on OUTBOUND.
    bus.subscribe(durable, case_events_pb2.CustomerErased, sender.on_customer_erased)
    # And their quarantined faxes: a durable of its own, as one handler a type a durable.
    bus.subscribe(
        f"{durable}-quarantine", case_events_pb2.CustomerErased, quarantine.on_customer_erased
    )
    bus.subscribe(f"{durable}-outbound", events_pb2.OutboundFax, sender.on_outbound_fax, REPLIES)
    if email:
        bus.subscribe(f"{durable}-email", email_pb2.EmailReceived, reader.on_email_received)
