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
recorded figure adds the CPU of closing each recording at the call's end, per recorded second
(each recorder seals its file as it writes it, as the gateway's do, so the sealing is within the
window). The same calls and window (BENCH_VOICE_RECORDING_WINDOW_SECONDS, 10 s) each time,
BENCH_VOICE_REPETITIONS (5) pairs run alternately, each in a fresh relay process, and the CPU is
that process's alone; the ratio is the median of the pairs' recorded over unrecorded CPU per
call-second, printed with the highest pair's.

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
import functools
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

from bench.stats import cpu_seconds, machine_busy, percentile
from switchboard.testing.ports import free_tcp_and_udp_port

SIP_START = int(os.environ.get("BENCH_VOICE_START", "50"))  # calls at the gateway's first step
SIP_CAP = int(os.environ.get("BENCH_VOICE_CAP", "800"))
WINDOW = float(os.environ.get("BENCH_VOICE_WINDOW_SECONDS", "3"))
WARMUP = 2.0  # after a step's calls are placed: socket backlogs drain, the menu is passed
SETUP_LIMIT = 8.0  # seconds to place one step's calls; past it the step fails
SIP_STEP_SECONDS = 16.0  # a gateway step's allowance: calls placed or hung up, warm-up, window
PPS = 50  # 20 ms frames
PERIOD = 1 / PPS
FRAME_SAMPLES = 160  # G.711 at 8 kHz: one 20 ms frame
LATE_AFTER = 0.020  # a relayed packet arriving later than this behind its schedule is late
SUSTAINED = 0.95
NUMBER = "+15550100"  # the default plan's English hotline: a topic menu, then the queue
TOPIC_KEY = 1  # DTMF event for "1" (billing), typed ahead during the welcome prompt
SECRET = "switchboard-bench-secret"
RECORDED_CALLS = int(os.environ.get("BENCH_VOICE_RECORDED_CALLS", "50"))
REPETITIONS = int(os.environ.get("BENCH_VOICE_REPETITIONS", "5"))  # recorded/unrecorded pairs
# The recording's cost is a difference of a few tenths of a millisecond per call-second: measured
# over a longer window than the steps' (a 3 s window's CPU varies by a tenth either way), which
# also spreads each recording's closing over a call nearer a real one's length (still far shorter).
RECORDING_WINDOW = float(os.environ.get("BENCH_VOICE_RECORDING_WINDOW_SECONDS", "10"))
CONCURRENT_START = int(os.environ.get("BENCH_VOICE_CONCURRENT_START", "25"))
CONCURRENT_CAP = int(os.environ.get("BENCH_VOICE_CONCURRENT_CAP", "1600"))
BISECT_STEPS = int(os.environ.get("BENCH_VOICE_BISECT_STEPS", "4"))  # after the first failure
RAMP_WINDOW = float(os.environ.get("BENCH_VOICE_RAMP_WINDOW_SECONDS", "2"))
RELAY_STEP_SECONDS = 8.0  # a relay step's allowance: processes started, warm-up, window, close
LATE_SHARE = 0.01  # of the relayed packets, at most this many more than 20 ms behind schedule
CONCURRENT_MEDIA_PATH = (
    "the gateway's RTP relay (MediaEngine legs bridged in pairs) in its own process"
)
JITTER_P99_MS = float(os.environ.get("BENCH_VOICE_JITTER_P99_MS", "20"))  # one frame
SENDER_STREAMS = 100  # streams per sender process: the senders keep pace, not the relay's limit
CPU_SATURATED = 0.9  # of one core: past it the relay process is saturated

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
    number = NUMBER  # the number its callers dial

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
        uri = f"sip:{self.number}@{self.gateway[0]}:{self.gateway[1]}"
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
        uri = call.target if ok else f"sip:{self.number}@{self.gateway[0]}:{self.gateway[1]}"
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

    async def hang_up(ending: list[_Call]) -> dict[str, int]:
        byes = 0
        for _ in range(5):  # timer E-style retransmission of unanswered BYEs
            waiting = [c for c in ending if not c.bye_done.done()]
            if not waiting:
                break
            for i, call in enumerate(waiting):
                sip.bye(call)
                byes += 1
                if i % 50 == 49:
                    await asyncio.sleep(0.01)
            await asyncio.wait([c.bye_done for c in waiting], timeout=1.0)
        answered = [c.bye_done.result() for c in ending if c.bye_done.done()]
        for call in ending:
            if call.rtp.transport is not None:
                call.rtp.transport.close()
        return {
            "calls": len(ending),
            "byes_answered": len(answered),
            "byes_200": answered.count(200),
            "byes_sent": byes,
        }

    try:
        while True:
            command, arg = await asyncio.to_thread(conn.recv)
            if command == "calls" and arg[0] < len(calls):  # fewer: the latest calls hang up
                ending = calls[arg[0] :]
                del calls[arg[0] :]
                conn.send(
                    {
                        "answered": len(calls),
                        "rejected": {},
                        "setup_s": 0.0,
                        "invite_retransmits": 0,
                        "hung_up": await hang_up(ending),
                    }
                )
            elif command == "calls":
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
        conn.send(await hang_up(calls))
        sip.transport.close()  # type: ignore[union-attr]


def _load_process(gateway_port: int, conn: Any) -> None:
    asyncio.run(_load(gateway_port, conn))


# ---- the raw baseline (its own process) --------------------------------------------------------


class Jitter:
    """RFC 3550 section 6.4.1 interarrival jitter of one stream, in RTP timestamp units (8 kHz):
    D(i-1,i) = (Rj - Ri) - (Sj - Si) for consecutive packets, J += (|D| - J) / 16; arrivals
    are converted to timestamp units from seconds."""

    def __init__(self, clock_rate: int = 8000) -> None:
        self.clock_rate = clock_rate
        self.jitter = 0.0
        self._transit: float | None = None

    def update(self, arrival_s: float, rtp_timestamp: int) -> float:
        transit = arrival_s * self.clock_rate - rtp_timestamp
        if self._transit is not None:
            d = abs(transit - self._transit)
            self.jitter += (d - self.jitter) / 16
        self._transit = transit
        return self.jitter

    @property
    def ms(self) -> float:
        return self.jitter * 1000 / self.clock_rate


class _Sender(asyncio.DatagramProtocol):
    """A stream's socket: sends its frames, counts what comes back (the relay's other leg), with
    the interarrival jitter of what comes back and the packets arriving more than LATE_AFTER
    behind their schedule (the 20 ms tick their RTP timestamp was due to be sent on)."""

    def __init__(self) -> None:
        self.received = 0
        self.late = 0
        self.jitter = Jitter()
        self.first_due = 0.0  # the tick RTP timestamp 160 was due on (timestamps start at 0)
        self.clock = time.monotonic

    def reset(self) -> None:
        self.received = self.late = 0
        self.jitter = Jitter()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received += 1
        if len(data) < 12:
            return
        now = self.clock()
        ts = struct.unpack_from("!I", data, 4)[0]
        self.jitter.update(now, ts)
        if now - (self.first_due + (ts / FRAME_SAMPLES - 1) * PERIOD) > LATE_AFTER:
            self.late += 1


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
    frame = bytes([0xFF]) * FRAME_SAMPLES
    period = PERIOD
    due = loop.time()
    start = loop.time()
    phase = 0
    for protocol in protocols:
        protocol.clock = loop.time
        protocol.first_due = due + period

    def counts() -> dict[str, Any]:
        return {
            "sent": sent,
            "received": sum(p.received for p in protocols),
            "late_ticks": late,
            "late_packets": sum(p.late for p in protocols),
            "jitter_ms": [p.jitter.ms for p in protocols],
        }

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
                protocol.reset()
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
                protocol.reset()
    for stream in streams:
        stream[0].close()


def _raw_process(ports: list[int] | None, conn: Any, window: float) -> None:
    """`ports`: one run; None: a run for each list of ports received, until None."""
    if ports is not None:
        asyncio.run(_raw(ports, conn, window))
        return
    while (ports := conn.recv()) is not None:
        asyncio.run(_raw(ports, conn, 0))


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
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        for _, sink in sinks:
            sink.received = 0
        await asyncio.wait_for(asyncio.to_thread(parent.recv), 30)
        cpu1, t1 = cpu_seconds(proc.pid), time.monotonic()
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
    ("close", None): the recordings closed, each sealed as it was written (CPU seconds, seconds
    recorded), the legs closed."""
    from switchboard.core.recording_seal import Sealer
    from switchboard.voice_gateway.media.rtp import MediaEngine
    from switchboard.voice_gateway.recording.recorder import AGENT, CALLER, Recorder

    # Loaded before any window, as a gateway loads it at its start: importing the sealing (and
    # cryptography) once per process is no cost of a recorded call-second.
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
                    # Sealed as it is written, as the gateway's recordings are (calls.py).
                    seal = functools.partial(Sealer, bytes(32), "bench", f"call-{i}")
                    recorder = Recorder(str(folder), seal=seal)
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
    """Close each recording as the gateway does at a call's end (its file is then the sealed
    recording the store puts); the seconds recorded."""
    seconds = 0.0
    for recorder in recorders:
        seconds += recorder.close()
        recorder.path.unlink()
    if remove:
        folder.rmdir()
    return seconds


def _relay_process(conn: Any) -> None:
    asyncio.run(_relay(conn))


class _Rig:
    """Sender processes of SENDER_STREAMS streams each, kept from step to step, and a relay
    process: fresh for every step (`fresh_relay`), or kept with its legs closed between steps.
    Starting processes takes seconds on a busy machine; the measures never include it."""

    def __init__(self, fresh_relay: bool) -> None:
        self.ctx = multiprocessing.get_context("spawn")
        self.fresh_relay = fresh_relay
        self.senders: list[tuple[Any, Any]] = []
        self.relay: Any = None
        self.conn: Any = None

    def senders_for(self, streams: int) -> list[tuple[Any, Any]]:
        wanted = -(-streams // SENDER_STREAMS)
        while len(self.senders) < wanted:
            parent, end = self.ctx.Pipe()
            proc = self.ctx.Process(target=_raw_process, args=(None, end, 0))
            proc.start()
            self.senders.append((proc, parent))
        return self.senders[:wanted]

    async def ask(self, command: str, arg: Any = None) -> Any:
        if self.relay is None:
            self.conn, child = self.ctx.Pipe()
            self.relay = self.ctx.Process(target=_relay_process, args=(child,))
            self.relay.start()
        self.conn.send((command, arg))
        return await asyncio.wait_for(asyncio.to_thread(self.conn.recv), 120)

    async def stop_relay(self) -> None:
        if self.relay is None:
            return
        with contextlib.suppress(OSError):
            self.conn.send(("stop", None))
        await asyncio.to_thread(self.relay.join, 10)
        if self.relay.is_alive():
            self.relay.terminate()
        self.relay = None

    async def close(self) -> None:
        await self.stop_relay()
        for proc, parent in self.senders:
            with contextlib.suppress(OSError):
                parent.send(None)
            await asyncio.to_thread(proc.join, 10)
            if proc.is_alive():
                proc.terminate()
        self.senders = []


async def _relayed(rig: _Rig, n: int, recorded: bool, window: float = WINDOW) -> dict[str, float]:
    """`n` calls relayed both ways at 50 packets/s by the rig's relay process, fed by its sender
    processes; the relay's CPU per call-second (recorded: the closing of each sealed
    recording included, per recorded second), its CPU utilisation, the share of the packets
    sent in the window that came back relayed, the share of those late, and the streams'
    interarrival jitter."""
    try:
        ports = await rig.ask("open", (n, recorded))
        senders = rig.senders_for(len(ports))
        for i, (_, parent) in enumerate(senders):
            parent.send(ports[i * SENDER_STREAMS : (i + 1) * SENDER_STREAMS])
        for _, parent in senders:  # "started": each past its warm-up
            await asyncio.wait_for(asyncio.to_thread(parent.recv), 120)
        for _, parent in senders:  # the window begins for all at once
            parent.send("reset")
        cpu0, t0 = await rig.ask("cpu"), time.monotonic()
        await asyncio.sleep(window)
        cpu1, t1 = await rig.ask("cpu"), time.monotonic()
        for _, parent in senders:
            parent.send("stop")
        ended = [await asyncio.wait_for(asyncio.to_thread(p.recv), 60) for _, p in senders]
        end_cpu, seconds = await rig.ask("close")
    finally:
        if rig.fresh_relay:
            await rig.stop_relay()
    sent = sum(e["sent"] for e in ended)
    received = sum(e["received"] for e in ended)
    jitters = [j for e in ended for j in e["jitter_ms"]]
    relay_ms = (cpu1 - cpu0) * 1000 / (n * (t1 - t0))
    return {
        "cpu_ms_per_call_s": relay_ms + (end_cpu * 1000 / seconds if seconds else 0.0),
        "cpu_util": (cpu1 - cpu0) / (t1 - t0),
        "delivered": received / sent if sent else 0.0,
        "late_share": sum(e["late_packets"] for e in ended) / received if received else 1.0,
        "jitter_p50_ms": percentile(jitters, 50),
        "jitter_p99_ms": percentile(jitters, 99),
        "sender_late_ticks": float(sum(e["late_ticks"] for e in ended)),
    }


async def _recording_cost() -> dict[str, float]:
    """Recorded over unrecorded relay CPU per call-second: RECORDED_CALLS calls, the same window,
    REPETITIONS pairs run alternately (unrecorded, recorded), each in a fresh relay process; the
    medians."""
    plain: list[float] = []
    recorded: list[float] = []
    rig = _Rig(fresh_relay=True)
    try:
        for _ in range(REPETITIONS):
            plain.append(
                (await _relayed(rig, RECORDED_CALLS, False, RECORDING_WINDOW))["cpu_ms_per_call_s"]
            )
            recorded.append(
                (await _relayed(rig, RECORDED_CALLS, True, RECORDING_WINDOW))["cpu_ms_per_call_s"]
            )
            print(
                f"voice bench relay: unrecorded {plain[-1]:.3f} recorded {recorded[-1]:.3f} "
                "ms per call-second",
                file=sys.stderr,
            )
    finally:
        await rig.close()
    ratios = [r / p for p, r in zip(plain, recorded, strict=True)]
    return {
        "voice_bridged_cpu_ms_per_call_s": statistics.median(plain),
        "voice_recorded_cpu_ms_per_call_s": statistics.median(recorded),
        "voice_recorded_over_unrecorded_cpu": statistics.median(ratios),
        "voice_recorded_over_unrecorded_cpu_max": max(ratios),
    }


class Ramp:
    """The most calls that pass, within a bounded number of steps: doubling from `start` until a
    step fails (or `cap` passes), then halving the gap between the last passing and the first
    failing step until it is within `resolution` of the passing count (at least one call) or the
    steps run out. Steps are never repeated. `budget_s`, if given, ends the search early (the
    wall-clock allowance of the steps planned, so that a slow machine still finishes)."""

    def __init__(
        self, start: int, cap: int, max_steps: int, resolution: float = 0.1, budget_s: float = 0
    ) -> None:
        self.start, self.cap, self.max_steps = start, cap, max_steps
        self.resolution, self.budget_s = resolution, budget_s
        self.best = 0
        self.failing = 0
        self.tried: list[tuple[int, bool]] = []

    def next(self, elapsed_s: float = 0.0) -> int | None:
        if len(self.tried) >= self.max_steps:
            return None
        if self.tried and self.budget_s and elapsed_s > self.budget_s:
            return None
        if not self.tried:
            return self.start
        if not self.failing:
            if self.best >= self.cap:
                return None
            return min(self.best * 2, self.cap)
        gap = self.failing - self.best
        if gap <= max(1, int(self.best * self.resolution)):
            return None
        return self.best + gap // 2 if self.best else max(1, self.failing // 2)

    def record(self, n: int, passed: bool) -> None:
        self.tried.append((n, passed))
        if passed:
            self.best = max(self.best, n)
        else:
            self.failing = n if not self.failing else min(self.failing, n)


def _ramp_steps(start: int, cap: int, bisect: int) -> int:
    """Steps to plan for: `start` doubled up to `cap`, then `bisect` halvings of the gap."""
    n, count = start, 1
    while n < cap:
        n, count = min(n * 2, cap), count + 1
    return count + bisect


def _keeps_up(step: dict[str, float]) -> bool:
    """A relay step passes while SUSTAINED of the packets come back, its process stays under
    CPU_SATURATED of a core, at most LATE_SHARE of the relayed packets arrive more than 20 ms
    behind schedule and the p99 of the streams' interarrival jitter is within JITTER_P99_MS."""
    return (
        step["delivered"] >= SUSTAINED
        and step["cpu_util"] <= CPU_SATURATED
        and step["late_share"] <= LATE_SHARE
        and step["jitter_p99_ms"] <= JITTER_P99_MS
    )


async def _concurrent(recorded: bool) -> dict[str, float]:
    """The most simultaneous calls one relay process keeps up with (`_keeps_up`), by a `Ramp`
    from CONCURRENT_START to CONCURRENT_CAP calls."""
    steps = _ramp_steps(CONCURRENT_START, CONCURRENT_CAP, BISECT_STEPS)
    ramp = Ramp(CONCURRENT_START, CONCURRENT_CAP, steps, budget_s=steps * RELAY_STEP_SECONDS)
    kind = "recorded" if recorded else "unrecorded"
    at: dict[int, dict[str, float]] = {}
    began = time.monotonic()
    rig = _Rig(fresh_relay=False)  # one relay process for the ramp, as a gateway has one
    try:
        while (n := ramp.next(time.monotonic() - began)) is not None:
            box0 = machine_busy()
            step = await _relayed(rig, n, recorded, RAMP_WINDOW)
            box1 = machine_busy()
            step["machine_busy"] = (box1[0] - box0[0]) / (box1[1] - box0[1])
            passed = _keeps_up(step)
            ramp.record(n, passed)
            at[n] = step
            shown = ", ".join(f"{k} {v:.3f}" for k, v in step.items())
            print(
                f"voice bench concurrent {kind} calls {n}: {'pass' if passed else 'FAIL'}: {shown}",
                file=sys.stderr,
            )
    finally:
        await rig.close()
    best = at.get(ramp.best, {})
    return {
        "calls": float(ramp.best),
        "first_failing": float(ramp.failing),
        "steps": float(len(ramp.tried)),
        "seconds": time.monotonic() - began,
        "cpu_util": best.get("cpu_util", 0.0),
        "cpu_ms_per_call_s": best.get("cpu_ms_per_call_s", float("nan")),
        "jitter_p99_ms": best.get("jitter_p99_ms", float("nan")),
        "late_share": best.get("late_share", float("nan")),
        "delivered": best.get("delivered", 0.0),
        # What a core of its own would hold at the CPU per call-second measured at `calls`.
        "per_core": 1000 / best["cpu_ms_per_call_s"] if best else 0.0,
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
    ramp = Ramp(SIP_START, SIP_CAP, 0)
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
                "VOICE_MAX_CALLS": str(SIP_CAP * 2),
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

        planned = _ramp_steps(SIP_START, SIP_CAP, BISECT_STEPS)
        ramp = Ramp(SIP_START, SIP_CAP, planned, budget_s=planned * SIP_STEP_SECONDS)
        began = time.monotonic()  # from the gateway listening: prompt synthesis is no step
        while (n := ramp.next(time.monotonic() - began)) is not None:
            placed = await ask("calls", (n, SETUP_LIMIT))
            await asyncio.sleep(WARMUP)
            conn.send(("count", WINDOW))
            await asyncio.wait_for(asyncio.to_thread(conn.recv), 30)  # "started"
            cpu0, t0 = cpu_seconds(gateway.pid), time.monotonic()
            gen0, router0, box0 = cpu_seconds(load.pid), cpu_seconds(router.pid), machine_busy()
            counted = await asyncio.wait_for(asyncio.to_thread(conn.recv), 30)
            cpu1, t1 = cpu_seconds(gateway.pid), time.monotonic()
            gen1, router1, box1 = cpu_seconds(load.pid), cpu_seconds(router.pid), machine_busy()
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
            ramp.record(n, step["sustained"])
            print(f"voice bench step {step}", file=sys.stderr)
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

    good = [s for s in steps if s["sustained"] and s["calls"] == ramp.best]
    best = good[-1] if good else steps[0]
    raw = await _raw_baseline(best["calls"])
    figures: dict[str, Any] = {
        "voice_max_sustained_calls": float(ramp.best),
        "voice_first_failing_calls": float(ramp.failing),
        "voice_gateway_steps": float(len(steps)),
        "voice_cpu_ms_per_call_s": best["cpu_ms_per_call_s"],
        "voice_gateway_cpu_util_at_max": best["cpu_util"],
        "voice_delivered_at_max": best["delivered_mean"],
        "voice_load_generator_cpu_util_at_max": best["load_generator_cpu_util"],
        "voice_raw_cpu_ms_per_stream_s": raw["cpu_ms_per_stream_s"],
        "voice_raw_delivered": raw["delivered"],
        "voice_cpu_per_call_over_raw": best["cpu_ms_per_call_s"] / raw["cpu_ms_per_stream_s"],
    }
    figures.update(await _recording_cost())
    most = {}
    for recorded, name in ((False, "unrecorded"), (True, "recorded")):
        most[name] = m = await _concurrent(recorded)
        figures[f"voice_concurrent_{name}_calls_per_relay_process"] = m["calls"]
        figures[f"voice_concurrent_{name}_first_failing"] = m["first_failing"]
        figures[f"voice_concurrent_{name}_steps"] = m["steps"]
        figures[f"voice_concurrent_{name}_cpu_ms_per_call_s_at_max"] = m["cpu_ms_per_call_s"]
        figures[f"voice_concurrent_{name}_jitter_p99_ms_at_max"] = m["jitter_p99_ms"]
        figures[f"voice_concurrent_{name}_late_share_at_max"] = m["late_share"]
        figures[f"voice_concurrent_{name}_relay_cpu_util_at_max"] = m["cpu_util"]
        figures[f"voice_concurrent_{name}_calls_per_core_by_cpu"] = m["per_core"]
    plain, rec = most["unrecorded"], most["recorded"]
    figures["voice_concurrent_recorded_over_unrecorded_calls"] = (
        rec["calls"] / plain["calls"] if plain["calls"] else float("nan")
    )
    figures["voice_concurrent_recorded_over_unrecorded_cpu_at_max"] = (
        rec["cpu_ms_per_call_s"] / plain["cpu_ms_per_call_s"]
    )
    figures["voice_concurrent_measured_on"] = CONCURRENT_MEDIA_PATH
    print(
        f"voice: concurrent calls per process ({CONCURRENT_MEDIA_PATH}):"
        f" unrecorded {plain['calls']:.0f}, recorded {rec['calls']:.0f}"
        f" (x{figures['voice_concurrent_recorded_over_unrecorded_calls']:.2f});"
        f" CPU per call-second at those steps unrecorded {plain['cpu_ms_per_call_s']:.2f} ms,"
        f" recorded {rec['cpu_ms_per_call_s']:.2f} ms"
        f" (x{figures['voice_concurrent_recorded_over_unrecorded_cpu_at_max']:.2f});"
        f" jitter p99 at those steps unrecorded {plain['jitter_p99_ms']:.2f} ms,"
        f" recorded {rec['jitter_p99_ms']:.2f} ms;"
        f" the gateway over SIP held {ramp.best} queued calls (first failing {ramp.failing})",
        flush=True,
    )
    for s in steps:
        figures[f"voice_cpu_ms_per_call_s_at_{s['calls']}"] = s["cpu_ms_per_call_s"]
        figures[f"voice_delivered_at_{s['calls']}"] = s["delivered_mean"]
    figures.update(await _connected(work))
    return figures


async def _connected(work: pathlib.Path) -> dict[str, Any]:
    """Connected calls through the gateway process, recorded and unrecorded
    (bench/voice_connected.py)."""
    from bench.voice_connected import run_connected

    # A NATS server of its own: the parts before it (end to end) leave a tenant `bench` routed by
    # a router state kept in JetStream, which the router here would take up with its contacts
    # still waiting ahead of these calls.
    from switchboard.core.embedded_nats import NatsServer

    server = NatsServer(work / "voice-connected-nats").start()
    try:
        return await run_connected(work, server.url)
    finally:
        server.stop()
