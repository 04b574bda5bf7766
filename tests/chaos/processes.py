"""The platform as real processes for the chaos suite: nats-server (one node, or a three-node
JetStream cluster), two router replicas, case and chat.

Each process runs in its own process group with its own log file, and is killed and restarted in
place (same ports, same store, same replica id). Every process dies with the harness too
(PR_SET_PDEATHSIG), so a harness that is itself killed leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import nats
import nats.js.errors

from switchboard.core.bus import Bus
from switchboard.core.embedded_nats import free_port, nats_server_binary, port_open
from switchboard.core.grpc import check_health

logger = logging.getLogger("chaos")

ROUTER_SERVICE = "switchboard.v1.RouterService"
LEASE_BUCKET = "ROUTER_LEASES"  # services/router journal.py: the key <group> names the leader
ROUTER_GROUP = "default"

# The child gets SIGKILL when the harness goes away (PR_SET_PDEATHSIG, kept across exec), so a
# harness that is itself killed leaves nothing running. Set by setpriv, not a preexec_fn: forking
# a process that runs gRPC threads with Python code after the fork can hang the child.
_SETPRIV = shutil.which("setpriv")
_DIE_WITH_PARENT = [_SETPRIV, "--pdeathsig", "KILL", "--"] if _SETPRIV else []

_LIVE: set[Proc] = set()
_TICKS = os.sysconf("SC_CLK_TCK")


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_LIVE):
        proc.kill_now()


def stamp() -> str:
    return time.strftime("%H:%M:%S") + f".{int(time.time() * 1000) % 1000:03d}"


class Proc:
    """One real process, restartable in place, logging to `log` (appended across restarts)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log = log
        self.popen: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.started_at = 0.0
        self._cpu_before = 0.0  # CPU seconds of earlier incarnations
        self._cpu_now = 0.0  # of this one, as last sampled

    def sample_cpu(self) -> None:
        """Read this process's CPU time so far (user + system) from /proc."""
        if self.popen is None:
            return
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{self.popen.pid}/stat").read_text().rsplit(")", 1)[1].split()
            self._cpu_now = (int(fields[11]) + int(fields[12])) / _TICKS

    @property
    def cpu_seconds(self) -> float:
        return self._cpu_before + self._cpu_now

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    def note(self, text: str) -> None:
        """A line of the harness's own in the process's log, so faults show where they happened."""
        with self.log.open("a", encoding="utf-8") as f:
            f.write(f"===== chaos {stamp()}: {text} =====\n")

    def start(self) -> None:
        if self.alive:
            raise RuntimeError(f"{self.name} is already running")
        self.starts += 1
        self._cpu_before += self._cpu_now
        self._cpu_now = 0.0
        self.note(f"start #{self.starts}")
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                [*_DIE_WITH_PARENT, *self.argv],
                env=self.env,
                cwd=str(self.log.parent),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: killpg reaches all of it
            )
        _LIVE.add(self)
        self.started_at = time.monotonic()

    def send(self, sig: signal.Signals) -> None:
        self.sample_cpu()
        if self.popen is not None and self.popen.poll() is None:
            self.note(f"{sig.name}")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)

    async def wait_exit(self, timeout: float) -> int | None:
        """The exit code, or None if it is still running after `timeout` seconds."""
        if self.popen is None:
            return 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.popen.poll()
            if code is not None:
                return code
            await asyncio.sleep(0.02)
        return self.popen.poll()

    async def kill(self) -> None:
        """SIGKILL, as a crash would."""
        self.send(signal.SIGKILL)
        await self.wait_exit(10)

    async def terminate(self, grace: float) -> bool:
        """SIGTERM and wait for a graceful exit; SIGKILL after `grace`. True if it exited itself."""
        self.send(signal.SIGTERM)
        code = await self.wait_exit(grace)
        if code is None:
            self.note(f"did not exit within {grace:.0f}s of SIGTERM; SIGKILL")
            await self.kill()
            return False
        return True

    def kill_now(self) -> None:
        """Synchronous SIGKILL of the whole group (cleanup paths)."""
        if self.popen is not None and self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                self.popen.wait(5)

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class NatsNode(Proc):
    """A nats-server with JetStream from its own config file (a cluster node when `routes`)."""

    def __init__(
        self,
        name: str,
        directory: Path,
        cluster: str = "",
        cluster_port: int = 0,
        routes: list[int] | None = None,
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.http_port = free_port()
        self.cluster_port = cluster_port
        config = directory / f"{name}.conf"
        lines = [
            f"server_name: {name}",
            f"listen: 127.0.0.1:{self.port}",
            f"http: 127.0.0.1:{self.http_port}",
            f'jetstream {{ store_dir: "{directory / "store"}" }}',
        ]
        if cluster:
            peers = ", ".join(f"nats-route://127.0.0.1:{p}" for p in routes or [])
            lines.append(
                f"cluster {{ name: {cluster}, listen: 127.0.0.1:{cluster_port}, routes: [{peers}] }}"
            )
        config.write_text("\n".join(lines) + "\n", encoding="utf-8")
        super().__init__(
            name,
            [nats_server_binary(), "-c", str(config)],
            dict(os.environ),
            directory / f"{name}.log",
        )

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def ready(self, timeout: float = 20.0) -> bool:
        """Listening, and JetStream healthy (in a cluster: a meta leader, its streams current)."""
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as http:
            while time.monotonic() < deadline:
                if not self.alive:
                    return False
                if port_open("127.0.0.1", self.port):
                    with contextlib.suppress(Exception):
                        async with http.get(f"http://127.0.0.1:{self.http_port}/healthz") as r:
                            if r.status == 200:
                                return True
                await asyncio.sleep(0.05)
        return False


@dataclass
class PlatformConfig:
    directory: Path
    nodes: int = 1  # 1: one nats-server; 3: a JetStream cluster
    secret: str = "chaos-secret"
    tenant: str = "demo"
    lease_ttl: float = 2.0
    snapshot_interval: float = 30.0
    accept_timeout: float = 10.0
    log_level: str = "INFO"

    @property
    def replicas(self) -> int:
        return 3 if self.nodes >= 3 else 1


@dataclass
class Platform:
    """nats-server(s), router-a and router-b (leader and standby), case and chat."""

    config: PlatformConfig
    nats: list[NatsNode] = field(default_factory=list)
    routers: dict[str, Proc] = field(default_factory=dict)
    router_targets: dict[str, str] = field(default_factory=dict)
    case: Proc | None = None
    chat: Proc | None = None
    case_target: str = ""
    chat_url: str = ""
    chat_target: str = ""
    db_path: Path = Path()
    bus: Bus | None = None  # the harness's own connection (ledger, lease, stream reads)

    @property
    def nats_url(self) -> str:
        return ",".join(n.url for n in self.nats)

    @property
    def services(self) -> list[Proc]:
        return [*self.routers.values(), *(p for p in (self.case, self.chat) if p is not None)]

    @property
    def processes(self) -> list[Proc]:
        return [*self.services, *self.nats]

    def build(self) -> None:
        c = self.config
        d = c.directory
        d.mkdir(parents=True, exist_ok=True)
        if c.nodes == 1:
            self.nats = [NatsNode("nats", d / "nats")]
        else:
            ports = [free_port() for _ in range(c.nodes)]
            self.nats = [
                NatsNode(
                    f"nats-{i + 1}",
                    d / f"nats-{i + 1}",
                    cluster="chaos",
                    cluster_port=port,
                    routes=[p for p in ports if p != port],
                )
                for i, port in enumerate(ports)
            ]
        self.db_path = d / "case.db"
        base = {
            **os.environ,
            "NATS_URL": self.nats_url,
            "NATS_STREAM_REPLICAS": str(c.replicas),
            "SWITCHBOARD_AUTH_SECRET": c.secret,
            "CASE_MASTER_KEY": base64.b64encode(b"chaos-case-master-key-32-bytes!!").decode(),
            "SWITCHBOARD_TENANTS": c.tenant,
            # The harness signs in the embedded demo agents, which production refuses.
            "SWITCHBOARD_MODE": "development",
            "LOG_LEVEL": c.log_level,
            "METRICS_PORT": "0",
            "SHUTDOWN_GRACE_SECONDS": "5",
            "PYTHONUNBUFFERED": "1",
            "GRPC_VERBOSITY": "ERROR",
        }
        for replica in ("router-a", "router-b"):
            port = free_port()
            self.router_targets[replica] = f"127.0.0.1:{port}"
            env = {
                **base,
                "ROUTER_GRPC_PORT": str(port),
                "SWITCHBOARD_REPLICA_ID": replica,
                "ROUTER_LEASE_TTL_SECONDS": str(c.lease_ttl),
                "ROUTER_SNAPSHOT_INTERVAL_SECONDS": str(c.snapshot_interval),
                "ROUTER_ACCEPT_TIMEOUT_SECONDS": str(c.accept_timeout),
            }
            self.routers[replica] = self._service(replica, "switchboard.router", env)
        case_port = free_port()
        self.case_target = f"127.0.0.1:{case_port}"
        self.case = self._service(
            "case",
            "switchboard.case",
            {
                **base,
                "CASE_GRPC_PORT": str(case_port),
                "CASE_DATABASE_URL": f"sqlite+aiosqlite:///{self.db_path}",
            },
        )
        http_port, grpc_port = free_port(), free_port()
        self.chat_url = f"http://127.0.0.1:{http_port}"
        self.chat_target = f"127.0.0.1:{grpc_port}"
        # Every chaos visitor comes from 127.0.0.1: the per-address and per-tenant limits are
        # raised to the load the scenario generates (the per-visitor ones stay as shipped).
        chat_config = self.config.directory / "chat.yaml"
        chat_config.write_text(
            "limits:\n"
            "  address_messages_per_second: 10000\n  address_message_burst: 100000\n"
            "  tenant_messages_per_second: 10000\n  tenant_message_burst: 100000\n"
            "  visitor_tokens_per_minute: 1000000\n",
            encoding="utf-8",
        )
        self.chat = self._service(
            "chat",
            "switchboard.chat",
            {
                **base,
                "CHAT_HTTP_PORT": str(http_port),
                "CHAT_GRPC_PORT": str(grpc_port),
                "CHAT_ROUTER_ADDR": self.router_targets["router-a"],
                "CHAT_CASE_ADDR": self.case_target,
                "CHAT_CONFIG_FILE": str(chat_config),
            },
        )

    async def _connect(self, timeout: float) -> Bus:
        """The harness's connection, declaring the streams. A cluster whose nodes are each
        healthy may still be placing its peers (JetStream says "no suitable peers"): retry."""

        async def quiet(exc: Exception) -> None:
            logger.info("harness NATS connection: %r", exc)

        nc = await nats.connect(
            [n.url for n in self.nats],
            name="chaos",
            connect_timeout=2,
            reconnect_time_wait=0.5,
            max_reconnect_attempts=-1,
            error_cb=quiet,
        )
        bus = Bus(nc, "chaos", replicas=self.config.replicas)
        deadline = time.monotonic() + timeout
        while True:
            try:
                await bus.ensure_streams()
                return bus
            except Exception:
                if time.monotonic() > deadline:
                    await nc.close()
                    raise
                await asyncio.sleep(0.5)

    def _service(self, name: str, module: str, env: dict[str, str]) -> Proc:
        return Proc(
            name, [sys.executable, "-m", module], env, self.config.directory / f"{name}.log"
        )

    async def start(self, timeout: float = 90.0) -> None:
        """Start everything and wait until it serves: NATS, case, the leader, the standby, chat."""
        self.build()
        for node in self.nats:
            node.start()
        for node in self.nats:
            if not await node.ready(30):
                raise RuntimeError(f"{node.name} did not become ready:\n{node.tail()}")
        self.bus = await self._connect(timeout)
        assert self.case and self.chat
        self.case.start()
        await self.healthy(self.case, self.case_target, "", timeout)
        self.routers["router-a"].start()
        await self.healthy(
            self.routers["router-a"], self.router_targets["router-a"], ROUTER_SERVICE, timeout
        )
        self.routers["router-b"].start()
        self.chat.start()
        await self.healthy(self.chat, self.chat_target, "", timeout)
        await self.started(self.routers["router-b"], timeout)

    async def healthy(self, proc: Proc, target: str, service: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not proc.alive:
                raise RuntimeError(f"{proc.name} exited at start:\n{proc.tail(40)}")
            if await check_health(target, timeout=1.0, service=service) == "SERVING":
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{proc.name} did not serve within {timeout:.0f}s:\n{proc.tail(40)}")

    async def started(self, proc: Proc, timeout: float) -> None:
        """A standby answers health (NOT_SERVING is its right answer) once it is up."""
        target = self.router_targets[proc.name]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not proc.alive:
                raise RuntimeError(f"{proc.name} exited at start:\n{proc.tail(40)}")
            status = await check_health(target, timeout=1.0, service=ROUTER_SERVICE)
            if status.split(": ")[-1] not in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
                return  # it answered
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{proc.name} did not start within {timeout:.0f}s:\n{proc.tail(40)}")

    async def lease_holder(self) -> str:
        """The replica that holds the router's lease ("" when none or NATS is unreachable)."""
        if self.bus is None:
            return ""
        try:
            kv = await asyncio.wait_for(self.bus.js.key_value(LEASE_BUCKET), 2)
            entry = await asyncio.wait_for(kv.get(ROUTER_GROUP), 2)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.NotFoundError):
            return ""
        except Exception:
            return ""
        return (entry.value or b"").decode()

    async def router_health(self) -> dict[str, str]:
        out = {}
        for replica, target in self.router_targets.items():
            out[replica] = await check_health(target, timeout=0.5, service=ROUTER_SERVICE)
        return out

    async def leader(self) -> str:
        """The replica leading now: the lease holder, else the one replica reporting SERVING."""
        holder = await self.lease_holder()
        if holder in self.routers:
            return holder
        serving = [r for r, s in (await self.router_health()).items() if s == "SERVING"]
        return serving[0] if len(serving) == 1 else ""

    async def stop(self) -> None:
        """SIGTERM the services (bounded), then NATS; SIGKILL whatever is left."""
        if self.bus is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.bus.drain(), 5)
            with contextlib.suppress(Exception):
                await self.bus.nc.close()
            self.bus = None
        services = [p for p in self.services if p.alive]
        for p in services:
            p.send(signal.SIGTERM)
        for p in services:
            if await p.wait_exit(12) is None:
                p.kill_now()
        for node in self.nats:
            if node.alive:
                node.send(signal.SIGTERM)
        for node in self.nats:
            if await node.wait_exit(10) is None:
                node.kill_now()
        self.kill_now()

    def kill_now(self) -> None:
        for p in self.processes:
            p.kill_now()
