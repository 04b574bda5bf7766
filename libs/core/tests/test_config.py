"""Durations are written one way in every configuration file."""

from __future__ import annotations

import pytest

from switchboard.core.config import ConfigError, ConfigReader, compose, parse_duration


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (30, 30.0),
        (1.5, 1.5),
        ("250ms", 0.25),
        ("30s", 30.0),
        ("15m", 900.0),
        ("1h", 3600.0),
        ("2d", 172800.0),
        (" 6 s ", 6.0),
        ("45", 45.0),
    ],
)
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", [-1, True, "soon", "1y", "-5s", "", None, "1h30m"])
def test_not_durations(value: object) -> None:
    assert parse_duration(value) is None


def test_a_reader_error_names_file_line_and_field() -> None:
    reader = ConfigReader("x.yaml")
    root = reader.mapping(compose("a: 1\nb:\n  c: later\n", "x.yaml"), "", {"a", "b"})
    inner = reader.mapping(root["b"][1], "b", set())
    with pytest.raises(ConfigError, match=r"^x\.yaml:3: b\.c: 'later' is not a duration"):
        reader.duration(inner["c"][1], "b.c")
