"""Chat bench: concurrent customer sockets held by one chat process, and customer message latency
(send -> echoed to the socket, while the message is stored in JetStream and the history) at p50/p99
under load, beside a raw Socket.IO echo on the same machine. The load runs in processes of its
own (BENCH_CHAT_CLIENT_PROCESSES), so neither the chat process's event loop nor one load
process's is what limits it: each opens its share of the sockets, and all start sending together
once every socket is open.

Two loads on the same sockets. Saturation: BENCH_CHAT_SENDERS (100) sockets each send
BENCH_CHAT_MESSAGES (10) back to back, so the latency is mostly the queue those senders make
(about senders / throughput). Paced: then every socket sends at random (Poisson) intervals of
BENCH_CHAT_PACED_INTERVAL_SECONDS (5 s) on average for BENCH_CHAT_PACED_SECONDS (20 s), as
customers typing do: the latency at a stated load (2,000 sockets: about 400 messages/s), in
conversations already open (each socket's first message, which creates its contact, is sent
before and not counted). The raw
echo takes both loads the same way. The part runs in a process of its own on uvloop, as
`switchboard-chat` does.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import os
import pathlib
import random
import socket
import time
from collections.abc import Callable
from typing import Any

SOCKETS = int(os.environ.get("BENCH_CHAT_SOCKETS", "2000"))
SENDERS = int(os.environ.get("BENCH_CHAT_SENDERS", "100"))
CLIENT_PROCESSES = int(os.environ.get("BENCH_CHAT_CLIENT_PROCESSES", "4"))
MESSAGES_PER_SENDER = int(os.environ.get("BENCH_CHAT_MESSAGES", "10"))
# Then, on the same sockets, a paced load: every socket sends a message at random (Poisson)
# intervals of this mean, as customers typing do, for PACED_SECONDS; latency at a stated load
# rather than at saturation (2,000 sockets every 5 s: 400 messages/s).
PACED_INTERVAL = float(os.environ.get("BENCH_CHAT_PACED_INTERVAL_SECONDS", "5"))
PACED_SECONDS = float(os.environ.get("BENCH_CHAT_PACED_SECONDS", "20"))


def _pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else float("nan")


async def _load(
    url: str, sockets: int, senders: int, per_sender: int, raw: bool, ready: Any, go: Any
) -> dict[str, Any]:
    import aiohttp
    import socketio

    clients: list[Any] = []
    echoes: dict[str, asyncio.Future[float]] = {}
    # The echo can arrive before the send's ack (chat shows a message while JetStream stores it).
    arrived: dict[str, float] = {}
    ns = "/" if raw else "/customer"

    async def open_one(i: int) -> Any:
        client = socketio.AsyncClient(reconnection=False)
        auth: dict[str, Any] | None = None
        if not raw:
            async with aiohttp.ClientSession() as http:
                async with http.post(f"{url}/api/visitor-token", json={"tenant": "bench"}) as r:
                    token = (await r.json())["token"]
            auth = {"token": token, "name": f"bench {i}", "language": "ko", "topic": "billing"}

            async def on_message(data: Any) -> None:
                message_id = data.get("message_id", "")
                arrived[message_id] = time.perf_counter()
                fut = echoes.get(message_id)
                if fut is not None and not fut.done():
                    fut.set_result(arrived[message_id])

            client.on("message", on_message, namespace=ns)
        await client.connect(
            url, namespaces=[ns], auth=auth, transports=["websocket"], wait_timeout=30
        )
        return client

    for start in range(0, sockets, 50):
        clients += await asyncio.gather(
            *(open_one(i) for i in range(start, min(sockets, start + 50)))
        )
    held = sum(1 for c in clients if c.connected)
    ready.put(held)
    await asyncio.to_thread(go.wait)

    async def send(client: Any, n: int) -> float | None:
        """One message sent: seconds until it came back (the echo; the chat: the message on
        the socket), None if refused."""
        t0 = time.perf_counter()
        if raw:
            await client.call("echo", {"text": f"메시지 {n}"}, namespace=ns, timeout=30)
            return time.perf_counter() - t0
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        client_id = f"bench-{id(client)}-{n}"
        ack = await client.call(
            "message", {"text": f"메시지 {n}", "client_id": client_id}, namespace=ns, timeout=30
        )
        if not ack.get("ok"):
            return None
        message_id = ack["message_id"]
        if message_id in arrived:
            done = arrived[message_id]
        else:
            echoes[message_id] = fut
            done = await asyncio.wait_for(fut, 30)
        return done - t0

    async def send_loop(client: Any) -> list[float]:
        out = []
        for n in range(per_sender):
            took = await send(client, n)
            if took is not None:
                out.append(took)
        return out

    async def paced_loop(client: Any, rng: random.Random, until: float) -> list[float]:
        out: list[float] = []
        due, n = time.perf_counter(), per_sender
        while True:
            due += rng.expovariate(1 / PACED_INTERVAL)
            if due >= until:
                return out
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            took = await send(client, n)
            n += 1
            if took is not None:
                out.append(took)

    started = time.perf_counter()
    results = await asyncio.gather(*(send_loop(c) for c in clients[:senders]))
    elapsed = time.perf_counter() - started
    samples = [s for r in results for s in r]
    paced: list[float] = []
    if PACED_SECONDS > 0:
        # Every other socket's first message (the one that creates its contact) before the
        # paced load, which then measures messages in conversations already open.
        opening = asyncio.Semaphore(25)

        async def first(client: Any) -> None:
            async with opening:
                await send(client, 0)

        await asyncio.gather(*(first(c) for c in clients[senders:]))
        rng = random.Random(os.getpid())
        until = time.perf_counter() + PACED_SECONDS
        for r in await asyncio.gather(*(paced_loop(c, rng, until) for c in clients)):
            paced += r
    for c in clients:
        await c.disconnect()
    return {"held": held, "samples": samples, "elapsed": elapsed, "paced": paced}


def _client_process(
    url: str, sockets: int, senders: int, per: int, raw: bool, ready: Any, go: Any, q: Any
) -> None:
    q.put(asyncio.run(_load(url, sockets, senders, per, raw, ready, go)))


class GcPauses:
    """The collector's pauses in this process (where the chat runs), by generation, from
    `gc.callbacks`."""

    def __init__(self) -> None:
        self.pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses[info["generation"]].append(time.perf_counter() - self._started)

    def reset(self) -> None:
        for pauses in self.pauses.values():
            pauses.clear()

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)

    def figures(self) -> dict[str, float]:
        every = [p for ps in self.pauses.values() for p in ps]
        return {
            "chat_gc_collections": float(len(every)),
            "chat_gc_full_collections": float(len(self.pauses[2])),
            "chat_gc_pause_max_ms": max(every, default=0.0) * 1000,
            "chat_gc_pause_total_ms": sum(every) * 1000,
        }


def _tracked() -> int:
    gc.collect()
    return len(gc.get_objects())


async def _in_children(
    url: str,
    sockets: int,
    senders: int,
    per: int,
    raw: bool,
    opened: Callable[[], None] | None = None,
) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    ready, go, q = ctx.Queue(), ctx.Event(), ctx.Queue()
    n = max(1, min(CLIENT_PROCESSES, senders, sockets))
    procs = [
        ctx.Process(
            target=_client_process,
            args=(
                url,
                sockets // n + (k < sockets % n),
                senders // n + (k < senders % n),
                per,
                raw,
                ready,
                go,
                q,
            ),
        )
        for k in range(n)
    ]
    for proc in procs:
        proc.start()
    try:
        held = sum([await asyncio.to_thread(ready.get, True, 300) for _ in procs])
        if opened is not None:
            opened()
        go.set()  # every socket is open: all start sending at once
        results = [await asyncio.to_thread(q.get, True, 300) for _ in procs]
    finally:
        for proc in procs:
            await asyncio.to_thread(proc.join, 10)
    samples = [s for r in results for s in r["samples"]]
    paced = [s for r in results for s in r["paced"]]
    elapsed = max(r["elapsed"] for r in results)
    return {
        "held": held,
        # Every message sent once the sockets were open: both loads, and the first message of
        # each socket that did not send in the first load (which opens its contact).
        "sent": len(samples) + len(paced) + (sockets - senders if PACED_SECONDS > 0 else 0),
        "p50_ms": _pct(samples, 0.5) * 1000,
        "p99_ms": _pct(samples, 0.99) * 1000,
        "per_s": len(samples) / elapsed if elapsed else 0.0,
        "paced_p50_ms": _pct(paced, 0.5) * 1000,
        "paced_p99_ms": _pct(paced, 0.99) * 1000,
        "paced_per_s": len(paced) / PACED_SECONDS if PACED_SECONDS > 0 else 0.0,
    }


async def _raw_echo_server() -> tuple[Any, int]:
    import socketio

    from switchboard.chat.entrypoints.http_server import HttpServer

    sio = socketio.AsyncServer(async_mode="asgi", logger=False, engineio_logger=False)

    @sio.on("echo")  # type: ignore[misc]
    async def echo(sid: str, data: Any) -> Any:
        return data

    http = HttpServer(socketio.ASGIApp(sio), "127.0.0.1", 0)
    await http.start()
    return http, http.port


async def _run(work: pathlib.Path, nats_url: str) -> dict[str, float]:
    from switchboard.chat import config as chat_config
    from switchboard.chat.bootstrap import ChatApp
    from switchboard.chat.settings import ChatSettings

    raw_http, raw_port = await _raw_echo_server()
    try:
        raw = await _in_children(
            f"http://127.0.0.1:{raw_port}", SOCKETS, SENDERS, MESSAGES_PER_SENDER, True
        )
    finally:
        await raw_http.stop()

    cfg = chat_config.parse(
        {
            **__import__("yaml").safe_load(chat_config.DEFAULT_FILE.read_text()),
            "limits": {
                "messages_per_second": 1000.0,
                "message_burst": 1000,
                "signals_per_second": 1000.0,
                "signal_burst": 1000,
                # Every bench client is on 127.0.0.1: no per-address or per-tenant ceiling.
                "address_messages_per_second": 1e6,
                "address_message_burst": 1_000_000,
                "tenant_messages_per_second": 1e6,
                "tenant_message_burst": 1_000_000,
                "visitor_tokens_per_minute": 1e8,
                "upload_max_bytes": 1024,
                "upload_types": ["text/plain"],
                "visitor_token_ttl_seconds": 3600,
            },
        }
    )
    with socket.socket() as s:  # a free port for the chat's gRPC health
        s.bind(("127.0.0.1", 0))
        grpc_port = s.getsockname()[1]
    settings = ChatSettings(
        NATS_URL=nats_url,
        CHAT_HTTP_PORT=0,
        CHAT_GRPC_PORT=grpc_port,
        CHAT_CONSUMER="chat-bench",
        CHAT_ROUTER_ADDR="127.0.0.1:9",
        SWITCHBOARD_AUTH_SECRET="bench-secret",
    )
    app = ChatApp(settings, config=cfg)
    await app.start()
    before = _tracked()
    tracked: list[int] = []
    cpu: list[float] = []  # this process's CPU time (the chat's) when the loads start, and end
    try:
        with GcPauses() as pauses:

            def opened() -> None:
                # Counted with every socket open, then only the messages' pauses are kept.
                tracked.append(_tracked())
                pauses.reset()
                cpu.append(time.process_time())

            chat = await _in_children(
                f"http://127.0.0.1:{app.http_port}",
                SOCKETS,
                SENDERS,
                MESSAGES_PER_SENDER,
                False,
                opened,
            )
            cpu.append(time.process_time())
    finally:
        await app.stop()
    return {
        "chat_sockets_held": float(chat["held"]),
        "chat_message_p50_ms": chat["p50_ms"],
        "chat_message_p99_ms": chat["p99_ms"],
        "chat_messages_per_s": chat["per_s"],
        "raw_socketio_echo_p50_ms": raw["p50_ms"],
        "raw_socketio_echo_p99_ms": raw["p99_ms"],
        "chat_to_raw_p50_ratio": chat["p50_ms"] / raw["p50_ms"] if raw["p50_ms"] else float("nan"),
        # The paced load: every socket sending at random intervals (PACED_INTERVAL on average).
        "chat_paced_messages_per_s": chat["paced_per_s"],
        "chat_paced_message_p50_ms": chat["paced_p50_ms"],
        "chat_paced_message_p99_ms": chat["paced_p99_ms"],
        "raw_socketio_paced_echo_p50_ms": raw["paced_p50_ms"],
        "raw_socketio_paced_echo_p99_ms": raw["paced_p99_ms"],
        "chat_paced_to_raw_p50_ratio": chat["paced_p50_ms"] / raw["paced_p50_ms"]
        if raw["paced_p50_ms"]
        else float("nan"),
        # The chat's CPU per message over both loads (its process runs nothing else meanwhile).
        "chat_cpu_ms_per_message": (cpu[1] - cpu[0]) * 1e3 / max(1, chat["sent"]),
        "chat_client_processes": float(min(CLIENT_PROCESSES, SENDERS, SOCKETS)),
        # Objects the collector tracks for each socket held (all open, none sent yet).
        "chat_gc_objects_per_socket": (tracked[0] - before) / max(1, chat["held"])
        if tracked
        else float("nan"),
        **pauses.figures(),
    }


_SELF = str(pathlib.Path(__file__).resolve())


async def run(work: pathlib.Path, nats_url: str) -> dict[str, float]:
    """The part in a process of its own on uvloop, as `switchboard-chat` runs the chat (the
    bench's own process runs the default asyncio loop, and other parts' leftovers)."""
    import json
    import subprocess
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        _SELF,
        nats_url,
        str(work),
        stdout=subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"the chat bench's process ended with {proc.returncode}")
    figures: dict[str, float] = json.loads(out.decode().strip().splitlines()[-1])
    return figures


if __name__ == "__main__":
    import json
    import sys
    import tempfile

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
    from bench import service_loop
    from switchboard.core.embedded_nats import NatsServer

    # The chat process's loop, as `switchboard-chat` runs it (the raw echo's too).
    if len(sys.argv) == 3:  # from `run`: its NATS server and folder
        figures = service_loop.run(_run(pathlib.Path(sys.argv[2]), sys.argv[1]))
        print(json.dumps(figures), flush=True)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            server = NatsServer(pathlib.Path(tmp) / "nats").start()
            try:
                for k, v in service_loop.run(_run(pathlib.Path(tmp), server.url)).items():
                    print(f"{k:28s} {v:10.2f}")
            finally:
                server.stop()
