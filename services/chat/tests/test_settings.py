"""Chat's settings follow the platform's naming scheme; the old names are still read."""

from __future__ import annotations

import base64

import pytest

from switchboard.chat.settings import ChatSettings
from switchboard.core.settings import UnsafeSettings


def test_other_services_are_named_by_their_addr() -> None:
    s = ChatSettings(CHAT_ROUTER_ADDR="router:1", CHAT_CASE_ADDR="case:1")
    assert (s.router_target, s.case_target) == ("router:1", "case:1")
    old = ChatSettings(CHAT_ROUTER_TARGET="router:2", CHAT_CASE_TARGET="case:2")
    assert (old.router_target, old.case_target) == ("router:2", "case:2")


RECORDING_KEY = "c2VjcmV0LXJlY29yZGluZy1rZXktb2YtMzItYnl0ZXM="  # base64 of 32 bytes


def test_production_refuses_the_demo_agents() -> None:
    production = ChatSettings(
        SWITCHBOARD_AUTH_SECRET="own-secret", VOICE_RECORDING_KEY=RECORDING_KEY
    )
    with pytest.raises(UnsafeSettings, match="CHAT_AGENTS_FILE is unset"):
        production.refuse_unsafe_production()
    ChatSettings(
        SWITCHBOARD_AUTH_SECRET="own-secret",
        CHAT_AGENTS_FILE="/etc/agents.yaml",
        VOICE_RECORDING_KEY=RECORDING_KEY,
    ).refuse_unsafe_production()
    ChatSettings(
        SWITCHBOARD_AUTH_SECRET="own-secret", SWITCHBOARD_MODE="development"
    ).refuse_unsafe_production()


def test_production_refuses_to_play_recordings_without_their_own_key(tmp_path) -> None:  # type: ignore[no-untyped-def]
    given = {"SWITCHBOARD_AUTH_SECRET": "own-secret", "CHAT_AGENTS_FILE": "/etc/agents.yaml"}
    with pytest.raises(
        UnsafeSettings, match=r"VOICE_RECORDING_KEY_FILE \(or VOICE_RECORDING_KEY\) is unset"
    ):
        ChatSettings(**given).refuse_unsafe_production()  # type: ignore[arg-type]
    key_file = tmp_path / "key"
    key_file.write_text(RECORDING_KEY + "\n")
    keyed = ChatSettings(**given, VOICE_RECORDING_KEY_FILE=str(key_file))  # type: ignore[arg-type]
    keyed.refuse_unsafe_production()
    assert keyed.recording_keys().current == base64.b64decode(RECORDING_KEY)
