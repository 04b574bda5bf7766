"""Reading what is on a JetStream stream, for tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from google.protobuf.message import Message
from nats.js import api as js_api

from switchboard.core import bus as sb_bus
from switchboard.core.bus import Bus
from switchboard.testing.waiting import eventually, until

T = TypeVar("T", bound=Message)


async def published(bus: Bus, subject: str, event_type: type[T], stream: str = "EVENTS") -> list[T]:
    """Every event of `event_type` on `subject` in `stream` so far, oldest first."""
    sub = await bus.js.pull_subscribe(
        subject,
        stream=stream,
        config=js_api.ConsumerConfig(deliver_policy=js_api.DeliverPolicy.ALL),
    )
    out: list[T] = []
    while True:
        try:
            msgs = await sub.fetch(100, timeout=1)
        except Exception:
            break
        out += [event_type.FromString(m.data) for m in msgs]
    await sub.unsubscribe()
    return out


async def stored_payloads(bus: Bus, stream: str) -> list[bytes]:
    """Every message still stored in `stream` (its subject, headers and payload, in one), read one
    at a time by sequence: what a look at the stream's store would find."""
    from nats.js.errors import NotFoundError

    try:
        state = (await bus.js.stream_info(stream)).state
    except NotFoundError:
        return []
    out: list[bytes] = []
    for seq in range(max(state.first_seq, 1), state.last_seq + 1):
        try:
            raw = await bus.js.get_msg(stream, seq)
        except NotFoundError:  # deleted
            continue
        headers = "".join(f"{k}:{v}" for k, v in (raw.headers or {}).items())
        out.append(f"{raw.subject} {headers} ".encode() + (raw.data or b""))
    return out


class EventCollector:
    """Every event on `subject` of `stream` (from the stream's start), decoded, in order, as it
    arrives: an ordered consumer of its own, which takes nothing from the services' consumers."""

    def __init__(self) -> None:
        self.events: list[Message] = []
        self._sub: Any = None

    @classmethod
    async def start(cls, bus: Bus, subject: str = ">", stream: str = "EVENTS") -> EventCollector:
        collector = cls()

        async def keep(msg: Any) -> None:
            collector.events.append(sb_bus.decode(msg))

        collector._sub = await bus.js.subscribe(
            subject,
            cb=keep,
            stream=stream,
            ordered_consumer=True,
        )
        return collector

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    def of(self, event_type: type[T]) -> list[T]:
        """The events of one type collected so far."""
        return [e for e in self.events if isinstance(e, event_type)]

    async def wait(
        self,
        predicate: Callable[[EventCollector], object],
        what: str = "the expected events",
        timeout: float = 30.0,
    ) -> None:
        """Until `predicate(self)` holds (bounded by `timeout`; no timing is asserted)."""
        await until(lambda: predicate(self), f"{what}; have {len(self.events)} events", timeout)

    async def first(
        self, event_type: type[T], match: Callable[[T], bool], what: str, timeout: float = 30.0
    ) -> T:
        """The first collected event of `event_type` that `match`es, once there is one."""

        async def probe() -> T | None:
            return next((e for e in self.of(event_type) if match(e)), None)

        return await eventually(probe, what, timeout)
