"""Fixtures for the voice end-to-end tests: the router in-process on real NATS and gRPC, the
voice gateway on free ports, baresip user agents, and a recorder of the events on the bus.
They start two services, so they live here and not under services/voice-gateway/tests."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import re
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import pytest
import yaml

from switchboard.core import embedded_nats, recording_seal
from switchboard.core.bus import decode
from switchboard.router.bootstrap import RouterApp
from switchboard.router.settings import RouterSettings
from switchboard.testing.agents import AgentClient
from switchboard.testing.processes import ServiceProcess, service_process
from switchboard.voice_gateway import config as voice_config
from switchboard.voice_gateway.bootstrap import VoiceGatewayApp
from switchboard.voice_gateway.media.prompts import Prompts
from switchboard.voice_gateway.settings import VoiceGatewaySettings
from switchboard.voice_gateway.sip.message import SipMessage, parse_datagram

BARESIP = "/usr/bin/baresip"
# Synthesised prompts, shared by every gateway the tests start (keyed by voice and text, so a
# stale entry is never used): espeak-ng runs once per prompt, not once per test.
PROMPT_CACHE = Path(tempfile.gettempdir()) / "switchboard-tests-voice-prompt-cache"


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    return embedded_nats.free_port(kind=kind)


def baresip_sip_port() -> int:
    """A port for baresip's `sip_listen`: free for UDP and TCP, and the next one for TCP too
    (baresip's SIP/TLS listens there)."""
    for _ in range(50):
        port = free_port()
        if port < 65535 and all(_tcp_free(p) for p in (port, port + 1)):
            return port
    raise RuntimeError("no free port pair for baresip")


def _tcp_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Baresip:
    def __init__(
        self, folder: Path, account: str, tone_hz: int = 440, extra: Sequence[str] = ()
    ) -> None:
        """`extra`: more configuration lines (modules and their settings); "{folder}" in them
        names the phone's own folder."""
        self.folder = folder
        self.account = account
        self.tone_hz = tone_hz
        self.extra = list(extra)
        self.sip_port, self.ctrl_port = self._ports()
        self.proc: asyncio.subprocess.Process | None = None
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.events: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        self._responses: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._token = 0
        self._task: asyncio.Task[None] | None = None

    @staticmethod
    def _ports() -> tuple[int, int]:
        """(SIP, ctrl_tcp) ports: the control port is never the one SIP/TLS takes."""
        sip = baresip_sip_port()
        ctrl = free_port(socket.SOCK_STREAM)
        while ctrl in (sip, sip + 1):
            ctrl = free_port(socket.SOCK_STREAM)
        return sip, ctrl

    async def start(self) -> Baresip:
        """Start baresip; a port taken between choosing it and binding it means another try on
        fresh ports (free ports are only free when they are chosen)."""
        for attempt in range(3):
            try:
                return await self._start()
            except RuntimeError as exc:
                if "Address already in use" not in str(exc) or attempt == 2:
                    raise
                self.sip_port, self.ctrl_port = self._ports()
        raise AssertionError("unreachable")

    async def _start(self) -> Baresip:
        self.folder.mkdir(parents=True, exist_ok=True)
        rtp = free_port()
        (self.folder / "config").write_text(
            "\n".join(
                [
                    "poll_method epoll",
                    f"sip_listen 127.0.0.1:{self.sip_port}",
                    f"audio_player aufile,{self.folder / 'heard.wav'}",
                    f"audio_source ausine,{self.tone_hz}",
                    "ausrc_srate 48000",  # ausine makes 48 kHz only; baresip resamples
                    "ausrc_channels 2",
                    "audio_alert aufile,/dev/null",
                    f"rtp_ports {rtp}-{rtp + 20}",
                    "module_path /usr/lib/baresip/modules",
                    "module g711.so",  # before account.so: accounts name its codecs
                    "module account.so",
                    "module aufile.so",
                    "module ausine.so",
                    "module_app menu.so",
                    "module_app ctrl_tcp.so",
                    f"ctrl_tcp_listen 127.0.0.1:{self.ctrl_port}",
                    *(line.replace("{folder}", str(self.folder)) for line in self.extra),
                    "",
                ]
            )
        )
        (self.folder / "accounts").write_text(self.account + "\n")
        log = (self.folder / "baresip.log").open("wb")
        self.proc = await asyncio.create_subprocess_exec(
            BARESIP,
            "-f",
            str(self.folder),
            "-v",
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        for _ in range(200):
            try:
                self.reader, self.writer = await asyncio.open_connection(
                    "127.0.0.1", self.ctrl_port
                )
                break
            except OSError:
                if self.proc.returncode is not None:
                    raise RuntimeError(f"baresip exited: {self.log()}") from None
                await asyncio.sleep(0.05)
        else:
            raise RuntimeError(f"baresip ctrl_tcp never listened: {self.log()}")
        self._task = asyncio.create_task(self._read())
        return self

    def log(self) -> str:
        path = self.folder / "baresip.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    async def _read(self) -> None:
        assert self.reader is not None
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                length = await self.reader.readuntil(b":")
                data = await self.reader.readexactly(int(length[:-1]))
                await self.reader.readexactly(1)  # the trailing comma
                message = json.loads(data)
                if message.get("response"):
                    fut = self._responses.pop(str(message.get("token")), None)
                    if fut is not None and not fut.done():
                        fut.set_result(message)
                elif message.get("event"):
                    self.events.append(message)
                    self._changed.set()

    async def command(self, command: str, params: str = "") -> dict[str, Any]:
        assert self.writer is not None
        self._token += 1
        token = str(self._token)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._responses[token] = fut
        body = json.dumps({"command": command, "params": params, "token": token}).encode()
        self.writer.write(f"{len(body)}:".encode() + body + b",")
        return await asyncio.wait_for(fut, 10)

    async def wait_event(self, kind: str, timeout: float = 15.0, after: int = 0) -> dict[str, Any]:
        """The first event of `kind` (e.g. CALL_ESTABLISHED) at index >= `after`."""
        async with asyncio.timeout(timeout):
            while True:
                for event in self.events[after:]:
                    if event.get("type") == kind:
                        return event
                self._changed.clear()
                await self._changed.wait()

    def count(self, kind: str) -> int:
        return sum(1 for e in self.events if e.get("type") == kind)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.writer is not None:
            self.writer.close()
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


def sip_port(gateway: ServiceProcess) -> int:
    """The SIP port of a gateway made by Voice.gateway_process."""
    return int(gateway.env["VOICE_SIP_PORT"])


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


class UdpEndpoint(asyncio.DatagramProtocol):
    """A bare UDP socket on 127.0.0.1 (a SIP phone or user agent of the tests' own): its
    transport and the port it was given."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.port = transport.get_extra_info("sockname")[1]


class RawPhone(UdpEndpoint):
    """An agent's phone on a bare UDP socket: REGISTERs with digest (as `username`, the agent id
    unless given), answers OPTIONS while `answering`, and records every request the gateway
    sends it."""

    def __init__(self, agent_id: str, password: str, username: str = "") -> None:
        self.agent_id = agent_id
        self.password = password
        self.username = username or agent_id
        self.answering = True
        self.requests: list[SipMessage] = []
        self.responses: asyncio.Queue[SipMessage] = asyncio.Queue()
        self.pinged = asyncio.Event()
        super().__init__()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        msg = parse_datagram(data)
        if not msg.is_request:
            self.responses.put_nowait(msg)
            return
        self.requests.append(msg)
        if msg.method == "OPTIONS":
            self.pinged.set()
        if self.answering and self.transport is not None:
            self.transport.sendto(msg.response(200, "OK", "phone").encode(), addr)

    def options(self) -> list[SipMessage]:
        # Distinct transactions (UDP retransmissions share a branch).
        seen: dict[str, SipMessage] = {}
        for m in self.requests:
            if m.method == "OPTIONS":
                seen.setdefault(m.top_via.branch, m)
        return list(seen.values())

    def _register(self, gw_port: int, cseq: int, auth: str = "") -> bytes:
        uri = f"sip:127.0.0.1:{gw_port}"
        lines = [
            f"REGISTER {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{uuid.uuid4().hex[:12]};rport",
            "Max-Forwards: 70",
            f"From: <sip:{self.agent_id}@127.0.0.1>;tag=reg",
            f"To: <sip:{self.agent_id}@127.0.0.1>",
            "Call-ID: reg-" + self.agent_id,
            f"CSeq: {cseq} REGISTER",
            f"Contact: <sip:{self.agent_id}@127.0.0.1:{self.port}>",
            "Expires: 600",
        ]
        if auth:
            lines.append(auth)
        return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()

    async def send_register(self, gw_port: int, cseq: int, auth: str = "") -> SipMessage:
        """One REGISTER (with `auth`, an Authorization header line) and the gateway's answer."""
        assert self.transport is not None
        self.transport.sendto(self._register(gw_port, cseq, auth), ("127.0.0.1", gw_port))
        return await asyncio.wait_for(self.responses.get(), 5)

    def authorization(
        self,
        challenge: SipMessage,
        gw_port: int,
        nc: int = 1,
        method: str = "REGISTER",
        uri_user: str = "",
    ) -> str:
        """The Authorization header line answering `challenge` (qop=auth, nonce count `nc`) for
        a `method` request to the gateway (`uri_user`: the request URI's user part)."""
        params = dict(re.findall(r'(\w+)="?([^",]+)"?', challenge.get("WWW-Authenticate")))
        at = f"{uri_user}@" if uri_user else ""
        realm, nonce, uri = params["realm"], params["nonce"], f"sip:{at}127.0.0.1:{gw_port}"
        ha1 = md5(f"{self.username}:{realm}:{self.password}")
        ha2 = md5(f"{method}:{uri}")
        count = f"{nc:08x}"
        response = md5(f"{ha1}:{nonce}:{count}:c0ffee:auth:{ha2}")
        return (
            f'Authorization: Digest username="{self.username}", realm="{realm}", '
            f'nonce="{nonce}", uri="{uri}", response="{response}", algorithm=MD5, '
            f'qop=auth, nc={count}, cnonce="c0ffee"'
        )

    async def send_invite(self, gw_port: int, user: str, cseq: int, auth: str = "") -> SipMessage:
        """An INVITE to `user` at the gateway (a G.711 offer; with `auth`, an Authorization
        header line) and the gateway's final answer, ACKed when it is a refusal."""
        assert self.transport is not None
        branch = f"z9hG4bK{uuid.uuid4().hex[:12]}"
        uri = f"sip:{user}@127.0.0.1:{gw_port}"
        body = (
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {self.port + 2} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        )
        head = [
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch};rport",
            f"From: <sip:{self.agent_id}@127.0.0.1>;tag=inv",
            "Call-ID: inv-" + self.agent_id,
        ]
        lines = [
            f"INVITE {uri} SIP/2.0",
            *head,
            "Max-Forwards: 70",
            f"To: <{uri}>",
            f"CSeq: {cseq} INVITE",
            f"Contact: <sip:{self.agent_id}@127.0.0.1:{self.port}>",
            "Content-Type: application/sdp",
            *([auth] if auth else []),
        ]
        data = "\r\n".join(lines) + f"\r\nContent-Length: {len(body)}\r\n\r\n{body}"
        self.transport.sendto(data.encode(), ("127.0.0.1", gw_port))
        while True:
            resp = await asyncio.wait_for(self.responses.get(), 5)
            if resp.status >= 200 and resp.cseq[0] == cseq:
                break
        if resp.status >= 300:  # section 17.1.1.3: the ACK of a refusal, in its transaction
            ack = [f"ACK {uri} SIP/2.0", *head, "Max-Forwards: 70"]
            ack += [f"To: {resp.get('To')}", f"CSeq: {cseq} ACK", "Content-Length: 0"]
            self.transport.sendto(("\r\n".join(ack) + "\r\n\r\n").encode(), ("127.0.0.1", gw_port))
        return resp

    async def register(self, gw_port: int) -> str:
        """Register (challenge, then digest); returns the Authorization line that was taken."""
        challenge = await self.send_register(gw_port, 1)
        assert challenge.status == 401
        auth = self.authorization(challenge, gw_port)
        ok = await self.send_register(gw_port, 2, auth)
        assert ok.status == 200, ok.status
        return auth


async def raw_phone(agent_id: str, password: str, username: str = "") -> RawPhone:
    """A RawPhone bound to a free local UDP port."""
    _, phone = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: RawPhone(agent_id, password, username), local_addr=("127.0.0.1", 0)
    )
    return phone


KAMAILIO = shutil.which("kamailio") or "/usr/sbin/kamailio"
MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules/"

# Both configurations: the listener, the modules, and the start of the request route (hop
# limit, in-dialog requests loose-routed and logged, CANCEL, record-routing a new dialog).
_GLOBALS = """#!KAMAILIO
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
"""
_NEW_DIALOG = """request_route {{
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
"""

# A minimal edge proxy: record-route every new dialog, send it to the gateway, loose-route
# in-dialog requests, and log each request it relays.
CONFIG = (
    _GLOBALS
    + "\n"
    + _NEW_DIALOG
    + """    $du = "sip:127.0.0.1:{gateway}";
    xlog("L_INFO", "relayed new $rm from $si:$sp to the gateway\\n");
    if (!t_relay()) {{ sl_reply_error(); }}
}}
"""
)

# Several gateways behind the edge proxy (docs/voice.md, "Several gateways"): the dispatcher
# spreads new dialogs over the list round-robin, probes every gateway with OPTIONS each
# {ping_interval} s (one miss marks it down, one answer up again), and a new dialog that a gateway
# refuses with 503 or never answers (fr_timer) fails over to the next one. Each step is logged.
DISPATCHER_CONFIG = (
    _GLOBALS
    + """loadmodule "tmx.so"
loadmodule "dispatcher.so"
modparam("tm", "fr_timer", 1500)
modparam("dispatcher", "list_file", "{dispatcher_list}")
modparam("dispatcher", "flags", 2)  # failover: ds_next_dst() after a failed destination
modparam("dispatcher", "ds_ping_method", "OPTIONS")
modparam("dispatcher", "ds_ping_from", "sip:edge-proxy@127.0.0.1")
modparam("dispatcher", "ds_ping_interval", {ping_interval})
modparam("dispatcher", "ds_probing_mode", 1)
modparam("dispatcher", "ds_probing_threshold", 1)
modparam("dispatcher", "ds_inactive_threshold", 1)

"""
    + _NEW_DIALOG
    + """    if (!ds_select_dst("1", "4")) {{ sl_send_reply("503", "No gateway"); exit; }}
    xlog("L_INFO", "dispatched $rm $ci to $du\\n");
    t_on_failure("FAILOVER");
    t_on_reply("ANSWERED");
    if (!t_relay()) {{ sl_reply_error(); }}
}}

onreply_route[ANSWERED] {{
    if (status == "200") {{ xlog("L_INFO", "answered $rm $ci by sip:$si:$sp\\n"); }}
}}

failure_route[FAILOVER] {{
    if (t_is_canceled()) {{ exit; }}
    if (t_check_status("503") || (t_branch_timeout() && !t_branch_replied())) {{
        xlog("L_INFO", "gateway $du failed $rm $ci with $T_reply_code\\n");
        ds_mark_dst("ip");
        if (ds_next_dst()) {{
            xlog("L_INFO", "failover $rm $ci to $du\\n");
            t_on_failure("FAILOVER");
            t_on_reply("ANSWERED");
            t_relay();
            exit;
        }}
    }}
}}

event_route[dispatcher:dst-down] {{
    xlog("L_INFO", "gateway down: $ru\\n");
}}

event_route[dispatcher:dst-up] {{
    xlog("L_INFO", "gateway up: $ru\\n");
}}
"""
)


class Kamailio:
    """Debian's Kamailio as the edge proxy in front of the gateways on `gateway_ports`: one
    (CONFIG), or several through the dispatcher (DISPATCHER_CONFIG)."""

    def __init__(self, folder: Path, gateway_ports: Sequence[int], ping_interval: int = 1) -> None:
        self.folder = folder
        self.gateway_ports = list(gateway_ports)
        self.ping_interval = ping_interval
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
            config.write_text(self._config())
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

    def _config(self) -> str:
        if len(self.gateway_ports) == 1:
            return CONFIG.format(port=self.port, gateway=self.gateway_ports[0], modules=MODULES)
        listed = self.folder / "dispatcher.list"
        listed.write_text("".join(f"1 sip:127.0.0.1:{p}\n" for p in self.gateway_ports))
        return DISPATCHER_CONFIG.format(
            port=self.port,
            modules=MODULES,
            dispatcher_list=listed,
            ping_interval=self.ping_interval,
        )

    def lines(self, marker: str) -> list[str]:
        """The log lines holding `marker` (the config's xlog lines name what was relayed)."""
        return [line for line in self.log().splitlines() if marker in line]

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


SECRET = "voice-test-secret"
HOTLINE = "+8215880001"
CALLER = "+821012345678"

TEST_CONFIG: dict[str, Any] = {
    "realm": "switchboard",
    "phones": {
        "agent-ko": "pw-ko",
        "agent-ko2": "pw-ko2",
        "agent-zh": "pw-zh",
        "agent-en": "pw-en",
    },
    "numbers": {
        HOTLINE: {
            "tenant": "demo",
            "queue": "general",
            "language": "en",
            "language_menu": {
                "prompt": "language-menu",
                "options": {"1": "ko", "2": "zh", "3": "en"},
            },
            "topic_menu": {"prompt": "topic-menu", "options": {"1": "billing", "2": "technical"}},
            "menu_timeout": "3s",
            "callback_key": "*",
            "announce_every": "2s",
        },
        "+15550100": {"tenant": "demo", "queue": "general", "language": "en", "menu_timeout": "1s"},
    },
    "transfer_codes": {"9": "english"},
}


@dataclass
class Recorder:
    """Every event published on contact.> and routing.>, decoded."""

    events: list[Any] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def of(self, kind: str, contact_id: str | None = None) -> list[Any]:
        return [
            e
            for e in self.events
            if type(e).__name__ == kind
            and (
                contact_id is None
                or getattr(e, "contact_id", None) == contact_id
                or (kind == "ContactCreated" and e.contact.contact_id == contact_id)
            )
        ]

    async def wait(
        self,
        kind: str,
        contact_id: str | None = None,
        count: int = 1,
        timeout: float = 20.0,
        where: Callable[[Any], bool] | None = None,
    ) -> list[Any]:
        async with asyncio.timeout(timeout):
            while True:
                found = [e for e in self.of(kind, contact_id) if where is None or where(e)]
                if len(found) >= count:
                    return found
                self.changed.clear()
                await self.changed.wait()


@dataclass
class Voice:
    nats_url: str
    router: RouterApp
    gateway: VoiceGatewayApp
    events: Recorder
    tmp: Path
    agents: list[AgentClient] = field(default_factory=list)
    phones: list[Baresip] = field(default_factory=list)
    # More configuration lines for every baresip phone made from now on (e.g. modules).
    baresip_extra: list[str] = field(default_factory=list)
    # Each gateway process's replica id, by name: 0, 1, ... as a StatefulSet's pod indexes.
    gateway_indexes: dict[str, int] = field(default_factory=dict)

    @property
    def sip_port(self) -> int:
        return self.gateway.sip_port

    @property
    def router_target(self) -> str:
        return f"127.0.0.1:{self.router.port}"

    async def agent(
        self,
        agent_id: str,
        languages: dict[str, int],
        skills: dict[str, int] | None = None,
        tenant: str = "demo",
    ) -> AgentClient:
        client = AgentClient(self.router_target, SECRET, tenant, agent_id)
        await client.sign_in(languages, skills)
        self.agents.append(client)
        return client

    async def phone(
        self,
        agent_id: str,
        tone_hz: int = 880,
        tenant: str = "demo",
        password: str = "",
        gateways: Sequence[int] = (),
    ) -> Baresip:
        """An agent's SIP phone, registered with the gateway (with `gateways`: with each of the
        gateways on those SIP ports, an account each). Without a `password` it is the agent's in
        TEST_CONFIG and the SIP user name the bare agent id (one tenant's phones); with one, the
        user name is agent@tenant."""
        auth_user = ""
        if not password:
            password = TEST_CONFIG["phones"][agent_id]
        else:
            auth_user = f"auth_user={agent_id}@{tenant};"
        accounts = "\n".join(
            f"<sip:{agent_id}@127.0.0.1:{port}>;{auth_user}auth_pass={password};"
            "regint=600;answermode=manual"
            for port in gateways or [self.sip_port]
        )
        folder = self.tmp / f"{tenant}-{agent_id}"
        ua = await Baresip(folder, accounts, tone_hz, self.baresip_extra).start()
        self.phones.append(ua)
        if gateways:
            # Registered once each gateway answered 200 (baresip logs it; the REGISTER_OK event
            # may precede our ctrl link).
            for _ in range(300):
                if ua.log().count("} 200 OK") >= len(gateways):
                    return ua
                await asyncio.sleep(0.05)
            raise TimeoutError(f"{agent_id}'s phone never registered everywhere: {ua.log()}")
        # Registered once the gateway has its binding (the event may precede our ctrl link).
        assert self.gateway.gateway is not None
        for _ in range(300):
            if self.gateway.gateway.registrar.lookup(tenant, agent_id) is not None:
                break
            await asyncio.sleep(0.05)
        else:
            raise TimeoutError(f"{agent_id}'s phone never registered: {ua.log()}")
        return ua

    async def caller(self, name: str = "caller", number: str = CALLER, codecs: str = "") -> Baresip:
        """A caller's phone; `codecs` limits what it offers, e.g. "pcma" (A-law only)."""
        params = f";audio_codecs={codecs}" if codecs else ""
        account = f"<sip:{number}@127.0.0.1>;regint=0{params}"
        ua = await Baresip(self.tmp / name, account, extra=self.baresip_extra).start()
        self.phones.append(ua)
        return ua

    def gateway_process(self, name: str, **env: str) -> ServiceProcess:
        """Another voice gateway on the same router and configuration, as a real process (not
        started) on a SIP port of its own: `sip_port(process)` names it. Its replica id is an
        index, as a StatefulSet's pod index is (its durable is voice-gateway-<index>): the same
        for the same `name`."""
        config = self.tmp / "voice.yaml"  # written by start_gateway
        index = self.gateway_indexes.setdefault(name, len(self.gateway_indexes))
        return service_process(
            "switchboard.voice_gateway",
            "",
            "VOICE_GRPC_PORT",
            self.tmp / f"{name}.log",
            {
                "NATS_URL": self.nats_url,
                "SWITCHBOARD_AUTH_SECRET": SECRET,
                "VOICE_SIP_PORT": str(free_port()),
                "VOICE_CONFIG_FILE": str(config),
                "VOICE_PROMPTS_DIR": str(self.tmp / f"{name}-prompts"),
                "VOICE_PROMPT_CACHE_DIR": str(PROMPT_CACHE),
                "VOICE_ROUTER_ADDR": self.router_target,
                "VOICE_RING_TIMEOUT_SECONDS": "3",
                "VOICE_POSITION_POLL_SECONDS": "1",
                "SWITCHBOARD_REPLICA_ID": str(index),
                # Production wants the recordings' own key: the one the gateway started in
                # the test's process derives from SECRET, so recordings open with either.
                "VOICE_RECORDING_KEY": base64.b64encode(
                    recording_seal.master_key("", "", SECRET)
                ).decode(),
                **env,
            },
        )

    async def started_gateway_process(self, name: str, **env: str) -> ServiceProcess:
        """`gateway_process`, started; on fresh ports again if its ports were taken meanwhile
        (free ports are only free when they are chosen)."""
        for attempt in range(3):
            gateway = self.gateway_process(name, **env)
            try:
                await gateway.start()
                return gateway
            except AssertionError as exc:
                gateway.stop()
                # asyncio says "address already in use", the OS "Address already in use".
                if "address already in use" not in str(exc).lower() or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def dial_uri(self, number: str = HOTLINE) -> str:
        return f"sip:{number}@127.0.0.1:{self.sip_port}"

    async def dial_korean_billing(
        self, name: str, number: str, codecs: str = ""
    ) -> tuple[Baresip, str]:
        """A caller dials the hotline, presses 1 (한국어) and 1 (billing); returns the caller
        and the contact id."""
        caller = await self.caller(name, number, codecs)
        await caller.command("dial", self.dial_uri(HOTLINE))
        await caller.wait_event("CALL_ESTABLISHED")
        await caller.command("sndcode", "1")
        await caller.command("sndcode", "1")
        created = await self.events.wait(
            "ContactCreated", where=lambda e: e.contact.identities[0].value == number
        )
        return caller, created[0].contact.contact_id

    async def answered_call(self, line: str, tone_hz: int) -> tuple[Baresip, Baresip, str]:
        """A caller dialling `line` (tenant demo), answered by agent a1 on its phone (playing
        `tone_hz`) and relayed both ways: (caller's phone, agent's phone, contact id)."""
        phone = await self.phone("a1", tone_hz=tone_hz, tenant="demo", password="pw-a1")
        await self.agent("a1", {"en": 5}, tenant="demo")
        caller = await self.caller("caller", "+821055550000")
        await caller.command("dial", self.dial_uri(line))
        await caller.wait_event("CALL_ESTABLISHED")
        created = await self.events.wait("ContactCreated")
        contact_id = str(created[0].contact.contact_id)
        await phone.wait_event("CALL_INCOMING", timeout=20)
        await phone.command("accept")
        await self.events.wait("ContactAssigned", contact_id, timeout=30)
        await self.relayed_both_ways(contact_id, 10)
        return caller, phone, contact_id

    async def relayed_both_ways(self, contact_id: str, packets: int = 25) -> tuple[int, int]:
        """Waits until the bridge relayed `packets` RTP packets in each direction."""
        gw = self.gateway.gateway
        assert gw is not None
        call = gw.calls[contact_id]
        up = down = 0
        for _ in range(200):
            assert call.caller is not None and call.agent is not None
            up, down = call.caller.rtp.relayed, call.agent.rtp.relayed
            if up >= packets and down >= packets:
                return up, down
            await asyncio.sleep(0.05)
        raise AssertionError(f"RTP relayed caller->agent {up}, agent->caller {down}")


async def start_gateway(
    nats_url: str, router_port: int, tmp: Path, config: dict[str, Any], **extra: Any
) -> VoiceGatewayApp:
    path = tmp / "voice.yaml"
    path.write_text(yaml.safe_dump(config))
    settings = VoiceGatewaySettings(
        NATS_URL=nats_url,
        SWITCHBOARD_AUTH_SECRET=SECRET,
        VOICE_SIP_PORT=0,
        VOICE_CONFIG_FILE=str(path),
        VOICE_PROMPTS_DIR=str(tmp / "prompts"),
        VOICE_ROUTER_ADDR=f"127.0.0.1:{router_port}",
        VOICE_RING_TIMEOUT_SECONDS=3,
        VOICE_POSITION_POLL_SECONDS=1,
        **{"VOICE_GRPC_PORT": 0, "VOICE_PROMPT_CACHE_DIR": str(PROMPT_CACHE), **extra},
    )
    app = VoiceGatewayApp(settings)
    await app.start()
    return app


@pytest.fixture(scope="session", autouse=True)
def prompt_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared prompt cache filled before any gateway starts (a gateway process that found it
    empty would spend its start-up time synthesising)."""
    cfg = voice_config.load_text(yaml.safe_dump(TEST_CONFIG))
    prompts = Prompts(tmp_path_factory.mktemp("prompts"), cache_dir=PROMPT_CACHE)
    prompts.load(tuple(cfg.prompts), cfg.prompt_keys | {"*", "1", "2", "3"})
    return PROMPT_CACHE


@pytest.fixture
def gateway_settings() -> dict[str, Any]:
    """Extra gateway settings (environment names); a test module overrides this fixture."""
    return {}


@pytest.fixture
def gateway_config() -> dict[str, Any]:
    """The gateway's configuration (voice.yaml as a dict); a test module overrides this fixture."""
    return TEST_CONFIG


@pytest.fixture
async def voice(
    nats_url: str, tmp_path: Path, gateway_settings: dict[str, Any], gateway_config: dict[str, Any]
) -> AsyncIterator[Voice]:
    common = {"NATS_URL": nats_url, "SWITCHBOARD_AUTH_SECRET": SECRET}
    router = RouterApp(RouterSettings(**common, ROUTER_GRPC_PORT=0))
    await router.start()
    recorder = Recorder()
    nc = await nats.connect(nats_url)

    async def record(msg: Any) -> None:
        try:
            recorder.events.append(decode(msg))
        except Exception:
            return
        recorder.changed.set()

    await nc.subscribe("contact.>", cb=record)
    await nc.subscribe("routing.>", cb=record)
    gateway = await start_gateway(
        nats_url, router.port, tmp_path, gateway_config, **gateway_settings
    )
    v = Voice(nats_url, router, gateway, recorder, tmp_path)
    try:
        yield v
    finally:
        for ua in v.phones:
            await ua.stop()
        await gateway.stop()
        for agent in v.agents:
            await agent.close()
        await nc.close()
        await router.stop()


Waiter = Callable[[], Awaitable[None]]
