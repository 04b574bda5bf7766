"""The fax service and the real router on a real nats-server, with a Korean, a Chinese and an
English agent signed in: every intake path end to end."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from switchboard.core.bus import Bus
from switchboard.fax.bootstrap import FaxApp
from switchboard.fax.settings import FaxSettings
from switchboard.router.bootstrap import RouterApp
from switchboard.router.settings import RouterSettings
from switchboard.testing.agents import AgentClient
from switchboard.testing.streams import EventCollector

SECRET = "fax-test-secret"
WEBHOOK_SECRET = "provider-shared-secret"
TENANT = "demo"

T = TypeVar("T")


@dataclass
class FaxPlatform:
    nats_url: str
    fax: FaxApp
    router: RouterApp
    bus: Bus
    events: EventCollector
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
    collector = await EventCollector.start(bus, "contact.>")
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
