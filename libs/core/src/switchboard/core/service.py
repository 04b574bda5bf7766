"""The lifecycle every service shares: start (tracing, the bus, the service's own parts, the gRPC
server with health and readiness), clean up after a failed start, and a bounded stop (stop
taking work, stop gRPC within the grace period, drain the bus, close what the handlers used).

A composition root subclasses `Service` and fills in only what is its own:

    @dataclass
    class FaxApp(Service):
        name: ClassVar[str] = "fax"
        settings: FaxSettings = ...

        async def _build(self, bus: Bus) -> Servicers: ...   # adapters, handlers, consumers

Its adapters given as fields (e.g. ``bus``) are used instead of the real ones. Readiness follows
the bus connection, and the service's own conditions (`not_ready` names those that do not hold
when the server starts; `set_ready` records each change), e.g. the router's "leader".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import grpc

from switchboard.core import grpc as sb_grpc
from switchboard.core import telemetry
from switchboard.core.bus import Bus
from switchboard.core.health import Readiness
from switchboard.core.revocation import Revocations
from switchboard.core.settings import ServiceSettings

# What `start_server` serves: (add_to_server, servicer, full service name).
Servicers = Iterable[tuple[Callable[[Any, grpc.aio.Server], None], Any, str]]


@dataclass
class Service:
    """A service's parts that every service has, and the order they start and stop in.

    start: tracing, `_load()`, the bus (unless given), `_build(bus)` (which returns the gRPC
    servicers), the gRPC server (health follows the bus connection and the service's own
    conditions), `_serve()`, the bus's consumers, `_started()`. A failed start stops what had
    started, then raises.
    stop: `_stop_taking()`, the gRPC server (calls in flight get the grace period), `_flush()`,
    the bus drained (handlers in flight finish), `_close()`. Safe to call twice.
    """

    name: ClassVar[str] = "service"
    # Readiness conditions of the service's own that do not hold yet when gRPC starts serving
    # (condition -> why); the service records them with `set_ready` once they do.
    not_ready: ClassVar[Mapping[str, str]] = {}

    settings: ServiceSettings
    bus: Bus | None = None
    grpc_server: grpc.aio.Server | None = None
    readiness: Readiness | None = None
    grpc_port: int = 0
    # The plaintext health-only server for probes (GRPC_HEALTH_PORT), when there is one.
    health_server: grpc.aio.Server | None = None
    health_port: int = 0
    # The revocation list the service's token checks follow (opened on the bus when not given).
    revocations: Revocations | None = None

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        s = self.settings
        telemetry.setup_tracing(self.name, s.otel_exporter_otlp_endpoint)
        await self._load()
        if self.bus is None:
            self.bus = await Bus.connect(
                s.nats_url, source=self.name, replicas=s.nats_stream_replicas, **s.nats_options()
            )
        if self.revocations is None and isinstance(self.bus, Bus):
            self.revocations = await Revocations.open(self.bus.js, s.nats_stream_replicas)
        servicers = await self._build(self.bus)
        self.grpc_server, self.grpc_port, self.readiness = await sb_grpc.start_service_server(
            s,
            servicers,
            bus=self.bus,
            not_ready=dict(self.not_ready),
            revocations=self.revocations,
            tenant_gate=self._tenant_gate(),
        )
        if s.grpc_health_port:
            assert self.readiness is not None
            self.health_server, self.health_port = await sb_grpc.start_health_server(
                self.readiness, s.grpc_host, s.grpc_health_port
            )
        await self._serve()
        await self.bus.start()
        await self._started()

    async def stop(self) -> None:
        """Stop taking work, stop gRPC within the grace period, then drain the bus."""
        await self._stop_taking()
        server, self.grpc_server = self.grpc_server, None
        if server is not None:
            await sb_grpc.stop_server(server, self.settings.shutdown_grace_seconds)
        health, self.health_server = self.health_server, None
        if health is not None:
            await sb_grpc.stop_server(health, 0)
        if self.bus is not None:
            await self._flush()
        revocations, self.revocations = self.revocations, None
        if revocations is not None:
            await revocations.close()
        bus, self.bus = self.bus, None
        if bus is not None:
            await bus.drain()
        await self._close()

    async def set_ready(self, condition: str, ok: bool, why: str = "") -> None:
        """Record whether one of the service's own readiness conditions holds (before gRPC
        serves there is no one to tell)."""
        if self.readiness is not None:
            await self.readiness.set(condition, ok, why)

    # ---- what a service fills in ---------------------------------------------------------------

    async def _load(self) -> None:
        """Read what the service cannot start without (its configuration), before connecting."""

    async def _build(self, bus: Bus) -> Servicers:
        """Build the service's adapters and handlers on `bus` and subscribe its consumers;
        return the gRPC servicers it offers (none: health and reflection only)."""
        return []

    def _tenant_gate(self) -> sb_grpc.TenantGate | None:
        """Why the service refuses a tenant's calls (FAILED_PRECONDITION), if it serves only
        some tenants (a router group); None: it serves every tenant its tokens name."""
        return None

    async def _serve(self) -> None:
        """Start what takes work in once gRPC serves, before the bus's consumers start."""

    async def _started(self) -> None:
        """Start what needs the consumers running."""

    async def _stop_taking(self) -> None:
        """Stop taking work in (listeners, watchers, clients), before gRPC stops."""

    async def _flush(self) -> None:
        """Publish what the last requests left to publish, while the bus is still there."""

    async def _close(self) -> None:
        """Close what the handlers used, once the bus has drained."""
