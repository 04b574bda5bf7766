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
CONFIG = """
tenants:
  acme:
    languages: [ko, zh, en, ja]
    skills: [billing, technical, account, complaint]
    accept_timeout: {chat: 5s, voice: 5s, email: 5s, fax: 5s}
    sticky_ttl: 10m
    break_reasons: [lunch, training]
    queues:
      - name: general
        min_proficiency: 4
        service_level: {threshold: 20s, target: 0.8}
        steps:
          - {name: accept-level-2, after: 1s, min_proficiency: 2}
      - name: slow
    surge:
      - level: 3
        raise: {waiting_over: 1, wait_longer_than: 1s}
        clear: {idle_agents: 1, idle_for: 1s}
        actions: [refuse_breaks, pause_callbacks, notify_supervisors]
"""


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
