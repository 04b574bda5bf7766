"""The router's composition root: the only place its adapters are built.

Start-up: load the configuration, recover the engine from JetStream (snapshot + journal), start
gRPC, then lead (lease acquired) or follow as a hot standby. Losing the lease (or being fenced
out of the journal) steps the replica down: it reloads from JetStream and follows again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable
from dataclasses import dataclass, field, replace
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer

from switchboard.core import grpc as sb_grpc
from switchboard.core import telemetry
from switchboard.core.bus import Bus
from switchboard.router.domain import config as cfg
from switchboard.router.entrypoints import nats_consumer
from switchboard.router.entrypoints.grpc_server import RouterAdminServicer, RouterServicer
from switchboard.router.handlers import Router, keep_lease, lead_or_follow, new_engine, recover
from switchboard.router.journal import Journal, Lease, Snapshots
from switchboard.router.notifier import RoutingNotifier
from switchboard.router.settings import RouterSettings
from switchboard.v1 import router_pb2, router_pb2_grpc

logger = logging.getLogger(__name__)

SERVICE = router_pb2.DESCRIPTOR.services_by_name["RouterService"].full_name
ADMIN = router_pb2.DESCRIPTOR.services_by_name["RouterAdminService"].full_name


def load_config(settings: RouterSettings) -> cfg.RouterConfig:
    config = (
        cfg.load_file(Path(settings.config_file))
        if settings.config_file
        else cfg.embedded_default()
    )
    if settings.accept_timeout_seconds > 0:
        t = settings.accept_timeout_seconds

        def override(tc: cfg.TenantConfig) -> cfg.TenantConfig:
            return replace(tc, accept_timeout={ch: t for ch in cfg.CHANNELS.values()})

        config = cfg.RouterConfig(
            {name: override(tc) for name, tc in config.tenants.items()},
            override(config.defaults or cfg.fallback_tenant("")),
        )
    return config


@dataclass
class RouterApp:
    settings: RouterSettings
    bus: Bus | None = None
    router: Router | None = None
    server: grpc.aio.Server | None = None
    port: int = 0
    replica: str = ""
    config: cfg.RouterConfig | None = None
    consumer_bus: Bus | None = None
    _health: HealthServicer | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _replica_task: asyncio.Task[None] | None = None
    _journal: Journal | None = None
    _snapshots: Snapshots | None = None
    _lease: Lease | None = None
    led: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def is_leader(self) -> bool:
        return self.router is not None and self.router.leader

    async def start(self) -> None:
        s = self.settings
        telemetry.setup_tracing("router", s.otel_exporter_otlp_endpoint)
        self.config = load_config(s)
        self.replica = s.replica_id or f"{socket.gethostname()}-{os.getpid()}-{id(self):x}"
        self.bus = await Bus.connect(s.nats_url, source="router")
        await self.bus.ensure_streams()
        js = self.bus.js
        self._journal = Journal(js, s.group)
        await self._journal.ensure()
        self._snapshots = Snapshots(js, s.group)
        await self._snapshots.ensure()
        self._lease = Lease(js, s.group, self.replica, s.lease_ttl_seconds)
        await self._lease.ensure()
        self.router = Router(new_engine(self.config), RoutingNotifier(self.bus), self._journal)
        self.router.leader = False
        await self._load()
        self.server, self.port, self._health = await sb_grpc.start_server(
            [
                (
                    router_pb2_grpc.add_RouterServiceServicer_to_server,
                    RouterServicer(self.router),
                    SERVICE,
                ),
                (
                    router_pb2_grpc.add_RouterAdminServiceServicer_to_server,
                    RouterAdminServicer(self.router),
                    ADMIN,
                ),
            ],
            s.grpc_host,
            s.grpc_port,
            s.auth_secret,
            s.known_tenants,
            bus=self.bus,
        )
        await self._set_serving(False)
        # A replica restarted under the same id (a pod, `switchboard run`) takes its lease back
        # at once; otherwise it leads as soon as the lease is free.
        if await self._lease.holder() == self.replica:
            with contextlib.suppress(Exception):
                await self._lease.kv.delete(self._lease.key)
        self._replica_task = asyncio.create_task(self._replica())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.led.wait(), 2.0)  # a lone replica is ready at once
        logger.info(
            "router gRPC on %s:%d (%s)",
            s.grpc_host,
            self.port,
            "leader" if self.is_leader else "standby",
        )

    async def _load(self) -> None:
        assert self.router and self._journal and self._snapshots and self.config
        engine, seq = await recover(self._journal, self._snapshots, self.config)
        self.router.engine = engine
        self.router.applied_seq = seq
        async for entry in self._journal.read(seq):
            self.router.apply_entry(entry)
        logger.info("router state recovered to journal sequence %d", self.router.applied_seq)

    async def _replica(self) -> None:
        assert self.router and self._journal and self._lease
        while True:
            await lead_or_follow(self.router, self._journal, self._lease, self._became_leader)
            lost = asyncio.Event()
            self.router.on_fenced = lost.set
            self._tasks.append(asyncio.create_task(keep_lease(self.router, self._lease, lost.set)))
            await lost.wait()
            await self._step_down()

    async def _became_leader(self) -> None:
        assert self.router and self.config
        router = self.router
        await router.run("disconnect_all")
        await router.run("apply_file_config", self.config)
        await router.republish_recent()
        self.consumer_bus = await Bus.connect(self.settings.nats_url, source="router")
        nats_consumer.subscribe(self.consumer_bus, router, self.settings.consumer_name)
        await self.consumer_bus.start()
        self._tasks.append(asyncio.create_task(router.tick_forever()))
        self._tasks.append(asyncio.create_task(self._snapshot_loop()))
        await self._set_serving(True)
        self.led.set()
        logger.info("router replica %s leads group %s", self.replica, self.settings.group)

    async def _step_down(self) -> None:
        assert self.router
        logger.warning("router replica %s steps down", self.replica)
        self.router.leader = False
        self.led.clear()
        await self._set_serving(False)
        await self._stop_leading()
        await self._load()

    async def _stop_leading(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            await _bounded(task, 5, "router task")
        self._tasks.clear()
        if self.router:
            self.router.close_streams()
        if self.consumer_bus:
            await self.consumer_bus.drain()
            self.consumer_bus = None

    async def _snapshot_loop(self) -> None:
        assert self.router and self._snapshots
        while True:
            await asyncio.sleep(self.settings.snapshot_interval_seconds)
            if self.router.entries_since_snapshot:
                try:
                    seq = await self.router.snapshot(self._snapshots)
                    logger.info("router snapshot written at journal sequence %d", seq)
                except Exception:
                    logger.exception("router snapshot failed; the journal still has everything")

    async def _set_serving(self, serving: bool) -> None:
        if self._health is None:
            return
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in (SERVICE, ADMIN):
            await self._health.set(name, status)

    async def stop(self) -> None:
        """Drain and stop; every step is bounded, so a stuck one cannot hold the process."""
        if self._replica_task:
            self._replica_task.cancel()
            await _bounded(self._replica_task, 5, "replica task")
        was_leader = self.is_leader
        if self.router:
            self.router.leader = False
        await _bounded(self._stop_leading(), 20, "leading tasks and consumer")
        if self.server:
            await sb_grpc.stop_server(self.server, self.settings.shutdown_grace_seconds)
        if was_leader and self._lease:
            # The standby takes over now, not at the lease's expiry.
            await _bounded(self._lease.release(), 5, "lease release")
        if self.bus:
            await _bounded(self.bus.drain(), 20, "NATS drain")

    async def kill(self) -> None:
        """Stop without any goodbye (no lease release, no drain): a crash, for tests."""
        if self._replica_task:
            self._replica_task.cancel()
        for task in self._tasks:
            task.cancel()
        if self.server:
            await self.server.stop(0)
        for bus in (self.consumer_bus, self.bus):
            if bus is not None:
                with contextlib.suppress(Exception):
                    await bus.nc.close()


async def _bounded(step: Awaitable[object], seconds: float, what: str) -> None:
    try:
        await asyncio.wait_for(asyncio.shield(asyncio.ensure_future(step)), seconds)
    except TimeoutError:
        logger.warning("router stop: %s did not finish in %.0fs; going on", what, seconds)
    except (asyncio.CancelledError, Exception):
        pass


def bootstrap(settings: RouterSettings | None = None) -> RouterApp:
    return RouterApp(settings or RouterSettings())
