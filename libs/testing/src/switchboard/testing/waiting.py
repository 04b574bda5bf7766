"""Waiting in tests for something another task or process does: polls bounded by a generous
limit, never a wall-clock assertion (the limit only keeps a broken test from hanging)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

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
