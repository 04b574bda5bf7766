"""A stopped service's process ends, whatever threads its libraries left behind."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

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


def test_a_stopped_service_exits_although_a_library_thread_is_left_running() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVICE],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "started"
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    _, err = proc.communicate()
    assert code == 0
    assert "leaky stopped" in err
    assert "leaky exits with threads still running: leaked-driver" in err
