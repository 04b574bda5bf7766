"""`switchboard explain` and `switchboard router-config`: the router's decisions and rules."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from switchboard.cli.commands import operator_token
from switchboard.cli.endpoints import Endpoints
from switchboard.core import grpc as sb_grpc
from switchboard.v1 import router_pb2, router_pb2_grpc


def add_parsers(sub: Any) -> None:
    e = sub.add_parser("explain", help="why a contact went (or has not yet gone) to whom")
    e.add_argument("contact_id")
    e.add_argument("--tenant", help="tenant (default: the embedded default's tenant)")
    e.add_argument("--all", action="store_true", help="list every exclusion the router kept")
    c = sub.add_parser("router-config", help="show or apply a tenant's routing configuration")
    c.add_argument("action", choices=["show", "apply", "check"])
    c.add_argument("file", nargs="?", help="YAML of one tenant's section (apply, check)")
    c.add_argument("--tenant", help="tenant (default: the embedded default's tenant)")


def _time(ts: Timestamp) -> str:
    return ts.ToDatetime().strftime("%H:%M:%S.%f")[:-3] if ts.seconds else "-"


REASONS = {
    router_pb2.EXCLUSION_REASON_LANGUAGE: "language",
    router_pb2.EXCLUSION_REASON_SKILL: "skill",
    router_pb2.EXCLUSION_REASON_CAPACITY: "capacity",
    router_pb2.EXCLUSION_REASON_PRESENCE: "presence",
    router_pb2.EXCLUSION_REASON_STEP: "step",
    router_pb2.EXCLUSION_REASON_RESERVED: "reserved",
    router_pb2.EXCLUSION_REASON_DECLINED: "declined",
    router_pb2.EXCLUSION_REASON_NOT_CONNECTED: "not connected",
}


def format_decision(d: router_pb2.Decision, show_all: bool = False) -> str:
    lines = [f"contact {d.contact_id} ({d.tenant}) in queue {d.queue}: {d.state}"]
    if d.assigned_agent_id:
        lines.append(f"  assigned to {d.assigned_agent_id}")
    for s in d.steps:
        lines.append(f"  step {s.step} fired at {_time(s.at)}: {s.reason}")
    for i, a in enumerate(d.attempts, 1):
        head = f"  attempt {i} at {_time(a.at)}: {a.outcome}"
        if a.agent_id:
            head += f" -> {a.agent_id}"
        head += f" (step: {a.step or 'queue rules'})"
        lines.append(head)
        for c in a.candidates:
            sticky = ", the customer's last agent" if c.sticky else ""
            lines.append(
                f"    candidate {c.agent_id}: score {c.proficiency}, idle since "
                f"{_time(c.idle_since)}{sticky}"
            )
        shown = a.excluded if show_all else a.excluded[:10]
        for x in shown:
            why = ", ".join(REASONS.get(r, str(r)) for r in x.reasons)
            lines.append(f"    excluded {x.agent_id}: {why} ({x.detail})")
        rest = a.excluded_total - len(shown)
        if rest > 0:
            lines.append(f"    ... and {rest} more excluded")
    return "\n".join(lines)


async def run(directory: Path, args: argparse.Namespace) -> int:
    ep = Endpoints.load(directory)
    tenant = args.tenant or ep.tenant
    token = operator_token(directory, tenant)
    async with sb_grpc.channel(ep.router(tenant), token, tls=ep.grpc_tls()) as ch:
        try:
            if args.command == "explain":
                stub = router_pb2_grpc.RouterServiceStub(ch)
                d = await stub.ExplainDecision(
                    router_pb2.ExplainDecisionRequest(contact_id=args.contact_id)
                )
                print(format_decision(d, args.all))
                return 0
            admin = router_pb2_grpc.RouterAdminServiceStub(ch)
            if args.action == "show":
                cfg = await admin.GetConfig(router_pb2.GetConfigRequest())
                print(f"# tenant {cfg.tenant}, version {cfg.version}")
                print(cfg.yaml)
                return 0
            if not args.file:
                print("router-config: give the YAML file of the tenant's section")
                return 2
            text = await asyncio.to_thread(Path(args.file).read_text, encoding="utf-8")
            cfg = await admin.ApplyConfig(
                router_pb2.ApplyConfigRequest(yaml=text, dry_run=args.action == "check")
            )
            verb = "is valid" if args.action == "check" else f"applied as version {cfg.version}"
            print(f"{args.file} {verb} for tenant {tenant}")
            return 0
        except grpc.aio.AioRpcError as exc:
            print(f"router: {exc.code().name}: {exc.details()}")
            return 1
