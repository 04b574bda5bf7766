"""The inbox's agents directory: the demo loads, and a mistake is named by file, line and field."""

from __future__ import annotations

import pytest

from switchboard.chat.inbox import directory
from switchboard.chat.inbox.service import WATCH_QUEUE_STATS
from switchboard.core import auth, roles

HASH = directory.hash_password("pw", b"0123456789abcdef")
AGENT = f"tenants:\n  demo:\n    agents:\n      - id: ko-1\n        password: '{HASH}'\n"


def test_the_demo_directory_loads_and_verifies_nobody_without_the_password() -> None:
    demo = directory.load()
    profile = demo.profile("demo", "ko-1")
    assert profile is not None and profile.ui_language == "ko"
    assert "spam" in demo.codes("demo")
    assert directory.load_text(AGENT).verify("demo", "ko-1", "pw").agent_id == "ko-1"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("tenant: {}\n", "a.yaml:1: tenant: unknown field"),
        ("tenants:\n  demo:\n    agent: []\n", "a.yaml:3: tenants.demo.agent: unknown field"),
        (AGENT + "        role: boss\n", "a.yaml:6: tenants.demo.agents[0].role: must be one of"),
        (AGENT + "        skills: {billing: 9}\n", "tenants.demo.agents[0].skills.billing"),
        (AGENT + "        ui_langauge: ko\n", "tenants.demo.agents[0].ui_langauge: unknown field"),
        (AGENT.replace(HASH, "plaintext"), "a.yaml:5: tenants.demo.agents[0].password: not scrypt"),
        (AGENT + AGENT.split("agents:\n")[1], "a.yaml:6: tenants.demo.agents[1].id: ko-1 appears"),
        ("tenants:\n  Demo Co:\n    agents: []\n", "a.yaml:2: tenants.Demo Co: 'Demo Co' is not"),
    ],
)
def test_a_mistake_names_its_file_line_and_field(text: str, error: str) -> None:
    with pytest.raises(directory.ConfigError) as refused:
        directory.load_text(text, "a.yaml")
    assert error in str(refused.value)


@pytest.mark.parametrize(
    ("role", "watches"), [("agent", False), ("team_lead", True), ("supervisor", True)]
)
def test_every_desk_role_signs_in_and_the_wallboard_takes_team_leads_and_supervisors(
    role: str, watches: bool
) -> None:
    found = directory.load_text(AGENT + f"        role: {role}\n").verify("demo", "ko-1", "pw")
    assert found.role == role
    principal = auth.Principal("demo", "ko-1", frozenset({found.role}))
    assert roles.RULES[WATCH_QUEUE_STATS].admits(principal) is watches
