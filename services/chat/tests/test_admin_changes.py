"""The admin console's changes to a directory, without I/O (switchboard.chat.admin.agents)."""

from __future__ import annotations

import pytest

from switchboard.chat.admin import agents
from switchboard.chat.inbox import directory
from switchboard.core.errors import FailedPrecondition, InvalidArgument, NotFound

HASH = directory.hash_password("pass-word-1", b"0123456789abcdef")
FILE = f"""
tenants:
  demo:
    wrap_up_codes: [resolved, spam]
    agents:
      - {{id: ko-1, name: 이수진, password: "{HASH}", languages: {{ko: 5}}, skills: {{billing: 4}}}}
  acme:
    agents:
      - {{id: ko-1, name: Acme Kim, password: "{HASH}"}}
"""


def test_add_keeps_the_others_and_the_tenants_codes() -> None:
    whole = directory.load_text(FILE)
    new, text, change = agents.save(
        whole.tenant("demo"),
        "demo",
        "ko-2",
        {"name": "김하늘", "languages": {"ko": 5}, "capacity": {"chat": 2}},
        create=True,
        password_hash=HASH,
    )
    assert change == agents.Change(
        "agent.add",
        "ko-2",
        {"name": "김하늘", "languages": {"ko": 5}, "capacity": {"chat": 2}, "password": "changed"},
    )
    assert sorted(a for _, a in new.agents) == ["ko-1", "ko-2"]
    assert new.codes("demo") == ("resolved", "spam")
    assert directory.load_text(text) == new
    assert "acme" not in text  # one tenant's part only


def test_edit_clears_a_field_to_its_default_and_names_disabling() -> None:
    part = directory.load_text(FILE).tenant("demo")
    new, _, change = agents.save(part, "demo", "ko-1", {"skills": None}, create=False)
    assert new.profile("demo", "ko-1").skills == {}  # type: ignore[union-attr]
    assert change.action == "agent.edit" and change.changes == {"skills": None}
    _, _, change = agents.save(part, "demo", "ko-1", {"disabled": True}, create=False)
    assert change.action == "agent.disable"


def test_refusals() -> None:
    part = directory.load_text(FILE).tenant("demo")
    with pytest.raises(NotFound):
        agents.save(part, "demo", "ghost", {"name": "x"}, create=False)
    with pytest.raises(FailedPrecondition):
        agents.save(part, "demo", "ko-1", {}, create=True, password_hash=HASH)
    with pytest.raises(InvalidArgument, match="password: is required"):
        agents.save(part, "demo", "ko-9", {}, create=True)
    with pytest.raises(InvalidArgument, match="unknown field"):
        agents.save(part, "demo", "ko-1", {"password": "sneaky"}, create=False)
    with pytest.raises(InvalidArgument, match=r"agents\[0\]\.skills\.billing: must be an integer"):
        agents.save(part, "demo", "ko-1", {"skills": {"billing": "a lot"}}, create=False)
    with pytest.raises(InvalidArgument, match="8 to 1024"):
        agents.check_password("short")
