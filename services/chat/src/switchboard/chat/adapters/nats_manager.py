"""A python-socketio client manager over NATS core pub/sub, so several chat replicas act as one
Socket.IO server: an emit to a room on one replica reaches that room's sockets on every replica.

Messages are JSON (python-socketio's own pub/sub format) on one subject per deployment; NATS core
pub/sub suffices because an emit is only for the sockets connected at that moment (a socket that
misses one resumes from the durable history).

The manager also keeps, for each socket, the rooms it is in: python-socketio finds a leaving
socket's rooms by scanning every room of the namespace, so with thousands of sockets connected
(each has a room of its own) every disconnect cost a pass over all of them, and a few hundred
customers leaving together held the event loop for seconds.

An emit reaches this replica's sockets at once: python-socketio starts a task for each recipient
and waits for them all, so every message shown waited a turn of the event loop (several
milliseconds with thousands of sockets busy) before its sender went on; here the packet, encoded
once, is put on each recipient's send queue in turn, which never waits.

An emit is JSON-encoded once: the encoded arguments make both this replica's Socket.IO packet and
the message to the other replicas (python-socketio's own, byte for byte). Arguments that are not
JSON (bytes: a binary event) take python-socketio's own way.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any

from engineio import packet as eio_packet
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from socketio import packet
from socketio.async_pubsub_manager import AsyncPubSubManager

logger = logging.getLogger(__name__)

DEFAULT_SUBJECT = "switchboard.chat.socketio"


def _dumps(value: Any) -> str:
    """A name, room or id as JSON (a str or None; a list of sids to skip), as json.dumps
    writes it."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return encode_basestring_ascii(value)  # type: ignore[no-any-return]
    return json.dumps(value, separators=(",", ":"))


class NatsClientManager(AsyncPubSubManager):  # type: ignore[misc]
    name = "nats"

    def __init__(self, nc: NATS, subject: str = DEFAULT_SUBJECT, write_only: bool = False) -> None:
        super().__init__(channel=subject, write_only=write_only, logger=logger)
        self.nc = nc
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._sub: Subscription | None = None
        self._rooms_of: dict[tuple[str, str], set[str | None]] = {}
        # How this replica's own emits and room changes end (python-socketio puts the host id
        # last in each of them; in a callback, which names the host it is for, it is not last):
        # NATS hands them back to us, and they are dropped before being decoded.
        self._own_tail = f',"host_id":"{self.host_id}"}}'.encode()

    # ---- rooms, indexed by socket ------------------------------------------------------------

    def basic_enter_room(
        self, sid: str, namespace: str, room: str | None, eio_sid: str | None = None
    ) -> None:
        super().basic_enter_room(sid, namespace, room, eio_sid)
        self._rooms_of.setdefault((namespace, sid), set()).add(room)

    def basic_leave_room(self, sid: str, namespace: str, room: str | None) -> None:
        super().basic_leave_room(sid, namespace, room)
        rooms = self._rooms_of.get((namespace, sid))
        if rooms is not None:
            rooms.discard(room)
            if not rooms:
                del self._rooms_of[(namespace, sid)]

    def basic_disconnect(self, sid: str, namespace: str, **kwargs: Any) -> None:
        """python-socketio's disconnect, finding the socket's rooms in the index."""
        if namespace not in self.rooms:
            return
        for room in list(self._rooms_of.get((namespace, sid), ())):
            self.basic_leave_room(sid, namespace, room)
        self.callbacks.pop(sid, None)
        for pending in (self.pending_connect, self.pending_disconnect):
            sids = pending.get(namespace)
            if sids is not None and sid in sids:
                sids.remove(sid)
                if not sids:
                    del pending[namespace]

    def get_rooms(self, sid: str, namespace: str) -> list[str]:
        return [r for r in self._rooms_of.get((namespace, sid), ()) if r is not None]

    # ---- emits ---------------------------------------------------------------------------------

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str | None = None,
        room: str | None = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: str | None = None,
        **kwargs: Any,
    ) -> None:
        """python-socketio's emit (to the sockets here, then to the other replicas), with the
        arguments JSON-encoded once for both."""
        room = to or room
        args = list(data) if isinstance(data, tuple) else [data]
        if callback is not None or kwargs.get("ignore_queue"):
            return await super().emit(  # type: ignore[no-any-return]
                event, data, namespace, room, skip_sid, callback, **kwargs
            )
        try:
            encoded_event = json.dumps([event, *args], separators=(",", ":"))
        except TypeError:  # bytes: a binary event, python-socketio's own way
            return await super().emit(  # type: ignore[no-any-return]
                event, data, namespace, room, skip_sid, callback, **kwargs
            )
        namespace = namespace or "/"
        # '[event,*args]' -> the message's "data" '[*args]' and the packet's '[event,*args]'
        head = "[" + _dumps(event)
        encoded_args = "[" + encoded_event[len(head) + 1 :] if args else "[]"
        shown = encoded_event if args != [None] else head + "]"
        prefix = "2" if namespace == "/" else f"2{namespace},"
        await self._emit_here(namespace, room, skip_sid, [prefix + shown])
        await self._publish_encoded(
            f'{{"method":"emit","event":{_dumps(event)},"data":{encoded_args},"binary":false,'
            f'"namespace":{_dumps(namespace)},"room":{_dumps(room)},'
            f'"skip_sid":{_dumps(skip_sid)},"callback":null,"host_id":{_dumps(self.host_id)}}}'
        )
        return None

    async def _handle_emit(self, message: dict[str, Any]) -> None:
        """An emit (another replica's) to the sockets connected here."""
        if message.get("callback") is not None or message.get("binary"):
            await super()._handle_emit(message)  # rare: python-socketio's own way
            return
        namespace = message.get("namespace") or "/"
        if namespace not in self.rooms:
            return
        data = message.get("data")
        args = list(data) if isinstance(data, list) else [data]
        if args == [None]:  # python-socketio sends an emit of None with no argument
            args = []
        encoded = self.server.packet_class(
            packet.EVENT, namespace=namespace, data=[message["event"], *args]
        ).encode()
        await self._emit_here(
            namespace,
            message.get("room"),
            message.get("skip_sid"),
            encoded if isinstance(encoded, list) else [encoded],
        )

    async def _emit_here(
        self, namespace: str, room: str | None, skip: Any, encoded: list[Any]
    ) -> None:
        """Queue an encoded Socket.IO packet on each socket here in `room` but `skip`."""
        if namespace not in self.rooms:
            return
        skipped = set(skip) if isinstance(skip, list) else {skip}
        recipients = [
            eio_sid for sid, eio_sid in self.get_participants(namespace, room) if sid not in skipped
        ]
        if not recipients:
            return
        frames = [eio_packet.Packet(eio_packet.MESSAGE, p) for p in encoded]
        for eio_sid in recipients:
            for frame in frames:
                try:
                    await self.server._send_eio_packet(eio_sid, frame)
                except Exception as exc:  # a socket closing meanwhile misses it, nobody else
                    logger.debug("socket.io emit to %s dropped: %r", eio_sid, exc)
                    break

    async def subscribe(self) -> None:
        """Start receiving other replicas' emits (before any socket connects to this one)."""
        if self._sub is None:
            self._sub = await self.nc.subscribe(self.channel, cb=self._on_msg)

    async def unsubscribe(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None and not self.nc.is_closed:
            await sub.unsubscribe()

    async def _on_msg(self, msg: Msg) -> None:
        if not msg.data.endswith(self._own_tail):  # already handled here when it was sent
            self._queue.put_nowait(msg.data)

    async def _publish(self, data: Any) -> None:
        await self._publish_encoded(json.dumps(data, separators=(",", ":")))

    async def _publish_encoded(self, message: str) -> None:
        try:
            await self.nc.publish(self.channel, message.encode())
        except Exception as exc:  # a lost cross-replica emit is recovered by the resume replay
            logger.warning("socket.io pub/sub publish failed: %s", exc)

    async def _listen(self) -> AsyncIterator[Any]:
        await self.subscribe()
        while True:
            yield await self._queue.get()
