"""Recording tickets: what a player plays with, and the id its playback is audited under."""

from __future__ import annotations

from typing import Any

import pytest

from switchboard.chat.inbox.recordings import Recordings
from switchboard.core.auth import Principal
from switchboard.core.errors import PermissionDenied


def recordings() -> Recordings:
    def no_objects() -> Any:
        raise AssertionError("tickets need no object store")

    return Recordings(no_objects, None, "a-secret", "127.0.0.1:9")  # type: ignore[arg-type]


def test_a_ticket_keeps_its_holder_and_its_playback_id_through_the_url() -> None:
    rec = recordings()
    eva = Principal("demo", "eva", frozenset({"qa", "agent"}), issued_at=1_700_000_000)
    ticket = rec.ticket(eva, "call-1")
    opened = rec.open_ticket(rec.seal_ticket(ticket), "call-1")
    assert opened == ticket
    assert opened.principal.roles == frozenset({"qa", "agent"})
    assert opened.playback_id == ticket.playback_id  # on any replica that opens it
    # Two players given in the same second are two playbacks.
    assert rec.ticket(eva, "call-1").playback_id != ticket.playback_id
    with pytest.raises(PermissionDenied):
        rec.open_ticket(rec.seal_ticket(ticket), "call-2")


def test_a_replica_remembers_the_playbacks_it_had_audited() -> None:
    rec = recordings()
    boss = Principal("demo", "boss", frozenset({"supervisor"}))
    first, second = rec.ticket(boss, "call-1"), rec.ticket(boss, "call-1")
    assert not rec.audited(first)
    rec.mark_audited(first)
    assert rec.audited(first) and not rec.audited(second)
