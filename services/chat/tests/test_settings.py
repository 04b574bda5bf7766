"""Chat's settings follow the platform's naming scheme; the old names are still read."""

from __future__ import annotations

import pytest

from switchboard.chat.settings import ChatSettings
from switchboard.core.settings import UnsafeSettings


def test_other_services_are_named_by_their_addr() -> None:
    s = ChatSettings(CHAT_ROUTER_ADDR="router:1", CHAT_CASE_ADDR="case:1")
    assert (s.router_target, s.case_target) == ("router:1", "case:1")
    old = ChatSettings(CHAT_ROUTER_TARGET="router:2", CHAT_CASE_TARGET="case:2")
    assert (old.router_target, old.case_target) == ("router:2", "case:2")


def test_production_refuses_the_demo_agents() -> None:
    production = ChatSettings(SWITCHBOARD_AUTH_SECRET="own-secret")
    with pytest.raises(UnsafeSettings, match="CHAT_AGENTS_FILE is unset"):
        production.refuse_unsafe_production()
    ChatSettings(
        SWITCHBOARD_AUTH_SECRET="own-secret", CHAT_AGENTS_FILE="/etc/agents.yaml"
    ).refuse_unsafe_production()
    ChatSettings(
        SWITCHBOARD_AUTH_SECRET="own-secret", SWITCHBOARD_MODE="development"
    ).refuse_unsafe_production()
