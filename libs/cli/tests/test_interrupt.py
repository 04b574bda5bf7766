"""Ctrl-C ends a `switchboard` command with status 130 and no traceback: while it is still
loading, and while it waits on a service that does not answer."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def start_agent(run_dir: Path, router: str) -> subprocess.Popen[str]:
    (run_dir / "endpoints.json").write_text(
        json.dumps({"nats_url": "nats://127.0.0.1:1", "grpc": {"router": router}})
    )
    env = {**os.environ, "SWITCHBOARD_RUN_DIR": str(run_dir), "PYTHONUNBUFFERED": "1"}
    env.pop("SWITCHBOARD_AUTH_SECRET", None)
    return subprocess.Popen(
        [sys.executable, "-m", "switchboard.cli", "agent", "--id", "ko-1", "--language", "ko:5"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def interrupted(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out + err


@contextlib.contextmanager
def silent_router() -> Iterator[socket.socket]:
    """A port that accepts connections and never answers."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        silent.settimeout(60)
        yield silent


def test_ctrl_c_while_the_agent_waits_for_the_router(tmp_path: Path) -> None:
    with silent_router() as silent:
        host, port = silent.getsockname()
        proc = start_agent(tmp_path, f"{host}:{port}")
        conn, _ = silent.accept()  # the command is loaded and calling SignIn
        try:
            code, output = interrupted(proc)
        finally:
            conn.close()
    assert code == 130, output
    assert "Traceback" not in output, output


def test_ctrl_c_while_the_command_loads(tmp_path: Path) -> None:
    with silent_router() as silent:
        host, port = silent.getsockname()
        proc = start_agent(tmp_path, f"{host}:{port}")
        # Interrupted while it imports what its commands need (gRPC's extension is in).
        maps = Path(f"/proc/{proc.pid}/maps")
        for _ in range(100_000):
            if "cygrpc" in maps.read_text():
                break
        code, output = interrupted(proc)
    assert code == 130, output
    assert "Traceback" not in output, output


def test_ctrl_c_that_an_extension_module_turns_into_an_import_error_is_still_an_interrupt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Interrupted while a Cython extension initialises (gRPC's), the interrupt comes out of the
    import as that module's ImportError ("cannot initialise module strings"): still 130."""
    import importlib.abc

    from switchboard.cli import __main__ as cli_main

    class InterruptedExtension(importlib.abc.MetaPathFinder):
        def find_spec(self, name: str, path: object, target: object = None) -> None:
            if name == "switchboard.cli.app":
                try:
                    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, as the module initialises
                    time.sleep(1)  # its handler runs here
                except BaseException as exc:
                    raise ImportError("cannot initialise module strings") from exc
                raise AssertionError("the interrupt never arrived")

    import switchboard.cli

    # Imported again (another test may have loaded the commands already).
    monkeypatch.delitem(sys.modules, "switchboard.cli.app", raising=False)
    monkeypatch.delattr(switchboard.cli, "app", raising=False)
    monkeypatch.setattr(sys, "meta_path", [InterruptedExtension(), *sys.meta_path])
    monkeypatch.setattr(cli_main, "_signalled", [], raising=False)
    with pytest.raises(SystemExit) as ended:
        cli_main.main(["--help"])
    assert ended.value.code == 130
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


async def test_ctrl_c_as_the_agents_input_ends_is_still_an_interrupt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C and the end of input arrive together (a terminal closing, or a pipe closed right
    after the signal): the session may already be signing out when the signal lands, and may
    finish on its own. It was still interrupted: 130, not 0."""
    import argparse
    import asyncio

    from switchboard.cli import agent

    signed_out: list[bool] = []

    async def session(directory: Path, args: argparse.Namespace) -> int:
        # The input has ended: the session signs out, and Ctrl-C lands meanwhile (its
        # cancellation is absorbed where the session waits for its offers' task to end).
        os.kill(os.getpid(), signal.SIGINT)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(1)
        signed_out.append(True)
        return 0

    monkeypatch.setattr(agent, "_session", session)
    code = await agent.run(tmp_path, argparse.Namespace())
    assert signed_out == [True]
    assert code == agent.INTERRUPTED
