"""`make chaos`: contacts through the real processes while each is killed and restarted in turn,
then every contact checked. Prints a table per scenario; exits 1 when any check failed.

    python tests/chaos/run.py --contacts 3000 --rate 100 --agents 16 --runs 3 --cluster

Each run is a fresh platform (nats-server, router-a and router-b, case, chat) under --dir: the
single-server scenario with every fault, then with --cluster a three-node JetStream cluster with
R3 streams losing one node at a time. Logs, config files and report.json stay there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from harness import CLUSTER_FAULTS, FULL_FAULTS, Scenario, run_scenario
from report import Fault, Report


def parse(argv: list[str]) -> argparse.Namespace:
    a = argparse.ArgumentParser(prog="make chaos", description=__doc__.split("\n\n")[0])
    a.add_argument("--contacts", type=int, default=3000, help="contacts per scenario (at least)")
    a.add_argument("--rate", type=float, default=100.0, help="contacts per second")
    a.add_argument("--agents", type=int, default=16)
    a.add_argument("--runs", type=int, default=1, help="runs in a row, each on a fresh platform")
    a.add_argument("--cluster", action="store_true", help="also the three-node cluster scenario")
    a.add_argument("--no-single", action="store_true", help="skip the single-server scenario")
    a.add_argument(
        "--faults",
        default="",
        help="comma-separated, e.g. router:kill,nats:term (default: every fault; targets "
        "router, case, chat, nats, node; kill or term)",
    )
    a.add_argument("--chat-share", type=float, default=0.1, help="share of contacts via chat")
    a.add_argument(
        "--snapshot-interval", type=float, default=30.0, help="the router's snapshots (seconds)"
    )
    a.add_argument("--dir", type=Path, default=None, help="default: .run/chaos/<time>")
    a.add_argument("--seed", type=int, default=1)
    return a.parse_args(argv)


def scenarios(args: argparse.Namespace, run: int, directory: Path) -> list[Scenario]:
    chosen = [Fault.parse(f) for f in args.faults.split(",") if f.strip()]
    common = {
        "contacts": args.contacts,
        "rate": args.rate,
        "agents": args.agents,
        "chat_share": args.chat_share,
        "snapshot_interval": args.snapshot_interval,
        "seed": args.seed + run,
    }
    out = []
    if not args.no_single:
        faults = [f for f in chosen if f.target != "node"] if chosen else FULL_FAULTS
        out.append(Scenario(f"run {run}", directory / f"run-{run}-single", faults=faults, **common))
    if args.cluster:
        faults = [f for f in chosen if f.target == "node"] if chosen else CLUSTER_FAULTS
        out.append(
            Scenario(
                f"run {run} cluster",
                directory / f"run-{run}-cluster",
                faults=faults or CLUSTER_FAULTS,
                nodes=3,
                **common,
            )
        )
    return out


def summary(reports: list[Report]) -> str:
    lines = ["", "== summary =="]
    for r in reports:
        if not r.checked:
            lines.append(f"  FAIL  {r.title.split(' · ')[0]:<14} checks not run: {r.error}")
            continue
        c = r.counts()
        router = [
            f.measures.get("no assignment for") for f in r.faults if f.fault.target == "router"
        ]
        nats = [
            f.measures.get("routing again") for f in r.faults if f.fault.target in ("nats", "node")
        ]

        def worst(values: list[float | None]) -> str:
            if not values:
                return "-"
            if any(v is None for v in values):
                return "never"
            return f"{max(v for v in values if v is not None):.1f}s"

        lines.append(
            f"  {'PASS' if r.ok else 'FAIL'}  {r.title.split(' · ')[0]:<14} lost {c['lost']} · "
            f"assigned twice {c['assigned twice']} · disagreements {c['disagreements']} · "
            f"unfinished {c['unfinished']} · undelivered {c['undelivered']} · "
            f"broken chains {c['broken chains']} · dropped {c['dropped events']} · "
            f"health lies {c['health lies']} · failover {worst(router)} · "
            f"after NATS {worst(nats)}"
        )
    return "\n".join(lines)


def source() -> str:
    """Which code ran: the commit and the uncommitted changes (a run restarts processes, which
    import whatever is on disk at that moment)."""
    repo = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=repo, capture_output=True, text=True, timeout=30
            ).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            return f"git {' '.join(args)}: {exc}\n"

    return git("rev-parse", "HEAD") + git("status", "--short") + git("diff", "--stat")


async def main(argv: list[str]) -> int:
    args = parse(argv)
    directory = (args.dir or Path(".run/chaos") / time.strftime("%Y%m%d-%H%M%S")).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    # The harness's own NATS client complains through every outage it causes: into a file.
    logging.basicConfig(
        filename=directory / "harness.log",
        level=logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    loop = asyncio.get_running_loop()
    current = asyncio.current_task()
    assert current is not None
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, current.cancel)  # cleanup runs in each scenario's finally
    (directory / "source.txt").write_text(source(), encoding="utf-8")
    reports: list[Report] = []
    try:
        for run in range(1, args.runs + 1):
            for scenario in scenarios(args, run, directory):
                print(f"\n{scenario.title}: running (logs in {scenario.directory})", flush=True)
                report = await run_scenario(scenario)
                reports.append(report)
                print(report.render(), flush=True)
    except asyncio.CancelledError:
        print("interrupted: every process has been stopped", file=sys.stderr)
        return 130
    print(summary(reports), flush=True)
    (directory / "summary.json").write_text(
        json.dumps([r.as_json() for r in reports], indent=2), encoding="utf-8"
    )
    return 0 if reports and all(r.ok for r in reports) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
