"""A stopped service's process ends, whatever threads its libraries left behind; a production
deployment with the public development secret does not start."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from switchboard.core.settings import DEV_AUTH_SECRET

SERVICE = textwrap.dedent(
    """
    import threading
    from switchboard.core import runtime

    class Service:
        async def start(self):
            # A library thread nobody tells to stop (a leaked database connection's thread).
            threading.Thread(target=threading.Event().wait, name="leaked-driver").start()
            print("started", flush=True)

        async def stop(self):
            pass

    async def factory():
        return Service()

    runtime.run(factory, "leaky")
    """
)


def run_service(script: str, **env: str) -> tuple[int, str, str]:
    """Run `script` as a service's process until the first line it prints, then stop it with
    SIGTERM (one that printed nothing has ended): its exit code, that line and its stderr."""
    base = {k: v for k, v in os.environ.items() if k != "SWITCHBOARD_EVENT_LOOP"}
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        env={**base, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        if first:
            proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    _, err = proc.communicate()
    return code, first, err


def test_a_stopped_service_exits_although_a_library_thread_is_left_running() -> None:
    code, first, err = run_service(SERVICE)
    assert first == "started"
    assert code == 0
    assert "leaky stopped" in err
    assert "leaky exits with threads still running: leaked-driver" in err


MAIN = textwrap.dedent(
    """
    from switchboard.core import runtime
    from switchboard.core.settings import ServiceSettings

    class Service:
        async def start(self):
            print("started", flush=True)

        async def stop(self):
            pass

    runtime.main("svc", ServiceSettings(), lambda settings: Service())
    """
)


def start_main(**env: str) -> subprocess.Popen[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    return subprocess.Popen(
        [sys.executable, "-c", MAIN],
        env={**base, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_production_refuses_to_start_with_the_development_secret() -> None:
    proc = start_main()  # no secret, no mode: production with the public development secret
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "svc refuses to start: SWITCHBOARD_AUTH_SECRET is unset" in err
    proc = start_main(SWITCHBOARD_AUTH_SECRET=DEV_AUTH_SECRET)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2


@pytest.mark.parametrize(
    "env",
    [{"SWITCHBOARD_MODE": "development"}, {"SWITCHBOARD_AUTH_SECRET": "a-secret-of-our-own"}],
)
def test_development_mode_or_a_secret_of_its_own_starts(env: dict[str, str]) -> None:
    proc = start_main(**env)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "started"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


LOOP = textwrap.dedent(
    """
    import asyncio
    from switchboard.core import runtime

    class Service:
        async def start(self):
            loop = asyncio.get_running_loop()
            print(type(loop).__module__, flush=True)

        async def stop(self):
            pass

    async def factory():
        return Service()

    runtime.run(factory, "looped")
    """
)


def test_a_service_runs_on_uvloop_unless_asked_for_asyncios_own_loop() -> None:
    code, loop_module, _ = run_service(LOOP)
    assert code == 0
    assert loop_module == "uvloop"
    code, loop_module, _ = run_service(LOOP, SWITCHBOARD_EVENT_LOOP="asyncio")
    assert code == 0
    assert loop_module.startswith("asyncio.")  # asyncio.unix_events: the standard library's


def test_an_unknown_event_loop_is_refused_with_what_is_accepted() -> None:
    code, printed, err = run_service(LOOP, SWITCHBOARD_EVENT_LOOP="trio")
    assert code == 2
    assert printed == ""
    assert (
        "looped refuses to start: SWITCHBOARD_EVENT_LOOP must be uvloop or asyncio, not 'trio'"
        in err
    )


def test_asyncios_notice_of_a_tls_connection_closing_is_dropped_and_nothing_else(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from switchboard.core import runtime

    runtime.configure_logging("INFO")
    runtime.configure_logging("INFO")  # once is enough: the filter is not installed twice
    asyncio_logger = logging.getLogger("asyncio")
    assert sum(isinstance(f, runtime._TlsEofNotice) for f in asyncio_logger.filters) == 1
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        asyncio_logger.warning("returning true from eof_received() has no effect when using ssl")
        asyncio_logger.warning("Executing <Task ...> took 0.5 seconds")
    assert [r.getMessage() for r in caplog.records] == ["Executing <Task ...> took 0.5 seconds"]
