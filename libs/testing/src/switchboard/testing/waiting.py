"""Waiting in tests for something another task or process does: polls bounded by a generous
limit, never a wall-clock assertion (the limit only keeps a broken test from hanging)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

POLL_SECONDS = 0.025


async def eventually(
    check: Callable[[], Awaitable[T | None]],
    what: str = "the expected state",
    seconds: float = 30.0,
) -> T:
    """Await `check` every POLL_SECONDS until it returns something truthy, and return that;
    after `seconds`, fail naming `what`."""
    deadline = time.monotonic() + seconds
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(POLL_SECONDS)


async def until(
    predicate: Callable[[], object], what: str = "the expected state", seconds: float = 30.0
) -> None:
    """`eventually` for a plain (not awaitable) predicate."""

    async def check() -> object:
        return predicate()

    await eventually(check, what, seconds)


async def subscriptions_active(nc: Any, seconds: float = 10.0) -> None:
    """Return once nats-server holds every subscription `nc` has made so far.

    nats-py's `flush()` is no such barrier: it writes its PING straight to the socket, while a
    SUB made just before still waits in the client's buffer for the flusher task, so the PONG
    can come back before the server has the subscription (a message published meanwhile from
    another connection is then not delivered, or, with a reply subject, answered by the server's
    "no responders" status). Here a message to a fresh inbox, subscribed and published after
    everything else on this connection, comes back only once the server has read all of it."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, max_msgs=1)
    await nc.publish(inbox, b"")
    await sub.next_msg(timeout=seconds)
