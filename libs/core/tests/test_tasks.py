"""Stopping tasks without swallowing the stopper's own cancellation: a service whose stop is
cancelled (its grace ran out) stops there, instead of going on as if nothing had been asked."""

from __future__ import annotations

import asyncio
import logging

import pytest

from switchboard.core import tasks


async def slow_to_stop(stopped: asyncio.Event, cleanup: float = 0.2) -> None:
    """Runs until cancelled, then takes `cleanup` seconds to finish (closing a connection)."""
    try:
        await asyncio.Event().wait()
    finally:
        stopped.set()
        await asyncio.sleep(cleanup)


async def test_cancel_and_wait_returns_once_every_task_has_finished() -> None:
    a_stopped, b_stopped = asyncio.Event(), asyncio.Event()
    a = asyncio.create_task(slow_to_stop(a_stopped))
    b = asyncio.create_task(slow_to_stop(b_stopped, 0.05))
    await asyncio.sleep(0)
    await tasks.cancel_and_wait(a, None, b)
    assert a.done() and b.done() and a.cancelled() and b.cancelled()


async def test_the_callers_own_cancellation_is_not_swallowed_while_it_waits() -> None:
    stopped = asyncio.Event()
    worker = asyncio.create_task(slow_to_stop(stopped))
    after: list[str] = []

    async def stopper() -> None:
        await tasks.cancel_and_wait(worker)
        after.append("went on")  # what a stop asked to stop must not do

    stopping = asyncio.create_task(stopper())
    await stopped.wait()  # the worker is cleaning up; the stopper waits for it
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
    assert after == []
    await asyncio.wait({worker})  # the worker itself still finishes


async def test_a_tasks_error_as_it_stops_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def fails_on_stop() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            raise RuntimeError("connection reset while closing")

    task = asyncio.create_task(fails_on_stop(), name="flusher")
    await asyncio.sleep(0)
    with caplog.at_level(logging.WARNING, logger="switchboard.core.tasks"):
        await tasks.cancel_and_wait(task)
    assert "flusher ended with an error" in caplog.text
    assert "connection reset while closing" in caplog.text


async def test_a_future_cancelled_by_another_is_suppressed_the_tasks_own_is_not() -> None:
    loop = asyncio.get_running_loop()
    steps: list[str] = []

    async def flow(prompt: asyncio.Future[None]) -> None:
        with tasks.suppress_foreign_cancel():
            await prompt
        steps.append("next step")

    # The prompt is stopped by someone else (another prompt replaced it): the flow goes on.
    prompt = loop.create_future()
    running = asyncio.create_task(flow(prompt))
    await asyncio.sleep(0)
    prompt.cancel()
    await running
    assert steps == ["next step"]

    # The flow's task is cancelled while the prompt plays: it stops there.
    steps.clear()
    running = asyncio.create_task(flow(loop.create_future()))
    await asyncio.sleep(0)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert steps == []
