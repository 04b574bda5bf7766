"""The switchboard command-line tool: its parser and its commands (started by __main__)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from switchboard.cli import (
    case,
    commands,
    customer,
    dlq,
    fax,
    nats_config,
    report,
    revoke,
    routing,
)
from switchboard.cli.endpoints import auth_secret, run_dir, token_max_lifetime
from switchboard.core import auth, runtime


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="switchboard", description="Operate a Switchboard platform.")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="start the whole platform on the embedded defaults")
    sub.add_parser("status", help="health of every service (gRPC health) and of NATS")
    for name, text in (
        ("queues", "queue statistics from the router"),
        ("agents", "agents the router knows"),
    ):
        q = sub.add_parser(name, help=text)
        q.add_argument("--tenant", help="tenant (default: the embedded default's tenant)")
    t = sub.add_parser("token", help="mint an access token for an agent, a partner or an operator")
    t.add_argument("--tenant", required=True)
    t.add_argument("--subject", required=True, help="agent id, partner id or operator name")
    t.add_argument("--role", action="append", required=True, choices=sorted(auth.ROLES))
    t.add_argument(
        "--scope",
        action="append",
        default=[],
        choices=sorted(auth.SCOPES),
        help="a partner's grant (repeatable; see docs/security.md)",
    )
    t.add_argument(
        "--ttl",
        type=int,
        default=3600 * 12,
        help="seconds (at most SWITCHBOARD_TOKEN_MAX_LIFETIME_SECONDS, 30 days unless set; "
        "0: never expires, only where that is 0 too)",
    )
    a = sub.add_parser(
        "agent",
        help="a terminal agent: sign in, take offers, chat",
        description="A terminal agent: signs in, takes offers, chats. Type to reply; commands: "
        "/accept, /decline, /wrap CODE, /break [REASON], /available, /quit (Ctrl-C signs out "
        "too).",
    )
    a.add_argument("--id", required=True, dest="agent_id")
    a.add_argument("--name", default="")
    a.add_argument("--tenant", default=None)
    a.add_argument("--language", action="append", default=[], help="e.g. ko or ko:5 (repeatable)")
    a.add_argument(
        "--skill", action="append", default=[], help="e.g. billing or billing:4 (repeatable)"
    )
    a.add_argument("--auto-accept", action="store_true", help="accept every offer")
    report.add_parser(sub)
    routing.add_parsers(sub)
    case.add_parser(sub)
    customer.add_parser(sub)
    dlq.add_parser(sub)
    revoke.add_parser(sub)
    nats_config.add_parser(sub)
    fax.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    runtime.quiet_tls_eof_notice()
    directory = run_dir()
    if args.command == "run":
        from switchboard.cli import supervisor

        sys.exit(asyncio.run(supervisor.run(directory)))
    if args.command == "status":
        sys.exit(asyncio.run(commands.status(directory)))
    if args.command == "queues":
        sys.exit(asyncio.run(commands.queues(directory, args.tenant)))
    if args.command == "agents":
        sys.exit(asyncio.run(commands.agents(directory, args.tenant)))
    if args.command == "token":
        try:
            token = auth.mint(
                auth_secret(directory),
                args.tenant,
                args.subject,
                args.role,
                args.ttl or None,
                scopes=args.scope,
                max_lifetime=token_max_lifetime(),
            )
        except ValueError as exc:
            sys.exit(f"switchboard token: {exc}")
        print(token)
        return
    if args.command == "case":
        sys.exit(asyncio.run(case.run(directory, args)))
    if args.command == "customer":
        sys.exit(asyncio.run(customer.run(directory, args)))
    if args.command == "dlq":
        sys.exit(asyncio.run(dlq.run(directory, args)))
    if args.command == "revoke":
        sys.exit(asyncio.run(revoke.run(directory, args)))
    if args.command == "nats-config":
        sys.exit(nats_config.run(args))
    if args.command in ("explain", "router-config"):
        sys.exit(asyncio.run(routing.run(directory, args)))
    if args.command == "fax":
        sys.exit(asyncio.run(fax.run(directory, args)))
    if args.command == "report":
        sys.exit(asyncio.run(report.run(directory, args)))
    if args.command == "agent":
        from switchboard.cli import agent

        sys.exit(asyncio.run(agent.run(directory, args)))
