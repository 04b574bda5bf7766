"""gRPC over TLS: a server with a certificate answers only TLS clients that trust its CA; with
client auth required, only clients presenting a certificate the CA signed; reflection can
require a token while health stays open."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from switchboard.core import auth
from switchboard.core import grpc as sb_grpc
from switchboard.core.certificates import LocalCA
from switchboard.core.service_client import ServiceClient
from switchboard.core.settings import ServiceSettings
from switchboard.core.tls import GrpcTls
from switchboard.testing.tls import grpc_tls

SECRET = "tls-test-secret"


async def serve(tls: GrpcTls | None, reflection_requires_token: bool = False) -> tuple[Any, str]:
    server, port, _ = await sb_grpc.start_server(
        [], "127.0.0.1", 0, SECRET, tls=tls, reflection_requires_token=reflection_requires_token
    )
    return server, f"127.0.0.1:{port}"


@pytest.fixture
async def mtls(tmp_path: Path) -> AsyncIterator[tuple[str, GrpcTls]]:
    """A server requiring client certificates, and a client's TLS with one."""
    server_tls, client_tls = grpc_tls(tmp_path, client_auth="require")
    server, target = await serve(server_tls)
    yield target, client_tls
    await server.stop(0)


async def test_a_client_trusting_the_ca_gets_an_answer(mtls: tuple[str, GrpcTls]) -> None:
    target, client = mtls
    assert await sb_grpc.check_health(target, tls=client) == "SERVING"


async def test_a_plaintext_client_is_refused(mtls: tuple[str, GrpcTls]) -> None:
    target, _ = mtls
    assert (await sb_grpc.check_health(target)).startswith("UNREACHABLE")


async def test_a_client_without_a_certificate_is_refused_when_client_auth_is_required(
    mtls: tuple[str, GrpcTls],
) -> None:
    target, client = mtls
    anonymous = GrpcTls(ca_file=client.ca_file)
    assert (await sb_grpc.check_health(target, tls=anonymous)).startswith("UNREACHABLE")


async def test_a_client_with_a_certificate_of_another_ca_is_refused(
    mtls: tuple[str, GrpcTls], tmp_path: Path
) -> None:
    target, client = mtls
    stranger = LocalCA(tmp_path / "stranger").issue("client", [])
    forged = GrpcTls(str(stranger.cert_file), str(stranger.key_file), client.ca_file)
    assert (await sb_grpc.check_health(target, tls=forged)).startswith("UNREACHABLE")


async def test_a_client_not_trusting_the_servers_ca_is_refused(
    mtls: tuple[str, GrpcTls], tmp_path: Path
) -> None:
    target, client = mtls
    other_ca = LocalCA(tmp_path / "other")
    doubting = replace(client, ca_file=str(other_ca.cert_file))
    assert (await sb_grpc.check_health(target, tls=doubting)).startswith("UNREACHABLE")


async def test_optional_client_auth_admits_a_partner_with_only_a_token(tmp_path: Path) -> None:
    """Partners come with tokens over TLS, without client certificates."""
    server_tls, client_tls = grpc_tls(tmp_path, client_auth="optional")
    server, target = await serve(server_tls)
    try:
        partner = GrpcTls(ca_file=client_tls.ca_file)
        assert await sb_grpc.check_health(target, tls=partner) == "SERVING"
        assert await sb_grpc.check_health(target, tls=client_tls) == "SERVING"
        assert (await sb_grpc.check_health(target)).startswith("UNREACHABLE")
    finally:
        await server.stop(0)


async def test_service_client_calls_over_mutual_tls(mtls: tuple[str, GrpcTls]) -> None:
    target, client_tls = mtls
    client = ServiceClient(target, SECRET, "chat", health_pb2_grpc.HealthStub, tls=client_tls)
    try:
        resp = await client.stub("acme").Check(health_pb2.HealthCheckRequest())
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await client.close()


async def test_a_service_serves_tls_from_its_settings(tmp_path: Path) -> None:
    server_tls, client_tls = grpc_tls(tmp_path)
    settings = ServiceSettings(
        GRPC_TLS_CERT_FILE=server_tls.cert_file,
        GRPC_TLS_KEY_FILE=server_tls.key_file,
        GRPC_TLS_CA_FILE=server_tls.ca_file,
        GRPC_TLS_CLIENT_AUTH="require",
        SWITCHBOARD_AUTH_SECRET=SECRET,
    )
    assert settings.grpc_tls() == server_tls
    server, port, _ = await sb_grpc.start_service_server(settings, [])
    target = f"127.0.0.1:{port}"
    try:
        assert await sb_grpc.check_health(target, tls=client_tls) == "SERVING"
        assert (await sb_grpc.check_health(target)).startswith("UNREACHABLE")
    finally:
        await server.stop(0)


def test_client_auth_without_a_ca_is_a_mistake(tmp_path: Path) -> None:
    server_tls, _ = grpc_tls(tmp_path)
    with pytest.raises(ValueError, match="needs a CA"):
        replace(server_tls, ca_file="").server_credentials()


async def _list_services(target: str, token: str | None) -> list[str]:
    async with sb_grpc.channel(target, token) as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        async for resp in stub.ServerReflectionInfo(iter([request])):
            return [s.name for s in resp.list_services_response.service]
    return []


async def test_reflection_can_require_a_token_while_health_stays_open() -> None:
    server, target = await serve(None, reflection_requires_token=True)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _list_services(target, None)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        token = auth.mint(SECRET, "acme", "agent-1", ["agent"])
        assert "grpc.health.v1.Health" in await _list_services(target, token)
        assert await sb_grpc.check_health(target) == "SERVING"
    finally:
        await server.stop(0)


async def test_reflection_is_open_only_when_the_setting_allows_it() -> None:
    assert ServiceSettings().grpc_reflection_requires_token  # the default
    settings = ServiceSettings(GRPC_REFLECTION_REQUIRES_TOKEN="false")
    server, target = await serve(None, settings.grpc_reflection_requires_token)
    try:
        assert "grpc.health.v1.Health" in await _list_services(target, None)
    finally:
        await server.stop(0)
