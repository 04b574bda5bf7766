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
