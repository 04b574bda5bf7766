"""Voice bench: concurrent calls one voice-gateway process holds in queue with announcements and
music on hold streaming, and its CPU per call, beside a raw asyncio UDP sender pacing the same
160-byte G.711 frames at 50 packets/s.

The gateway and the router run as their own processes (`python -m switchboard.voice_gateway`,
`python -m switchboard.router`) with no agents signed in, so every call stays queued. A load
generator in a separate process places calls with raw SIP over UDP (INVITE offering PCMU, ACK,
RFC 4733 DTMF "1" for the topic menu) and counts the RTP each call receives on its own socket.
Calls are stepped up until the gateway no longer delivers >= 95% of 50 packets/s per call or
refuses calls. CPU is the gateway process's utime + stime from /proc/<pid>/stat over the window.

Recording's cost: the gateway's RTP relay (its MediaEngine and RtpSession legs, bridged in pairs
as a connected call is) in a process of its own, carrying N calls' audio both ways from separate
sender processes, once unrecorded and once with each call's recorder tapped on both legs; the
recorded figure adds the CPU of closing and sealing each recording at the call's end, per
recorded second. The same calls and window each time, pairs run alternately, each in a fresh
relay process, and the CPU is that process's alone; the ratio is the median of the pairs'
recorded over unrecorded CPU per call-second.

Concurrent calls per relay process: calls stepped up, recorded and unrecorded, until fewer than
95% of the packets sent in the window come back relayed or the relay's process uses more than
90% of a core. On a shared machine the relay gets what the scheduler gives it, so the machine's
busy share is printed with each step, and the calls a core would hold at the CPU per call-second
measured is given beside the count.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import multiprocessing
import os
import pathlib
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

from switchboard.testing.ports import free_tcp_and_udp_port

STEPS = tuple(int(n) for n in os.environ.get("BENCH_VOICE_STEPS", "50,100,200,400,800").split(","))
WINDOW = float(os.environ.get("BENCH_VOICE_WINDOW_SECONDS", "3"))
WARMUP = 2.0  # after a step's calls are placed: socket backlogs drain, the menu is passed
SETUP_LIMIT = 8.0  # seconds to place one step's calls; past it the step fails
BUDGET = float(os.environ.get("BENCH_VOICE_BUDGET_SECONDS", "45"))  # no new step after this
PPS = 50  # 20 ms frames
SUSTAINED = 0.95
NUMBER = "+15550100"  # the default plan's English hotline: a topic menu, then the queue
TOPIC_KEY = 1  # DTMF event for "1" (billing), typed ahead during the welcome prompt
SECRET = "switchboard-bench-secret"
RECORDED_CALLS = int(os.environ.get("BENCH_VOICE_RECORDED_CALLS", "50"))
REPETITIONS = int(os.environ.get("BENCH_VOICE_REPETITIONS", "5"))  # recorded/unrecorded pairs
CONCURRENT_STEPS = tuple(
    int(n)
    for n in os.environ.get("BENCH_VOICE_CONCURRENT_STEPS", "25,50,100,150,200,300,400,600").split(
        ","
    )
)
SENDER_STREAMS = 100  # streams per sender process: the senders keep pace, not the relay's limit
CPU_SATURATED = 0.9  # of one core: past it the relay process is saturated
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process (and its reaped children are not counted)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return (sum(values) - idle) / CLK_TCK, sum(values) / CLK_TCK


# ---- the load generator (its own process) ------------------------------------------------------


class _Rtp(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.received = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received += 1


class _Call:
    def __init__(self, n: int, rtp: _Rtp, port: int) -> None:
        self.call_id = f"{uuid.uuid4().hex}@bench"
        self.tag = uuid.uuid4().hex[:10]
        self.branch = "z9hG4bK" + uuid.uuid4().hex
        self.caller = f"+8210{n:08d}"
        self.rtp = rtp
        self.rtp_port = port
        self.status = 0
        self.invites = 0
        self.bye_branch = "z9hG4bK" + uuid.uuid4().hex  # retransmissions reuse it
        self.to = ""  # the To header with the gateway's tag
        self.target = ""  # the gateway's Contact URI
        self.remote_rtp: tuple[str, int] | None = None
        self.final: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.bye_done: asyncio.Future[int] = asyncio.get_running_loop().create_future()


def _headers(text: str) -> tuple[str, dict[str, str], str]:
    head, _, body = text.partition("\r\n\r\n")
    lines = head.split("\r\n")
    found: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        found.setdefault(name.strip().lower(), value.strip())
    return lines[0], found, body


class _Sip(asyncio.DatagramProtocol):
    def __init__(self, gateway: tuple[str, int]) -> None:
        self.gateway = gateway
        self.transport: asyncio.DatagramTransport | None = None
        self.calls: dict[str, _Call] = {}
        self.port = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.port = transport.get_extra_info("sockname")[1]

    def send(self, text: str) -> None:
        assert self.transport is not None
        self.transport.sendto(text.encode(), self.gateway)

    def _via(self, branch: str) -> str:
        return f"SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch};rport"

    def invite(self, call: _Call) -> None:
        uri = f"sip:{NUMBER}@{self.gateway[0]}:{self.gateway[1]}"
        body = (
            "v=0\r\n"
            f"o=bench 1 1 IN IP4 127.0.0.1\r\ns=bench\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {call.rtp_port} RTP/AVP 0 101\r\n"
            "a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
            "a=fmtp:101 0-15\r\na=sendrecv\r\n"
        )
        self.send(
            f"INVITE {uri} SIP/2.0\r\n"
            f"Via: {self._via(call.branch)}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:{call.caller}@127.0.0.1>;tag={call.tag}\r\n"
            f"To: <{uri}>\r\n"
            f"Call-ID: {call.call_id}\r\n"
            "CSeq: 1 INVITE\r\n"
            f"Contact: <sip:{call.caller}@127.0.0.1:{self.port}>\r\n"
            "Content-Type: application/sdp\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body}"
        )

    def ack(self, call: _Call, ok: bool) -> None:
        # 2xx: a new transaction to the Contact; non-2xx: hop-by-hop, same branch.
        uri = call.target if ok else f"sip:{NUMBER}@{self.gateway[0]}:{self.gateway[1]}"
        branch = "z9hG4bK" + uuid.uuid4().hex if ok else call.branch
        self.send(
            f"ACK {uri} SIP/2.0\r\n"
            f"Via: {self._via(branch)}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:{call.caller}@127.0.0.1>;tag={call.tag}\r\n"
            f"To: {call.to}\r\n"
            f"Call-ID: {call.call_id}\r\n"
            "CSeq: 1 ACK\r\n"
            "Content-Length: 0\r\n\r\n"
        )

    def bye(self, call: _Call) -> None:
        self.send(
            f"BYE {call.target} SIP/2.0\r\n"
            f"Via: {self._via(call.bye_branch)}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:{call.caller}@127.0.0.1>;tag={call.tag}\r\n"
            f"To: {call.to}\r\n"
            f"Call-ID: {call.call_id}\r\n"
            "CSeq: 2 BYE\r\n"
            "Content-Length: 0\r\n\r\n"
        )

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            start, headers, body = _headers(data.decode("utf-8", "replace"))
        except ValueError:
            return
        call = self.calls.get(headers.get("call-id", ""))
        if call is None:
            return
        if not start.startswith("SIP/2.0 "):
            # A request from the gateway inside the dialog (e.g. its BYE): answer 200.
            if not start.startswith("ACK"):
                self.send(
                    "SIP/2.0 200 OK\r\n"
                    + "".join(
                        f"{h}: {headers[h.lower()]}\r\n"
                        for h in ("Via", "From", "To", "Call-ID", "CSeq")
                        if h.lower() in headers
                    )
                    + "Content-Length: 0\r\n\r\n"
                )
            return
        status = int(start.split()[1])
        cseq = headers.get("cseq", "")
        if cseq.endswith("BYE"):
            if status >= 200 and not call.bye_done.done():
                call.bye_done.set_result(status)
            return
        if status < 200:
            return
        call.to = headers.get("to", "")
        if 200 <= status < 300:
            contact = headers.get("contact", "")
            call.target = contact[contact.find("<") + 1 : contact.find(">")] if contact else ""
            host, port = "127.0.0.1", 0
            for line in body.split("\r\n"):
                if line.startswith("c=IN IP4 "):
                    host = line[9:].strip()
                elif line.startswith("m=audio "):
                    port = int(line.split()[1])
            call.remote_rtp = (host, port)
            self.ack(call, True)  # also for a retransmitted 200
        else:
            self.ack(call, False)
        call.status = status
        if not call.final.done():
            call.final.set_result(status)


async def _dtmf(call: _Call) -> None:
    """RFC 4733 event for the topic menu: start, then three end packets, one timestamp."""
    assert call.rtp.transport is not None and call.remote_rtp is not None
    ssrc, ts = 0x5EB0C4, 1600
    for i, (end, duration) in enumerate([(0, 160), (0, 320), (1, 480), (1, 480), (1, 480)]):
        payload = struct.pack("!BBH", TOPIC_KEY, (end << 7) | 10, duration)
        header = struct.pack("!BBHII", 0x80, (0x80 if i == 0 else 0) | 101, i + 1, ts, ssrc)
        call.rtp.transport.sendto(header + payload, call.remote_rtp)
        await asyncio.sleep(0.02)


async def _load(gateway_port: int, conn: Any) -> None:
    loop = asyncio.get_running_loop()
    _, sip = await loop.create_datagram_endpoint(
        lambda: _Sip(("127.0.0.1", gateway_port)), local_addr=("127.0.0.1", 0)
    )
    calls: list[_Call] = []
    rejected: dict[int, int] = {}

    async def place(n: int) -> None:
        _, rtp = await loop.create_datagram_endpoint(_Rtp, local_addr=("127.0.0.1", 0))
        port = rtp.transport.get_extra_info("sockname")[1]  # type: ignore[union-attr]
        call = _Call(n, rtp, port)
        sip.calls[call.call_id] = call
        for _ in range(4):  # timer A-style retransmission of the INVITE
            call.invites += 1
            sip.invite(call)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(call.final), 2.0)
                break
        if call.status == 200 and call.remote_rtp is not None:
            calls.append(call)
            await _dtmf(call)
        else:
            rejected[call.status] = rejected.get(call.status, 0) + 1
            rtp.transport.close()  # type: ignore[union-attr]

    try:
        while True:
            command, arg = await asyncio.to_thread(conn.recv)
            if command == "calls":
                total, limit = arg
                want = int(total) - len(calls)
                before = dict(rejected)
                started = time.monotonic()
                gate = asyncio.Semaphore(50)  # INVITEs in flight, as a trunk might offer them
                base = len(calls) + sum(rejected.values())

                deadline = started + float(limit)

                async def gated(
                    n: int, gate: asyncio.Semaphore = gate, deadline: float = deadline
                ) -> None:
                    async with gate:
                        if time.monotonic() > deadline:  # calls set up too slowly
                            rejected[-1] = rejected.get(-1, 0) + 1
                            return
                        await place(n)

                await asyncio.gather(*(gated(base + i) for i in range(want)))
                new_rejects = {k: v - before.get(k, 0) for k, v in rejected.items()}
                conn.send(
                    {
                        "answered": len(calls),
                        "rejected": {k: v for k, v in new_rejects.items() if v},
                        "setup_s": time.monotonic() - started,
                        "invite_retransmits": sum(c.invites - 1 for c in calls),
                    }
                )
            elif command == "count":
                for call in calls:
                    call.rtp.received = 0
                t0 = time.monotonic()
                conn.send("started")
                await asyncio.sleep(float(arg))
                counts = [call.rtp.received for call in calls]
                conn.send({"counts": counts, "elapsed": time.monotonic() - t0})
            elif command == "bye":
                break
    finally:
        byes = 0
        for _ in range(5):  # timer E-style retransmission of unanswered BYEs
            waiting = [c for c in calls if not c.bye_done.done()]
            if not waiting:
                break
            for i, call in enumerate(waiting):
                sip.bye(call)
                byes += 1
                if i % 50 == 49:
                    await asyncio.sleep(0.01)
            await asyncio.wait([c.bye_done for c in waiting], timeout=1.0)
        answered = [c.bye_done.result() for c in calls if c.bye_done.done()]
        conn.send(
            {
                "calls": len(calls),
                "byes_answered": len(answered),
                "byes_200": answered.count(200),
                "byes_sent": byes,
            }
        )
        for call in calls:
            if call.rtp.transport is not None:
                call.rtp.transport.close()
        sip.transport.close()  # type: ignore[union-attr]


def _load_process(gateway_port: int, conn: Any) -> None:
    asyncio.run(_load(gateway_port, conn))


# ---- the raw baseline (its own process) --------------------------------------------------------


class _Sender(asyncio.DatagramProtocol):
    """A stream's socket: sends its frames, counts what comes back (the relay's other leg)."""

    received = 0

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received += 1


async def _raw(ports: list[int], conn: Any, window: float) -> None:
    """One 20 ms clock pacing an RTP header + 160 bytes to each of N streams, one socket each,
    counting what comes back. "started" after the warm-up; then, with a `window`, the counts
    after it; without (0), the counts are restarted by "reset" and sent on "stop"."""
    loop = asyncio.get_running_loop()
    streams: list[list[Any]] = []  # [transport, address, sequence, timestamp]
    protocols: list[_Sender] = []
    for port in ports:
        transport, protocol = await loop.create_datagram_endpoint(
            _Sender, local_addr=("127.0.0.1", 0)
        )
        streams.append([transport, ("127.0.0.1", port), 0, 0])
        protocols.append(protocol)
    sent = late = 0
    frame = bytes([0xFF]) * 160
    period = 0.02
    due = loop.time()
    start = loop.time()
    phase = 0

    def counts() -> dict[str, int]:
        return {"sent": sent, "received": sum(p.received for p in protocols), "late_ticks": late}

    while True:
        due += period
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        elif phase == 1 and delay < -period:  # this sender itself fell a frame behind
            late += 1
        for stream in streams:
            stream[2] = (stream[2] + 1) & 0xFFFF
            stream[3] = (stream[3] + 160) & 0xFFFFFFFF
            stream[0].sendto(
                struct.pack("!BBHII", 0x80, 0, stream[2], stream[3], 1) + frame, stream[1]
            )
        sent += len(streams)
        elapsed = loop.time() - start
        if phase == 0 and elapsed >= WARMUP:
            sent = 0
            for protocol in protocols:
                protocol.received = 0
            conn.send("started")
            phase = 1
        elif phase == 1 and window and elapsed >= WARMUP + window:
            conn.send(counts())
            break
        elif phase == 1 and not window and conn.poll():
            if conn.recv() == "stop":
                conn.send(counts())
                break
            sent = late = 0  # "reset"
            for protocol in protocols:
                protocol.received = 0
    for stream in streams:
        stream[0].close()


def _raw_process(ports: list[int], conn: Any, window: float) -> None:
    asyncio.run(_raw(ports, conn, window))


async def _raw_baseline(n: int) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    sinks = [
        (await loop.create_datagram_endpoint(_Rtp, local_addr=("127.0.0.1", 0))) for _ in range(n)
    ]
    ports = [t.get_extra_info("sockname")[1] for t, _ in sinks]
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_raw_process, args=(ports, child, WINDOW))
    proc.start()
    try:
        assert proc.pid is not None
        await asyncio.wait_for(asyncio.to_thread(parent.recv), 30)
        cpu0, t0 = _cpu_seconds(proc.pid), time.monotonic()
        for _, sink in sinks:
            sink.received = 0
        await asyncio.wait_for(asyncio.to_thread(parent.recv), 30)
        cpu1, t1 = _cpu_seconds(proc.pid), time.monotonic()
        received = sum(s.received for _, s in sinks)
    finally:
        await asyncio.to_thread(proc.join, 10)
        if proc.is_alive():
            proc.terminate()
        for t, _ in sinks:
            t.close()
    return {
        "cpu_ms_per_stream_s": (cpu1 - cpu0) * 1000 / (n * (t1 - t0)),
        "delivered": received / (n * PPS * (t1 - t0)),
    }


# ---- the run -----------------------------------------------------------------------------------


# ---- the relay: recorded against unrecorded ------------------------------------------------------


async def _relay(conn: Any) -> None:
    """The gateway's RTP relay (MediaEngine legs bridged in pairs, as a connected call is) in a
    process of its own, so that its CPU is the relay's alone. Commands: ("open", (n, recorded)):
    n calls, the ports of their 2n legs; ("cpu", None): this process's CPU seconds;
    ("close", None): the recordings closed and sealed (CPU seconds, seconds recorded), the legs
    closed."""
    from switchboard.voice_gateway.media.rtp import MediaEngine
    from switchboard.voice_gateway.recording.recorder import AGENT, CALLER, Recorder

    engine = MediaEngine("127.0.0.1")
    folder = pathlib.Path(tempfile.mkdtemp(prefix="switchboard-bench-recordings-"))
    legs: list[Any] = []
    recorders: list[Recorder] = []
    while True:
        command, arg = await asyncio.to_thread(conn.recv)
        if command == "open":
            n, recorded = arg
            legs = [await engine.open() for _ in range(2 * n)]
            for i in range(n):
                caller, agent = legs[2 * i], legs[2 * i + 1]
                caller.bridge, agent.bridge = agent, caller
                if recorded:
                    recorder = Recorder(str(folder))
                    caller.tap, agent.tap = recorder.taps[CALLER], recorder.taps[AGENT]
                    recorders.append(recorder)
            conn.send([leg.port for leg in legs])
        elif command == "cpu":
            conn.send(time.process_time())
        elif command == "close":
            c0 = time.process_time()
            seconds = _close_recordings(recorders, folder)
            conn.send((time.process_time() - c0, seconds))
            recorders = []
            for leg in legs:
                leg.close()
            legs = []
        else:
            break
    _close_recordings([], folder, remove=True)


def _close_recordings(recorders: list[Any], folder: pathlib.Path, remove: bool = False) -> float:
    """Close and seal each recording as the gateway does at a call's end; the seconds recorded."""
    from switchboard.voice_gateway.recording import sealing

    seconds = 0.0
    for recorder in recorders:
        seconds += recorder.close()
        with recorder.path.open("rb") as src, tempfile.TemporaryFile(dir=folder) as dst:
            sealing.seal(bytes(32), "bench", recorder.path.name, src, dst)
        recorder.path.unlink()
    if remove:
        folder.rmdir()
    return seconds


def _relay_process(conn: Any) -> None:
    asyncio.run(_relay(conn))


async def _relayed(n: int, recorded: bool, window: float = WINDOW) -> dict[str, float]:
    """`n` calls relayed both ways at 50 packets/s by a fresh relay process, fed by sender
    processes of at most SENDER_STREAMS streams each; the relay's CPU per call-second (recorded:
    the closing and sealing of each recording included, per recorded second), its CPU
    utilisation, and the share of the packets sent in the window that came back relayed."""
    ctx = multiprocessing.get_context("spawn")
    conn, child = ctx.Pipe()
    relay = ctx.Process(target=_relay_process, args=(child,))
    relay.start()
    senders: list[tuple[Any, Any]] = []

    async def ask(command: str, arg: Any = None) -> Any:
        conn.send((command, arg))
        return await asyncio.wait_for(asyncio.to_thread(conn.recv), 120)

    try:
        ports = await ask("open", (n, recorded))
        for i in range(0, len(ports), SENDER_STREAMS):
            parent, end = ctx.Pipe()
            proc = ctx.Process(target=_raw_process, args=(ports[i : i + SENDER_STREAMS], end, 0))
            proc.start()
            senders.append((proc, parent))
        for _, parent in senders:  # "started": each past its warm-up
            await asyncio.wait_for(asyncio.to_thread(parent.recv), 60)
        for _, parent in senders:  # the window begins for all at once
            parent.send("reset")
        cpu0, t0 = await ask("cpu"), time.monotonic()
        await asyncio.sleep(window)
        cpu1, t1 = await ask("cpu"), time.monotonic()
        for _, parent in senders:
            parent.send("stop")
        ended = [await asyncio.wait_for(asyncio.to_thread(p.recv), 60) for _, p in senders]
        end_cpu, seconds = await ask("close")
        conn.send(("stop", None))
    finally:
        for proc, _ in senders:
            await asyncio.to_thread(proc.join, 10)
            if proc.is_alive():
                proc.terminate()
        await asyncio.to_thread(relay.join, 10)
        if relay.is_alive():
            relay.terminate()
    sent = sum(e["sent"] for e in ended)
    relay_ms = (cpu1 - cpu0) * 1000 / (n * (t1 - t0))
    return {
        "cpu_ms_per_call_s": relay_ms + (end_cpu * 1000 / seconds if seconds else 0.0),
        "cpu_util": (cpu1 - cpu0) / (t1 - t0),
        "delivered": sum(e["received"] for e in ended) / sent if sent else 0.0,
        "sender_late_ticks": float(sum(e["late_ticks"] for e in ended)),
    }


async def _recording_cost() -> dict[str, float]:
    """Recorded over unrecorded relay CPU per call-second: RECORDED_CALLS calls, the same window,
    REPETITIONS pairs run alternately (unrecorded, recorded), each in a fresh relay process; the
    medians."""
    plain: list[float] = []
    recorded: list[float] = []
    for _ in range(REPETITIONS):
        plain.append((await _relayed(RECORDED_CALLS, False))["cpu_ms_per_call_s"])
        recorded.append((await _relayed(RECORDED_CALLS, True))["cpu_ms_per_call_s"])
        print(
            f"voice bench relay: unrecorded {plain[-1]:.3f} recorded {recorded[-1]:.3f} "
            "ms per call-second",
            file=sys.stderr,
        )
    ratios = [r / p for p, r in zip(plain, recorded, strict=True)]
    return {
        "voice_bridged_cpu_ms_per_call_s": statistics.median(plain),
        "voice_recorded_cpu_ms_per_call_s": statistics.median(recorded),
        "voice_recorded_over_unrecorded_cpu": statistics.median(ratios),
        "voice_recorded_over_unrecorded_cpu_max": max(ratios),
    }


async def _concurrent(recorded: bool) -> dict[str, float]:
    """The most simultaneous calls one relay process keeps up with: calls are stepped up
    (CONCURRENT_STEPS) until fewer than SUSTAINED of the packets sent come back relayed or the
    relay's process is saturated (CPU_SATURATED of a core)."""
    best, failing, util, cost = 0, 0, 0.0, float("nan")
    for n in CONCURRENT_STEPS:
        box0 = _machine_busy()
        step = await _relayed(n, recorded)
        box1 = _machine_busy()
        step["machine_busy"] = (box1[0] - box0[0]) / (box1[1] - box0[1])
        kind = "recorded" if recorded else "unrecorded"
        print(f"voice bench concurrent {kind} calls {n}: {step}", file=sys.stderr)
        if step["delivered"] < SUSTAINED or step["cpu_util"] > CPU_SATURATED:
            failing = n
            break
        best, util, cost = n, step["cpu_util"], step["cpu_ms_per_call_s"]
    return {
        "calls": float(best),
        "first_failing": float(failing),
        "cpu_util": util,
        # What a core of its own would hold at the CPU per call-second measured at `calls`.
        "per_core": 1000 / cost if best else 0.0,
    }


async def _wait_tcp(
    port: int, proc: subprocess.Popen[bytes], what: str, log: pathlib.Path, tries: int = 300
) -> None:
    for _ in range(tries):
        if proc.poll() is not None:
            text = await asyncio.to_thread(log.read_text, errors="replace")
            raise RuntimeError(f"{what} exited: {text[-2000:]}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{what} never listened on {port}")


def _start(module: str, env: dict[str, str], log: pathlib.Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", module],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _config(work: pathlib.Path) -> pathlib.Path:
    """The embedded default number plan, announcing every 5 s so announcements fall in windows."""
    import yaml

    from switchboard.voice_gateway import config as voice_config

    default = pathlib.Path(voice_config.__file__).with_name("default_config.yaml")
    data = yaml.safe_load(default.read_text())
    for plan in data["numbers"].values():
        plan["announce_every"] = "5s"
    path = work / "voice-bench.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


async def run(work: pathlib.Path, nats_url: str) -> dict[str, float]:
    import nats

    work = work / "voice"
    work.mkdir(parents=True, exist_ok=True)
    common = {"NATS_URL": nats_url, "SWITCHBOARD_AUTH_SECRET": SECRET, "LOG_LEVEL": "WARNING"}
    router_port, grpc_port, sip_port = (
        free_tcp_and_udp_port(),
        free_tcp_and_udp_port(),
        free_tcp_and_udp_port(),
    )
    router: subprocess.Popen[bytes] | None = None
    gateway: subprocess.Popen[bytes] | None = None
    load: Any = None
    conn: Any = None
    steps: list[dict[str, Any]] = []
    nc: Any = None
    began = time.monotonic()
    try:
        router = _start(
            "switchboard.router", {**common, "ROUTER_GRPC_PORT": str(router_port)}, work / "r.log"
        )
        await _wait_tcp(router_port, router, "router", work / "r.log")
        gateway = _start(
            "switchboard.voice_gateway",
            {
                **common,
                "VOICE_SIP_PORT": str(sip_port),
                "VOICE_SIP_TLS_PORT": str(free_tcp_and_udp_port()),
                "VOICE_GRPC_PORT": str(grpc_port),
                "VOICE_PROMPTS_DIR": str(work / "prompts"),
                # Synthesised once, then read from this cache by every run.
                "VOICE_PROMPT_CACHE_DIR": str(
                    pathlib.Path(tempfile.gettempdir()) / "switchboard-bench-voice-prompt-cache"
                ),
                "VOICE_CONFIG_FILE": str(_config(work)),
                "VOICE_MAX_CALLS": str(max(STEPS) * 2),
                "VOICE_POSITION_POLL_SECONDS": "2",
                "VOICE_ROUTER_ADDR": f"127.0.0.1:{router_port}",
                # Production refuses to seal recordings with a key derived from the auth secret.
                "VOICE_RECORDING_KEY": base64.b64encode(os.urandom(32)).decode(),
            },
            work / "gw.log",
        )
        # (a first run synthesises the spoken prompts before the gateway listens)
        await _wait_tcp(sip_port, gateway, "voice gateway", work / "gw.log", tries=1800)

        # Every call that passed the IVR is a ContactCreated on the bus: count them.
        nc = await nats.connect(nats_url)
        created = [0]

        async def on_created(msg: Any) -> None:
            created[0] += 1

        await nc.subscribe("contact.*.*.created", cb=on_created)

        ctx = multiprocessing.get_context("spawn")
        conn, child = ctx.Pipe()
        load = ctx.Process(target=_load_process, args=(sip_port, child))
        load.start()

        async def ask(command: str, arg: Any) -> Any:
            conn.send((command, arg))
            return await asyncio.wait_for(asyncio.to_thread(conn.recv), 120)

        for n in STEPS:
            if steps and time.monotonic() - began > BUDGET:
                break
            placed = await ask("calls", (n, SETUP_LIMIT))
            await asyncio.sleep(WARMUP)
            conn.send(("count", WINDOW))
            await asyncio.wait_for(asyncio.to_thread(conn.recv), 30)  # "started"
            cpu0, t0 = _cpu_seconds(gateway.pid), time.monotonic()
            gen0, router0, box0 = _cpu_seconds(load.pid), _cpu_seconds(router.pid), _machine_busy()
            counted = await asyncio.wait_for(asyncio.to_thread(conn.recv), 30)
            cpu1, t1 = _cpu_seconds(gateway.pid), time.monotonic()
            gen1, router1, box1 = _cpu_seconds(load.pid), _cpu_seconds(router.pid), _machine_busy()
            counts, elapsed = counted["counts"], counted["elapsed"]
            rates = sorted(c / (elapsed * PPS) for c in counts) or [0.0]
            step = {
                "calls": n,
                "answered": placed["answered"],
                "rejected": placed["rejected"],
                "setup_s": placed["setup_s"],
                "delivered_mean": sum(rates) / len(rates),
                "delivered_min": rates[0],
                "delivered_p5": rates[len(rates) // 20],
                "cpu_ms_per_call_s": (cpu1 - cpu0) * 1000 / (len(counts) * (t1 - t0))
                if counts
                else float("nan"),
                "cpu_util": (cpu1 - cpu0) / (t1 - t0),
                "load_generator_cpu_util": (gen1 - gen0) / (t1 - t0),
                "router_cpu_util": (router1 - router0) / (t1 - t0),
                "machine_busy": (box1[0] - box0[0]) / (box1[1] - box0[1]),
                "window_s": elapsed,
                "invite_retransmits": placed["invite_retransmits"],
                "queued_contacts": created[0],
            }
            step["sustained"] = (
                placed["answered"] == n
                and not placed["rejected"]
                and step["delivered_mean"] >= SUSTAINED
            )
            steps.append(step)
            print(f"voice bench step {step}", file=sys.stderr)
            if not step["sustained"]:
                break
    finally:
        if load is not None:
            with contextlib.suppress(Exception):
                conn.send(("bye", None))
                byes = await asyncio.wait_for(asyncio.to_thread(conn.recv), 15)
                print(f"voice bench teardown {byes}", file=sys.stderr)
            await asyncio.to_thread(load.join, 10)
            if load.is_alive():
                load.terminate()
        _stop(gateway)
        _stop(router)
        if nc is not None:
            await nc.close()

    good = [s for s in steps if s["sustained"]]
    best = good[-1] if good else steps[0]
    raw = await _raw_baseline(best["calls"])
    figures = {
        "voice_max_sustained_calls": float(best["calls"] if good else 0),
        "voice_first_failing_calls": float(steps[-1]["calls"] if not steps[-1]["sustained"] else 0),
        "voice_cpu_ms_per_call_s": best["cpu_ms_per_call_s"],
        "voice_gateway_cpu_util_at_max": best["cpu_util"],
        "voice_delivered_at_max": best["delivered_mean"],
        "voice_load_generator_cpu_util_at_max": best["load_generator_cpu_util"],
        "voice_raw_cpu_ms_per_stream_s": raw["cpu_ms_per_stream_s"],
        "voice_raw_delivered": raw["delivered"],
        "voice_cpu_per_call_over_raw": best["cpu_ms_per_call_s"] / raw["cpu_ms_per_stream_s"],
    }
    figures.update(await _recording_cost())
    for recorded, name in ((False, "unrecorded"), (True, "recorded")):
        most = await _concurrent(recorded)
        figures[f"voice_concurrent_{name}_calls_per_relay_process"] = most["calls"]
        figures[f"voice_concurrent_{name}_first_failing"] = most["first_failing"]
        figures[f"voice_concurrent_{name}_relay_cpu_util_at_max"] = most["cpu_util"]
        figures[f"voice_concurrent_{name}_calls_per_core_by_cpu"] = most["per_core"]
    for s in steps:
        figures[f"voice_cpu_ms_per_call_s_at_{s['calls']}"] = s["cpu_ms_per_call_s"]
        figures[f"voice_delivered_at_{s['calls']}"] = s["delivered_mean"]
    return figures
