"""Sign-in throttling: guessing is slowed per client address and account, and per client
address, but nobody can lock an agent out from another address. On the throttle itself with a
fake clock, and through the inbox's real login endpoint."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from switchboard.chat.bootstrap import ChatApp
from switchboard.chat.domain.login_throttle import LoginThrottle
from switchboard.chat.entrypoints.clients import client_address, trusted_networks
from switchboard.core.errors import ResourceExhausted
from switchboard.testing.fakes import FakeClock

from .conftest import chat_settings, config_for_tests

ATTACKER, AGENT = "203.0.113.5", "198.51.100.7"


def test_an_address_that_guesses_waits_and_the_agent_elsewhere_does_not() -> None:
    clock = FakeClock(0.0)
    throttle = LoginThrottle(clock)
    for _ in range(5):
        throttle.check(ATTACKER, "demo", "ko-1")
        throttle.failed(ATTACKER, "demo", "ko-1")
    with pytest.raises(ResourceExhausted, match="try again in 30 s"):
        throttle.check(ATTACKER, "demo", "ko-1")
    throttle.check(AGENT, "demo", "ko-1")  # the agent at their own desk is not held back
    throttle.check(ATTACKER, "demo", "zh-1")  # five failures on one account: only that account
    clock.advance(31)
    throttle.check(ATTACKER, "demo", "ko-1")
    throttle.failed(ATTACKER, "demo", "ko-1")
    with pytest.raises(ResourceExhausted, match="try again in 60 s"):  # each failure doubles
        throttle.check(ATTACKER, "demo", "ko-1")


def test_spraying_many_accounts_from_one_address_is_throttled_too() -> None:
    throttle = LoginThrottle(FakeClock(0.0))
    for n in range(20):
        throttle.check(ATTACKER, "demo", f"agent-{n}")
        throttle.failed(ATTACKER, "demo", f"agent-{n}")
    with pytest.raises(ResourceExhausted):
        throttle.check(ATTACKER, "demo", "agent-99")
    throttle.check(AGENT, "demo", "agent-99")


def test_a_success_clears_its_own_count_only() -> None:
    throttle = LoginThrottle(FakeClock(0.0))
    for _ in range(4):
        throttle.failed(AGENT, "demo", "ko-1")
    throttle.succeeded(AGENT, "demo", "ko-1")
    for _ in range(4):
        throttle.failed(AGENT, "demo", "ko-1")
    throttle.check(AGENT, "demo", "ko-1")  # 4 since the success: still allowed


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "client"),
    [
        ("10.0.0.9", "", "", "10.0.0.9"),
        # An untrusted peer's header is the client's own claim: not believed.
        ("192.0.2.1", "203.0.113.5", "10.0.0.0/8", "192.0.2.1"),
        ("10.0.0.9", "203.0.113.5", "10.0.0.0/8", "203.0.113.5"),
        # The client wrote the left part itself; the proxy appended what it saw.
        ("10.0.0.9", "1.2.3.4, 203.0.113.5", "10.0.0.0/8", "203.0.113.5"),
        ("10.0.0.9", "203.0.113.5, 10.0.0.7", "10.0.0.0/8", "203.0.113.5"),
        ("::1", "2001:db8::5", "::1", "2001:db8::5"),
    ],
)
def test_the_client_address_believes_only_trusted_proxies(
    peer: str, forwarded: str, trusted: str, client: str
) -> None:
    assert client_address(peer, forwarded, trusted_networks(trusted)) == client


def test_a_bad_trusted_proxy_list_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"'10\.0\.0\.300' is not an address"):
        trusted_networks("10.0.0.0/8, 10.0.0.300")


@pytest.fixture
async def behind_proxy(nats_url: str) -> AsyncIterator[ChatApp]:
    """The chat behind a proxy on 127.0.0.1, so that X-Forwarded-For names each client."""
    app = ChatApp(
        chat_settings(nats_url, CHAT_TRUSTED_PROXIES="127.0.0.1"), config=config_for_tests()
    )
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


async def test_guessing_an_agents_password_does_not_lock_the_agent_out(
    behind_proxy: ChatApp,
) -> None:
    url = f"http://127.0.0.1:{behind_proxy.http_port}/api/agent/login"

    async def login(client: str, password: str) -> tuple[int, Any]:
        body = {"tenant": "demo", "agent_id": "ko-1", "password": password}
        async with aiohttp.ClientSession() as http:
            async with http.post(url, json=body, headers={"X-Forwarded-For": client}) as r:
                return r.status, await r.json()

    for _ in range(5):
        assert (await login(ATTACKER, "guess"))[0] == 401
    status, body = await login(ATTACKER, "demo-ko-1")
    assert status == 429 and "too many failed sign-ins" in body["error"]
    status, body = await login(AGENT, "demo-ko-1")
    assert status == 200 and body["agent"]["agent_id"] == "ko-1"
