"""The router's YAML configuration: the embedded default, and errors that name file, line and
field."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchboard.router.domain import config as cfg
from switchboard.v1 import contact_pb2


def test_embedded_default_ships_the_demo_tenant() -> None:
    demo = cfg.embedded_default().tenant("demo")
    assert demo.languages == ("ko", "zh", "en", "ja")
    assert demo.skills == ("billing", "technical", "account", "complaint")
    assert demo.capacity[contact_pb2.CHANNEL_VOICE] == 1
    assert demo.queues["general"].sl_threshold == 20
    assert [s.name for s in demo.queues["general"].steps] == [
        "relax-proficiency",
        "any-skill",
        "english-overflow",
    ]
    [level3] = demo.surge
    assert (level3.level, level3.waiting_over, level3.wait_longer_than) == (3, 3, 180)
    assert (level3.clear_idle_agents, level3.clear_idle_for) == (3, 900)
    # A tenant the file does not name gets the defaults.
    assert list(cfg.embedded_default().tenant("acme").queues) == ["general"]


def error(text: str, tmp_path: Path) -> str:
    path = tmp_path / "router.yaml"
    path.write_text(text)
    with pytest.raises(cfg.ConfigError) as exc:
        cfg.load_file(path)
    return str(exc.value).replace(str(path), "router.yaml")


BASE = """tenants:
  demo:
    languages: [ko, en]
    skills: [billing, technical]
    queues:
"""


def test_unknown_skill_names_file_line_and_field(tmp_path: Path) -> None:
    text = BASE + "      - name: general\n        skills: [billing, cooking]\n"
    assert error(text, tmp_path) == (
        "router.yaml:7: tenants.demo.queues[0].skills[1]: unknown skill 'cooking' "
        "(the tenant's skills: ['billing', 'technical'])"
    )


def test_duplicate_queue(tmp_path: Path) -> None:
    text = BASE + "      - name: general\n      - name: vip\n      - name: general\n"
    assert error(text, tmp_path) == (
        "router.yaml:8: tenants.demo.queues[2].name: duplicate queue 'general'"
    )


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ("{after: soon, min_proficiency: 2}", "steps[0].after: 'soon' is not a duration"),
        (
            "{after: 30s, min_proficiency: 7}",
            "steps[0].min_proficiency: must be an integer from 1 to 5",
        ),
        ("{after: 30s, overflow_to: nowhere}", "steps[0].overflow_to: unknown queue 'nowhere'"),
        ("{after: 30s, add_languages: [fr]}", "steps[0].add_languages[0]: unknown language 'fr'"),
        ("{after: 30s}", "steps[0]: a step must change something"),
        ("{after: 30s, min_proficiency: 2, colour: red}", "steps[0].colour: unknown field"),
    ],
)
def test_bad_step(tmp_path: Path, step: str, message: str) -> None:
    text = BASE + f"      - name: general\n        steps:\n          - {step}\n"
    got = error(text, tmp_path)
    assert got.startswith("router.yaml:8: tenants.demo.queues[0]."), got
    assert message in got


def test_steps_must_come_in_order_and_yaml_errors_have_lines(tmp_path: Path) -> None:
    text = BASE + (
        "      - name: general\n        steps:\n"
        "          - {after: 60s, min_proficiency: 2}\n          - {after: 30s, drop_skills: true}\n"
    )
    assert (
        "router.yaml:9: tenants.demo.queues[0].steps[1].after: steps must come in increasing"
        in error(text, tmp_path)
    )
    assert error("tenants:\n  demo: [unclosed\n", tmp_path).startswith(
        "router.yaml:3: (document): not valid YAML"
    )


def test_surge_needs_known_actions_and_voice_is_exclusive(tmp_path: Path) -> None:
    text = BASE + (
        "      - name: general\n    surge:\n      - level: 3\n"
        "        raise: {waiting_over: 3, wait_longer_than: 3m}\n"
        "        clear: {idle_agents: 3, idle_for: 15m}\n        actions: [panic]\n"
    )
    assert "tenants.demo.surge[0].actions[0]: unknown action 'panic'" in error(text, tmp_path)
    text = "tenants:\n  demo:\n    capacity: {voice: 2}\n"
    assert "tenants.demo.capacity.voice: voice is exclusive" in error(text, tmp_path)
