"""scripts/check_boundaries.py finds every kind of crossing planted in a small tree, names its
file and line, passes what is allowed, and passes this repository."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "check_boundaries.py"


def run(root: Path) -> tuple[int, list[str]]:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(root)], capture_output=True, text=True, timeout=60
    )
    return result.returncode, result.stdout.splitlines()


def write(root: Path, path: str, text: str) -> None:
    target = root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


def package(
    root: Path, folder: str, name: str, *deps: str, scripts: str = "", dev: str = ""
) -> None:
    dependencies = ", ".join(f'"{d}"' for d in deps)
    write(
        root,
        f"{folder}/pyproject.toml",
        f'[project]\nname = "{name}"\ndependencies = [{dependencies}]\n'
        + (f"\n[project.scripts]\n{scripts}\n" if scripts else "")
        + (f'\n[dependency-groups]\ndev = ["switchboard-testing", "{dev}"]\n' if dev else ""),
    )


def tree(root: Path) -> None:
    """Two services and the libraries, every file within its bounds."""
    package(
        root,
        "services/router",
        "switchboard-router",
        "switchboard-core",
        scripts='switchboard-router = "x:y"',
    )
    package(
        root,
        "services/fax",
        "switchboard-fax",
        "switchboard-core",
        "switchboard-proto",
        dev="pytest",
    )
    package(root, "libs/core", "switchboard-core", "switchboard-proto")
    package(root, "libs/testing", "switchboard-testing", "switchboard-core")
    package(root, "libs/cli", "switchboard-cli", "switchboard-core", scripts='switchboard = "x:y"')
    write(
        root, "services/router/src/switchboard/router/app.py", "from switchboard.core import bus\n"
    )
    write(
        root,
        "services/fax/tests/test_ok.py",
        '"""Unlike `python -m switchboard.router`, this test starts only the fax."""\n'
        "from switchboard.fax import app\n"
        "from switchboard.testing.processes import ServiceProcess\n"
        "from switchboard.v1 import fax_pb2\n"
        'FAX = ServiceProcess("switchboard.fax")\n'
        'REALM = "switchboard"\n',
    )
    write(root, "libs/cli/src/switchboard/cli/endpoints.py", 'MODULE = "switchboard.router"\n')
    write(root, "tests/e2e/test_both.py", "import switchboard.fax\nimport switchboard.router\n")


def test_a_tree_within_its_bounds_passes(tmp_path: Path) -> None:
    tree(tmp_path)
    code, out = run(tmp_path)
    assert code == 0, out
    assert out == ["boundaries kept: 5 packages checked"]


def test_every_planted_crossing_is_named_with_its_file_and_line(tmp_path: Path) -> None:
    tree(tmp_path)
    write(tmp_path, "services/fax/src/switchboard/fax/a.py", "\nfrom switchboard.router import x\n")
    write(tmp_path, "services/fax/tests/test_b.py", "from switchboard import router\n")
    write(tmp_path, "services/fax/tests/test_c.py", "from switchboard.cli.report import run\n")
    write(
        tmp_path,
        "services/fax/tests/conftest.py",
        'import importlib\nR = ServiceProcess("switchboard.router")\n'
        'M = importlib.import_module("switchboard.router.bootstrap")\n'
        'ARGS = ["python", "-m switchboard.router"]\n',
    )
    write(tmp_path, "services/fax/tests/start.sh", "exec python -m switchboard.router\n")
    write(
        tmp_path,
        "services/fax/tests/test_d.py",
        'BIN = BIN_DIR / "switchboard"\nR = EXE.with_name("switchboard-router")\n',
    )
    write(tmp_path, "services/fax/src/switchboard/fax/b.py", "import switchboard.testing\n")
    write(tmp_path, "libs/testing/src/switchboard/testing/x.py", "import switchboard.fax.app\n")
    write(tmp_path, "libs/cli/src/switchboard/cli/case.py", "from switchboard.router import orm\n")
    package(
        tmp_path,
        "libs/cli",
        "switchboard-cli",
        "switchboard-core",
        "switchboard-fax>=0.1",
        scripts='switchboard = "x:y"',
    )
    package(
        tmp_path, "services/fax", "switchboard-fax", "switchboard-core", dev="switchboard-router"
    )
    code, out = run(tmp_path)
    assert code == 1
    found = [line.split(": ", 1)[0] for line in out[:-1]]
    assert sorted(found) == sorted(
        [
            "services/fax/src/switchboard/fax/a.py:2",
            "services/fax/src/switchboard/fax/b.py:1",  # switchboard.testing is for tests
            "services/fax/tests/test_b.py:1",
            "services/fax/tests/test_c.py:1",
            "services/fax/tests/conftest.py:2",
            "services/fax/tests/conftest.py:3",
            "services/fax/tests/conftest.py:4",
            "services/fax/tests/start.sh:1",
            "services/fax/tests/test_d.py:1",
            "services/fax/tests/test_d.py:2",
            "libs/testing/src/switchboard/testing/x.py:1",
            "libs/cli/src/switchboard/cli/case.py:1",
            "libs/cli/pyproject.toml:3",
            "services/fax/pyproject.toml:6",  # its tests' dev group
        ]
    ), out
    assert out[-1].startswith("14 boundary violation(s)")
    assert any("imports switchboard.router (a service" in line for line in out)
    assert any("depends on switchboard-fax, a service" in line for line in out)


def test_this_repository_keeps_its_boundaries() -> None:
    code, out = run(ROOT)
    assert code == 0, "\n".join(out)
