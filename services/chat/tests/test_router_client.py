"""How the chat reads the router's answer on a contact's place in the queue."""

from __future__ import annotations

from switchboard.chat.adapters.router_client import wait_seconds
from switchboard.v1 import router_pb2


def position(nanos: int | None) -> router_pb2.ContactPosition:
    p = router_pb2.ContactPosition(contact_id="c-1", position=2, waiting=2)
    if nanos is not None:
        p.estimated_wait.FromNanoseconds(nanos)
    return p


def test_an_estimate_under_a_second_is_one_second_not_zero() -> None:
    assert wait_seconds(position(666_666_666)) == 1


def test_an_estimate_is_rounded_up_to_whole_seconds() -> None:
    assert wait_seconds(position(90_000_000_000)) == 90
    assert wait_seconds(position(90_000_000_001)) == 91


def test_no_estimate_is_none() -> None:
    assert wait_seconds(position(None)) is None
