"""A carrier's call through a real edge proxy: Debian's Kamailio, record-routing, in front of the
gateway. The gateway keeps the proxy in the dialog's route set, so in-dialog requests travel
through it in both directions: the caller's ACK on the way in, the gateway's BYE on the way out."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from switchboard.core import embedded_nats
from switchboard.v1 import events_pb2

HOTLINE = "+8215880001"  # the test number plan's Korean hotline

KAMAILIO = shutil.which("kamailio") or "/usr/sbin/kamailio"
MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules/"

# A minimal edge proxy: record-route every new dialog, send it to the gateway, loose-route
# in-dialog requests, and log each request it relays.
CONFIG = """#!KAMAILIO
debug=2
log_stderror=yes
fork=yes
children=1
disable_tcp=yes
auto_aliases=no
listen=udp:127.0.0.1:{port}
mpath="{modules}"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "siputils.so"
loadmodule "textops.so"
loadmodule "xlog.so"

request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if (has_totag()) {{
        if (loose_route()) {{
            xlog("L_INFO", "relayed in-dialog $rm from $si:$sp to $ru\\n");
            t_relay();
            exit;
        }}
        if (is_method("ACK")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
        sl_send_reply("404", "Not here");
        exit;
    }}
    if (is_method("CANCEL")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
    record_route();
    $du = "sip:127.0.0.1:{gateway}";
    xlog("L_INFO", "relayed new $rm from $si:$sp to the gateway\\n");
    if (!t_relay()) {{ sl_reply_error(); }}
}}
"""


def free_port() -> int:
    return embedded_nats.free_port(kind=socket.SOCK_DGRAM)


class Kamailio:
    def __init__(self, folder: Path, gateway_port: int) -> None:
        self.folder = folder
        self.gateway_port = gateway_port
        self.port = 0
        self.proc: asyncio.subprocess.Process | None = None

    def log(self) -> str:
        path = self.folder / "kamailio.log"
        return path.read_text(errors="replace") if path.exists() else ""

    async def start(self) -> Kamailio:
        """Start on a free port, again on a fresh one if it was taken meanwhile; ready once an
        OPTIONS sent through it comes back answered by the gateway."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            self.port = free_port()
            config = self.folder / "kamailio.cfg"
            config.write_text(
                CONFIG.format(port=self.port, gateway=self.gateway_port, modules=MODULES)
            )
            folder = str(self.folder)
            with (self.folder / "kamailio.log").open("wb") as log:
                self.proc = await asyncio.create_subprocess_exec(
                    *(KAMAILIO, "-f", str(config), "-DD", "-E", "-Y", folder, "-w", folder),
                    *("-P", str(self.folder / "kamailio.pid")),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            for _ in range(100):
                if self.proc.returncode is not None:
                    break
                if await options(self.port):
                    return self
            await self.stop()
            if "bind" not in self.log().lower():
                break
        raise RuntimeError(f"kamailio did not start:\n{self.log()[-3000:]}")

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


class _Replies(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not self.got.done():
            self.got.set_result(data)


async def options(port: int) -> bool:
    """True when an OPTIONS to the proxy comes back with 200 (the gateway answered it)."""
    loop = asyncio.get_running_loop()
    transport, replies = await loop.create_datagram_endpoint(_Replies, local_addr=("127.0.0.1", 0))
    try:
        own = transport.get_extra_info("sockname")[1]
        tag = uuid.uuid4().hex[:12]
        request = (
            f"OPTIONS sip:{HOTLINE}@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{own};branch=z9hG4bK{tag}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:probe@127.0.0.1>;tag={tag}\r\n"
            f"To: <sip:{HOTLINE}@127.0.0.1>\r\n"
            f"Call-ID: probe-{tag}\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        transport.sendto(request, ("127.0.0.1", port))
        try:
            reply = await asyncio.wait_for(replies.got, 0.2)
        except TimeoutError:
            return False
        return reply.startswith(b"SIP/2.0 200")
    finally:
        transport.close()


@pytest.fixture
async def kamailio(voice: Any, tmp_path: Path) -> Any:
    if not shutil.which(KAMAILIO):
        pytest.fail("Kamailio is not installed: run `make system-deps` (kamailio)")
    proxy = await Kamailio(tmp_path / "kamailio", voice.sip_port).start()
    try:
        yield proxy
    finally:
        await proxy.stop()


async def test_a_call_through_a_record_routing_edge_proxy(voice: Any, kamailio: Kamailio) -> None:
    await voice.agent("agent-ko", {"ko": 5}, {"billing": 3})
    phone = await voice.phone("agent-ko")
    caller = await voice.caller("carrier", "+821055550000")
    await caller.command("dial", f"sip:{HOTLINE}@127.0.0.1:{kamailio.port}")
    await caller.wait_event("CALL_ESTABLISHED")
    await caller.command("sndcode", "1")  # 한국어
    await caller.command("sndcode", "1")  # billing
    created = await voice.events.wait(
        "ContactCreated", where=lambda e: e.contact.identities[0].value == "+821055550000"
    )
    contact_id = created[0].contact.contact_id
    assert created[0].contact.language == "ko"

    gw = voice.gateway.gateway
    leg = gw.calls[contact_id].caller
    # The proxy is in the caller leg's route set, and in-dialog requests go to it.
    assert (
        len(leg.dialog.route_set) == 1 and f"127.0.0.1:{kamailio.port}" in leg.dialog.route_set[0]
    )
    assert leg.dialog.peer.addr[1] == kamailio.port
    assert "relayed in-dialog ACK" in kamailio.log()  # the caller's ACK came via the proxy

    phone_mark = len(phone.events)
    await phone.wait_event("CALL_INCOMING", after=phone_mark)
    await phone.command("accept")
    await voice.events.wait("ContactAssigned", contact_id)
    up, down = await voice.relayed_both_ways(contact_id)
    assert up >= 25 and down >= 25

    # The agent hangs up: the gateway's BYE reaches the caller through the proxy.
    await phone.command("hangup")
    await caller.wait_event("CALL_CLOSED")
    ended = (await voice.events.wait("ContactEnded", contact_id))[0]
    assert ended.reason == events_pb2.END_REASON_COMPLETED
    assert f"relayed in-dialog BYE from 127.0.0.1:{voice.sip_port}" in kamailio.log()
