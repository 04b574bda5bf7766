"""The chaos suite's short version (`make chaos` is the long one): a few hundred contacts through
the real processes while the router's leader is killed, the case service is killed and
nats-server is restarted; then the same checks as the long run — nothing lost, nothing assigned
twice, the case store and the router agree, nothing undelivered, every audit chain verifies."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

# The suite's modules sit beside this file (pytest imports it with --import-mode=importlib).
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Scenario, run_scenario
from report import Fault

pytestmark = pytest.mark.timeout(420)


async def test_contacts_survive_a_router_kill_a_case_kill_and_a_nats_restart(
    tmp_path: Path,
) -> None:
    report = await run_scenario(
        Scenario(
            "short",
            tmp_path,
            faults=[
                Fault("router", signal.SIGKILL),
                Fault("case", signal.SIGKILL),
                Fault("nats", signal.SIGTERM),
            ],
            contacts=200,
            rate=25,
            agents=8,
            settle_timeout=90,
            stall_timeout=20,
        )
    )
    print(report.render())  # the table, and on failure the problems and their log lines
    assert report.ok, f"the chaos checks failed (the report is printed above): {report.counts()}"
