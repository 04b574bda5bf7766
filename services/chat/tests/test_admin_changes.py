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


def test_the_business_hours_form_reads_and_writes_the_tenants_calendar() -> None:
    from switchboard.chat.admin.console import business_hours, with_business_hours

    part = (
        "calendars:\n"
        "  seoul-office:\n"
        "    timezone: Asia/Seoul\n"
        "    hours: {mon-fri: '09:00-18:00'}\n"
        "    holidays: [2026-12-25]\n"
        "business_hours: {demo: seoul-office}\n"
        "sla_policies:\n"
        "  - {name: demo-standard, tenant: demo, calendar: seoul-office, first_response: 4h}\n"
    )
    form = business_hours("demo", part)
    assert form == {
        "calendar": "seoul-office",
        "timezone": "Asia/Seoul",
        "hours": {"mon-fri": "09:00-18:00"},
        "holidays": ["2026-12-25"],
    }
    assert form is not None
    form["holidays"].append("2027-01-01")
    form["hours"]["sat"] = "10:00-14:00"
    changed = with_business_hours("demo", part, form)
    assert business_hours("demo", changed) == form
    assert "2027-01-01" in changed and "'2027-01-01'" not in changed  # a YAML date
    assert "demo-standard" in changed  # the rest of the part kept
    # A tenant without hours of its own gets a calendar of its own.
    alone = with_business_hours(
        "acme", "{}\n", {"timezone": "UTC", "hours": {"mon-fri": "08:00-16:00"}}
    )
    assert business_hours("acme", alone) == {
        "calendar": "acme-hours",
        "timezone": "UTC",
        "hours": {"mon-fri": "08:00-16:00"},
        "holidays": [],
    }
    with pytest.raises(InvalidArgument):
        with_business_hours("demo", part, {"hours": ["09:00"]})
