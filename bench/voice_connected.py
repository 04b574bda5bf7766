"""Voice bench, connected calls: caller <-> voice gateway <-> agent phone through the real gateway
process over SIP, with the gateway's recording policy on and off.

The router and the gateway run as their own processes. Two tenants share the gateway: `demo`
records every call (`mode: on`) and `bench` records none (`mode: off`); each has its own number,
its agents and their phones. An agent process signs the agents in over the router's session
stream (the gateway accepts each offer for the agent once the agent's phone answers). A load
generator process is both the callers and the agents' phones, with raw SIP over UDP: the phones
REGISTER with digest and answer the gateway's INVITE with 200 OK and SDP; every caller and every
agent leg sends 160-byte G.711 frames at 50 packets/s and counts what it receives.

Calls are stepped up, doubling from BENCH_VOICE_CONNECTED_START to BENCH_VOICE_CONNECTED_CAP,
unrecorded first, then recorded, until fewer than 95% of the packets come through in either
direction, a call is not connected, or the gateway process uses more than 90% of a core. CPU is
the gateway process's utime + stime over the window, per connected call-second; the recording's
cost at hang-up (closing and sealing each file) falls outside the window and is not counted.

The recording's cost is then measured apart from the ramp: at the most calls both phases held,
BENCH_VOICE_CONNECTED_PAIRS (3) alternating pairs, unrecorded then recorded, each placing its
calls afresh and measuring over BENCH_VOICE_CONNECTED_PAIR_WINDOW_SECONDS (8 s); the ratio is the
median of the pairs' (a ramp step's single 3 s window varies by a tenth or more, and the two
ramps run minutes apart). The ramp's own ratio is printed beside it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import multiprocessing
import os
import pathlib
import re
import statistics
import struct
import sys
import tempfile
import time
import uuid
from typing import Any

from bench.stats import cpu_seconds, loop_cpu_seconds, machine_busy
from bench.voice import (
    CPU_SATURATED,
    PERIOD,
    PPS,
    SECRET,
    SUSTAINED,
    _Call,
    _headers,
    _Rtp,
    _Sip,
    _start,
    _stop,
    _wait_tcp,
)
from switchboard.core.grpc import check_health
from switchboard.testing.ports import free_tcp_and_udp_port

CONNECTED_START = int(os.environ.get("BENCH_VOICE_CONNECTED_START", "25"))
CONNECTED_CAP = int(os.environ.get("BENCH_VOICE_CONNECTED_CAP", "200"))
CONNECTED_WINDOW = float(os.environ.get("BENCH_VOICE_CONNECTED_WINDOW_SECONDS", "3"))
# Recorded against unrecorded: this many alternating pairs at the most calls both held, each
# over this window.
CONNECTED_PAIRS = int(os.environ.get("BENCH_VOICE_CONNECTED_PAIRS", "3"))
CONNECTED_PAIR_WINDOW = float(os.environ.get("BENCH_VOICE_CONNECTED_PAIR_WINDOW_SECONDS", "8"))
CONNECT_LIMIT = 40.0  # seconds for a step's new calls to be answered by the agents' phones
REALM = "switchboard"
# recorded -> (tenant, dialled number); the tenants' recording modes are set in `_config`.
PHASES = {False: ("bench", "+15550301"), True: ("demo", "+15550300")}


def connected_steps(start: int, cap: int) -> list[int]:
    """The calls of each step: `start` doubled up to `cap` (and `cap` itself, the last step)."""
    steps, n = [], max(1, start)
    while n < cap:
        steps.append(n)
        n *= 2
    steps.append(cap)
    return steps


def connected_passes(step: dict[str, Any]) -> bool:
    """A step passes when every call was connected, SUSTAINED of 50 packets/s arrived each way
    (mean over the calls), and the gateway process used at most CPU_SATURATED of a core."""
    return (
        step["connected"] == step["calls"]
        and step["to_caller"] >= SUSTAINED
        and step["to_agent"] >= SUSTAINED
        and step["cpu_util"] <= CPU_SATURATED
    )


def common_ratio(plain: list[dict[str, Any]], recorded: list[dict[str, Any]]) -> tuple[int, float]:
    """(calls, recorded over unrecorded CPU per call-second) at the most calls both passed."""
    a = {s["calls"]: s for s in plain if connected_passes(s)}
    b = {s["calls"]: s for s in recorded if connected_passes(s)}
    both = sorted(set(a) & set(b))
    if not both:
        return 0, float("nan")
    n = both[-1]
    return n, b[n]["cpu_ms_per_call_s"] / a[n]["cpu_ms_per_call_s"]


def digest(user: str, password: str, method: str, uri: str, challenge: str, nc: int = 1) -> str:
    """The Authorization header value answering a WWW-Authenticate `challenge` (RFC 2617,
    qop=auth, MD5)."""
    params = dict(re.findall(r'(\w+)="?([^",]+)"?', challenge))

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    realm, nonce, count, cnonce = params["realm"], params["nonce"], f"{nc:08x}", "be0c4"
    ha1, ha2 = md5(f"{user}:{realm}:{password}"), md5(f"{method}:{uri}")
    response = md5(f"{ha1}:{nonce}:{count}:{cnonce}:auth:{ha2}")
    return (
        f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
        f'response="{response}", algorithm=MD5, qop=auth, nc={count}, cnonce="{cnonce}"'
    )


def _sdp(port: int) -> str:
    return (
        "v=0\r\no=bench 1 1 IN IP4 127.0.0.1\r\ns=bench\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
    )


def _remote(body: str) -> tuple[str, int] | None:
    host, port = "127.0.0.1", 0
    for line in body.split("\r\n"):
        if line.startswith("c=IN IP4 "):
            host = line[9:].strip()
        elif line.startswith("m=audio "):
            port = int(line.split()[1])
    return (host, port) if port else None


# ---- the load generator: callers and agents' phones (its own process) -------------------------


class _Leg:
    """An agent phone's side of one call."""

    def __init__(self, rtp: _Rtp, port: int, response: str) -> None:
        self.rtp, self.port, self.response = rtp, port, response
        self.remote: tuple[str, int] | None = None


class _Phones(asyncio.DatagramProtocol):
    """Every agent's phone on one UDP socket: REGISTER, answer INVITEs, 200 to the rest."""

    def __init__(self, gateway: tuple[str, int]) -> None:
        self.gateway = gateway
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.waiting: dict[str, asyncio.Future[tuple[str, dict[str, str]]]] = {}
        self.legs: dict[str, _Leg] = {}  # by the gateway's Call-ID
        self.by_caller: dict[str, _Leg] = {}  # by the caller's number (the INVITE's From)
        self.answered: asyncio.Event = asyncio.Event()
        self.opening: set[str] = set()  # INVITEs whose answer is being made

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.port = transport.get_extra_info("sockname")[1]

    def _send(self, text: str, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(text.encode(), addr)

    async def register(self, agent: str, tenant: str, password: str) -> int:
        user = f"{agent}@{tenant}"
        uri = f"sip:127.0.0.1:{self.gateway[1]}"
        call_id = f"reg-{user}-{uuid.uuid4().hex[:8]}"
        auth = ""
        status = 0
        for cseq in range(1, 5):  # challenged, then again if the nonce went stale
            fut = asyncio.get_running_loop().create_future()
            self.waiting[call_id] = fut
            request = (
                f"REGISTER {uri} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{uuid.uuid4().hex};rport\r\n"
                "Max-Forwards: 70\r\n"
                f"From: <sip:{agent}@127.0.0.1>;tag=reg\r\n"
                f"To: <sip:{agent}@127.0.0.1>\r\n"
                f"Call-ID: {call_id}\r\n"
                f"CSeq: {cseq} REGISTER\r\n"
                f"Contact: <sip:{agent}@127.0.0.1:{self.port}>\r\n"
                "Expires: 3600\r\n"
                + (f"Authorization: {auth}\r\n" if auth else "")
                + "Content-Length: 0\r\n\r\n"
            )
            for _ in range(6):  # timer E-style retransmission, the same transaction
                self._send(request, self.gateway)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(fut), 1.0)
                    break
            if not fut.done():
                self.waiting.pop(call_id, None)
                return 0
            start, headers = fut.result()
            status = int(start.split()[1])
            if status != 401:
                break
            auth = digest(user, password, "REGISTER", uri, headers.get("www-authenticate", ""))
        return status

    def _reply(self, headers: dict[str, str], status: str, extra: str = "", body: str = "") -> str:
        return (
            f"SIP/2.0 {status}\r\n"
            + "".join(
                f"{h}: {headers[h.lower()]}\r\n"
                for h in ("Via", "From", "To", "Call-ID", "CSeq")
                if h.lower() in headers
            )
            + extra
            + f"Content-Length: {len(body)}\r\n\r\n{body}"
        )

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            start, headers, body = _headers(data.decode("utf-8", "replace"))
        except ValueError:
            return
        call_id = headers.get("call-id", "")
        if start.startswith("SIP/2.0 "):
            fut = self.waiting.pop(call_id, None)
            if fut is not None and not fut.done() and not start.startswith("SIP/2.0 1"):
                fut.set_result((start, headers))
            return
        method = start.split(" ", 1)[0]
        if method == "ACK":
            return
        if method != "INVITE":  # OPTIONS keepalives, the gateway's BYE
            self._send(self._reply(headers, "200 OK"), addr)
            return
        leg = self.legs.get(call_id)
        if leg is not None:  # a retransmission: the same answer
            self._send(leg.response, addr)
        elif call_id not in self.opening:
            self.opening.add(call_id)
            asyncio.get_running_loop().create_task(self._answer(start, headers, body, addr))

    async def _answer(
        self, start: str, headers: dict[str, str], body: str, addr: tuple[str, int]
    ) -> None:
        """200 OK with SDP for the gateway's INVITE, from a socket of the leg's own."""
        loop = asyncio.get_running_loop()
        transport, rtp = await loop.create_datagram_endpoint(_Rtp, local_addr=("127.0.0.1", 0))
        port = transport.get_extra_info("sockname")[1]
        user = start.split()[1].split("@")[0].removeprefix("sip:")
        headers["to"] = f"{headers.get('to', '')};tag={uuid.uuid4().hex[:10]}"
        response = self._reply(
            headers,
            "200 OK",
            f"Contact: <sip:{user}@127.0.0.1:{self.port}>\r\nContent-Type: application/sdp\r\n",
            _sdp(port),
        )
        leg = _Leg(rtp, port, response)
        leg.remote = _remote(body)
        call_id = headers.get("call-id", "")
        self.legs[call_id] = leg
        self.opening.discard(call_id)
        caller = re.search(r"sip:([^@>]+)@", headers.get("from", ""))
        if caller:
            self.by_caller[caller.group(1)] = leg
        self.answered.set()
        self._send(response, addr)


async def _connected_load(gateway_port: int, phones: list[tuple[str, str, str]], conn: Any) -> None:
    loop = asyncio.get_running_loop()
    gateway = ("127.0.0.1", gateway_port)
    _, sip = await loop.create_datagram_endpoint(lambda: _Sip(gateway), local_addr=("127.0.0.1", 0))
    _, ph = await loop.create_datagram_endpoint(
        lambda: _Phones(gateway), local_addr=("127.0.0.1", 0)
    )
    calls: list[_Call] = []
    serial = [0]
    frame = bytes([0xFF]) * 160  # PCMU silence

    async def send_rtp() -> None:
        """Every caller and every answered agent leg sends a frame each 20 ms."""
        seq, ts, due = 0, 0, time.monotonic()
        while True:
            seq, ts = (seq + 1) & 0xFFFF, (ts + 160) & 0xFFFFFFFF
            for call in calls:
                if call.rtp.transport is not None and call.remote_rtp is not None:
                    header = struct.pack("!BBHII", 0x80, 0, seq, ts, hash(call.call_id) & 0xFFFF)
                    call.rtp.transport.sendto(header + frame, call.remote_rtp)
                leg = ph.by_caller.get(call.caller)
                if leg is not None and leg.remote is not None and leg.rtp.transport is not None:
                    header = struct.pack("!BBHII", 0x80, 0, seq, ts, leg.port)
                    leg.rtp.transport.sendto(header + frame, leg.remote)
            due += PERIOD
            await asyncio.sleep(max(0.0, due - time.monotonic()))

    sender = asyncio.create_task(send_rtp())

    async def place(number: str) -> None:
        serial[0] += 1
        _, rtp = await loop.create_datagram_endpoint(_Rtp, local_addr=("127.0.0.1", 0))
        port = rtp.transport.get_extra_info("sockname")[1]  # type: ignore[union-attr]
        call = _Call(serial[0], rtp, port)
        sip.calls[call.call_id] = call
        for _ in range(4):
            sip.invite(call)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(call.final), 2.0)
                break
        if call.status == 200 and call.remote_rtp is not None:
            calls.append(call)
        elif rtp.transport is not None:
            rtp.transport.close()

    async def hang_up() -> int:
        ending = list(calls)
        calls.clear()
        for _ in range(5):
            waiting = [c for c in ending if not c.bye_done.done()]
            if not waiting:
                break
            for i, call in enumerate(waiting):
                sip.bye(call)
                if i % 50 == 49:
                    await asyncio.sleep(0.01)
            await asyncio.wait([c.bye_done for c in waiting], timeout=1.0)
        for call in ending:
            if call.rtp.transport is not None:
                call.rtp.transport.close()
            leg = ph.by_caller.pop(call.caller, None)
            if leg is not None and leg.rtp.transport is not None:
                leg.rtp.transport.close()
        return sum(1 for c in ending if c.bye_done.done())

    try:
        while True:
            command, arg = await asyncio.to_thread(conn.recv)
            if command == "register":
                registering = asyncio.Semaphore(20)

                async def register(
                    agent: str, tenant: str, pw: str, gate: asyncio.Semaphore = registering
                ) -> int:
                    async with gate:
                        return await ph.register(agent, tenant, pw)

                statuses = await asyncio.gather(*(register(*phone) for phone in phones))
                if any(s != 200 for s in statuses):
                    print(
                        f"voice bench connected: REGISTER answers {sorted(set(statuses))}",
                        file=sys.stderr,
                    )
                conn.send(sum(1 for s in statuses if s == 200))
            elif command == "calls":
                number, total = arg
                sip.number = number
                started = time.monotonic()
                gate = asyncio.Semaphore(25)

                async def gated(gate: asyncio.Semaphore = gate, number: str = number) -> None:
                    async with gate:
                        await place(number)

                await asyncio.gather(*(gated() for _ in range(total - len(calls))))
                deadline = started + CONNECT_LIMIT
                while time.monotonic() < deadline:
                    connected = sum(1 for c in calls if c.caller in ph.by_caller)
                    if connected >= total:
                        break
                    ph.answered.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(ph.answered.wait(), 1.0)
                conn.send(
                    {
                        "answered": len(calls),
                        "connected": sum(1 for c in calls if c.caller in ph.by_caller),
                        "setup_s": time.monotonic() - started,
                    }
                )
            elif command == "count":
                legs = [ph.by_caller.get(c.caller) for c in calls]
                for call in calls:
                    call.rtp.received = 0
                for leg in legs:
                    if leg is not None:
                        leg.rtp.received = 0
                t0 = time.monotonic()
                conn.send("started")
                await asyncio.sleep(float(arg))
                conn.send(
                    {
                        "elapsed": time.monotonic() - t0,
                        "to_caller": [c.rtp.received for c in calls],
                        "to_agent": [leg.rtp.received if leg else 0 for leg in legs],
                    }
                )
            elif command == "hangup":
                conn.send(await hang_up())
            else:
                with contextlib.suppress(Exception):
                    await hang_up()
                conn.send("bye")
                return
    finally:
        sender.cancel()


def _connected_load_process(
    gateway_port: int, phones: list[tuple[str, str, str]], conn: Any
) -> None:
    asyncio.run(_connected_load(gateway_port, phones, conn))


# ---- the agents (their own process) ------------------------------------------------------------


async def _agents(target: str, agents: list[tuple[str, str]], conn: Any) -> None:
    from switchboard.testing.agents import SessionAgentClient

    clients = []
    gate = asyncio.Semaphore(20)

    async def sign_in(agent: str, tenant: str) -> None:
        async with gate:
            client = SessionAgentClient(target, SECRET, tenant, agent)
            await client.sign_in({"en": 5})
            clients.append(client)

    await asyncio.gather(*(sign_in(a, t) for a, t in agents))
    conn.send(len(clients))
    await asyncio.to_thread(conn.recv)  # until told to stop
    for client in clients:
        with contextlib.suppress(Exception):
            await client.close()
    conn.send("stopped")


def _agents_process(target: str, agents: list[tuple[str, str]], conn: Any) -> None:
    asyncio.run(_agents(target, agents, conn))


async def _leading(target: str) -> None:
    """Until the router serves (it leads): agents sign in with the leader."""
    for _ in range(300):
        if await check_health(target, timeout=1) == "SERVING":
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the router at {target} never served")


# ---- the run --------------------------------------------------------------------------------


def _config(work: pathlib.Path, per_tenant: int) -> tuple[pathlib.Path, list[tuple[str, str, str]]]:
    """Two tenants, one number each, straight to the queue; `demo` recorded, `bench` not."""
    import yaml

    phones: list[tuple[str, str, str]] = []
    data: dict[str, Any] = {"realm": REALM, "phones": {}, "numbers": {}, "recording": {}}
    for recorded, (tenant, number) in PHASES.items():
        data["phones"][tenant] = {}
        for i in range(per_tenant):
            agent, password = f"bench-{i}", f"pw-{tenant}-{i}"
            data["phones"][tenant][agent] = password
            phones.append((agent, tenant, password))
        data["numbers"][number] = {"tenant": tenant, "queue": "general", "language": "en"}
        data["recording"][tenant] = {"mode": "on" if recorded else "off"}
    path = work / "voice-connected.yaml"
    path.write_text(yaml.safe_dump(data))
    return path, phones


async def run_connected(work: pathlib.Path, nats_url: str) -> dict[str, Any]:
    import nats

    work = work / "voice-connected"
    (work / "recordings").mkdir(parents=True, exist_ok=True)
    common = {"NATS_URL": nats_url, "SWITCHBOARD_AUTH_SECRET": SECRET, "LOG_LEVEL": "WARNING"}
    router_port, sip_port = free_tcp_and_udp_port(), free_tcp_and_udp_port()
    config, phones = _config(work, CONNECTED_CAP)
    steps = connected_steps(CONNECTED_START, CONNECTED_CAP)
    router = gateway = None
    load: Any = None
    agents: Any = None
    conn: Any = None
    aconn: Any = None
    results: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    pairs: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    recordings = {False: 0, True: 0}
    nc: Any = None
    try:
        router = _start(
            "switchboard.router", {**common, "ROUTER_GRPC_PORT": str(router_port)}, work / "r.log"
        )
        await _wait_tcp(router_port, router, "router", work / "r.log")
        await _leading(f"127.0.0.1:{router_port}")  # the leader: agents sign in with it
        gateway = _start(
            "switchboard.voice_gateway",
            {
                **common,
                "VOICE_SIP_PORT": str(sip_port),
                "VOICE_SIP_TLS_PORT": str(free_tcp_and_udp_port()),
                "VOICE_GRPC_PORT": str(free_tcp_and_udp_port()),
                "VOICE_PROMPTS_DIR": str(work / "prompts"),
                "VOICE_PROMPT_CACHE_DIR": str(
                    pathlib.Path(tempfile.gettempdir()) / "switchboard-bench-voice-prompt-cache"
                ),
                "VOICE_CONFIG_FILE": str(config),
                "VOICE_MAX_CALLS": str(CONNECTED_CAP * 4),
                "VOICE_RING_TIMEOUT_SECONDS": "10",
                "VOICE_ROUTER_ADDR": f"127.0.0.1:{router_port}",
                "VOICE_RECORDINGS_DIR": str(work / "recordings"),
                "VOICE_RECORDING_KEY": base64.b64encode(os.urandom(32)).decode(),
            },
            work / "gw.log",
        )
        await _wait_tcp(sip_port, gateway, "voice gateway", work / "gw.log", tries=1800)
        print("voice bench connected: router and gateway up", file=sys.stderr)
        # Each stored recording is a MessageAdded of its contact: counted per tenant.
        nc = await nats.connect(nats_url)
        stored: dict[str, int] = {}

        async def on_added(msg: Any) -> None:
            tenant = msg.subject.split(".")[1]
            stored[tenant] = stored.get(tenant, 0) + 1

        await nc.subscribe("contact.*.*.message_added", cb=on_added)
        ctx = multiprocessing.get_context("spawn")
        aconn, achild = ctx.Pipe()
        agents = ctx.Process(
            target=_agents_process,
            args=(f"127.0.0.1:{router_port}", [(a, t) for a, t, _ in phones], achild),
        )
        agents.start()
        conn, child = ctx.Pipe()
        load = ctx.Process(target=_connected_load_process, args=(sip_port, phones, child))
        load.start()

        async def ask(command: str, arg: Any, timeout: float = 120) -> Any:
            conn.send((command, arg))
            return await asyncio.wait_for(asyncio.to_thread(conn.recv), timeout)

        signed_in = await asyncio.wait_for(asyncio.to_thread(aconn.recv), 120)
        registered = await ask("register", None)
        print(
            f"voice bench connected: {signed_in} agents signed in, {registered} phones registered",
            file=sys.stderr,
        )

        async def measure(recorded: bool, n: int, window: float) -> dict[str, Any]:
            """`n` calls of the phase's tenant up (placed up to `n`), CPU over `window`."""
            placed = await ask("calls", (PHASES[recorded][1], n))
            await asyncio.sleep(1.0)  # the bridges' first packets through
            conn.send(("count", window))
            await asyncio.wait_for(asyncio.to_thread(conn.recv), 30)  # "started"
            cpu0, t0, box0 = cpu_seconds(gateway.pid), time.monotonic(), machine_busy()
            loop0 = loop_cpu_seconds(gateway.pid)
            gen0 = cpu_seconds(load.pid)
            counted = await asyncio.wait_for(asyncio.to_thread(conn.recv), 30 + window)
            cpu1, t1, box1 = cpu_seconds(gateway.pid), time.monotonic(), machine_busy()
            loop1 = loop_cpu_seconds(gateway.pid)
            gen1 = cpu_seconds(load.pid)
            expected = counted["elapsed"] * PPS
            n_calls = max(1, len(counted["to_caller"]))
            return {
                "calls": n,
                "answered": placed["answered"],
                "connected": placed["connected"],
                "setup_s": placed["setup_s"],
                "to_caller": sum(counted["to_caller"]) / (n_calls * expected),
                "to_agent": sum(counted["to_agent"]) / (n_calls * expected),
                "cpu_util": (cpu1 - cpu0) / (t1 - t0),
                # Of it, the event loop's thread (relaying, placing packets) and the rest
                # (the recordings' writer thread sealing and writing, gRPC's threads).
                "loop_cpu_util": (loop1 - loop0) / (t1 - t0),
                "other_threads_cpu_util": ((cpu1 - cpu0) - (loop1 - loop0)) / (t1 - t0),
                "cpu_ms_per_call_s": (cpu1 - cpu0) * 1000 / (placed["connected"] * (t1 - t0))
                if placed["connected"]
                else float("nan"),
                "load_generator_cpu_util": (gen1 - gen0) / (t1 - t0),
                "machine_busy": (box1[0] - box0[0]) / (box1[1] - box0[1]),
            }

        async def hang_up(recorded: bool, connected: int) -> None:
            """Every call hung up; recorded: until the `connected` calls' recordings are stored."""
            tenant = PHASES[recorded][0]
            before = stored.get(tenant, 0)
            hung_up = await ask("hangup", None)
            for _ in range(100):  # the recordings closed, sealed and stored
                if not recorded or stored.get(tenant, 0) - before >= connected:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)
            recordings[recorded] += stored.get(tenant, 0) - before
            print(
                f"voice bench connected: {hung_up} calls hung up,"
                f" {stored.get(tenant, 0) - before} recordings stored",
                file=sys.stderr,
            )

        def show(kind: str, step: dict[str, Any], passed: bool) -> None:
            shown = ", ".join(
                f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in step.items()
            )
            print(
                f"voice bench connected {kind} {'pass' if passed else 'FAIL'}: {shown}",
                file=sys.stderr,
            )

        for recorded in (False, True):
            for n in steps:
                step = await measure(recorded, n, CONNECTED_WINDOW)
                passed = connected_passes(step)
                results[recorded].append(step)
                show("recorded" if recorded else "unrecorded", step, passed)
                if not passed:
                    break
            await hang_up(recorded, max((st["connected"] for st in results[recorded]), default=0))
        # The recording's cost: alternating pairs at the most calls both phases held, each over
        # a longer window (one 3 s step's CPU per call-second varies by a tenth or more).
        n, _ = common_ratio(results[False], results[True])
        for _ in range(CONNECTED_PAIRS if n else 0):
            for recorded in (False, True):
                step = await measure(recorded, n, CONNECTED_PAIR_WINDOW)
                kind = "pair recorded" if recorded else "pair unrecorded"
                show(kind, step, connected_passes(step))
                pairs[recorded].append(step)
                await hang_up(recorded, step["connected"])
    finally:
        if load is not None:
            with contextlib.suppress(Exception):
                await ask("bye", None, 30)
            await asyncio.to_thread(load.join, 10)
            if load.is_alive():
                load.terminate()
        if agents is not None:
            with contextlib.suppress(Exception):
                aconn.send("stop")
                await asyncio.wait_for(asyncio.to_thread(aconn.recv), 30)
            await asyncio.to_thread(agents.join, 10)
            if agents.is_alive():
                agents.terminate()
        _stop(gateway)
        _stop(router)
        if nc is not None:
            await nc.close()
    figures = _figures(results, pairs)
    figures["voice_connected_unrecorded_recordings_stored"] = float(recordings[False])
    figures["voice_connected_recorded_recordings_stored"] = float(recordings[True])
    return figures


def pair_ratios(pairs: dict[bool, list[dict[str, Any]]]) -> list[float]:
    """Recorded over unrecorded CPU per call-second of each alternating pair both of whose steps
    passed."""
    return [
        r["cpu_ms_per_call_s"] / p["cpu_ms_per_call_s"]
        for p, r in zip(pairs[False], pairs[True], strict=False)
        if connected_passes(p) and connected_passes(r)
    ]


def _figures(
    results: dict[bool, list[dict[str, Any]]], pairs: dict[bool, list[dict[str, Any]]]
) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for recorded, name in ((False, "unrecorded"), (True, "recorded")):
        passing = [s for s in results[recorded] if connected_passes(s)]
        best = passing[-1] if passing else {}
        failing = [s["calls"] for s in results[recorded] if not connected_passes(s)]
        figures[f"voice_connected_{name}_calls_per_gateway_process"] = float(best.get("calls", 0))
        figures[f"voice_connected_{name}_first_failing"] = float(failing[0] if failing else 0)
        figures[f"voice_connected_{name}_cpu_ms_per_call_s_at_max"] = best.get(
            "cpu_ms_per_call_s", float("nan")
        )
        figures[f"voice_connected_{name}_gateway_cpu_util_at_max"] = best.get(
            "cpu_util", float("nan")
        )
        for s in results[recorded]:
            figures[f"voice_connected_{name}_cpu_ms_per_call_s_at_{s['calls']}"] = s[
                "cpu_ms_per_call_s"
            ]
            figures[f"voice_connected_{name}_delivered_at_{s['calls']}"] = min(
                s["to_caller"], s["to_agent"]
            )
    n, ratio = common_ratio(results[False], results[True])
    figures["voice_connected_ramp_recorded_over_unrecorded_cpu"] = ratio
    ratios = pair_ratios(pairs)
    if ratios:  # the median of the alternating pairs, over their longer windows
        ratio = statistics.median(ratios)
        figures["voice_connected_recorded_over_unrecorded_cpu_max"] = max(ratios)
        figures["voice_connected_ratio_pairs"] = float(len(ratios))
    figures["voice_connected_recorded_over_unrecorded_cpu"] = ratio
    figures["voice_connected_ratio_at_calls"] = float(n)
    plain = figures["voice_connected_unrecorded_calls_per_gateway_process"]
    rec = figures["voice_connected_recorded_calls_per_gateway_process"]
    print(
        "voice: connected calls (caller <-> gateway process <-> agent phone, over SIP):"
        f" unrecorded {plain:.0f}, recorded {rec:.0f} (cap {CONNECTED_CAP});"
        " gateway CPU per connected call-second unrecorded"
        f" {figures['voice_connected_unrecorded_cpu_ms_per_call_s_at_max']:.2f} ms,"
        f" recorded {figures['voice_connected_recorded_cpu_ms_per_call_s_at_max']:.2f} ms;"
        f" recorded over unrecorded at {n} calls x{ratio:.2f}"
        + (f" (median of {len(ratios)} alternating pairs)" if ratios else " (one step each)"),
        flush=True,
    )
    return figures
