"""Ports picked for servers are outside the kernel's ephemeral range, so no outgoing connection
(which takes its local port from that range) can take one before the server binds it."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from switchboard.core import embedded_nats
from switchboard.core.embedded_nats import free_port


def test_a_picked_port_is_free_and_below_the_ephemeral_range() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        for _ in range(20):
            port = free_port(kind=kind, also=(socket.SOCK_STREAM, socket.SOCK_DGRAM))
            assert embedded_nats.LOWEST_PICKED <= port < low
            for k in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                with socket.socket(socket.AF_INET, k) as s:
                    s.bind(("127.0.0.1", port))


def test_a_port_in_use_is_not_picked(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        taken = held.getsockname()[1]
        monkeypatch.setattr(embedded_nats, "_outside_ephemeral", lambda: range(taken, taken + 1000))
        picks = {free_port() for _ in range(50)}
    assert taken not in picks


def test_with_no_room_below_the_ephemeral_range_the_os_picks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(embedded_nats, "_outside_ephemeral", lambda: range(10000, 10010))
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", port))
