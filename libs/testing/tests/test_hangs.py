"""An asyncio test that hangs fails saying where it waited, before pytest-timeout ends it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

HUNG = """
import asyncio

import pytest


async def never() -> None:
    await asyncio.Event().wait()


async def middle() -> None:
    await asyncio.create_task(never())


@pytest.mark.timeout(6)
async def test_hangs() -> None:
    await middle()


async def test_finishes() -> None:
    await asyncio.sleep(0)


@pytest.mark.timeout(6)
async def test_cancelled_by_itself() -> None:
    task = asyncio.current_task()
    asyncio.get_running_loop().call_later(0.1, task.cancel)
    await asyncio.sleep(3)
"""


FIXTURES = """
import asyncio
import time

import pytest


@pytest.fixture
async def stuck_in_teardown():
    yield
    await asyncio.Event().wait()


@pytest.fixture
async def stuck_in_setup():
    await asyncio.Event().wait()
    yield


@pytest.mark.timeout(3)
async def test_teardown(stuck_in_teardown) -> None:
    pass


@pytest.mark.timeout(3)
async def test_setup(stuck_in_setup) -> None:
    pass


@pytest.mark.timeout(3)
def test_sleeps() -> None:
    time.sleep(10)
"""


def run_pytest(directory: Path, source: str) -> subprocess.CompletedProcess[str]:
    (directory / "test_sample.py").write_text(textwrap.dedent(source))
    (directory / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
        "timeout = 60\n"
    )
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "switchboard.testing.plugin", "-p", "no:xdist",
         "-p", "no:cacheprovider", "-rA", str(directory)],
        cwd=directory, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def section(out: str, title: str) -> str:
    """The lines of pytest's report under the header holding `title`, up to the next header."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if title in line and line.startswith("_"))
    rest = lines[start + 1 :]
    end = next((i for i, line in enumerate(rest) if line[:1] in ("_", "=")), len(rest))
    return "\n".join(rest[:end])


def test_a_hung_asyncio_test_fails_naming_each_await_it_was_in(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, HUNG)
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    # Its budget of 6 s less a quarter for teardown: failed by the deadline, not by pytest-timeout.
    assert "the test did not finish within 4 s; it was waiting at" in out, out
    assert "Timeout (>6.0s) from pytest-timeout" not in out, out
    chain = [
        line.strip() for line in out.splitlines() if line.strip().startswith("test_sample.py:")
    ]
    assert [line.split(" in ")[1] for line in chain[:3]] == ["test_hangs", "middle", "never"], out
    assert "PASSED test_sample.py::test_finishes" in out, out
    # A test cancelled by something of its own is reported as that, not as a hang.
    own = out.split("_ test_cancelled_by_itself _")[1].split("=====")[0]
    assert "CancelledError" in own and "did not finish" not in own, out
    assert "FAILED test_sample.py::test_cancelled_by_itself" in out, out


def test_a_fixture_hung_in_setup_or_teardown_fails_naming_its_await(tmp_path: Path) -> None:
    """pytest-timeout ends these itself; its failure names where the fixture waited. A hang
    outside the event loop keeps pytest-timeout's own report (the threads' stacks)."""
    result = run_pytest(tmp_path, FIXTURES)
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    waited = "Timeout (>3.0s) from pytest-timeout: the event loop's task was waiting at"
    teardown = section(out, "ERROR at teardown of test_teardown")
    assert waited in teardown and "test_sample.py:11 in stuck_in_teardown" in teardown, out
    setup = section(out, "ERROR at setup of test_setup")
    assert waited in setup and "test_sample.py:16 in stuck_in_setup" in setup, out
    slept = section(out, " test_sleeps ")
    assert "Timeout (>3.0s) from pytest-timeout." in slept and waited not in slept, out
