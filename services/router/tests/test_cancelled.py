"""A standby stops its journal follower before it leads. A follower whose wait swallowed the
cancellation (asyncio.wait_for on Python 3.11 can turn a cancellation that coincides with its
timeout into the timeout, which the follower's loop answers by waiting again) must still end,
or the standby never leads."""

from __future__ import annotations

import asyncio

from switchboard.router.handlers import cancelled


async def test_a_task_that_swallows_a_cancellation_is_cancelled_until_it_ends() -> None:
    swallowed = 0

    async def follower() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1  # as if the wait had timed out: wait again

    task = asyncio.create_task(follower())
    await asyncio.sleep(0)
    # A bounded wait only so that a regression fails instead of hanging the suite.
    await asyncio.wait_for(cancelled(task, every=0.01), 30)
    assert task.done() and task.cancelled()
    assert swallowed == 1
