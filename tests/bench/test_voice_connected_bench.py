"""The connected-call voice bench's own helpers: its steps, what passes, the ratio it reports,
and the digest its phones register with (checked by the gateway's own registrar)."""

from __future__ import annotations

import math
import os
import sys
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.stats import cpu_seconds, loop_cpu_seconds
from bench.voice_connected import (
    common_ratio,
    connected_passes,
    connected_steps,
    digest,
    pair_ratios,
)
from switchboard.voice_gateway.sip.message import parse_datagram
from switchboard.voice_gateway.sip.registrar import Registrar


def _step(calls: int, cpu_ms: float, **changes: Any) -> dict[str, Any]:
    step = {
        "calls": calls,
        "connected": calls,
        "to_caller": 1.0,
        "to_agent": 0.99,
        "cpu_util": 0.5,
        "cpu_ms_per_call_s": cpu_ms,
    }
    return {**step, **changes}


def test_steps_double_up_to_the_cap() -> None:
    assert connected_steps(25, 200) == [25, 50, 100, 200]
    assert connected_steps(25, 150) == [25, 50, 100, 150]
    assert connected_steps(50, 50) == [50]
    assert connected_steps(0, 3) == [1, 2, 3]


def test_a_step_fails_on_a_missing_call_a_lossy_direction_or_a_busy_gateway() -> None:
    assert connected_passes(_step(100, 2.0))
    assert not connected_passes(_step(100, 2.0, connected=99))
    assert not connected_passes(_step(100, 2.0, to_caller=0.94))
    assert not connected_passes(_step(100, 2.0, to_agent=0.5))
    assert not connected_passes(_step(100, 2.0, cpu_util=0.95))


def test_ratio_is_taken_at_the_most_calls_both_passed() -> None:
    plain = [_step(25, 2.0), _step(50, 1.5), _step(100, 1.2)]
    recorded = [_step(25, 3.0), _step(50, 2.25), _step(100, 2.0, to_agent=0.5)]
    assert common_ratio(plain, recorded) == (50, 1.5)
    calls, ratio = common_ratio(plain, [_step(25, 3.0, connected=0)])
    assert calls == 0 and math.isnan(ratio)


def test_pairs_count_only_where_both_steps_passed() -> None:
    pairs = {
        False: [_step(200, 1.0), _step(200, 1.0), _step(200, 1.0, connected=150)],
        True: [_step(200, 1.25), _step(200, 1.5, to_caller=0.5), _step(200, 1.4)],
    }
    assert pair_ratios(pairs) == [1.25]
    assert pair_ratios({False: [_step(200, 2.0)], True: []}) == []


def _register(auth: str = "") -> bytes:
    lines = [
        "REGISTER sip:127.0.0.1:5060 SIP/2.0",
        "Via: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bKbench1;rport",
        "Max-Forwards: 70",
        "From: <sip:bench-7@127.0.0.1>;tag=reg",
        "To: <sip:bench-7@127.0.0.1>",
        "Call-ID: reg-bench-7",
        f"CSeq: {2 if auth else 1} REGISTER",
        "Contact: <sip:bench-7@127.0.0.1:40000>",
        "Expires: 3600",
        *([f"Authorization: {auth}"] if auth else []),
    ]
    return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()


def test_the_phones_digest_registers_with_the_gateways_registrar() -> None:
    registrar = Registrar("switchboard", {("bench", "bench-7"): "pw-7", ("demo", "bench-7"): "x"})
    peer = ("127.0.0.1", 40000)
    challenge = registrar.register(parse_datagram(_register()), peer)
    assert challenge.status == 401
    www = challenge.get("WWW-Authenticate")
    uri = "sip:127.0.0.1:5060"
    wrong = digest("bench-7@bench", "pw-8", "REGISTER", uri, www)
    assert registrar.register(parse_datagram(_register(wrong)), peer).status == 403
    right = digest("bench-7@bench", "pw-7", "REGISTER", uri, www, nc=2)
    assert registrar.register(parse_datagram(_register(right)), peer).status == 200
    binding = registrar.lookup("bench", "bench-7")
    assert binding is not None and binding.contact == "sip:bench-7@127.0.0.1:40000"
    assert registrar.lookup("demo", "bench-7") is None


def test_the_loops_cpu_leaves_out_the_other_threads() -> None:
    """A step splits the gateway's CPU between its event loop's thread and the others (the
    recordings' writer): work done by another thread counts for the process, not its loop."""
    pid = os.getpid()
    process0, loop0 = cpu_seconds(pid), loop_cpu_seconds(pid)

    def burn() -> None:
        total = 0
        for i in range(3_000_000):
            total += i * i

    thread = threading.Thread(target=burn)
    thread.start()
    thread.join()
    process, loop = cpu_seconds(pid) - process0, loop_cpu_seconds(pid) - loop0
    assert process >= 0.05
    assert loop <= process / 4
