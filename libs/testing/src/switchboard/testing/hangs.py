"""Where a hung asyncio test was waiting.

pytest-timeout ends a test that runs too long, but for an asyncio test all it can show is the
event loop waiting in `select`: the await that never finished is not on any thread's stack. So an
asyncio test is given a deadline of its own a little before pytest-timeout's (leaving room for its
fixtures' teardown). When it passes, the test's task is cancelled and the test fails with the chain
of awaits it was suspended in, innermost last, e.g.

    the test did not finish within 105 s; it was waiting at
      tests/e2e/browser/test_wallboard_browser.py:233 in test_day_charts_…
      services/chat/src/switchboard/chat/bootstrap.py:98 in _start
      …
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

# Seconds of pytest-timeout's budget kept for the fixtures' teardown (at most a quarter of it).
TEARDOWN_SECONDS = 15.0


def timeout_of(item: pytest.Item) -> float | None:
    """The test's pytest-timeout budget in seconds (its marker, the option, the environment or
    the ini file, as pytest-timeout reads them); None or 0: no limit."""
    marker = item.get_closest_marker("timeout")
    if marker is not None:
        value = marker.args[0] if marker.args else marker.kwargs.get("timeout")
    else:
        value = item.config.getoption("timeout", None)
        if value is None:
            value = os.environ.get("PYTEST_TIMEOUT") or item.config.getini("timeout") or None
    return float(value) if value else None


def deadline_for(item: pytest.Item, started: float) -> float | None:
    """Seconds the test's body may run: its budget less what setup used and the teardown's room."""
    budget = timeout_of(item)
    if not budget:
        return None
    left = budget - (time.monotonic() - started) - min(TEARDOWN_SECONDS, budget / 4)
    return left if left > 0 else None


def _frame_line(frame: FrameType, root: Path) -> str:
    path = Path(frame.f_code.co_filename)
    try:
        shown = str(path.relative_to(root))
    except ValueError:
        shown = str(path)
    return f"{shown}:{frame.f_lineno} in {frame.f_code.co_name}"


def _awaited_by(waiter: asyncio.Task[Any]) -> asyncio.Task[Any] | None:
    """The task `waiter` is waiting on, if it waits on one: that task's done-callbacks hold the
    waiter's wakeup (an awaited task shows only as an opaque iterator in the waiter's frames)."""
    for task in asyncio.all_tasks(waiter.get_loop()):
        callbacks = getattr(task, "_callbacks", None) or []
        if any(getattr(callback, "__self__", None) is waiter for callback, _ in callbacks):
            return task
    return None


def awaiting(task: asyncio.Task[Any], root: Path) -> list[str]:
    """The frames `task` is suspended in, outermost first, following the tasks it awaits."""
    lines: list[str] = []
    seen: set[int] = set()
    current: asyncio.Task[Any] | None = task
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        awaited: Any = current.get_coro()
        while awaited is not None:
            frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
            if frame is not None and frame.f_code.co_filename != __file__:
                lines.append(_frame_line(frame, root))
            following = getattr(awaited, "cr_await", None)
            if following is None:
                following = getattr(awaited, "gi_yieldfrom", None)
            if following is None and frame is None:
                break
            awaited = following
        inner = _awaited_by(current)
        if inner is None and awaited is not None and type(awaited).__name__ != "FutureIter":
            lines.append(f"awaiting {awaited!r}")
        current = inner
    return lines


def bounded(
    test: Callable[..., Awaitable[Any]], seconds: float, root: Path
) -> Callable[..., Awaitable[Any]]:
    """`test`, failed with where it waits if it has not finished `seconds` after it started."""

    @functools.wraps(test)
    async def run(*args: Any, **kwargs: Any) -> Any:
        task = asyncio.current_task()
        assert task is not None
        stuck: list[str] = []

        def expire() -> None:
            stuck.extend(awaiting(task, root) or ["(no frames)"])
            task.cancel("the test's deadline passed")

        timer = asyncio.get_running_loop().call_later(seconds, expire)
        try:
            return await test(*args, **kwargs)
        except asyncio.CancelledError:
            if not stuck or task.uncancel() > 0:
                raise  # not (only) ours
        finally:
            timer.cancel()
        where = "\n  ".join(stuck)
        pytest.fail(
            f"the test did not finish within {seconds:.0f} s; it was waiting at\n  {where}",
            pytrace=False,
        )

    return run


def is_plain_coroutine_test(item: pytest.Item) -> bool:
    """An `async def` test whose function pytest-asyncio runs as it is (not a Hypothesis one)."""
    obj = getattr(item, "obj", None)
    return (
        isinstance(item, pytest.Function)
        and inspect.iscoroutinefunction(obj)
        and not hasattr(obj, "hypothesis")
    )
