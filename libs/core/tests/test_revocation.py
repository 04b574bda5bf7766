"""Revoked tokens, on real nats-server and gRPC: a revocation reaches every running replica of a
service and one started afterwards; the principal's other tokens issued until then are refused
everywhere, others' tokens and tokens minted afterwards are not."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import ClassVar

import grpc
import pytest

from switchboard.core import auth
from switchboard.core import grpc as sb_grpc
from switchboard.core.bus import Bus
from switchboard.core.errors import Unauthenticated
from switchboard.core.revocation import Revocations
from switchboard.core.service import Service, Servicers
from switchboard.core.settings import ServiceSettings
from switchboard.testing.waiting import eventually
from switchboard.v1 import case_pb2

SECRET = "revocation-secret"
GET_CASE = "/switchboard.v1.CaseService/GetCase"


def _add_get_case(_: object, server: grpc.aio.Server) -> None:
    async def get_case(request: case_pb2.GetCaseRequest, context: object) -> case_pb2.Case:
        return case_pb2.Case(case_id=request.case_id)

    handler = grpc.unary_unary_rpc_method_handler(
        get_case,
        request_deserializer=case_pb2.GetCaseRequest.FromString,
        response_serializer=case_pb2.Case.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("switchboard.v1.CaseService", {"GetCase": handler}),)
    )


@dataclass
class CaseReader(Service):
    """A service answering GetCase, to see what its interceptor lets through."""

    name: ClassVar[str] = "case-reader"

    async def _build(self, bus: Bus) -> Servicers:
        return [(_add_get_case, None, "switchboard.v1.CaseService")]


@pytest.fixture
async def replicas(nats_url: str) -> AsyncIterator[list[CaseReader]]:
    started: list[CaseReader] = []

    async def start() -> CaseReader:
        app = CaseReader(
            ServiceSettings(
                NATS_URL=nats_url,
                GRPC_PORT=0,
                SWITCHBOARD_AUTH_SECRET=SECRET,
                SHUTDOWN_GRACE_SECONDS=0.5,
            )
        )
        await app.start()
        started.append(app)
        return app

    for _ in range(2):
        await start()
    yield started
    for app in started:
        await app.stop()


async def code(app: CaseReader, token: str) -> tuple[grpc.StatusCode, str]:
    async with sb_grpc.channel(f"127.0.0.1:{app.grpc_port}", token) as ch:
        try:
            await ch.unary_unary(
                GET_CASE,
                request_serializer=case_pb2.GetCaseRequest.SerializeToString,
                response_deserializer=case_pb2.Case.FromString,
            )(case_pb2.GetCaseRequest(case_id="c-1"))
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


async def test_a_revoked_principal_is_refused_by_every_replica_and_others_are_not(
    replicas: list[CaseReader], nats_url: str
) -> None:
    leaked = auth.mint(SECRET, "acme", "agent-7", ["agent"])
    colleague = auth.mint(SECRET, "acme", "agent-8", ["agent"])
    other_tenant = auth.mint(SECRET, "globex", "agent-7", ["agent"])
    for app in replicas:
        assert (await code(app, leaked))[0] == grpc.StatusCode.OK

    bus = await Bus.connect(nats_url, source="operator")
    operator = await Revocations.open(bus.js)
    try:
        await operator.revoke("acme", "agent-7")
    finally:
        await operator.close()
        await bus.drain()

    async def refused_everywhere() -> bool:
        codes = [await code(app, leaked) for app in replicas]
        return all(c == grpc.StatusCode.UNAUTHENTICATED and "revoked" in d for c, d in codes)

    await eventually(refused_everywhere, "the revocation on every replica")
    for app in replicas:
        assert (await code(app, colleague))[0] == grpc.StatusCode.OK
        assert (await code(app, other_tenant))[0] == grpc.StatusCode.OK

    # A replica started after the revocation reads it before it serves.
    late = CaseReader(replicas[0].settings)
    await late.start()
    replicas.append(late)
    assert (await code(late, leaked))[0] == grpc.StatusCode.UNAUTHENTICATED

    # Signing in again (a token issued after the revoked second) works everywhere.
    await asyncio.sleep(max(0.0, int(time.time()) + 1.05 - time.time()))
    fresh = auth.mint(SECRET, "acme", "agent-7", ["agent"])
    for app in replicas:
        assert (await code(app, fresh))[0] == grpc.StatusCode.OK


def test_a_token_from_before_issue_times_counts_as_issued_at_zero() -> None:
    revocations = Revocations()
    revocations._before["acme." + b"agent-7".hex()] = 100
    old = auth.Principal("acme", "agent-7", frozenset({"agent"}))  # no issued_at
    with pytest.raises(Unauthenticated, match="revoked"):
        revocations.check(old)
    revocations.check(auth.Principal("acme", "agent-7", frozenset({"agent"}), issued_at=101))
