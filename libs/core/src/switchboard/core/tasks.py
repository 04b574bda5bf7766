"""asyncio helpers shared by the services."""

from __future__ import annotations

import asyncio


def cancelling() -> bool:
    """Whether the running task has been asked to stop (`Task.cancelling`). Code that waits for
    another task and catches that task's `CancelledError` re-raises when this is true: the
    cancellation is then its own, and swallowed it would go on as if nothing had been asked."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
