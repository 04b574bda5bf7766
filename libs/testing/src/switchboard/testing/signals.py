"""Signals to real processes in tests."""

from __future__ import annotations

import os
import signal
import time


def freeze(pid: int) -> None:
    """SIGSTOP `pid` and wait until it is stopped (the signal is delivered asynchronously, and a
    server still running for a moment would answer what the test sends next)."""
    os.kill(pid, signal.SIGSTOP)
    for _ in range(1000):
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] in ("T", "t"):
                return
        time.sleep(0.001)
    raise AssertionError(f"process {pid} did not stop")
