"""`switchboard customer erase`: the right to erasure. The case service destroys the customer's
data keys (EraseCustomer, an admin's RPC), so its personal data in the case store, backups
included, can no longer be read; the audit chains still verify (`switchboard case verify`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import grpc

from switchboard.cli.commands import operator_token
from switchboard.cli.endpoints import Endpoints
from switchboard.core import grpc as sb_grpc
from switchboard.v1 import case_pb2, case_pb2_grpc


def add_parser(sub: Any) -> None:
    c = sub.add_parser("customer", help="a customer's personal data: erase it")
    actions = c.add_subparsers(dest="customer_command", required=True)
    e = actions.add_parser(
        "erase",
        help="destroy a customer's data keys: its data in the case store becomes unreadable",
    )
    e.add_argument("--tenant", required=True)
    e.add_argument("--customer-id", required=True)


async def run(directory: Path, args: argparse.Namespace) -> int:
    target = Endpoints.load(directory).grpc["case"]
    async with sb_grpc.channel(target, operator_token(directory, args.tenant)) as ch:
        try:
            resp = await case_pb2_grpc.CaseServiceStub(ch).EraseCustomer(
                case_pb2.EraseCustomerRequest(customer_id=args.customer_id)
            )
        except grpc.aio.AioRpcError as exc:
            print(f"case: {exc.code().name}: {exc.details()}")
            return 1
    print(
        f"erased customer {resp.customer_id} ({args.tenant}): "
        f"{resp.keys_destroyed} data keys destroyed"
    )
    return 0
