"""asyncio helpers shared by the services."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Any

logger = logging.getLogger(__name__)


def cancelling() -> bool:
    """Whether the running task has been asked to stop (`Task.cancelling`). Code that waits for
    another task and catches that task's `CancelledError` re-raises when this is true: the
    cancellation is then its own, and swallowed it would go on as if nothing had been asked."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


@contextlib.contextmanager
def suppress_foreign_cancel() -> Iterator[None]:
    """Suppress the `CancelledError` of a future this task awaits that something else cancelled
    (a prompt cut short, a transaction given up), but not this task's own cancellation (a call
    whose caller hung up, a service stopping): that one goes on up."""
    try:
        yield
    except asyncio.CancelledError:
        if cancelling():
            raise


async def cancel_and_wait(*tasks: asyncio.Future[Any] | None) -> None:
    """Cancel `tasks` (None: none; one already done is left as it is) and return once every
    one has finished. What a task ended with is taken, not raised: an error is logged, and its
    `CancelledError` is not the caller's. Unlike `task.cancel()` then awaiting it under
    `suppress(CancelledError)`, the caller's own cancellation, arriving while it waits, is not
    swallowed: it goes on up."""
    live = [task for task in tasks if task is not None]
    for task in live:
        task.cancel()
    if not live:
        return
    await asyncio.wait(live)
    for task in live:
        if not task.cancelled() and (error := task.exception()) is not None:
            logger.warning("%s ended with an error: %r", _name(task), error)


def _name(task: asyncio.Future[Any]) -> str:
    return task.get_name() if isinstance(task, asyncio.Task) else repr(task)
