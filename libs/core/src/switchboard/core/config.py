"""Configuration files: YAML read as a node tree, so that every error names the file, the line
and the field, e.g. ``router.yaml:14: tenants.demo.queues[1].name: duplicate queue 'billing'``;
and the one way durations are written (``250ms``, ``30s``, ``15m``, ``1h``, ``2d``, ``1w``, or seconds).
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from switchboard.core.errors import InvalidArgument

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, None: 1.0}


def parse_duration(value: Any) -> float | None:
    """Seconds for a duration (a non-negative number of seconds, or a number with a unit:
    ms, s, m, h, d, w); None when `value` is not one."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) if value >= 0 else None
    match = _DURATION.match(str(value))
    if not match:
        return None
    return float(match.group(1)) * _UNITS[match.group(2)]


class ConfigError(InvalidArgument):
    """A configuration error naming where it is: ``file:line: field: problem`` (``field:
    problem`` for a configuration that was not read from a file)."""

    def __init__(self, source: str, line: int, path: str, problem: str) -> None:
        super().__init__(path, problem)
        self.source, self.line, self.path, self.problem = source, line, path, problem
        self.args = (f"{source}:{line}: {path}: {problem}" if source else f"{path}: {problem}",)

    def __str__(self) -> str:
        return str(self.args[0])


def compose(text: str, source: str) -> yaml.Node:
    """The YAML node tree of `text` (a syntax error or an empty document is a ConfigError)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else 1
        raise ConfigError(source, line, "(document)", f"not valid YAML: {exc.problem}") from None
    if node is None:
        raise ConfigError(source, 1, "(document)", "is empty")
    return node


_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def locate(root: yaml.Node, path: str) -> yaml.Node:
    """The node at `path` (``a.b[2].c``) in a composed tree, or the deepest one on the way
    (a missing key is reported at its parent's line)."""
    node = root
    for key, index in _STEP.findall(path):
        if key and isinstance(node, yaml.MappingNode):
            found = next((v for k, v in node.value if str(k.value) == key), None)
        elif index and isinstance(node, yaml.SequenceNode) and int(index) < len(node.value):
            found = node.value[int(index)]
        else:
            found = None
        if found is None:
            return node
        node = found
    return node


def is_null(node: yaml.Node) -> bool:
    """`key:` with nothing after it (or `~`, `null`)."""
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


class ConfigReader:
    """Reads a composed YAML node tree, checking types and naming file:line:field on error."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, node: yaml.Node | None, path: str, problem: str) -> ConfigError:
        line = node.start_mark.line + 1 if node is not None else 1
        return ConfigError(self.source, line, path, problem)

    def mapping(
        self, node: yaml.Node, path: str, allowed: set[str]
    ) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, path, "must be a mapping")
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key, value in node.value:
            name = str(key.value)
            where = f"{path}.{name}" if path else name
            if name in out:
                raise self.fail(key, where, "appears twice")
            if allowed and name not in allowed:
                raise self.fail(key, where, f"unknown field (expected one of {sorted(allowed)})")
            out[name] = (key, value)
        return out

    def seq(self, node: yaml.Node, path: str) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, path, "must be a list")
        return list(node.value)

    def scalar(self, node: yaml.Node, path: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, path, "must be a single value")
        return yaml.safe_load(yaml.serialize(node))

    def string(self, node: yaml.Node, path: str, pattern: re.Pattern[str] | None = None) -> str:
        value = self.scalar(node, path)
        if not isinstance(value, str) or not value:
            raise self.fail(node, path, "must be a non-empty string")
        if pattern is not None and not pattern.match(value):
            raise self.fail(node, path, f"{value!r} is not a valid name")
        return value

    def integer(self, node: yaml.Node, path: str, lo: int, hi: int) -> int:
        value = self.scalar(node, path)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise self.fail(node, path, f"must be an integer from {lo} to {hi}")
        return value

    def number(self, node: yaml.Node, path: str, lo: float, hi: float) -> float:
        value = self.scalar(node, path)
        if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
            raise self.fail(node, path, f"must be a number from {lo} to {hi}")
        return float(value)

    def duration(self, node: yaml.Node, path: str) -> float:
        seconds = parse_duration(self.scalar(node, path))
        if seconds is None:
            value = self.scalar(node, path)
            raise self.fail(node, path, f"{value!r} is not a duration (e.g. 30s, 15m, 1h)")
        return seconds

    def boolean(self, node: yaml.Node, path: str) -> bool:
        value = self.scalar(node, path)
        if not isinstance(value, bool):
            raise self.fail(node, path, "must be true or false")
        return value

    def strings(self, node: yaml.Node, path: str, pattern: re.Pattern[str]) -> tuple[str, ...]:
        items = [
            self.string(n, f"{path}[{i}]", pattern) for i, n in enumerate(self.seq(node, path))
        ]
        for i, item in enumerate(items):
            if item in items[:i]:
                raise self.fail(self.seq(node, path)[i], f"{path}[{i}]", f"{item!r} repeated")
        return tuple(items)
