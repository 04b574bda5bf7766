"""`switchboard explain` against the router over real gRPC with a real nats-server: the decision
for a contact, its candidates and exclusions, and a contact the router does not know."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from switchboard.cli import routing
from switchboard.cli.endpoints import Endpoints
from switchboard.core.bus import Bus
from switchboard.testing.agents import AgentClient
from switchboard.testing.contacts import contact_created

from ..conftest import Platform, running_platform

# The router's own feature tests' configuration.
CONFIG = Path(__file__).parents[3] / "services/router/tests/fixtures/router_features.yaml"


@pytest.fixture
async def platform(nats_url: str, database_url: str) -> AsyncIterator[Platform]:
    async with running_platform(nats_url, database_url, ROUTER_CONFIG_FILE=str(CONFIG)) as made:
        yield made


async def agent(platform: Platform, agent_id: str, languages: dict[str, int]) -> AgentClient:
    client = AgentClient(platform.router_target, platform.secret, "acme", agent_id)
    await client.sign_in(languages, {})
    return client


async def test_switchboard_explain_prints_the_decision(
    platform: Platform, bus: Bus, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Endpoints(nats_url="", grpc={"router": platform.router_target}, tenant="acme").save(
        tmp_path / "endpoints.json"
    )
    (tmp_path / "auth-secret").write_text(platform.secret)
    en = await agent(platform, "en-1", {"en": 5})
    await agent(platform, "zh-1", {"zh": 5})
    await bus.publish(contact_created("c-cli", language="en", queue="slow"))
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
