"""`switchboard revoke`: refuse every token of a principal issued until now (an agent who has
left, a partner whose token leaked). Written to the revocation list in NATS, which every service
follows (switchboard.core.revocation); tokens minted afterwards work again."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from switchboard.cli.endpoints import Endpoints, connect_nats, nats_options
from switchboard.core.errors import DomainError
from switchboard.core.revocation import Revocations


def add_parser(sub: Any) -> None:
    r = sub.add_parser("revoke", help="refuse every token of an agent, partner or operator so far")
    r.add_argument("--tenant", required=True)
    r.add_argument("--subject", required=True, help="agent id, partner id or operator name")
    r.add_argument("--nats", help="NATS URL (default: the running platform's)")


async def run(directory: Path, args: argparse.Namespace) -> int:
    url = args.nats or Endpoints.load(directory).nats_url
    try:
        nc = await connect_nats(url, nats_options(directory))
    except Exception as exc:
        print(f"revoke: NATS at {url} is unreachable: {exc.__class__.__name__}")
        return 1
    revocations: Revocations | None = None
    try:
        revocations = await Revocations.open(nc.jetstream())
        before = await revocations.revoke(args.tenant, args.subject)
    except DomainError as exc:
        print(f"revoke: {exc}")
        return 1
    finally:
        if revocations is not None:
            await revocations.close()
        await nc.close()
    at = datetime.fromtimestamp(before, UTC).isoformat()
    print(f"revoked: tokens of {args.subject} ({args.tenant}) issued until {at} are refused")
    return 0
