"""Fax files built in the suite (Korean, Chinese and English text in Debian's Noto CJK font, at
fax resolution, as G3 1-D, G3 2-D and G4 TIFFs and PDFs), hostile files (a pixel bomb header, a
truncated TIFF, a password-protected PDF), and the fax service with the real router on a real
nats-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from google.protobuf.message import Message

from switchboard.core.bus import Bus
from switchboard.fax.bootstrap import FaxApp
from switchboard.fax.settings import FaxSettings
from switchboard.router.bootstrap import RouterApp
from switchboard.router.settings import RouterSettings
from switchboard.testing.agents import AgentClient
from switchboard.v1 import events_pb2, fax_pb2

SECRET = "fax-test-secret"
WEBHOOK_SECRET = "provider-shared-secret"
TENANT = "demo"

T = TypeVar("T")


async def eventually(probe: Callable[[], Awaitable[T | None]], what: str, tries: int = 600) -> T:
    for _ in range(tries):
        result = await probe()
        if result:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


class Collector:
    """Reads back what the fax service published, through a durable consumer of our own."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.seen: dict[type[Message], list[Any]] = {}

    def watch(self, *types: type[Message]) -> None:
        for event_type in types:
            self.seen.setdefault(event_type, [])

            async def keep(event: Any, t: type[Message] = event_type) -> None:
                self.seen[t].append(event)

            self.bus.subscribe(f"test-{event_type.__name__}", event_type, keep)

    async def wait(self, event_type: type[T], match: Callable[[T], bool], what: str) -> T:
        async def probe() -> T | None:
            return next((e for e in self.seen[event_type] if match(e)), None)  # type: ignore[index]

        return await eventually(probe, what)


@dataclass
class FaxPlatform:
    nats_url: str
    fax: FaxApp
    router: RouterApp
    bus: Bus
    events: Collector
    spool: Path
    agents: dict[str, AgentClient] = field(default_factory=dict)

    @property
    def upload_url(self) -> str:
        return f"http://127.0.0.1:{self.fax.http_port}/fax"


def fax_settings(nats_url: str, spool: Path, **overrides: Any) -> FaxSettings:
    values: dict[str, Any] = {
        "NATS_URL": nats_url,
        "SWITCHBOARD_AUTH_SECRET": SECRET,
        "FAX_GRPC_PORT": 0,
        "FAX_HTTP_PORT": 0,
        "FAX_SPOOL_DIR": str(spool),
        "FAX_SPOOL_POLL_SECONDS": 0.1,
        "FAX_SPOOL_SETTLE_SECONDS": 0.0,
        "FAX_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "FAX_EMAIL_ADDRESSES": "fax@demo.example",
        "FAX_TENANT": TENANT,
        "SHUTDOWN_GRACE_SECONDS": 1.0,
    }
    values.update(overrides)
    return FaxSettings(**values)


@pytest.fixture
async def platform(nats_url: str, tmp_path: Path) -> AsyncIterator[FaxPlatform]:
    """The fax service and the real router on one nats-server, with a Korean, a Chinese and an
    English agent who all handle billing."""
    router = RouterApp(
        RouterSettings(NATS_URL=nats_url, SWITCHBOARD_AUTH_SECRET=SECRET, ROUTER_GRPC_PORT=0)
    )
    spool = tmp_path / "spool"
    fax = FaxApp(fax_settings(nats_url, spool))
    bus = await Bus.connect(nats_url, source="test")
    collector = Collector(bus)
    collector.watch(
        fax_pb2.FaxProcessed, fax_pb2.FaxQuarantined, fax_pb2.FaxReceived, events_pb2.ContactCreated
    )
    await bus.start()
    started: list[Any] = []
    agents: dict[str, AgentClient] = {}
    try:
        for app in (router, fax):
            await app.start()
            started.append(app)
        target = f"127.0.0.1:{router.port}"
        for lang in ("ko", "zh", "en"):
            agent = AgentClient(target, SECRET, TENANT, f"agent-{lang}")
            await agent.sign_in({lang: 5}, {"billing": 3, "technical": 3})
            agents[lang] = agent
        yield FaxPlatform(nats_url, fax, router, bus, collector, spool, agents)
    finally:
        for agent in agents.values():
            await agent.close()
        for app in reversed(started):
            await app.stop()
        await bus.drain()


class FakeHylaFax:
    """A small hfaxd stand-in speaking HylaFAX's client protocol (USER, PASS, TYPE, PASV, STOT,
    JNEW, JPARM, JSUBM, JOB, QUIT) on a free port; it keeps what it was sent. No real HylaFAX
    server is installed on the test machine, so the client is tested against this."""

    def __init__(self, password: str = "secret", final_state: str = "DONE") -> None:
        self.password = password
        self.final_state = final_state
        self.files: dict[str, bytes] = {}
        self.jobs: dict[str, dict[str, str]] = {}
        self.commands: list[str] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> FakeHylaFax:
        self.server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def say(line: str) -> None:
            writer.write(line.encode() + b"\r\n")

        say("220 fake.example server (HylaFAX (tm) Version 7.0.7) ready.")
        data_server: asyncio.Server | None = None
        received: asyncio.Future[bytes] | None = None
        current = ""
        user_ok = False
        while True:
            raw = await reader.readline()
            if not raw:
                break
            line = raw.decode().rstrip("\r\n")
            self.commands.append(line)
            verb, _, arg = line.partition(" ")
            verb = verb.upper()
            if verb == "USER":
                say("331 Password required for user.")
            elif verb == "PASS":
                user_ok = arg == self.password
                say("230 User logged in." if user_ok else "530 Login incorrect.")
            elif not user_ok and verb != "QUIT":
                say("530 Please login with USER and PASS.")
            elif verb == "TYPE":
                say("200 Type set to I.")
            elif verb == "PASV":
                loop = asyncio.get_running_loop()
                received = loop.create_future()

                async def take(
                    r: asyncio.StreamReader,
                    w: asyncio.StreamWriter,
                    into: asyncio.Future[bytes] = received,
                ) -> None:
                    body = await r.read()
                    w.close()
                    if not into.done():
                        into.set_result(body)

                data_server = await asyncio.start_server(take, "127.0.0.1", 0)
                p = data_server.sockets[0].getsockname()[1]
                say(f"227 Entering Passive Mode (127,0,0,1,{p // 256},{p % 256})")
            elif verb == "STOT":
                name = f"/tmp/doc{len(self.files) + 1}.tif"
                say(f'150 FILE: {name} (Opening new data connection for "{name}".)')
                await writer.drain()
                assert received is not None
                self.files[name] = await asyncio.wait_for(received, 10)
                if data_server is not None:
                    data_server.close()
                say(f"226 Transfer complete (FILE: {name}).")
            elif verb == "JNEW":
                current = str(100 + len(self.jobs))
                self.jobs[current] = {"STATE": "PENDING"}
                say(f"200 New job created: jobid: {current} groupid: {current}.")
            elif verb == "JOB":
                current = arg
                say(f"200 Current job: jobid {arg} groupid {arg}.")
            elif verb == "JPARM":
                key, _, value = arg.partition(" ")
                if value:
                    self.jobs[current][key.upper()] = value.strip('"')
                    code = "200" if key.upper() == "DOCUMENT" else "213"
                    say(f"{code} {key.upper()} set to {value}.")
                else:
                    say(f"213 {key.upper()}: {self.jobs[current].get(key.upper(), '')}")
            elif verb == "JSUBM":
                self.jobs[current]["STATE"] = self.final_state
                say(f"200 Job {current} submitted.")
            elif verb == "QUIT":
                say("221 Goodbye.")
                await writer.drain()
                break
            else:
                say(f"500 {verb}: Command not recognized.")
            await writer.drain()
        writer.close()


@pytest.fixture
async def fake_hylafax() -> AsyncIterator[FakeHylaFax]:
    server = await FakeHylaFax().start()
    try:
        yield server
    finally:
        await server.stop()
