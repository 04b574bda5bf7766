"""`switchboard explain` against the router over real gRPC with a real nats-server: the decision
for a contact, its candidates and exclusions, and a contact the router does not know."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from switchboard.cli import routing
from switchboard.cli.endpoints import Endpoints
from switchboard.core import events
from switchboard.core.bus import Bus
from switchboard.router.bootstrap import RouterApp
from switchboard.router.settings import RouterSettings
from switchboard.testing.agents import AgentClient
from switchboard.v1 import contact_pb2, events_pb2

SECRET = "router-features-secret"
# The router's own feature tests' configuration.
CONFIG = (
    Path(__file__).parents[3]
    / "services"
    / "router"
    / "tests"
    / "fixtures"
    / "router_features.yaml"
).read_text()


@pytest.fixture
async def router(nats_url: str, tmp_path: Path) -> AsyncIterator[RouterApp]:
    path = tmp_path / "router.yaml"
    path.write_text(CONFIG)
    app = RouterApp(
        RouterSettings(
            NATS_URL=nats_url,
            ROUTER_GRPC_PORT=0,
            SWITCHBOARD_AUTH_SECRET=SECRET,
            ROUTER_CONFIG_FILE=str(path),
        )
    )
    await app.start()
    yield app
    await app.stop()


def target(app: RouterApp) -> str:
    return f"127.0.0.1:{app.port}"


def created(cid: str, language: str, queue: str) -> events_pb2.ContactCreated:
    c = contact_pb2.Contact(
        contact_id=cid,
        tenant="acme",
        channel=contact_pb2.CHANNEL_CHAT,
        language=language,
        queue=queue,
    )
    return events_pb2.ContactCreated(
        meta=events.new_meta("acme", contact_pb2.CHANNEL_CHAT, "test"), contact=c
    )


async def agent(
    app: RouterApp, agent_id: str, languages: dict[str, int], **skills: int
) -> AgentClient:
    client = AgentClient(target(app), SECRET, "acme", agent_id)
    await client.sign_in(languages, dict(skills))
    return client


async def test_switchboard_explain_prints_the_decision(
    router: RouterApp, bus: Bus, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Endpoints(nats_url="", grpc={"router": target(router)}, tenant="acme").save(
        tmp_path / "endpoints.json"
    )
    (tmp_path / "auth-secret").write_text(SECRET)
    en = await agent(router, "en-1", {"en": 5})
    await agent(router, "zh-1", {"zh": 5})
    await bus.publish(created("c-cli", language="en", queue="slow"))
    await en.next_offer()
    args = argparse.Namespace(command="explain", contact_id="c-cli", tenant=None, all=False)
    assert await routing.run(tmp_path, args) == 0
    out = capsys.readouterr().out
    assert "contact c-cli (acme) in queue slow: offered" in out
    assert "-> en-1" in out and "candidate en-1" in out
    assert "excluded zh-1: language (does not speak en)" in out
    args = argparse.Namespace(command="explain", contact_id="missing", tenant=None, all=False)
    assert await routing.run(tmp_path, args) == 1
    assert "NOT_FOUND" in capsys.readouterr().out
