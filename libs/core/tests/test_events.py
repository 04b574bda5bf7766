from __future__ import annotations

import pytest

from switchboard.core import events
from switchboard.core.errors import InvalidArgument
from switchboard.v1 import contact_pb2, events_pb2


def test_subjects_follow_the_design() -> None:
    meta = events.new_meta("acme", contact_pb2.CHANNEL_EMAIL, "test")
    assert events.subject_of(events_pb2.ContactCreated(meta=meta)) == "contact.acme.email.created"
    assert (
        events.subject_of(events_pb2.MessageAdded(meta=meta)) == "contact.acme.email.message_added"
    )
    assert events.subject_of(events_pb2.ContactAssigned(meta=meta)) == "routing.acme.assigned"
    assert events.spec_for(events_pb2.ContactCreated).filter_subject == "contact.*.*.created"


@pytest.mark.parametrize("tenant", ["", "a.b", "ACME", "a*", "a>", "x" * 64, "a b"])
def test_tenants_that_would_break_subjects_are_refused(tenant: str) -> None:
    with pytest.raises(InvalidArgument, match="tenant"):
        events.validate_tenant(tenant)


def test_channel_events_need_a_channel() -> None:
    event = events_pb2.ContactCreated(
        meta=events.new_meta("acme", contact_pb2.CHANNEL_UNSPECIFIED, "t")
    )
    with pytest.raises(InvalidArgument, match=r"meta\.channel"):
        events.subject_of(event)


def test_meta_is_required() -> None:
    with pytest.raises(InvalidArgument, match="meta"):
        events.validate_meta(events_pb2.ContactCreated())
    with pytest.raises(InvalidArgument, match=r"meta\.event_id"):
        events.validate_meta(events_pb2.ContactCreated(meta=events_pb2.EventMeta(tenant="acme")))
