"""Who a request comes from: the peer's address, or, when the peer is a trusted proxy (an
ingress, a load balancer), the address it forwarded in X-Forwarded-For.

The header is read from the right: each trusted proxy appends the address it received from, so
the first address from the right that is not a trusted proxy is the client. Anything further
left was written by the client itself and is not believed."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_networks(spec: str) -> tuple[Network, ...]:
    """`CHAT_TRUSTED_PROXIES`: addresses or networks, comma-separated ("" trusts none)."""
    out = []
    for part in spec.split(","):
        if part.strip():
            try:
                out.append(ipaddress.ip_network(part.strip(), strict=False))
            except ValueError as exc:
                raise ValueError(
                    f"CHAT_TRUSTED_PROXIES: {part.strip()!r} is not an address"
                ) from exc
    return tuple(out)


def _trusted(address: str, trusted: Iterable[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def client_address(peer: str, forwarded_for: str, trusted: tuple[Network, ...]) -> str:
    """The client's address for a request from `peer` carrying `forwarded_for`."""
    if not trusted or not _trusted(peer, trusted):
        return peer
    for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
        if not _trusted(hop, trusted):
            return hop
    return peer
