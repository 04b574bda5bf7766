"""The router's composition root: the only place its adapters are built, on the lifecycle every
service shares (`switchboard.core.service.Service`).

Start-up: load the configuration, recover the engine from JetStream (snapshot + journal), start
gRPC, then lead (lease acquired) or follow as a hot standby. Losing the lease, being fenced out
of the journal, a journal write or publish whose outcome is unknown, or a consumer that stopped
moving steps the replica down: it re-reads the journal from JetStream, then leads again if the
lease is still its own, or follows.

Readiness (gRPC health) is SERVING only while this replica leads, its NATS connection is up and
its consumer moves: a standby is never SERVING, whatever NATS does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import ClassVar

from switchboard.core import events, tasks
from switchboard.core.bus import Bus, ConsumerOptions
from switchboard.core.errors import Unavailable
from switchboard.core.service import Service, Servicers
from switchboard.router.domain import config as cfg
from switchboard.router.entrypoints import nats_consumer
from switchboard.router.entrypoints.grpc_server import RouterAdminServicer, RouterServicer
from switchboard.router.handlers import (
    Router,
    collect_young_only,
    lead_or_follow,
    new_engine,
    recover,
)
from switchboard.router.journal import Journal, JournalTrimmed, Lease, Snapshots
from switchboard.router.notifier import RoutingNotifier
from switchboard.router.settings import RouterSettings
from switchboard.v1 import events_pb2, router_pb2, router_pb2_grpc

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
class RouterApp(Service):
    """The router; adapters given here are used instead of the real ones: `bus`, `journal`,
    `snapshots`, `lease`, the wall `clock` its engine decides by, and `connect_consumer` (a new
    bus connection for each term's consumer)."""

    name: ClassVar[str] = "router"
    not_ready: ClassVar[Mapping[str, str]] = {
        "leader": "standby: another replica leads, or none yet"
    }
    settings: RouterSettings
    journal: Journal | None = None
    snapshots: Snapshots | None = None
    lease: Lease | None = None
    clock: Callable[[], float] = time.time
    connect_consumer: Callable[[], Awaitable[Bus]] | None = None
    router: Router | None = None
    replica: str = ""
    config: cfg.RouterConfig | None = None
    consumer_bus: Bus | None = None
    led: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _replica_task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        return self.grpc_port

    @property
    def is_leader(self) -> bool:
        return self.router is not None and self.router.leader

    async def _load(self) -> None:
        s = self.settings
        self.config = load_config(s)
        self.replica = s.replica_id or f"{socket.gethostname()}-{os.getpid()}-{id(self):x}"

    async def _build(self, bus: Bus) -> Servicers:
        s = self.settings
        await bus.ensure_streams()
        replicas = s.nats_stream_replicas
        if self.journal is None:
            self.journal = Journal(
                bus.js,
                s.group,
                bus.acks,
                bus.nc,
                write_timeout=s.journal_write_timeout_seconds,
                replicas=replicas,
            )
            await self.journal.ensure()
        if self.snapshots is None:
            self.snapshots = Snapshots(bus.js, s.group, replicas)
            await self.snapshots.ensure()
        if self.lease is None:
            self.lease = Lease(bus.js, s.group, self.replica, s.lease_ttl_seconds, replicas)
            await self.lease.ensure()
        self.router = Router(new_engine(), RoutingNotifier(bus), self.journal, self.clock)
        self.router.leader = False
        await self._recover()
        # The recovered engine (up to millions of waiting contacts) is long-lived: out of the
        # collector's generations, it is never traversed again by a collection on the offer
        # path; nor is what later reaches the oldest generation (frozen at each snapshot).
        collect_young_only()
        return [
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
        ]

    def _tenant_gate(self) -> Callable[[str], str | None] | None:
        """A group of a partitioned map (ROUTER_GROUPS) refuses other groups' tenants, naming
        the group that serves each (FAILED_PRECONDITION)."""
        s = self.settings
        groups = s.router_map()
        if not groups.partitioned:
            return None
        return partial(groups.refusal, group=s.group)

    async def _serve(self) -> None:
        """Lead or follow (readiness, "leader", is SERVING only while this replica leads)."""
        self._replica_task = asyncio.create_task(self._replica())

    async def _started(self) -> None:
        s = self.settings
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.led.wait(), 2.0)  # a lone replica is ready at once
        logger.info(
            "router gRPC on %s:%d (%s)",
            s.grpc_host,
            self.grpc_port,
            "leader" if self.is_leader else "standby",
        )

    async def _recover(self) -> None:
        """The engine as the journal has it: the newest snapshot plus every entry after it."""
        assert self.router and self.journal and self.snapshots
        for attempt in range(3):
            engine, seq = await recover(self.journal, self.snapshots)
            self.router.reset(engine, seq)
            try:
                # Closed at once when a deadline cancels the read (its subscription with it).
                async with contextlib.aclosing(self.journal.read(seq)) as entries:
                    async for entry in entries:
                        self.router.apply_entry(entry)
                break
            except JournalTrimmed:  # a newer snapshot was taken meanwhile: load that one
                if attempt == 2:
                    raise
        logger.info("router state recovered to journal sequence %d", self.router.applied_seq)

    async def _replica(self) -> None:
        """Lead or follow, for as long as the process runs; each term ends with a step-down."""
        assert self.router and self.journal and self.lease
        while True:
            lost = asyncio.Event()

            def doubted(why: str, lost: asyncio.Event = lost) -> None:
                lost.set()

            self.router.on_doubt = doubted
            try:
                await lead_or_follow(
                    self.router,
                    self.journal,
                    self.lease,
                    self._became_leader,
                    keeping=self._tasks.append,
                    snapshots=self.snapshots,
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("router replica could not take the lead: %r", exc)
                self.router.step_down(f"taking the lead failed: {exc!r}", cause="start")
            if self.router.leader:
                self._tasks.append(asyncio.create_task(self._watchdog()))
                await lost.wait()
            await self._step_down()

    async def _became_leader(self) -> None:
        assert self.router and self.config and self.lease
        router = self.router
        # A new term: offer ids carry it, so no id repeats across leaders or restarts.
        await router.run("begin_term", self.lease.revision)
        await router.run("disconnect_all")
        await router.run("apply_file_config", self.config)
        await router.republish_recent()
        self.consumer_bus = await self._consumer_connection()
        nats_consumer.subscribe(
            self.consumer_bus,
            router,
            self.settings.durable,
            ConsumerOptions(
                ack_wait=self.settings.consumer_ack_wait_seconds,
                concurrent=True,
                batch=256,
                tenants=self.settings.served_tenants,
            ),
        )
        await self.consumer_bus.start()
        self._tasks.append(asyncio.create_task(router.tick_forever()))
        self._tasks.append(asyncio.create_task(self._snapshot_loop()))
        if not router.leader:
            raise Unavailable("stepped down while taking the lead")
        await self.set_ready("leader", True)
        self.led.set()
        served = self.settings.served_tenants
        logger.info(
            "router replica %s leads group %s (tenants: %s)",
            self.replica,
            self.settings.group,
            ", ".join(sorted(served)) if served is not None else "all",
        )

    async def _step_down(self) -> None:
        """Stop leading, then re-read the journal until it can be read (NATS may be down)."""
        assert self.router
        self.router.leader = False
        self.led.clear()
        await self.set_ready("leader", False, "standby: re-reading the journal")
        await self._stop_leading()
        # Each attempt has a deadline: 2 s for the first three, then doubling. A request sent
        # while a JetStream stream has no leader (a cluster node just died) gets no answer at
        # all, and waiting out the client's 5 s request timeout would delay the first attempt
        # that can succeed once a new leader is elected (a few seconds); a long journal still
        # gets its time.
        deadline, delay, attempts = 2.0, 0.1, 0
        while True:
            attempts += 1
            try:
                await asyncio.wait_for(self._recover(), deadline)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning(
                    "router cannot re-read its journal yet (%.0f s attempt): %r", deadline, exc
                )
                await asyncio.sleep(delay)
                if attempts >= 3:
                    deadline = min(deadline * 2, 60.0)
                delay = min(delay * 2, 1.0)

    async def _stop_leading(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            await _bounded(task, 5, "router task")
        self._tasks.clear()
        if self.router:
            self.router.close_streams()
        if self.consumer_bus:
            bus, self.consumer_bus = self.consumer_bus, None
            await _bounded(bus.drain(), 15, "consumer drain")

    async def _watchdog(self) -> None:
        """Step down when the consumer has stopped moving while events wait for it (a leader
        that cannot route must hand over, not sit on the lease): undelivered events whose
        delivery has not advanced for `watchdog_seconds`, or delivered ones whose acks have not
        advanced for the ack wait (after which they are redelivered) plus `watchdog_seconds`."""
        assert self.router and self.bus
        limit = self.settings.watchdog_seconds
        ack_limit = self.settings.consumer_ack_wait_seconds + limit
        interval = max(0.2, min(1.0, limit / 5))
        stream = events.spec_for(events_pb2.ContactCreated).stream
        durable = self.settings.durable
        now = answered_at = time.monotonic()
        delivered, delivered_at = -1, now
        floor, floor_at = -1, now
        while self.router.leader:
            await asyncio.sleep(interval)
            now = time.monotonic()
            try:
                info = await asyncio.wait_for(self.bus.js.consumer_info(stream, durable), 2)
            except Exception as exc:
                if now - answered_at > limit:
                    self.router.step_down(
                        f"consumer {durable} unreadable for {limit:.0f}s: {exc!r}",
                        cause="watchdog",
                    )
                    return
                continue
            answered_at = now
            if not info.num_pending or info.delivered.stream_seq != delivered:
                delivered, delivered_at = info.delivered.stream_seq or 0, now
            if not info.num_ack_pending or info.ack_floor.stream_seq != floor:
                floor, floor_at = info.ack_floor.stream_seq or 0, now
            if now - delivered_at > limit or now - floor_at > ack_limit:
                self.router.step_down(
                    f"consumer {durable} has stopped moving ({info.num_pending} undelivered, "
                    f"{info.num_ack_pending} unacknowledged)",
                    cause="watchdog",
                )
                return

    async def _snapshot_loop(self) -> None:
        """A snapshot every `snapshot_interval_seconds`, or sooner once `snapshot_entries` inputs
        were journaled: recovery and a step-down replay at most that many entries."""
        assert self.router and self.snapshots
        s = self.settings
        last = time.monotonic()
        while True:
            await asyncio.sleep(min(1.0, s.snapshot_interval_seconds))
            entries = self.router.entries_since_snapshot
            due = time.monotonic() - last >= s.snapshot_interval_seconds
            if not entries or not (due or entries >= s.snapshot_entries):
                continue
            last = time.monotonic()
            try:
                seq = await self.router.snapshot(self.snapshots)
                if seq is not None:
                    logger.info("router snapshot written at journal sequence %d", seq)
            except Exception:
                logger.exception("router snapshot failed; the journal still has everything")

    async def _consumer_connection(self) -> Bus:
        """A connection of its own for each term's consumer: draining it at a step-down leaves
        the journal's and the lease's connection alone."""
        if self.connect_consumer is not None:
            return await self.connect_consumer()
        s = self.settings
        return await Bus.connect(
            s.nats_url, source=self.name, replicas=s.nats_stream_replicas, **s.nats_options()
        )

    async def _stop_taking(self) -> None:
        """Hand over; every step is bounded, so a stuck one cannot hold the process.
        NOT_SERVING first (this replica decides nothing more), then the decisions in flight are
        settled and the lease released, so the standby leads at once, not at the lease's
        expiry; draining the consumer and closing streams come after (then gRPC stops and the
        bus drains)."""
        was_leader = self.is_leader
        if self.router:
            self.router.leader = False
        self.led.clear()
        await self.set_ready("leader", False, "stopping")
        task, self._replica_task = self._replica_task, None
        if task:
            task.cancel()
            await _bounded(task, 5, "replica task")
        if was_leader and self.router and self.lease:
            await _bounded(self.router.settled(), 5, "decisions in flight")
            await _bounded(self.lease.release(), 5, "lease release")
        await _bounded(self._stop_leading(), 20, "leading tasks and consumer")

    async def kill(self) -> None:
        """Stop without any goodbye (no lease release, no drain): a crash, for tests."""
        if self._replica_task:
            self._replica_task.cancel()
        for task in self._tasks:
            task.cancel()
        if self.grpc_server:
            await self.grpc_server.stop(0)
        for bus in (self.consumer_bus, self.bus):
            if bus is not None:
                with contextlib.suppress(Exception):
                    await bus.nc.close()


async def _bounded(step: Awaitable[object], seconds: float, what: str) -> None:
    """Wait for `step` for at most `seconds`, whatever it ends with; a cancellation of the task
    waiting (the service stopping while a replica steps down) goes on up: swallowed here, that
    replica went on to lead again while its process stopped, and the stop waited it out."""
    try:
        await asyncio.wait_for(asyncio.shield(asyncio.ensure_future(step)), seconds)
    except TimeoutError:
        logger.warning("router stop: %s did not finish in %.0fs; going on", what, seconds)
    except asyncio.CancelledError:
        if tasks.cancelling():
            raise
    except Exception:
        pass


def bootstrap(
    settings: RouterSettings | None = None,
    *,
    bus: Bus | None = None,
    journal: Journal | None = None,
    snapshots: Snapshots | None = None,
    lease: Lease | None = None,
    clock: Callable[[], float] = time.time,
    connect_consumer: Callable[[], Awaitable[Bus]] | None = None,
) -> RouterApp:
    """The router, with the real adapters for those not given."""
    return RouterApp(
        settings or RouterSettings(),
        bus=bus,
        journal=journal,
        snapshots=snapshots,
        lease=lease,
        clock=clock,
        connect_consumer=connect_consumer,
    )
