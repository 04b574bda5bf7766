"""A NATS server that vanishes without closing its connections (its node died, its network was
cut) is found out by the bus within a few pings, and the bus goes on through another server of
the cluster. nats-py's defaults ping every two minutes and give up after two unanswered pings:
a service would publish into the void for six minutes before it looked elsewhere.

The vanished server is a TCP proxy in front of a real nats-server that falls silent; the other
server named in the URL is the same nats-server reached directly."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlparse

import pytest

from switchboard.core import bus as bus_module
from switchboard.core.bus import Bus
from switchboard.testing.contacts import chat_contact_created as created
from switchboard.testing.tcp_proxy import SilentProxy

# Found out at NATS_PING_INTERVAL_SECONDS times one more than the pings it may leave unanswered.
FOUND_OUT_SECONDS = bus_module.NATS_PING_INTERVAL_SECONDS * (
    bus_module.NATS_MAX_OUTSTANDING_PINGS + 1
)


@pytest.mark.timeout(180)
async def test_the_bus_finds_a_silent_server_out_and_publishes_through_another(
    nats_url: str,
) -> None:
    upstream = urlparse(nats_url)
    assert upstream.hostname is not None and upstream.port is not None
    proxy = await SilentProxy(upstream.hostname, upstream.port).start()
    # The proxy first (the servers are tried in the order given), then the server itself.
    bus = await Bus.connect(
        f"nats://{proxy.target},{nats_url}", source="silent-test", dont_randomize=True
    )
    try:
        assert bus.nc.connected_url is not None
        assert bus.nc.connected_url.port == int(proxy.target.rpartition(":")[2])
        await bus.publish(created("before"))

        proxy.silence()

        # Publishing into the silence fails (no acknowledgement comes) until the bus has found
        # the server out and reconnected to the other one; then the publish is acknowledged.
        async def publish_until_acknowledged() -> None:
            while True:
                try:
                    await bus.publish(created("after"))
                    return
                except Exception:  # no acknowledgement in time: try again
                    await asyncio.sleep(0.5)

        publishing = asyncio.ensure_future(publish_until_acknowledged())
        acknowledged, _ = await asyncio.wait({publishing}, timeout=FOUND_OUT_SECONDS * 3)
        publishing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await publishing
        assert acknowledged, "the bus is still publishing to the server that fell silent"
        assert bus.nc.connected_url is not None
        assert bus.nc.connected_url.port == upstream.port
    finally:
        await bus.drain()
        await proxy.stop()
