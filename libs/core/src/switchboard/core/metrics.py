"""Prometheus metrics every service exports: what the bus and the gRPC server see.

Served on METRICS_PORT (``/metrics``) by the runtime; 0 turns the endpoint off.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

EVENTS_PUBLISHED = Counter(
    "switchboard_events_published_total", "Events published to JetStream.", ["event"]
)
EVENTS_SETTLED = Counter(
    "switchboard_events_settled_total",
    "Events a consumer settled: ack (handled), retry (nak, redelivered later), terminated "
    "(invalid, or out of deliveries) or malformed (undecodable); the last two only once parked "
    "in the DEADLETTER stream.",
    ["consumer", "event", "outcome"],
)
EVENTS_PARKED = Counter(
    "switchboard_events_parked_total",
    "Events a consumer gave up on and parked in the DEADLETTER stream, by why: invalid (the "
    "handler refused it), malformed (undecodable), not_ready, unavailable or failed (out of "
    "deliveries). Anything above zero wants an operator: `switchboard dlq list`.",
    ["consumer", "event", "reason"],
)
EVENT_SECONDS = Histogram(
    "switchboard_event_handling_seconds",
    "Time a consumer's handler took for one event.",
    ["consumer", "event"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
NATS_CONNECTED = Gauge(
    "switchboard_nats_connected", "1 while the service's NATS connection is up.", ["service"]
)
RPCS = Counter(
    "switchboard_grpc_requests_total", "gRPC calls served, by status code.", ["method", "code"]
)
RPC_SECONDS = Histogram(
    "switchboard_grpc_request_seconds",
    "Time to serve a unary gRPC call (streams: time to set up).",
    ["method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


def serve(port: int, host: str = "0.0.0.0") -> int:
    # All interfaces: Prometheus scrapes from other pods.
    """Serve /metrics on `port` (0: off). Returns the bound port, or 0 when off."""
    if port <= 0:
        return 0
    server, _ = start_http_server(port, addr=host)
    return int(server.server_port)
