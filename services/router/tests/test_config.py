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
    # The grid service desk's level 3: more than 3 customers queued continuously for 3 minutes;
    # cleared by 3 agents idle continuously for 15 minutes.
    [level3] = demo.surge
    assert (level3.level, level3.queued_over, level3.raise_for) == (3, 3, 180)
    assert (level3.idle_agents, level3.idle_for) == (3, 900)
    assert level3.actions == {"refuse_breaks", "notify_agents", "pause_callbacks"}
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


SURGE = BASE + "      - name: general\n      - name: billing\n    surge:\n      - level: 3\n"


def test_surge_levels_take_a_condition_over_time(tmp_path: Path) -> None:
    text = SURGE + (
        "        raise: {queued_over: 3, for: 3m, queues: [billing]}\n"
        "        clear: {idle_agents: 3, for: 15m}\n"
        "        actions: [refuse_breaks, notify_agents, pause_callbacks]\n"
        "      - level: 1\n"
        "        raise: {queued_over: 1, for: 30s}\n"
        "        clear: {idle_agents: 1, for: 5m}\n"
    )
    path = tmp_path / "router.yaml"
    path.write_text(text)
    one, three = cfg.load_file(path).tenant("demo").surge
    assert (one.level, one.queued_over, one.raise_for, one.queues) == (1, 1, 30, ())
    assert (three.level, three.queued_over, three.raise_for) == (3, 3, 180)
    assert (three.idle_agents, three.idle_for, three.queues) == (3, 900, ("billing",))
    assert three.watches("billing") and not three.watches("general") and one.watches("general")


def test_surge_reads_the_earlier_field_names(tmp_path: Path) -> None:
    text = SURGE + (
        "        raise: {waiting_over: 3, wait_longer_than: 3m}\n"
        "        clear: {idle_agents: 3, idle_for: 15m}\n"
    )
    path = tmp_path / "router.yaml"
    path.write_text(text)
    [level] = cfg.load_file(path).tenant("demo").surge
    assert (level.queued_over, level.raise_for, level.idle_agents, level.idle_for) == (
        3,
        180,
        3,
        900,
    )


@pytest.mark.parametrize(
    ("raise_", "clear", "expected"),
    [
        (
            "{queued_over: 3}",
            "{idle_agents: 3, for: 15m}",
            "router.yaml:10: tenants.demo.surge[0].raise.for: is required",
        ),
        (
            "{for: 3m}",
            "{idle_agents: 3, for: 15m}",
            "router.yaml:10: tenants.demo.surge[0].raise.queued_over: is required",
        ),
        (
            "{queued_over: 3, for: 3m}",
            "{for: 15m}",
            "router.yaml:11: tenants.demo.surge[0].clear.idle_agents: is required",
        ),
        (
            "{queued_over: 3, for: 3m, wait_longer_than: 2m}",
            "{idle_agents: 3, for: 15m}",
            "router.yaml:10: tenants.demo.surge[0].raise.wait_longer_than: the same as for",
        ),
        (
            "{queued_over: -1, for: 3m}",
            "{idle_agents: 3, for: 15m}",
            "router.yaml:10: tenants.demo.surge[0].raise.queued_over: must be an integer",
        ),
        (
            "{queued_over: 3, for: soon}",
            "{idle_agents: 3, for: 15m}",
            "router.yaml:10: tenants.demo.surge[0].raise.for:",
        ),
        (
            "{queued_over: 3, for: 3m, queues: [nowhere]}",
            "{idle_agents: 3, for: 15m}",
            "router.yaml:10: tenants.demo.surge[0].raise.queues[0]: unknown queue 'nowhere'",
        ),
        (
            "{queued_over: 3, during: 3m}",
            "{idle_agents: 3, for: 15m}",
            "router.yaml:10: tenants.demo.surge[0].raise.during: unknown field",
        ),
    ],
)
def test_surge_errors_name_the_line_and_field(
    raise_: str, clear: str, expected: str, tmp_path: Path
) -> None:
    text = SURGE + f"        raise: {raise_}\n        clear: {clear}\n"
    assert expected in error(text, tmp_path)
