"""The service lifecycle against a real nats-server and gRPC: the order of start and stop,
readiness, and the clean-up of a failed start."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from switchboard.core import grpc as sb_grpc
from switchboard.core.bus import Bus
from switchboard.core.embedded_nats import free_port
from switchboard.core.service import Service, Servicers
from switchboard.core.settings import ServiceSettings
from switchboard.testing.tls import grpc_tls


@dataclass
class Recorder(Service):
    name: ClassVar[str] = "recorder"
    calls: list[str] = field(default_factory=list)
    fail_in: str = ""

    def _step(self, name: str) -> None:
        self.calls.append(name)
        if name == self.fail_in:
            raise RuntimeError(f"{name} failed")

    async def _load(self) -> None:
        self._step("load")

    async def _build(self, bus: Bus) -> Servicers:
        assert bus is self.bus and self.grpc_server is None
        self._step("build")
        return []

    async def _serve(self) -> None:
        assert self.grpc_server is not None and self.readiness is not None
        self._step("serve")

    async def _started(self) -> None:
        self._step("started")

    async def _stop_taking(self) -> None:
        self.calls.append(f"stop_taking (grpc {'up' if self.grpc_server else 'down'})")

    async def _close(self) -> None:
        self.calls.append(f"close (bus {'up' if self.bus else 'down'})")


def settings(nats_url: str) -> ServiceSettings:
    return ServiceSettings(NATS_URL=nats_url, GRPC_PORT=0, SHUTDOWN_GRACE_SECONDS=0.5)


async def test_start_then_stop_in_order(nats_url: str) -> None:
    app = Recorder(settings(nats_url))
    await app.start()
    assert app.calls == ["load", "build", "serve", "started"]
    assert app.bus is not None and app.bus.nc.is_connected
    assert await sb_grpc.check_health(f"127.0.0.1:{app.grpc_port}") == "SERVING"
    assert app.readiness is not None and app.readiness.serving
    await app.stop()
    assert app.calls[4:] == ["stop_taking (grpc up)", "close (bus down)"]
    assert app.bus is None and app.grpc_server is None
    assert (await sb_grpc.check_health(f"127.0.0.1:{app.grpc_port}")).startswith("UNREACHABLE")
    await app.stop()  # twice is harmless
    assert app.calls[6:] == ["stop_taking (grpc down)", "close (bus down)"]


async def test_readiness_follows_the_service_conditions(nats_url: str) -> None:
    app = Recorder(settings(nats_url))
    await app.start()
    try:
        assert app.readiness is not None
        target = f"127.0.0.1:{app.grpc_port}"
        await app.readiness.set("mailboxes", False, "stalled")
        assert await sb_grpc.check_health(target) == "NOT_SERVING"
        await app.readiness.set("mailboxes", True)
        assert await sb_grpc.check_health(target) == "SERVING"
    finally:
        await app.stop()


@pytest.mark.parametrize("step", ["load", "build", "serve", "started"])
async def test_a_failed_start_stops_what_had_started(nats_url: str, step: str) -> None:
    app = Recorder(settings(nats_url), fail_in=step)
    with pytest.raises(RuntimeError, match=f"{step} failed"):
        await app.start()
    assert app.calls[-2:] == [
        f"stop_taking (grpc {'up' if step in ('serve', 'started') else 'down'})",
        "close (bus down)",
    ]
    assert app.bus is None and app.grpc_server is None


async def test_a_given_bus_is_used_and_drained(nats_url: str) -> None:
    bus = await Bus.connect(nats_url, source="given")
    app = Recorder(settings(nats_url), bus=bus)
    await app.start()
    assert app.bus is bus
    await app.stop()
    assert bus.nc.is_closed


async def test_a_tls_service_answers_plaintext_probes_on_its_health_port(
    nats_url: str, tmp_path: Path
) -> None:
    """Kubernetes' gRPC probes speak no TLS: GRPC_HEALTH_PORT serves them health alone."""
    server_tls, client_tls = grpc_tls(tmp_path)
    health_port = free_port()
    app = Recorder(
        ServiceSettings(
            NATS_URL=nats_url,
            GRPC_PORT=0,
            GRPC_HEALTH_PORT=health_port,
            GRPC_TLS_CERT_FILE=server_tls.cert_file,
            GRPC_TLS_KEY_FILE=server_tls.key_file,
            GRPC_TLS_CA_FILE=server_tls.ca_file,
            GRPC_TLS_CLIENT_AUTH="require",
            SHUTDOWN_GRACE_SECONDS=0.5,
        )
    )
    await app.start()
    probe = f"127.0.0.1:{health_port}"
    try:
        assert app.health_port == health_port
        assert await sb_grpc.check_health(probe) == "SERVING"
        assert (await sb_grpc.check_health(f"127.0.0.1:{app.grpc_port}")).startswith("UNREACHABLE")
        assert await sb_grpc.check_health(f"127.0.0.1:{app.grpc_port}", tls=client_tls) == "SERVING"
        assert app.readiness is not None
        await app.readiness.set("leader", False, "standby")
        assert await sb_grpc.check_health(probe) == "NOT_SERVING"
        # nothing but health is served there
        async with sb_grpc.channel(probe) as ch:
            stub = reflection_pb2_grpc.ServerReflectionStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                async for _ in stub.ServerReflectionInfo(
                    iter([reflection_pb2.ServerReflectionRequest(list_services="")])
                ):
                    pass
            assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        await app.stop()
    assert (await sb_grpc.check_health(probe)).startswith("UNREACHABLE")
