"""Fail when code crosses a package boundary (issue 15): a service's code and tests use only that
service, switchboard.core, switchboard.testing (tests) and switchboard.v1; the libraries use no
service; a service's tests start no other service as a process; no package declares a dependency
on a service. What crosses services belongs in tests/e2e, which is not checked.

    python scripts/check_boundaries.py [ROOT]

Prints each violation as `path:line: message` and exits 1 if there is any.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SHARED = {"core", "v1"}  # switchboard.core and the generated switchboard.v1
TESTS_ALSO = {"testing"}  # switchboard.testing, in tests only
LIBS = {"core": "core", "testing": "testing", "cli": "cli", "proto": "v1"}
TEXT_SUFFIXES = {".sh", ".toml", ".yaml", ".yml", ".cfg", ".ini", ".txt", ".json"}


@dataclass(frozen=True)
class Unit:
    """One package: its folder, the name of its module under switchboard., and what it may use."""

    folder: Path
    module: str
    uses: frozenset[str]
    is_service: bool

    @property
    def commands(self) -> set[str]:
        """The console scripts its pyproject installs (`switchboard`, `switchboard-router`...)."""
        pyproject = self.folder / "pyproject.toml"
        if not pyproject.exists():
            return set()
        return set(
            tomllib.loads(pyproject.read_text("utf-8")).get("project", {}).get("scripts", {})
        )


def units(root: Path) -> list[Unit]:
    found: list[Unit] = []
    for folder in sorted((root / "services").glob("*/")):
        if (folder / "pyproject.toml").exists():
            module = folder.name.replace("-", "_")
            found.append(Unit(folder, module, frozenset({module} | SHARED), True))
    for name, module in LIBS.items():
        folder = root / "libs" / name
        if folder.is_dir():
            found.append(Unit(folder, module, frozenset({module} | SHARED), False))
    return found


def python_files(unit: Unit) -> Iterator[tuple[Path, bool]]:
    """(file, is_test) for the unit's code and tests; generated protobuf code is skipped."""
    for part, is_test in (("src", False), ("tests", True)):
        for path in sorted((unit.folder / part).rglob("*.py")):
            if "_pb2" not in path.name:
                yield path, is_test


def docstrings(tree: ast.AST) -> set[int]:
    """The ids of the docstring nodes: prose may name another service."""
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def imported(tree: ast.AST) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            if node.module == "switchboard":
                for alias in node.names:
                    yield node.lineno, f"switchboard.{alias.name}"


def commands_run(tree: ast.AST, commands: set[str]) -> Iterator[tuple[int, str]]:
    """Another package's command run from its installed path: `bin / "switchboard"`,
    `.with_name("switchboard-router")`, or a service's command named anywhere."""
    seen: set[tuple[int, str]] = set()
    for node in ast.walk(tree):
        text: object = None
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            text = getattr(node.right, "value", None)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "with_name"
            and node.args
        ):
            text = getattr(node.args[0], "value", None)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value if node.value.startswith("switchboard-") else None
        if isinstance(text, str) and text in commands and (node.lineno, text) not in seen:
            seen.add((node.lineno, text))
            yield node.lineno, text


def check_python(
    root: Path, unit: Unit, path: Path, is_test: bool, services: set[str], commands: set[str]
) -> Iterator[str]:
    where = path.relative_to(root)
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    allowed = unit.uses | (TESTS_ALSO if is_test else set())
    for line, name in imported(tree):
        parts = name.split(".")
        if parts[0] == "switchboard" and len(parts) > 1 and parts[1] not in allowed:
            what = "a service" if parts[1] in services else "a package it may not use"
            yield f"{where}:{line}: imports {name} ({what}; {rule(unit, is_test)})"
    if unit.module == "cli":
        return  # `switchboard run` starts every service as a process: that is its job
    for line, command in commands_run(tree, commands):
        yield (
            f"{where}:{line}: runs another package's command {command!r} "
            f"(a test that crosses packages belongs in tests/e2e)"
        )
    others = sorted(services - {unit.module})
    if not others:
        return
    named = re.compile(rf"^switchboard\.({'|'.join(others)})(\.[\w.]+)?$")
    started = re.compile(rf"-m\s+switchboard\.({'|'.join(others)})\b")
    skip = docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            text = node.value.strip()
            if named.match(text) or started.search(text):
                yield (
                    f"{where}:{node.lineno}: names another service's module {text!r} "
                    f"(starts or loads it; a test that starts two services belongs in tests/e2e)"
                )


def check_text(root: Path, unit: Unit, services: set[str]) -> Iterator[str]:
    """Scripts and configuration in tests: `python -m switchboard.<other service>`."""
    others = sorted(services - {unit.module})
    if unit.module == "cli" or not others:
        return
    started = re.compile(rf"-m\s+switchboard\.({'|'.join(others)})\b")
    for path in sorted((unit.folder / "tests").rglob("*")):
        if path.suffix in TEXT_SUFFIXES and path.is_file():
            for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if started.search(line):
                    yield f"{path.relative_to(root)}:{n}: starts another service: {line.strip()}"


def check_dependencies(root: Path, unit: Unit, distributions: set[str]) -> Iterator[str]:
    """A package's pyproject names no service among its dependencies, nor in its dependency
    groups (its tests' `dev` group must not install another service either)."""
    pyproject = unit.folder / "pyproject.toml"
    if not pyproject.exists():
        return
    text = pyproject.read_text(encoding="utf-8")
    data = tomllib.loads(text)
    project = data.get("project", {})
    own = project.get("name", "")
    requirements = list(project.get("dependencies", []))
    for group in data.get("dependency-groups", {}).values():
        requirements += [r for r in group if isinstance(r, str)]
    for requirement in requirements:
        name = re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0]
        if name in distributions and name != own:
            line = next(
                (n for n, t in enumerate(text.splitlines(), 1) if f'"{requirement}"' in t), 1
            )
            yield (
                f"{pyproject.relative_to(root)}:{line}: depends on {name}, a service "
                f"(packages depend only on switchboard-core and switchboard-proto)"
            )


def rule(unit: Unit, is_test: bool) -> str:
    uses = sorted(unit.uses | (TESTS_ALSO if is_test else set()))
    return "may import only " + ", ".join(f"switchboard.{u}" for u in uses)


def check(root: Path) -> list[str]:
    found = units(root)
    services = {u.module for u in found if u.is_service}
    distributions = {f"switchboard-{u.folder.name}" for u in found if u.is_service}
    problems: list[str] = []
    for unit in found:
        commands = set().union(*(u.commands for u in found if u is not unit))
        for path, is_test in python_files(unit):
            problems += check_python(root, unit, path, is_test, services, commands)
        problems += check_text(root, unit, services)
        problems += check_dependencies(root, unit, distributions)
    return problems


def main(argv: list[str]) -> int:
    root = Path(argv[1] if len(argv) > 1 else Path(__file__).resolve().parents[1])
    problems = check(root)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} boundary violation(s): see scripts/check_boundaries.py")
        return 1
    print(f"boundaries kept: {len(units(root))} packages checked")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
