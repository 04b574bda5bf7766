"""Waiting in tests for something another task or process does: a bounded number of polls,
never a wall-clock assertion."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    check: Callable[[], Awaitable[T | None]],
    attempts: int = 400,
    what: str = "the expected state",
) -> T:
    """Poll `check` every 50 ms until it returns something truthy, and return that."""
    for _ in range(attempts):
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"never reached {what}")
