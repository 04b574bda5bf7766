"""What `switchboard run` prints and what README.md shows agree, and both name commands the
`switchboard` command accepts as written."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from switchboard.cli.app import parser
from switchboard.cli.endpoints import Endpoints
from switchboard.cli.supervisor import banner

ROOT = Path(__file__).parents[3]
README = ROOT / "README.md"


def readme_run_section() -> str:
    text = README.read_text()
    return text[text.index("## Two commands") : text.index("## How it fits together")]


def switchboard_commands(text: str) -> list[str]:
    """Every `uv run switchboard ...` command in `text` (up to a comment or a description)."""
    found = []
    for line in text.splitlines():
        at = line.find("uv run switchboard ")
        if at >= 0:
            command = re.split(r"\s{2,}|\s#", line[at:].strip())[0]
            found.append(command)
    return found


def parses(command: str) -> None:
    argv = shlex.split(command)
    assert argv[:3] == ["uv", "run", "switchboard"], command
    try:
        parser().parse_args(argv[3:])
    except SystemExit as exc:  # argparse's way of refusing
        pytest.fail(f"`{command}` does not parse: exit {exc.code}")


def demo_endpoints() -> Endpoints:
    """The addresses README's example shows."""
    return Endpoints(
        nats_url="nats://127.0.0.1:4222",
        grpc={"case": "127.0.0.1:50052", "router": "127.0.0.1:50051"},
        http={"chat": "https://127.0.0.1:8080"},
        listeners={
            "Mail catcher (SMTP)": "smtp://127.0.0.1:1025",
            "SIP (UDP/TCP)": "sip://127.0.0.1:5060",
            "Fax upload (HTTP POST /fax)": "https://127.0.0.1:8095",
        },
        tls={"ca_file": "/…/.run/tls/ca.crt"},
        mail_page="http://127.0.0.1:8025/",
    )


def test_every_command_the_banner_prints_parses(tmp_path: Path) -> None:
    printed = switchboard_commands(banner(demo_endpoints(), tmp_path))
    assert {shlex.split(c)[3] for c in printed} >= {"status", "agent", "queues", "fax"}
    for command in printed:
        parses(command)


def test_every_command_in_the_readme_run_section_parses() -> None:
    commands = switchboard_commands(readme_run_section())
    assert commands
    for command in commands:
        parses(command)


def test_the_readme_shows_the_banner_as_it_is_printed(tmp_path: Path) -> None:
    section = readme_run_section()
    printed = banner(demo_endpoints(), tmp_path)
    for command in switchboard_commands(printed):
        assert command in switchboard_commands(section), command
    example = section[section.index("Switchboard is running.") :].split("```")[0]
    lines = [line for line in example.splitlines()[1:] if line.strip() not in ("", "...")]
    assert lines
    printed_lines = printed.replace(str(tmp_path), "/…/.run").splitlines()
    for line in lines:
        assert line in printed_lines, line


def test_make_help_names_the_switchboard_command() -> None:
    out = subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), "help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "uv run switchboard --help" in out
