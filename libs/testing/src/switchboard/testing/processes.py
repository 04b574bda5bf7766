"""A service run as a real process (`python -m <module>`), for tests that kill it with SIGKILL."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import sys
from pathlib import Path

from switchboard.core import grpc as sb_grpc
from switchboard.core.embedded_nats import free_port

# The case store's master key in tests (CASE_MASTER_KEY).
CASE_TEST_MASTER_KEY = base64.b64encode(b"case-tests-master-key-32-bytes!!").decode()


class ServiceProcess:
    """Started with `env`, ready once `health_service` on `target` is SERVING (or, started with
    `serving=False`, a standby: once it answers health at all); output in `log`."""

    def __init__(
        self, module: str, env: dict[str, str], target: str, health_service: str, log: Path
    ) -> None:
        self.module = module
        self.env = env
        self.target = target
        self.health_service = health_service
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self, attempts: int = 600, serving: bool = True) -> None:
        self.proc = subprocess.Popen(  # noqa: ASYNC220 (returns at once; it does not block)
            [sys.executable, "-m", self.module],
            env=self.env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        for _ in range(attempts):
            status = await sb_grpc.check_health(self.target, service=self.health_service)
            if status == "SERVING" or (not serving and status == "NOT_SERVING"):
                return
            assert self.proc.poll() is None, self.log.read_text()
            await asyncio.sleep(0.05)
        raise AssertionError(f"{self.module} never answered:\n" + self.log.read_text())

    async def health(self) -> str:
        """Its health status now (SERVING, NOT_SERVING, or UNREACHABLE: <why>)."""
        return await sb_grpc.check_health(self.target, service=self.health_service)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


async def run_command(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    """Run a command to its end: its exit code and its output (stdout and stderr together)."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


def service_process(
    module: str, health_service: str, port_variable: str, log: Path, env: dict[str, str]
) -> ServiceProcess:
    """`python -m <module>` serving gRPC on a free port (named to it by `port_variable`), not
    started yet: `env` over the test defaults (a short shutdown grace, no metrics port)."""
    port = free_port()
    return ServiceProcess(
        module,
        {
            **os.environ,
            "SHUTDOWN_GRACE_SECONDS": "1",
            "METRICS_PORT": "0",
            port_variable: str(port),
            **env,
        },
        f"127.0.0.1:{port}",
        health_service,
        log,
    )
