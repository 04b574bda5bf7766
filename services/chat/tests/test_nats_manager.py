"""The chat's Socket.IO client manager keeps each socket's rooms indexed: a socket leaving finds
its rooms there, not by scanning every room of the namespace (thousands of sockets each have a
room of their own), and the rooms end exactly as python-socketio's own manager leaves them."""

from __future__ import annotations

from typing import Any

from socketio.base_manager import BaseManager

from switchboard.chat.adapters.nats_manager import NatsClientManager

NS = "/customer"


class Unscannable(dict):  # type: ignore[type-arg]
    """A namespace's rooms that refuse to be scanned."""

    def copy(self) -> Any:
        raise AssertionError("every room of the namespace was scanned")

    def items(self) -> Any:
        raise AssertionError("every room of the namespace was scanned")


def populate(manager: Any) -> None:
    for n in range(200):
        sid = f"s{n}"
        manager.basic_enter_room(sid, NS, None, eio_sid=f"e{n}")
        manager.basic_enter_room(sid, NS, sid, eio_sid=f"e{n}")
        manager.basic_enter_room(sid, NS, f"conversation-{n // 2}")
    manager.basic_enter_room("s7", NS, "agents-watching")


def rooms(manager: Any) -> dict[Any, dict[str, str]]:
    return {room: dict(members) for room, members in dict.items(manager.rooms.get(NS, {}))}


def test_a_leaving_socket_finds_its_rooms_without_scanning_the_namespace() -> None:
    ours = NatsClientManager(nc=None)  # type: ignore[arg-type]
    stock = BaseManager()
    populate(ours)
    populate(stock)
    assert sorted(ours.get_rooms("s7", NS)) == sorted(stock.get_rooms("s7", NS))
    ours.rooms[NS] = Unscannable(ours.rooms[NS])
    for sid in ("s7", "s8", "s199"):
        ours.basic_disconnect(sid, NS)
        stock.basic_disconnect(sid, NS)
    assert rooms(ours) == rooms(stock)
    assert ours.get_rooms("s7", NS) == []
    assert sorted(ours.get_rooms("s6", NS)) == ["conversation-3", "s6"]
    ours.basic_leave_room("s6", NS, "conversation-3")
    stock.basic_leave_room("s6", NS, "conversation-3")
    assert rooms(ours) == rooms(stock)
    assert ours.get_rooms("s6", NS) == ["s6"]


class Published:
    """A NATS message as _publish writes it."""

    def __init__(self, body: dict[str, Any]) -> None:
        import json

        self.data = json.dumps(body, separators=(",", ":")).encode()


async def test_its_own_emits_coming_back_over_nats_are_dropped_before_decoding() -> None:
    ours = NatsClientManager(nc=None)  # type: ignore[arg-type]
    other = NatsClientManager(nc=None)  # type: ignore[arg-type]

    def emit(host: str) -> dict[str, Any]:
        # python-socketio's emit message, keys in its order (the host id last)
        return {
            "method": "emit",
            "event": "message",
            "data": [{"text": f'"host_id":"{ours.host_id}"}}'}],
            "binary": False,
            "namespace": NS,
            "room": "visitor:acme:v1",
            "skip_sid": None,
            "callback": None,
            "host_id": host,
        }

    await ours._on_msg(Published(emit(ours.host_id)))  # type: ignore[arg-type]
    await ours._on_msg(  # type: ignore[arg-type]
        Published(
            {
                "method": "leave_room",
                "sid": "s",
                "room": "r",
                "namespace": NS,
                "host_id": ours.host_id,
            }
        )
    )
    assert ours._queue.empty()

    # Another replica's emit (even one whose text names our id), and a callback for us, stay.
    await ours._on_msg(Published(emit(other.host_id)))  # type: ignore[arg-type]
    callback = {
        "method": "callback",
        "host_id": ours.host_id,
        "sid": "s",
        "namespace": NS,
        "id": 1,
        "args": [],
    }
    await ours._on_msg(Published(callback))  # type: ignore[arg-type]
    assert ours._queue.qsize() == 2


class PublishingNats:
    """A NATS connection that keeps what is published (at once, as a connected client does)."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []

    async def publish(self, subject: str, data: bytes) -> None:
        self.published.append((subject, data))


def recording_server(manager: Any) -> Any:
    """A Socket.IO server on `manager` that records the Engine.IO packets it sends; the socket
    "gone" has closed."""
    import socketio
    from engineio.exceptions import SocketIsClosedError

    class Recording(socketio.AsyncServer):  # type: ignore[misc]
        sent: list[tuple[str, Any]]

        async def _send_eio_packet(self, eio_sid: str, pkt: Any) -> None:
            if eio_sid == "gone":
                raise SocketIsClosedError()
            self.sent.append((eio_sid, pkt.encode()))

    server = Recording(async_mode="asgi", client_manager=manager)
    server.sent = []
    for n, eio_sid in enumerate(("e1", "gone", "e3")):
        manager.basic_enter_room(f"s{n}", NS, "visitor:acme:v1", eio_sid=eio_sid)
    return server


async def test_an_emit_is_queued_on_every_local_socket_without_waiting_for_the_loop() -> None:
    from socketio.async_manager import AsyncManager

    nats = PublishingNats()
    ours = NatsClientManager(nc=nats)  # type: ignore[arg-type]
    server = recording_server(ours)
    stock = recording_server(AsyncManager())
    for data in ({"text": "안녕하세요", "seq": 3}, None, ("a", 2), ()):
        emit = ours.emit("message", data, namespace=NS, room="visitor:acme:v1")
        try:
            emit.send(None)
        except StopIteration:
            pass  # done: every recipient's packet is queued, nothing was waited for
        else:
            emit.close()
            raise AssertionError("the emit waited for the event loop")
        await stock.manager.emit("message", data, namespace=NS, room="visitor:acme:v1")
    # The same packets python-socketio's own manager sends; the closed socket missed them only.
    assert server.sent == stock.sent
    assert sorted({sid for sid, _ in server.sent}) == ["e1", "e3"]
    assert len(nats.published) == 4  # and each went to the other replicas


async def test_an_emit_is_json_encoded_once_for_its_local_sockets_and_the_other_replicas(
    monkeypatch: Any,
) -> None:
    import json

    from engineio import json as socketio_json
    from socketio.async_manager import AsyncManager

    nats = PublishingNats()
    ours = NatsClientManager(nc=nats)  # type: ignore[arg-type]
    server = recording_server(ours)
    stock = recording_server(AsyncManager())
    dumps = json.dumps
    encoded: list[Any] = []

    def counting(obj: Any, *args: Any, **kwargs: Any) -> str:
        encoded.append(obj)
        return dumps(obj, *args, **kwargs)

    data = {"text": '안녕하세요 "quoted"', "seq": 3}
    for module in (json, socketio_json):  # python-socketio's packets encode with the latter
        monkeypatch.setattr(module, "dumps", counting)
    await ours.emit("message", data, namespace=NS, room="visitor:acme:v1", skip_sid="s9")
    monkeypatch.undo()
    assert len(encoded) == 1  # one encoding for both sockets here and the other replicas

    await stock.manager.emit("message", data, namespace=NS, room="visitor:acme:v1")
    assert server.sent == stock.sent
    ((_subject, body),) = nats.published
    # The other replicas read python-socketio's own message, this replica's id last.
    assert json.loads(body) == {
        "method": "emit",
        "event": "message",
        "data": [data],
        "binary": False,
        "namespace": NS,
        "room": "visitor:acme:v1",
        "skip_sid": "s9",
        "callback": None,
        "host_id": ours.host_id,
    }
    assert body.endswith(ours._own_tail)


async def test_an_emit_of_bytes_still_goes_as_a_binary_event() -> None:
    from socketio.async_manager import AsyncManager

    nats = PublishingNats()
    ours = NatsClientManager(nc=nats)  # type: ignore[arg-type]
    server = recording_server(ours)
    stock = recording_server(AsyncManager())
    await ours.emit("file", {"bytes": b"\x00\x01"}, namespace=NS, room="visitor:acme:v1")
    await stock.manager.emit("file", {"bytes": b"\x00\x01"}, namespace=NS, room="visitor:acme:v1")
    assert server.sent == stock.sent
    assert len(nats.published) == 1
