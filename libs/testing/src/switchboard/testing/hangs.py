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

A hang pytest-timeout ends itself (in an async fixture's setup or teardown) fails the same way:
the event loop's running task is found in the interrupted thread's frames, and its chain named.
"""

from __future__ import annotations

import asyncio
import functools
import gc
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


def deadline_for(ends: float, budget: float) -> float | None:
    """Seconds the test's body may run: up to `ends`, pytest-timeout's timer's end (monotonic),
    less the teardown's room out of its `budget`; None when nothing is left."""
    left = ends - time.monotonic() - min(TEARDOWN_SECONDS, budget / 4)
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
            frame = (
                getattr(awaited, "cr_frame", None)
                or getattr(awaited, "gi_frame", None)
                or getattr(awaited, "ag_frame", None)
            )
            if frame is not None and frame.f_code.co_filename != __file__:
                lines.append(_frame_line(frame, root))
            following = getattr(awaited, "cr_await", None)
            if following is None:
                following = getattr(awaited, "gi_yieldfrom", None)
            if following is None:
                following = getattr(awaited, "ag_await", None)
            if following is None and frame is None:
                # An async generator's `asend` (a fixture's `yield`) names its generator only to
                # the collector.
                generator = next(filter(inspect.isasyncgen, gc.get_referents(awaited)), None)
                if generator is None:
                    break
                following = generator
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


def runner_task(frame: FrameType | None) -> asyncio.Task[Any] | None:
    """The task asyncio's `Runner.run` is running on the interrupted thread, if it is in one (a
    test's, or a fixture's setup or teardown, as pytest-asyncio runs them)."""
    runners = os.path.abspath(asyncio.runners.__file__)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "run" and os.path.abspath(code.co_filename) == runners:
            task = frame.f_locals.get("task")
            if isinstance(task, asyncio.Task):
                return task
        frame = frame.f_back
    return None


def on_timeout(item: pytest.Item, timeout: float, frame: FrameType | None) -> None:
    """pytest-timeout's failure, saying where the event loop's test or fixture task waited when
    the interrupted thread runs one (a hang in a fixture's setup or teardown)."""
    __tracebackhide__ = True
    task = runner_task(frame)
    if task is None:
        return
    where = "\n  ".join(awaiting(task, item.config.rootpath) or ["(no frames)"])
    pytest.fail(
        f"Timeout (>{timeout}s) from pytest-timeout: the event loop's task was waiting at\n  {where}",
        pytrace=False,
    )


def is_plain_coroutine_test(item: pytest.Item) -> bool:
    """An `async def` test whose function pytest-asyncio runs as it is (not a Hypothesis one)."""
    obj = getattr(item, "obj", None)
    return (
        isinstance(item, pytest.Function)
        and inspect.iscoroutinefunction(obj)
        and not hasattr(obj, "hypothesis")
    )
