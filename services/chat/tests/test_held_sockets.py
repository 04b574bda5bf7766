"""What a held customer socket costs the chat process: Engine.IO's heartbeat and writer run
without tasks of their own, and the heartbeat still keeps sockets alive (real ChatApp, real
Socket.IO clients, real nats-server)."""

from __future__ import annotations

import asyncio
from typing import Any

from engineio import packet

from switchboard.chat.bootstrap import ChatApp


def _socket_tasks(app: ChatApp) -> list[asyncio.Task[Any]]:
    """Tasks that wait on behalf of one of the server's sockets other than its reading loop: a
    heartbeat sleep or a wait for the socket's next outgoing packet."""
    assert app.sio is not None
    sockets = list(app.sio.eio.sockets.values())
    queues = {id(s.queue) for s in sockets}
    found = []
    for task in asyncio.all_tasks():
        coro = task.get_coro()
        frame = getattr(coro, "cr_frame", None)
        owner = frame.f_locals.get("self") if frame is not None else None
        if getattr(coro, "__qualname__", "").endswith("_send_ping") and owner in sockets:
            found.append(task)
        elif id(owner) in queues:  # a Queue.get wrapped in a task (asyncio.wait_for)
            found.append(task)
    return found


async def test_held_sockets_wait_without_tasks_of_their_own(chat: ChatApp, connect: Any) -> None:
    customers = [await connect.customer() for _ in range(5)]
    for customer in customers:
        await customer.next("session")
    assert chat.sio is not None and len(chat.sio.eio.sockets) == 5

    assert _socket_tasks(chat) == []

    ack = await customers[0].call("message", {"text": "안녕하세요"})
    assert ack["ok"], ack


async def test_heartbeat_keeps_a_held_socket_alive(chat: ChatApp, connect: Any) -> None:
    assert chat.sio is not None
    chat.sio.eio.ping_interval, chat.sio.eio.ping_timeout = 0.2, 1
    customer = await connect.customer()
    await customer.next("session")
    [socket] = chat.sio.eio.sockets.values()
    pongs = []
    receive = socket.receive

    async def counted(pkt: Any) -> None:
        if pkt.packet_type == packet.PONG:
            pongs.append(pkt)
        await receive(pkt)

    socket.receive = counted
    for _ in range(100):  # several heartbeats, each answered by the client
        await asyncio.sleep(0.05)
        if len(pongs) >= 3:
            break
    assert len(pongs) >= 3
    assert customer.sio.connected and not socket.closed
    ack = await customer.call("message", {"text": "아직 있어요"})
    assert ack["ok"], ack


def _reading_tasks() -> list[asyncio.Task[Any]]:
    """Tasks that wait for a socket's next incoming packet apart from the socket's own loop."""
    return [
        t
        for t in asyncio.all_tasks()
        if getattr(t.get_coro(), "__qualname__", "").endswith("websocket_wait")
    ]


async def test_a_socket_reads_its_packets_without_a_task_for_each(
    chat: ChatApp, connect: Any
) -> None:
    customers = [await connect.customer() for _ in range(3)]
    for customer in customers:
        await customer.next("session")
    assert _reading_tasks() == []
    for n, customer in enumerate(customers):
        ack = await customer.call("message", {"text": f"메시지 {n}"})
        assert ack["ok"], ack
        assert _reading_tasks() == []
    await customers[0].close()
    assert chat.sio is not None
    for _ in range(200):  # the server sees the socket go
        if len(chat.sio.eio.sockets) == 2:
            break
        await asyncio.sleep(0.01)
    assert len(chat.sio.eio.sockets) == 2
