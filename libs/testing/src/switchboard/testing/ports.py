"""Free ports for servers that listen on one port over both TCP and UDP (SIP)."""

from __future__ import annotations

import socket


def free_tcp_and_udp_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago for both TCP and UDP on `host` (0.0.0.0: every
    address)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no port free for both TCP and UDP")
