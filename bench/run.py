"""`make bench`: end-to-end figures beside the raw transports, measured in the same run.

Prints a table and writes the same figures to bench-results.json.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import endtoend, service_loop, transport
from switchboard.core.embedded_nats import NatsServer
from switchboard.testing.databases import POSTGRES_ENV, postgres_database
from switchboard.testing.tls import grpc_tls

# Each part's module has `async def run(work, nats_url) -> dict[str, float]` and measures its own
# raw baseline in the same run. BENCH_ONLY=router,chat runs a subset (and nothing else).
PARTS = (
    "case_store",
    "case_pair",
    "router",
    "router_groups",
    "chat",
    "email_ingest",
    "fax",
    "voice",
)

CONTACTS = int(os.environ.get("BENCH_CONTACTS", "2000"))
AGENTS_PER_LANGUAGE = int(os.environ.get("BENCH_AGENTS_PER_LANGUAGE", "25"))
LATENCY_SAMPLES = int(os.environ.get("BENCH_LATENCY_SAMPLES", "500"))
RAW_MESSAGES = int(os.environ.get("BENCH_RAW_MESSAGES", "20000"))


async def main() -> dict[str, object]:
    if os.environ.get("BENCH_ONLY"):  # the named parts alone: no end-to-end or raw transports
        with tempfile.TemporaryDirectory(prefix="switchboard-bench-") as tmp:
            server = NatsServer(Path(tmp) / "nats").start()
            try:
                parts = await run_parts(Path(tmp), server.url)
            finally:
                server.stop()
        return {"when": _now(), "machine": _machine(), "parts": parts}
    with tempfile.TemporaryDirectory(prefix="switchboard-bench-") as tmp:
        work = Path(tmp)
        server = NatsServer(work / "nats").start()
        try:
            raw_js_before = await transport.jetstream_publish_consume(server.url, RAW_MESSAGES)
            raw_hop = await transport.jetstream_hop(server.url, LATENCY_SAMPLES)
            raw_grpc = await transport.grpc_stream_hop(RAW_MESSAGES)
            raw_grpc_hop = await transport.grpc_hop(LATENCY_SAMPLES)
            raw_grpc_tls = await transport.grpc_stream_hop(RAW_MESSAGES, grpc_tls(work / "tls"))
            e2e = await endtoend.run(
                server.url,
                work,
                CONTACTS,
                AGENTS_PER_LANGUAGE,
                LATENCY_SAMPLES,
                nats_pid=server.proc.pid if server.proc else None,
            )
            # The machine's speed drifts within minutes: the raw figure is taken on each side of
            # the run it is the ratio's denominator for, and the two averaged.
            raw_js_after = await transport.jetstream_publish_consume(server.url, RAW_MESSAGES)
            raw_js = (raw_js_before + raw_js_after) / 2
            # The same run with the case store on PostgreSQL, when a server is named (on a
            # nats-server of its own, as the secured run: the streams and the router's journal
            # start empty).
            e2e_postgresql: dict[str, float] | None = None
            raw_js_postgresql = (0.0, 0.0)
            if os.environ.get(POSTGRES_ENV):
                pg_nats = NatsServer(work / "postgresql" / "nats").start()
                try:
                    before = await transport.jetstream_publish_consume(pg_nats.url, RAW_MESSAGES)
                    async with postgres_database() as database_url:
                        e2e_postgresql = await endtoend.run(
                            pg_nats.url,
                            work / "postgresql",
                            CONTACTS,
                            AGENTS_PER_LANGUAGE,
                            LATENCY_SAMPLES,
                            nats_pid=pg_nats.proc.pid if pg_nats.proc else None,
                            database_url=database_url,
                        )
                    after = await transport.jetstream_publish_consume(pg_nats.url, RAW_MESSAGES)
                    raw_js_postgresql = (before, after)
                finally:
                    pg_nats.stop()
            # The same run as production makes it: NATS users over TLS, gRPC over mutual TLS.
            security = endtoend.Security.start(work / "secured")
            try:
                e2e_secured = await endtoend.run(
                    security.nats.url,
                    work / "secured",
                    CONTACTS,
                    AGENTS_PER_LANGUAGE,
                    LATENCY_SAMPLES,
                    security,
                    security.nats.server.proc.pid if security.nats.server.proc else None,
                )
            finally:
                security.stop()
            parts = await run_parts(work, server.url)
        finally:
            server.stop()
    return {
        "when": _now(),
        "machine": _machine(),
        "raw": {
            # the mean of the figures taken right before and right after the end-to-end run
            "jetstream_publish_consume_msgs_per_s": raw_js,
            "jetstream_publish_consume_before_msgs_per_s": raw_js_before,
            "jetstream_publish_consume_after_msgs_per_s": raw_js_after,
            **(
                {
                    # on the PostgreSQL run's own nats-server, on each side of that run
                    "postgresql_run_jetstream_before_msgs_per_s": raw_js_postgresql[0],
                    "postgresql_run_jetstream_after_msgs_per_s": raw_js_postgresql[1],
                }
                if e2e_postgresql
                else {}
            ),
            # one message at a time to another process's pull consumer: published -> fetched
            "jetstream_hop_p50_ms": raw_hop["p50_ms"],
            "jetstream_hop_p99_ms": raw_hop["p99_ms"],
            "grpc_stream_msgs_per_s": raw_grpc["msgs_per_s"],
            "grpc_stream_p50_ms": raw_grpc["p50_ms"],
            "grpc_stream_p99_ms": raw_grpc["p99_ms"],
            # one message at a time down a server stream to another process: pushed -> read
            "grpc_hop_p50_ms": raw_grpc_hop["p50_ms"],
            "grpc_hop_p99_ms": raw_grpc_hop["p99_ms"],
            # the same hop over mutual TLS (what GRPC_TLS_* and `switchboard run` use)
            "grpc_mtls_stream_msgs_per_s": raw_grpc_tls["msgs_per_s"],
            "grpc_mtls_stream_p50_ms": raw_grpc_tls["p50_ms"],
            "grpc_mtls_stream_p99_ms": raw_grpc_tls["p99_ms"],
        },
        "end_to_end": e2e,
        "end_to_end_secured": e2e_secured,
        **({"end_to_end_postgresql": e2e_postgresql} if e2e_postgresql else {}),
        "parts": parts,
        "ratios": {
            "contacts_per_s_over_raw_jetstream": e2e["contacts_per_s"] / raw_js,
            **(
                {
                    "postgresql_contacts_per_s_over_raw_jetstream": e2e_postgresql["contacts_per_s"]
                    / (sum(raw_js_postgresql) / 2)
                }
                if e2e_postgresql
                else {}
            ),
            "routed_per_s_over_raw_jetstream": e2e["offers_per_s"] / raw_js,
            "offer_p50_over_raw_grpc_hop_p50": e2e["offer_p50_ms"] / raw_grpc["p50_ms"],
            "offer_p99_over_raw_grpc_hop_p99": e2e["offer_p99_ms"] / raw_grpc["p99_ms"],
            "offer_p99_over_raw_jetstream_hop_p99": e2e["offer_p99_ms"] / raw_hop["p99_ms"],
            "offer_p99_over_raw_cross_process_grpc_hop_p99": e2e["offer_p99_ms"]
            / raw_grpc_hop["p99_ms"],
            "grpc_mtls_over_plain_msgs_per_s": raw_grpc_tls["msgs_per_s"] / raw_grpc["msgs_per_s"],
            "grpc_mtls_over_plain_p50": raw_grpc_tls["p50_ms"] / raw_grpc["p50_ms"],
            "secured_over_plain_contacts_per_s": e2e_secured["contacts_per_s"]
            / e2e["contacts_per_s"],
            "secured_over_plain_offer_p50": e2e_secured["offer_p50_ms"] / e2e["offer_p50_ms"],
            "secured_over_plain_offer_p99": e2e_secured["offer_p99_ms"] / e2e["offer_p99_ms"],
        },
    }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _machine() -> dict[str, object]:
    return {"cpus": os.cpu_count(), "python": platform.python_version()}


async def run_parts(work: Path, nats_url: str) -> dict[str, dict[str, float]]:
    import importlib

    only = {p for p in os.environ.get("BENCH_ONLY", "").split(",") if p}
    out: dict[str, dict[str, float]] = {}
    for name in PARTS:
        if only and name not in only:
            continue
        try:
            module = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError:
            continue
        print(f"bench: {name}...", flush=True)
        part_dir = work / name
        part_dir.mkdir(exist_ok=True)
        try:
            out[name] = await module.run(part_dir, nats_url)
        except Exception as exc:  # one part failing must not hide the others' figures
            print(f"bench: {name} failed: {exc!r}", flush=True)
            out[name] = {"failed": 1.0}
    return out


def parts_table(parts: dict[str, dict[str, float]]) -> str:
    lines = []
    for name, figures in parts.items():
        lines.append(f"\n[{name}]")
        for key, value in figures.items():
            shown = f"{value:,.3f}" if isinstance(value, float) else str(value)
            lines.append(f"  {key:<48} {shown:>16}")
    return "\n".join(lines)


def table(r: dict[str, dict[str, float]]) -> str:
    raw, e2e, ratio = r["raw"], r["end_to_end"], r["ratios"]
    rows = [
        (
            "raw JetStream publish+consume",
            f"{raw['jetstream_publish_consume_msgs_per_s']:,.0f} msgs/s",
            f"the mean of {raw['jetstream_publish_consume_before_msgs_per_s']:,.0f} before"
            f" and {raw['jetstream_publish_consume_after_msgs_per_s']:,.0f} after the end-to-end run",
        ),
        (
            "raw JetStream hop, one at a time, to another process",
            f"p50 {raw['jetstream_hop_p50_ms']:.2f} ms",
            f"p99 {raw['jetstream_hop_p99_ms']:.2f} ms (published -> fetched)",
        ),
        (
            "raw grpc.aio stream hop",
            f"{raw['grpc_stream_msgs_per_s']:,.0f} msgs/s",
            f"p50 {raw['grpc_stream_p50_ms']:.2f} ms, p99 {raw['grpc_stream_p99_ms']:.2f} ms",
        ),
        (
            "the same hop over mutual TLS",
            f"{raw['grpc_mtls_stream_msgs_per_s']:,.0f} msgs/s",
            f"p50 {raw['grpc_mtls_stream_p50_ms']:.2f} ms,"
            f" p99 {raw['grpc_mtls_stream_p99_ms']:.2f} ms"
            f" (x{ratio['grpc_mtls_over_plain_msgs_per_s']:.2f} the plain hop's msgs/s)",
        ),
        (
            "raw gRPC hop, one at a time, to another process",
            f"p50 {raw['grpc_hop_p50_ms']:.2f} ms",
            f"p99 {raw['grpc_hop_p99_ms']:.2f} ms (pushed on a server stream -> read)",
        ),
        (
            f"end to end ({e2e['contacts']:.0f} contacts, {e2e['agents']:.0f} agents"
            f" in {e2e['agent_processes']:.0f} processes)",
            f"{e2e['contacts_per_s']:,.0f} contacts/s",
            f"in a burst: published->offer p50 {e2e['burst_offer_p50_ms']:.0f} ms,"
            f" p99 {e2e['burst_offer_p99_ms']:.0f} ms (queueing)",
        ),
        (
            f"published->offer, one at a time ({e2e['latency_samples']:.0f})",
            f"p50 {e2e['offer_p50_ms']:.2f} ms",
            f"p99 {e2e['offer_p99_ms']:.2f} ms",
        ),
        (
            "  of which routed (last offer on a stream)",
            f"{e2e['offers_per_s']:,.0f} contacts/s",
            "the rest is the case store recording every event",
        ),
        (
            "  CPU per contact over the throughput phase",
            f"machine {e2e['machine_busy_share']:.0%} busy",
            ", ".join(
                f"{name} {e2e[f'{name}_cpu_ms_per_contact']:.2f} ms"
                for name in ("router", "case", "nats_server", "agents", "bench")
                if f"{name}_cpu_ms_per_contact" in e2e
            ),
        ),
        (
            "the same, secured (NATS users over TLS, gRPC mutual TLS)",
            f"{r['end_to_end_secured']['contacts_per_s']:,.0f} contacts/s",
            f"x{ratio['secured_over_plain_contacts_per_s']:.2f} the plain run's;"
            f" one at a time p50 {r['end_to_end_secured']['offer_p50_ms']:.2f} ms,"
            f" p99 {r['end_to_end_secured']['offer_p99_ms']:.2f} ms",
        ),
        (
            "ratio: contacts/s ÷ raw JetStream msgs/s",
            f"{ratio['contacts_per_s_over_raw_jetstream']:.3f}",
            "",
        ),
    ]
    if "end_to_end_postgresql" in r:
        pg = r["end_to_end_postgresql"]
        rows += [
            (
                "end to end, the case store on PostgreSQL",
                f"{pg['contacts_per_s']:,.0f} contacts/s",
                f"case {pg['case_cpu_ms_per_contact']:.2f} ms CPU per contact,"
                f" machine {pg['machine_busy_share']:.0%} busy (PostgreSQL's own CPU not counted)",
            ),
            (
                "ratio: the same ÷ raw JetStream msgs/s",
                f"{ratio['postgresql_contacts_per_s_over_raw_jetstream']:.3f}",
                f"raw on that run's nats-server:"
                f" {raw['postgresql_run_jetstream_before_msgs_per_s']:,.0f} before,"
                f" {raw['postgresql_run_jetstream_after_msgs_per_s']:,.0f} after",
            ),
        ]
    rows += [
        (
            "ratio: offer p50 ÷ raw gRPC hop p50",
            f"{ratio['offer_p50_over_raw_grpc_hop_p50']:.1f}",
            "",
        ),
        (
            "ratio: offer p99 ÷ raw gRPC hop p99",
            f"{ratio['offer_p99_over_raw_grpc_hop_p99']:.1f}",
            "",
        ),
        (
            "ratio: offer p99 ÷ raw JetStream hop p99",
            f"{ratio['offer_p99_over_raw_jetstream_hop_p99']:.1f}",
            "the path: that hop, the journal's acknowledged write, the offer over gRPC",
        ),
        (
            "ratio: offer p99 ÷ raw gRPC hop p99, across processes",
            f"{ratio['offer_p99_over_raw_cross_process_grpc_hop_p99']:.1f}",
            "",
        ),
    ]
    w = max(len(a) for a, _, _ in rows)
    return "\n".join(f"{a:<{w}}  {b:>22}  {c}" for a, b, c in rows)


if __name__ == "__main__":
    results = service_loop.run(main())
    if "end_to_end" in results:
        print(table(results))  # type: ignore[arg-type]
    print(parts_table(results["parts"]))  # type: ignore[arg-type]
    Path("bench-results.json").write_text(json.dumps(results, indent=2) + "\n")
    print("written to bench-results.json")
