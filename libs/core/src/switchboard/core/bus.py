"""The event bus on NATS JetStream.

- Streams are declared from the registry in ``switchboard.core.events``.
- Every event is published with ``Nats-Msg-Id`` = its event id (JetStream de-duplicates a
  re-publish within the stream's duplicate window) and the W3C ``traceparent`` header.
- Consumers are durable pull consumers (batch fetch, explicit ack, redelivery with bounded
  back-off). An event that is not ready (Retry), whose replica cannot serve it (Unavailable) or
  whose handler crashed is redelivered for as long as ``RetryPolicy`` derives from the ack wait;
  one that is invalid or cannot be decoded is given up on at once. Nothing is dropped silently:
  an event given up on is parked in the DEADLETTER stream with its reason, and only then
  terminated (``switchboard dlq`` lists and replays it). Handlers must be idempotent: delivery
  is at least once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import nats
from google.protobuf.message import DecodeError, Message
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import NotFoundError
from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry.trace import INVALID_SPAN, SpanKind, Status, StatusCode

from switchboard.core import deadletter, events, metrics, telemetry
from switchboard.core.acks import AckPublisher
from switchboard.core.errors import DomainError, Retry, RetryUntouched, Unavailable
from switchboard.core.retry import RetryPolicy

logger = logging.getLogger(__name__)
_tracer = telemetry.tracer(__name__)

E = TypeVar("E", bound=Message)
Handler = Callable[[Any], Awaitable[None]]

DUPLICATE_WINDOW_SECONDS = 120.0
MAX_EVENT_BYTES = 1024 * 1024


# The bus pings its NATS server every NATS_PING_INTERVAL_SECONDS and takes the connection for
# dead when a ping falls due with NATS_MAX_OUTSTANDING_PINGS still unanswered: a server that
# vanished without closing the connection (its node died, its network was cut) is found out in
# 15 s, and the bus reconnects to another server of the cluster. nats-py's defaults (120 s, 2)
# take six minutes, all that time publishing into the void.
NATS_PING_INTERVAL_SECONDS = 5
NATS_MAX_OUTSTANDING_PINGS = 2


def nats_servers(url: str) -> list[str]:
    """The servers a NATS_URL names: one URL, or several of a cluster, comma-separated."""
    return [u.strip() for u in url.split(",") if u.strip()]


# What ensure_streams sets on a stream; a stream that already has these is not updated.
_DECLARED = (
    "subjects",
    "retention",
    "storage",
    "duplicate_window",
    "max_age",
    "max_msg_size",
    "num_replicas",
)
# A stream update a user may not make gets no reply: give up on it soon.
STREAM_UPDATE_TIMEOUT = 2.0


def _differs(existing: js_api.StreamConfig, wanted: js_api.StreamConfig) -> bool:
    """Whether `existing` differs from `wanted` in what ensure_streams declares."""
    for name in _DECLARED:
        have, want = getattr(existing, name), getattr(wanted, name)
        if name == "subjects":
            have, want = sorted(have or []), sorted(want or [])
        elif isinstance(want, float):
            have = float(have or 0)
            if abs(have - want) > 1e-6:
                return True
            continue
        if have != want:
            return True
    return False


class MalformedEvent(Exception):
    """The bytes on the bus are not an event we can read; park it, do not redeliver."""


# Why an event was parked (the `reason` label of EVENTS_PARKED).
INVALID, MALFORMED, NOT_READY, UNAVAILABLE, FAILED = (
    "invalid",
    "malformed",
    "not_ready",
    "unavailable",
    "failed",
)


class BatchUnit(Protocol):
    """What a batch scope yields: `each(event)` wraps one handler call. Opened with `isolate`,
    in a database savepoint, say, so that an event that is not ready or is invalid is undone on
    its own and settled on its own, while the rest of the batch commits. Opened without, it
    only forgets what the unit recorded of an event refused with RetryUntouched (its claim),
    which the bus then settles alone while the rest of the batch goes on."""

    def each(self, event: Message) -> AbstractAsyncContextManager[Any]: ...


# An async context manager factory wrapping each fetched batch in one unit of work (e.g. one
# database transaction), given the batch's events up front (to claim their ids at once) and
# whether to isolate each event (the bus asks for that only after a handler refused one).
BatchScope = Callable[[Sequence[Message], bool], AbstractAsyncContextManager["BatchUnit | None"]]


@dataclass
class ConsumerOptions:
    batch: int = 64
    fetch_timeout: float = 1.0
    ack_wait: float = 30.0
    # Deliveries before an event whose handler keeps crashing is parked, for handlers that are
    # costly to run again; None: as many as a not-ready event gets. It never shortens the wait
    # of a not-ready event, and JetStream's own limit is always set above it (see `policy`).
    max_deliver: int | None = None
    max_ack_pending: int = 1024
    # The back-off doubles from 0.1 s up to this; it and the margin also lengthen the patience.
    max_backoff: float = 5.0
    retry_margin: float = 5.0
    # One unit of work per fetched batch (see BatchScope). Acks wait for it to exit cleanly. An
    # event the unit's `each` isolated that was not ready, unavailable or invalid is settled on
    # its own; any other failure rolls the batch back and each event is handled again alone.
    batch_scope: BatchScope | None = None
    # Fetch the next batch while one that came full is handled (it is handled after it): for a
    # consumer that works through backlogs in batches, not one whose slow handlers other
    # replicas should share (what it fetched ahead waits for it alone).
    fetch_ahead: bool = False
    # Run the handlers of a fetched batch concurrently, started in stream order, each settled
    # on its own: for a handler that serialises its own decisions in arrival order and mostly
    # waits on I/O (the router: a decision under its lock, then the journal's and the events'
    # acks, which a batch then awaits together instead of one after the other). The next batch
    # is fetched while earlier ones still wait, up to `max_in_flight` events unsettled at once
    # (its handlers start after every handler of the batches before it).
    concurrent: bool = False
    max_in_flight: int = 512
    # Only these tenants' events (the consumer's subject filters name each tenant): a router
    # group consumes its own tenants' contacts. None: every tenant's.
    tenants: frozenset[str] | None = None

    @property
    def policy(self) -> RetryPolicy:
        return RetryPolicy(
            ack_wait=self.ack_wait,
            max_delay=self.max_backoff,
            margin=self.retry_margin,
            crash_attempts=self.max_deliver,
        )


def encode(event: Message, traceparent: str = "") -> tuple[str, dict[str, str], bytes]:
    """Return subject, headers and payload for `event` (validating its meta); the event joins
    the trace `traceparent` names, or else the current one."""
    events.validate_meta(event)
    spec = events.spec_for(type(event))
    meta = event.meta  # type: ignore[attr-defined]
    headers = {"Nats-Msg-Id": meta.event_id, events.TYPE_HEADER: spec.type_name}
    if traceparent:
        # What continuing that trace and injecting it would write, without the work.
        headers["traceparent"] = traceparent
    else:
        telemetry.inject(headers)
    return spec.subject(meta.tenant, meta.channel), headers, event.SerializeToString()


@functools.cache
def _published(event: str) -> Any:
    """The published-events counter of one event type (a label lookup per event costs more)."""
    return metrics.EVENTS_PUBLISHED.labels(event)


@functools.cache
def _settled_counter(durable: str, event: str, outcome: str) -> Any:
    """The settled-events counter of one consumer, event type and outcome."""
    return metrics.EVENTS_SETTLED.labels(durable, event, outcome)


@functools.cache
def _handling_seconds(durable: str, event: str) -> Any:
    """The handling-time histogram of one consumer and event type."""
    return metrics.EVENT_SECONDS.labels(durable, event)


def decode(msg: Msg) -> Message:
    """Decode a bus message into its event, or raise MalformedEvent saying why."""
    headers = msg.headers or {}
    type_name = headers.get(events.TYPE_HEADER)
    if not type_name:
        raise MalformedEvent(f"missing {events.TYPE_HEADER} header")
    spec = events.spec_by_name(type_name)
    if spec is None:
        raise MalformedEvent(f"unknown event type {type_name!r}")
    if len(msg.data) > MAX_EVENT_BYTES:
        raise MalformedEvent(f"payload of {len(msg.data)} bytes exceeds {MAX_EVENT_BYTES}")
    try:
        event = spec.type.FromString(msg.data)
    except DecodeError as exc:
        raise MalformedEvent(f"payload is not a valid {type_name}: {exc}") from exc
    try:
        events.validate_meta(event)
    except DomainError as exc:
        raise MalformedEvent(f"invalid {type_name}: {exc}") from exc
    if msg.subject and events.subject_of(event) != msg.subject:
        raise MalformedEvent(
            f"{type_name} on {msg.subject!r} belongs on {events.subject_of(event)!r}"
        )
    return event


@dataclass
class _Consumer:
    durable: str
    stream: str
    options: ConsumerOptions
    handlers: dict[type[Message], Handler] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None
    sub: Any = None
    processed: int = 0
    terminated: int = 0
    parked: int = 0  # given up on and stored in the dead-letter stream (then terminated)
    batched: int = 0  # events processed inside a committed batch scope
    busy: bool = False  # handling a fetched batch (drain waits for it; an idle fetch is cancelled)
    # A concurrent consumer's batches still being handled, and their events' count.
    batches: set[asyncio.Future[None]] = field(default_factory=set)
    in_flight: int = 0
    started: asyncio.Future[None] | None = None  # the last batch's handlers have all started
    policy: RetryPolicy = field(init=False)

    def __post_init__(self) -> None:
        self.policy = self.options.policy


class _TracedDelivery:
    def __init__(self, consumer: str, msg: Msg, event: Message) -> None:
        self._trace = telemetry.continued(msg.headers)
        self._span = _tracer.start_as_current_span(
            f"process {type(event).__name__}",
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "nats",
                "messaging.destination.name": msg.subject,
                "messaging.consumer.group.name": consumer,
                "messaging.message.id": event.meta.event_id,  # type: ignore[attr-defined]
                "switchboard.delivery": msg.metadata.num_delivered or 1,
            },
        )

    def __enter__(self) -> Any:
        self._trace.__enter__()
        return self._span.__enter__()

    def __exit__(self, *exc: Any) -> None:
        try:
            self._span.__exit__(*exc)
        finally:
            self._trace.__exit__(*exc)


class _ContinuedDelivery:
    """A delivery's trace while nothing exports spans: the event's own trace context made
    current, without a consumer span of its own (a non-recording span would only add an id that
    nothing ever sees, at the cost of a sampler call and two context switches per event). What
    the handler publishes then names the event's traceparent as its parent: still one trace."""

    __slots__ = ("_headers", "_token")

    def __init__(self, headers: dict[str, str] | None) -> None:
        self._headers = headers
        self._token: object = None

    def __enter__(self) -> Any:
        if self._headers:
            self._token = otel_context.attach(propagate.extract(self._headers))
        return INVALID_SPAN

    def __exit__(self, *exc: Any) -> None:
        if self._token is not None:
            otel_context.detach(self._token)  # type: ignore[arg-type]


def delivery_span(consumer: str, msg: Msg, event: Message) -> Any:
    """The trace a delivery of `event` to `consumer` runs in: a CONSUMER span continuing the
    event's trace while spans are exported, else the event's trace context alone."""
    if not telemetry.exporting():
        return _ContinuedDelivery(msg.headers)
    return _TracedDelivery(consumer, msg, event)


class Bus:
    """A connection to NATS with JetStream, publishing and consuming Switchboard events."""

    def __init__(self, nc: NATS, source: str, replicas: int | None = None) -> None:
        self.nc = nc
        # Copies of each stream (NATS_STREAM_REPLICAS); None: 1 for a new stream, and an existing
        # stream keeps its own (a client that was not told never scales a stream down).
        self.replicas = replicas
        self.js: JetStreamContext = nc.jetstream()
        # Pipelined publishing with a deadline on every ack (nats-py's own loses some errors).
        self.acks = AckPublisher(nc)
        self.source = source
        self._consumers: dict[tuple[str, str], _Consumer] = {}
        self._stopping = asyncio.Event()
        self._watchers: list[Callable[[bool], Awaitable[None]]] = []

    @classmethod
    async def connect(
        cls, url: str, source: str, replicas: int | None = None, **kwargs: Any
    ) -> Bus:
        """Connect to NATS (retrying while the server starts) and declare the streams, each with
        `replicas` copies. `url` may name several servers of a cluster, comma-separated."""

        created: list[Bus] = []

        async def _error(exc: Exception) -> None:
            logger.warning("nats error: %s", exc)

        async def _disconnected() -> None:
            if created:
                await created[0]._connection_changed(False)

        async def _reconnected() -> None:
            if created:
                await created[0]._connection_changed(True)

        nc = await nats.connect(
            nats_servers(url),
            name=source,
            connect_timeout=2,
            reconnect_time_wait=0.5,
            max_reconnect_attempts=-1,
            allow_reconnect=True,
            ping_interval=NATS_PING_INTERVAL_SECONDS,
            max_outstanding_pings=NATS_MAX_OUTSTANDING_PINGS,
            error_cb=_error,
            disconnected_cb=_disconnected,
            reconnected_cb=_reconnected,
            **kwargs,
        )
        bus = cls(nc, source, replicas)
        created.append(bus)
        metrics.NATS_CONNECTED.labels(source).set(1)
        await bus.ensure_streams()
        return bus

    def watch(self, callback: Callable[[bool], Awaitable[None]]) -> None:
        """Call `callback(connected)` whenever the NATS connection drops or comes back."""
        self._watchers.append(callback)

    async def _connection_changed(self, connected: bool) -> None:
        if self._stopping.is_set():
            return
        metrics.NATS_CONNECTED.labels(self.source).set(1 if connected else 0)
        if connected:
            logger.info("%s reconnected to NATS", self.source)
        else:
            logger.warning("%s lost its NATS connection; reconnecting", self.source)
        for callback in self._watchers:
            await callback(connected)

    async def ensure_streams(self) -> None:
        """Create the event streams, or bring an existing one's configuration to ours. Only a
        NATS user allowed to change them may (switchboard.core.nats_auth: the case service);
        another one finding a stream configured otherwise keeps it, with a warning."""
        for name, subjects in events.STREAMS.items():
            config = js_api.StreamConfig(
                name=name,
                subjects=subjects,
                retention=js_api.RetentionPolicy.LIMITS,
                storage=js_api.StorageType.FILE,
                duplicate_window=DUPLICATE_WINDOW_SECONDS,
                max_age=30 * 24 * 3600,
                max_msg_size=MAX_EVENT_BYTES,
                num_replicas=self.replicas or 1,
            )
            if name == deadletter.STREAM:
                deadletter.configure(config)
            try:
                info = await self.js.stream_info(name)
            except NotFoundError:
                await self.js.add_stream(config)
                continue
            if self.replicas is None:
                config.num_replicas = info.config.num_replicas
            if not _differs(info.config, config):
                continue
            try:
                await asyncio.wait_for(self.js.update_stream(config), STREAM_UPDATE_TIMEOUT)
            except TimeoutError:  # refused (not permitted): no reply comes
                logger.warning(
                    "%s could not update stream %s's configuration (not permitted?); "
                    "it keeps its own until a user allowed to declare it starts",
                    self.source,
                    name,
                )

    # ---- publishing -------------------------------------------------------------------------

    async def publish(self, event: Message, timeout: float = 5.0) -> js_api.PubAck:
        """Publish one event and wait for JetStream to store it (then the source may be acked)."""
        subject, headers, data = encode(event)
        with _tracer.start_as_current_span(f"publish {subject}", kind=SpanKind.PRODUCER):
            telemetry.inject(headers)
            ack = await self.js.publish(subject, data, headers=headers, timeout=timeout)
        metrics.EVENTS_PUBLISHED.labels(type(event).__name__).inc()
        return ack

    async def publish_async(
        self, event: Message, traceparent: str = ""
    ) -> asyncio.Future[js_api.PubAck]:
        """Hot path: send without waiting; the returned future resolves when JetStream stores it,
        or fails (AckUnknown at its deadline). Acknowledge a source only after it has resolved.
        The event joins the trace `traceparent` names (a contact's), or else the current one."""
        subject, headers, data = encode(event, traceparent)
        future = await self.acks.publish(subject, data, headers)
        _published(type(event).__name__).inc()
        return future

    async def publish_batch_async(
        self, batch: Sequence[tuple[Message, str]]
    ) -> asyncio.Future[list[js_api.PubAck]]:
        """Send (event, traceparent) pairs pipelined, in order, without waiting: the one future
        returned resolves once JetStream has stored every one, or fails as `publish_async`'s
        would for the first that failed (see `AckPublisher.send_all`). Each event joins the
        trace its traceparent names, or else the current one."""
        messages = []
        for event, traceparent in batch:
            subject, headers, data = encode(event, traceparent)
            messages.append((subject, data, headers))
            _published(type(event).__name__).inc()
        return await self.acks.send_all(messages)

    async def publish_many(self, batch: Iterable[Message]) -> list[js_api.PubAck]:
        """Publish several events pipelined, then wait for every ack (one wait for the batch,
        see `AckPublisher.publish_all`); each event joins the current trace."""
        messages = []
        for event in batch:
            subject, headers, data = encode(event)
            messages.append((subject, data, headers))
            _published(type(event).__name__).inc()
        return await self.acks.publish_all(messages)

    # ---- consuming ---------------------------------------------------------------------------

    def subscribe(
        self,
        durable: str,
        event_type: type[E],
        handler: Callable[[E], Awaitable[None]],
        options: ConsumerOptions | None = None,
    ) -> None:
        """Register `handler` for `event_type` on the durable consumer `durable` (call before start)."""
        spec = events.spec_for(event_type)
        key = (durable, spec.stream)
        consumer = self._consumers.get(key)
        if consumer is None:
            consumer = _Consumer(durable, spec.stream, options or ConsumerOptions())
            self._consumers[key] = consumer
        consumer.handlers[event_type] = handler

    async def start(self) -> None:
        for consumer in self._consumers.values():
            await self._bind(consumer)
            consumer.task = asyncio.create_task(
                self._consume(consumer), name=f"consumer:{consumer.durable}"
            )

    async def _bind(self, consumer: _Consumer) -> None:
        specs = [events.spec_for(t) for t in consumer.handlers]
        tenants = consumer.options.tenants
        if tenants is None:
            filters = sorted(spec.filter_subject for spec in specs)
        else:
            if not tenants:
                raise ValueError(f"consumer {consumer.durable}: an empty set of tenants")
            filters = sorted(spec.tenant_filter(t) for spec in specs for t in tenants)
        config = js_api.ConsumerConfig(
            name=consumer.durable,
            durable_name=consumer.durable,
            ack_policy=js_api.AckPolicy.EXPLICIT,
            deliver_policy=js_api.DeliverPolicy.ALL,
            ack_wait=consumer.options.ack_wait,
            # Above our own limit: the server gives up silently, so it must never be first.
            max_deliver=consumer.policy.server_max_deliver,
            max_ack_pending=consumer.options.max_ack_pending,
        )
        if len(filters) == 1:
            config.filter_subject = filters[0]
        else:
            config.filter_subjects = filters
        # CONSUMER.CREATE creates, or updates a compatible existing durable.
        await self.js.add_consumer(consumer.stream, config)
        consumer.sub = await self.js.pull_subscribe_bind(
            durable=consumer.durable, stream=consumer.stream
        )

    async def _consume(self, consumer: _Consumer) -> None:
        concurrent = consumer.options.concurrent
        # A batch consumer's next fetch, sent while it handles a full batch (a backlog).
        ahead: asyncio.Task[list[Msg]] | None = None
        try:
            while not self._stopping.is_set():
                size = consumer.options.batch
                if concurrent:
                    room = consumer.options.max_in_flight - consumer.in_flight
                    if room <= 0:
                        await asyncio.wait(
                            set(consumer.batches), return_when=asyncio.FIRST_COMPLETED
                        )
                        continue
                    size = min(size, room)
                try:
                    if ahead is not None:
                        fetching, ahead = ahead, None
                        msgs = await fetching
                    else:
                        msgs = await consumer.sub.fetch(
                            size, timeout=consumer.options.fetch_timeout
                        )
                except TimeoutError:  # nothing to fetch (nats-py raises its own or asyncio's)
                    continue
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # connection blips: back off and try again
                    if self._stopping.is_set():
                        return
                    logger.warning("fetch for %s failed: %r", consumer.durable, exc)
                    await asyncio.sleep(0.5)
                    continue
                if concurrent:
                    # Handled while the next batch is fetched (drain waits for it).
                    self._start_batch(consumer, msgs)
                    continue
                if consumer.options.fetch_ahead and len(msgs) >= size:
                    # More is likely waiting: the next batch travels while this one is handled
                    # (handled only after it, so stream order holds), instead of a round trip
                    # to the server between batches.
                    ahead = asyncio.ensure_future(
                        consumer.sub.fetch(size, timeout=consumer.options.fetch_timeout)
                    )
                consumer.busy = True
                try:
                    await self._deliver_batch(consumer, msgs)
                finally:
                    consumer.busy = False
        finally:
            if ahead is not None:
                await self._give_back(ahead)

    @staticmethod
    async def _give_back(ahead: asyncio.Task[list[Msg]]) -> None:
        """A fetch sent ahead that will not be handled: what it brought goes back to the server
        at once (NAK), not after the ack wait."""
        if not ahead.done():
            ahead.cancel()
        try:
            msgs = await ahead
        except (asyncio.CancelledError, Exception):  # cancelled, or nothing came
            return
        for msg in msgs:
            with contextlib.suppress(Exception):
                await msg.nak()

    def _start_batch(self, consumer: _Consumer, msgs: list[Msg]) -> None:
        previous = consumer.started
        if len(msgs) == 1 and (previous is None or previous.done()):
            # A lone event, every earlier handler started: its handler task is the batch's
            # (one hand-off from the fetch to the handler instead of two). Tasks start in the
            # order they were created, so a later batch's handlers still start after it.
            event = self._decoded_now(consumer, msgs[0])
            if event is not None:
                consumer.started = None
                self._track(consumer, 1, self._deliver(consumer, msgs[0], event), None)
                return
        started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        consumer.started = started
        self._track(
            consumer,
            len(msgs),
            self._deliver_concurrently(consumer, msgs, previous, started),
            started,
        )

    @staticmethod
    def _track(
        consumer: _Consumer,
        count: int,
        work: Coroutine[Any, Any, None],
        started: asyncio.Future[None] | None,
    ) -> None:
        """Run a concurrent consumer's batch of `count` events as a task drain waits for."""
        consumer.in_flight += count
        batch = asyncio.ensure_future(work)
        consumer.batches.add(batch)

        def done(_: asyncio.Future[None]) -> None:
            consumer.batches.discard(batch)
            consumer.in_flight -= count
            if started is not None and not started.done():
                started.set_result(None)

        batch.add_done_callback(done)

    @staticmethod
    def _decoded_now(consumer: _Consumer, msg: Msg) -> Message | None:
        """The event in `msg` if it is well formed and this consumer handles it (else None:
        `_decode` settles it, in a batch of its own)."""
        try:
            event = decode(msg)
        except MalformedEvent:
            return None
        return event if type(event) in consumer.handlers else None

    async def _deliver_concurrently(
        self,
        consumer: _Consumer,
        msgs: list[Msg],
        previous: asyncio.Future[None] | None,
        started: asyncio.Future[None],
    ) -> None:
        """Handle a fetched batch, each event on its own, its handlers started in stream order
        after every handler of the batch fetched before it."""
        ready: list[tuple[Msg, Message]] = []
        for msg in msgs:
            event = await self._decode(consumer, msg)
            if event is not None:
                ready.append((msg, event))
        if previous is not None and not previous.done():
            await asyncio.wait({previous})
        handlers = [
            asyncio.ensure_future(self._deliver(consumer, msg, event)) for msg, event in ready
        ]
        # Each handler takes its first step (where the router queues its input) before any of
        # the next batch's: tasks start in the order they were created.
        await asyncio.sleep(0)
        started.set_result(None)
        if handlers:
            await asyncio.gather(*handlers)

    async def _deliver_batch(self, consumer: _Consumer, msgs: list[Msg]) -> None:
        ready: list[tuple[Msg, Message]] = []
        for msg in msgs:
            event = await self._decode(consumer, msg)
            if event is not None:
                ready.append((msg, event))
        scope = consumer.options.batch_scope
        if scope is not None and len(ready) > 1:
            # One unit of work for the whole batch; acks only once it has committed. First
            # without isolating events (cheapest); if a handler refuses an event (not ready,
            # invalid), again with each event isolated, so that one is undone and settled alone
            # while the rest commits. Any other failure rolls it all back, and each event is
            # then handled alone.
            aside: list[tuple[Msg, Message, DomainError | Retry]] | None = None
            try:
                try:
                    aside = await self._unit_of_work(consumer, scope, ready, isolate=False)
                except (DomainError, Retry):
                    aside = await self._unit_of_work(consumer, scope, ready, isolate=True)
            except Exception as exc:
                logger.info(
                    "batch of %d for %s rolled back (%s); handling each event alone",
                    len(ready),
                    consumer.durable,
                    type(exc).__name__,
                )
            if aside is not None:
                failed = {id(msg) for msg, _, _ in aside}
                for msg, event in ready:
                    if id(msg) not in failed:
                        await msg.ack()
                        self._settled(consumer, event, "ack")
                        consumer.processed += 1
                        consumer.batched += 1
                for msg, event, refused in aside:
                    await self._settle_error(consumer, msg, event, refused)
                return
        if consumer.options.concurrent and len(ready) > 1:
            await asyncio.gather(*(self._deliver(consumer, msg, event) for msg, event in ready))
            return
        for msg, event in ready:
            await self._deliver(consumer, msg, event)

    async def _unit_of_work(
        self,
        consumer: _Consumer,
        scope: BatchScope,
        ready: list[tuple[Msg, Message]],
        isolate: bool,
    ) -> list[tuple[Msg, Message, DomainError | Retry]]:
        """Handle `ready` in one unit of work; the events it set aside (isolated and refused)."""
        aside: list[tuple[Msg, Message, DomainError | Retry]] = []
        async with scope([event for _, event in ready], isolate) as unit:
            for msg, event in ready:
                handler = consumer.handlers[type(event)]
                with self._span(consumer, msg, event), self._timed(consumer, event):
                    if unit is None:
                        await handler(event)  # a refusal fails the whole unit
                        continue
                    if not isolate:
                        # Any refusal fails the whole unit, except one that changed nothing:
                        # that event waits for its redelivery, and the rest goes on.
                        try:
                            async with unit.each(event):
                                await handler(event)
                        except RetryUntouched as exc:
                            aside.append((msg, event, exc))
                        continue
                    try:
                        async with unit.each(event):
                            await handler(event)
                    except (DomainError, Retry) as exc:
                        aside.append((msg, event, exc))
        return aside

    async def _decode(self, consumer: _Consumer, msg: Msg) -> Message | None:
        """The event in `msg`, or None once a malformed or foreign message is settled."""
        try:
            event = decode(msg)
        except MalformedEvent as exc:
            await self._park(consumer, msg, "unknown", "", MALFORMED, f"malformed: {exc}")
            return None
        if type(event) not in consumer.handlers:  # a filter overlap; not ours to handle
            await msg.ack()
            return None
        return event

    def _span(self, consumer: _Consumer, msg: Msg, event: Message) -> Any:
        """Continue the event's trace in a CONSUMER span (the handler runs inside it)."""
        return delivery_span(consumer.durable, msg, event)

    async def _deliver(self, consumer: _Consumer, msg: Msg, event: Message) -> None:
        handler = consumer.handlers[type(event)]
        with self._span(consumer, msg, event) as span:
            start = time.perf_counter()
            try:
                try:
                    await handler(event)
                finally:  # what `_timed` does, without a generator per event
                    _handling_seconds(consumer.durable, type(event).__name__).observe(
                        time.perf_counter() - start
                    )
            except (DomainError, Retry) as exc:
                if not isinstance(exc, Retry | Unavailable):
                    span.set_status(Status(StatusCode.ERROR, str(exc)))
                await self._settle_error(consumer, msg, event, exc)
                return
            except Exception as exc:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                logger.exception("handler for %s failed", type(event).__name__)
                delivered = msg.metadata.num_delivered or 1
                await self._retry_or_park(consumer, msg, event, delivered, FAILED, repr(exc))
                return
        await msg.ack()
        self._settled(consumer, event, "ack")
        consumer.processed += 1

    async def _settle_error(
        self, consumer: _Consumer, msg: Msg, event: Message, exc: DomainError | Retry
    ) -> None:
        """Settle an event its handler refused: redelivered later if it is not ready or this
        replica cannot serve it, parked at once if it is invalid."""
        delivered = msg.metadata.num_delivered or 1
        if isinstance(exc, Retry):
            await self._retry_or_park(
                consumer, msg, event, delivered, NOT_READY, f"not ready: {exc}"
            )
        elif isinstance(exc, Unavailable):
            # Not the event's fault: another replica (the leader) can take it.
            await self._retry_or_park(
                consumer, msg, event, delivered, UNAVAILABLE, f"unavailable: {exc}"
            )
        else:
            await self._park(
                consumer,
                msg,
                type(event).__name__,
                event.meta.event_id,  # type: ignore[attr-defined]
                INVALID,
                f"{type(exc).__name__}: {exc}",
            )

    @staticmethod
    def _settled(consumer: _Consumer, event: Message, outcome: str) -> None:
        _settled_counter(consumer.durable, type(event).__name__, outcome).inc()

    @staticmethod
    @contextlib.contextmanager
    def _timed(consumer: _Consumer, event: Message) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            _handling_seconds(consumer.durable, type(event).__name__).observe(
                time.perf_counter() - start
            )

    async def _retry_or_park(
        self, consumer: _Consumer, msg: Msg, event: Message, delivered: int, kind: str, why: str
    ) -> None:
        policy = consumer.policy
        if policy.gives_up(delivered, crashed=kind == FAILED):
            await self._park(
                consumer,
                msg,
                type(event).__name__,
                event.meta.event_id,  # type: ignore[attr-defined]
                kind,
                f"{why} (gave up after {delivered} deliveries)",
            )
            return
        delay = policy.unavailable(delivered) if kind == UNAVAILABLE else policy.delay(delivered)
        await msg.nak(delay=delay)
        self._settled(consumer, event, "retry")

    async def _park(
        self, consumer: _Consumer, msg: Msg, name: str, event_id: str, kind: str, why: str
    ) -> None:
        """Give up on `msg`: store it in the dead-letter stream, then terminate it. If it cannot
        be stored, it is redelivered instead, so it is never lost."""
        delivered = msg.metadata.num_delivered or 1
        try:
            await deadletter.park(self.js, msg, consumer.durable, why)
        except Exception as exc:
            logger.error(
                "could not park %s %s for %s (%r), redelivering it: %s",
                name,
                event_id,
                consumer.durable,
                exc,
                why,
            )
            # A lost nak is no loss either: the ack wait brings the event back.
            with contextlib.suppress(Exception):
                await msg.nak(delay=consumer.policy.delay(delivered))
            metrics.EVENTS_SETTLED.labels(consumer.durable, name, "retry").inc()
            return
        await msg.term()
        consumer.parked += 1
        consumer.terminated += 1
        metrics.EVENTS_PARKED.labels(consumer.durable, name, kind).inc()
        logger.error(
            "parked %s %s (%s seq %d) for %s in %s after %d deliveries: %s",
            name,
            event_id or "-",
            msg.metadata.stream,
            msg.metadata.sequence.stream,
            consumer.durable,
            deadletter.STREAM,
            delivered,
            why,
        )
        outcome = "malformed" if kind == MALFORMED else "terminated"
        metrics.EVENTS_SETTLED.labels(consumer.durable, name, outcome).inc()

    def stats(self) -> dict[str, dict[str, int]]:
        return {
            c.durable: {
                "processed": c.processed,
                "terminated": c.terminated,
                "parked": c.parked,
                "batched": c.batched,
            }
            for c in self._consumers.values()
        }

    async def drain(self) -> None:
        """Stop fetching, let in-flight handlers finish, then drain the connection."""
        self._stopping.set()
        for c in self._consumers.values():
            if c.task and not c.busy:
                c.task.cancel()
        tasks: list[asyncio.Future[None]] = [c.task for c in self._consumers.values() if c.task]
        tasks += [batch for c in self._consumers.values() for batch in c.batches]
        if tasks:
            await asyncio.wait(tasks, timeout=5)
            for t in tasks:
                t.cancel()
        # Every fetched message has been acked or nakked by now; a pull subscription left to
        # nc.drain() waits out the whole drain timeout, so unsubscribe them first.
        for consumer in self._consumers.values():
            if consumer.sub is not None:
                with contextlib.suppress(Exception):
                    await consumer.sub.unsubscribe()
        if not self.nc.is_closed:
            try:
                await asyncio.wait_for(self.nc.drain(), 10)
            except Exception as exc:
                logger.debug("drain: %s", exc)
                await self.nc.close()
