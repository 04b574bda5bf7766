"""`switchboard dlq list | replay`: the events consumers gave up on, parked in DEADLETTER."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from switchboard.cli.endpoints import Endpoints, connect_nats, nats_options
from switchboard.core import deadletter


def add_parser(sub: Any) -> None:
    d = sub.add_parser("dlq", help="the dead-letter stream: list parked events, replay them")
    actions = d.add_subparsers(dest="dlq_command", required=True)
    ls = actions.add_parser("list", help="every parked event, with why it was parked")
    ls.add_argument("--consumer", help="only those one durable consumer parked")
    ls.add_argument("--json", action="store_true", help="a JSON array instead of a table")
    ls.add_argument("--nats", help="NATS URL (default: the running platform's)")
    rp = actions.add_parser(
        "replay", help="publish parked events back on their subjects, then unpark them"
    )
    which = rp.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--seq", type=int, action="append", help="a dead-letter sequence from `list` (repeatable)"
    )
    which.add_argument("--all", action="store_true", help="every parked event")
    rp.add_argument("--consumer", help="only those one durable consumer parked")
    rp.add_argument("--nats", help="NATS URL (default: the running platform's)")


def _row(p: deadletter.Parked) -> list[str]:
    return [
        str(p.seq),
        p.consumer,
        p.type_name.rpartition(".")[2] or "-",
        p.event_id or "-",
        p.tenant or "-",
        p.subject,
        str(p.deliveries),
        p.reason,
    ]


def table(parked: list[deadletter.Parked]) -> str:
    header = ["SEQ", "CONSUMER", "TYPE", "EVENT ID", "TENANT", "SUBJECT", "DELIVERIES", "REASON"]
    rows = [header] + [_row(p) for p in parked]
    # The reason is last and left as long as it is.
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join([c.ljust(w) for c, w in zip(r, widths, strict=False)] + [r[-1]]).rstrip()
        for r in rows
    )


async def run(directory: Path, args: argparse.Namespace) -> int:
    url = args.nats or Endpoints.load(directory).nats_url
    try:
        nc = await connect_nats(url, nats_options(directory))
    except Exception as exc:
        print(f"dlq: NATS at {url} is unreachable: {exc.__class__.__name__}")
        return 1
    try:
        js = nc.jetstream()
        if args.dlq_command == "list":
            parked = await deadletter.parked(js, args.consumer)
            if args.json:
                print(json.dumps([p.as_dict() for p in parked], indent=2, ensure_ascii=False))
            elif parked:
                print(table(parked))
            else:
                print("no parked events")
            return 0
        outcomes = await deadletter.replay(js, None if args.all else args.seq, args.consumer)
        for o in outcomes:
            what = (
                f"{o.parked.type_name.rpartition('.')[2]} {o.parked.event_id}" if o.parked else ""
            )
            if o.ok and o.ack is not None:
                print(f"replayed {o.seq}: {what} -> {o.ack.stream} seq {o.ack.seq}")
            else:
                print(f"not replayed {o.seq}: {what + ': ' if what else ''}{o.error}")
        if not outcomes:
            print("no parked events")
        return 0 if all(o.ok for o in outcomes) else 1
    finally:
        await nc.close()
