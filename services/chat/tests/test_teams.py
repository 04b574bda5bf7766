"""Teams in the agents directory: a named group of a tenant's agents with its leads, checked as
precisely as the rest of the agents file, exported as the same YAML, changed by the console."""

from __future__ import annotations

import pytest

from switchboard.chat.admin import agents as changes
from switchboard.chat.inbox import directory
from switchboard.core.errors import InvalidArgument

HASH = directory.hash_password("pw", b"0123456789abcdef")
FILE = f"""tenants:
  demo:
    wrap_up_codes: [resolved]
    teams:
    - id: ko-team
      name: 한국어 팀
      leads: [lead-1]
    - id: zh-team
      name: 中文组
      leads: []
    agents:
    - id: lead-1
      name: Lead
      role: team_lead
      ui_language: en
      password: {HASH}
      team: ko-team
    - id: ko-1
      name: 이수진
      role: agent
      ui_language: ko
      password: {HASH}
      team: ko-team
    - id: zh-1
      name: 王芳
      role: agent
      ui_language: zh
      password: {HASH}
  acme:
    wrap_up_codes: [resolved]
    agents:
    - id: acme-1
      name: Acme
      role: agent
      ui_language: en
      password: {HASH}
"""


def test_teams_load_and_the_export_is_the_same_yaml() -> None:
    d = directory.load_text(FILE)
    assert [t.team_id for t in d.teams_of("demo")] == ["ko-team", "zh-team"]
    assert d.teams_of("demo")[0].leads == ("lead-1",) and d.teams_of("acme") == ()
    assert d.profile("demo", "ko-1").team == "ko-team"  # type: ignore[union-attr]
    assert d.profile("demo", "zh-1").team == ""  # type: ignore[union-attr]
    assert d.led_by("demo", "lead-1") == ["ko-team"]
    assert d.team_map("demo") == {"lead-1": "ko-team", "ko-1": "ko-team"}
    exported = directory.dump(d)
    assert "teams:" in exported and "team: ko-team" in exported
    assert (
        directory.load_text(exported) == d
        and directory.dump(directory.load_text(exported)) == exported
    )
    # One tenant's part, replaced into another directory, keeps the teams.
    merged = directory.load_text(FILE.split("  acme:")[0]).with_tenant("demo", d.tenant("demo"))
    assert merged.teams_of("demo") == d.teams_of("demo")


@pytest.mark.parametrize(
    ("old", "new", "error"),
    [
        (
            "      team: ko-team\n    - id: ko-1",
            "      team: sales\n    - id: ko-1",
            "a.yaml:17: tenants.demo.agents[0].team: unknown team 'sales'",
        ),
        (
            "leads: [lead-1]",
            "leads: [acme-1]",
            "a.yaml:7: tenants.demo.teams[0].leads[0]: acme-1 is not an agent of demo",
        ),
        (
            "leads: [lead-1]",
            "leads: [lead-1, lead-1]",
            "a.yaml:7: tenants.demo.teams[0].leads[1]: lead-1 appears twice",
        ),
        ("id: zh-team", "id: ko-team", "a.yaml:8: tenants.demo.teams[1].id: ko-team appears twice"),
        ("id: zh-team", "id: zh team", "tenants.demo.teams[1].id: must be 1-64 of"),
        (
            "      leads: []\n",
            "      leeds: []\n",
            "a.yaml:10: tenants.demo.teams[1].leeds: unknown",
        ),
        ("    teams:\n", "    teams: sales\n    x:\n", "tenants.demo"),
    ],
)
def test_a_team_mistake_names_its_line_and_field(old: str, new: str, error: str) -> None:
    assert old in FILE
    with pytest.raises(directory.ConfigError) as refused:
        directory.load_text(FILE.replace(old, new, 1), "a.yaml")
    assert error in str(refused.value)


def test_an_agent_of_another_tenants_team_is_refused() -> None:
    text = FILE.replace("    - id: acme-1\n", "    - id: acme-1\n      team: ko-team\n")
    with pytest.raises(directory.ConfigError) as refused:
        directory.load_text(text, "a.yaml")
    assert "tenants.acme.agents[0].team: unknown team 'ko-team'" in str(refused.value)


def test_the_console_sets_teams_and_an_agents_team_as_the_file_checks_them() -> None:
    part = directory.load_text(FILE).tenant("demo")
    teams = [
        {"id": "ko-team", "name": "Korean", "leads": ["lead-1", "ko-1"]},
        {"id": "ja-team", "name": "日本語", "leads": []},
    ]
    loaded, text, change = changes.set_teams(part, "demo", teams)
    assert change.action == "teams.set" and change.changes["teams"] == teams
    assert "left_without_team" not in change.changes
    assert loaded.teams_of("demo")[0].name == "Korean"
    assert directory.dump(directory.load_text(text)) == text
    # A removed team leaves its agents in none, and says so.
    _, _, gone = changes.set_teams(part, "demo", [{"id": "zh-team", "name": "中文组"}])
    assert gone.changes["left_without_team"] == ["lead-1", "ko-1"]
    # An agent joins a team, leaves it with "".
    moved, _, c = changes.save(loaded, "demo", "zh-1", {"team": "ja-team"}, create=False)
    assert moved.profile("demo", "zh-1").team == "ja-team" and c.changes == {"team": "ja-team"}  # type: ignore[union-attr]
    out, _, _ = changes.save(moved, "demo", "zh-1", {"team": ""}, create=False)
    assert out.profile("demo", "zh-1").team == ""  # type: ignore[union-attr]
    with pytest.raises(directory.ConfigError, match=r"agents\[2\]\.team: unknown team 'nope'"):
        changes.save(loaded, "demo", "zh-1", {"team": "nope"}, create=False)
    with pytest.raises(directory.ConfigError, match=r"teams\[0\]\.leads\[0\]: ghost is not"):
        changes.set_teams(part, "demo", [{"id": "t", "name": "T", "leads": ["ghost"]}])
    with pytest.raises(InvalidArgument):
        changes.set_teams(part, "demo", {"id": "t"})
