"""A process of bench agents: signs its agents in to the router, accepts every offer on the
agent's own session stream (AgentSession: offers down, accepts up), and reports each offer on
stdout as "<contact id> <time.monotonic()>" as it is read off the stream (CLOCK_MONOTONIC, the
same clock in every process of the machine), so the bench's own process is not what limits the
agents; a contact published one at a time (its id starts with "latency-") is reported again, as
"<contact id> accepted", once the router has answered the accept.

    python -m bench.agent_worker <router host:port> <secret> <tenant> <capacity> <agent>...

An agent is "<language>-<n>"; it speaks that language. "ready" is printed once all are in.
With BENCH_TLS_CA_FILE (and BENCH_TLS_CERT_FILE, BENCH_TLS_KEY_FILE), it calls over mutual TLS.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from bench import service_loop
from switchboard.core.tls import GrpcTls
from switchboard.testing.agents import SessionAgentClient
from switchboard.v1 import contact_pb2, router_pb2

ONE_AT_A_TIME = "latency-"  # the ids of the contacts bench.endtoend publishes one at a time


async def main(target: str, secret: str, tenant: str, capacity: int, agents: list[str]) -> None:
    clients = []
    tls = (
        GrpcTls(
            os.environ.get("BENCH_TLS_CERT_FILE", ""),
            os.environ.get("BENCH_TLS_KEY_FILE", ""),
            os.environ["BENCH_TLS_CA_FILE"],
        )
        if os.environ.get("BENCH_TLS_CA_FILE")
        else None
    )
    out = sys.stdout

    def arrived(offer: router_pb2.Offer) -> None:
        # Timed as the offer is read off the agent's stream, before the client queues it.
        out.write(f"{offer.contact.contact_id} {time.monotonic()}\n")
        out.flush()

    for agent in agents:
        client = SessionAgentClient(target, secret, tenant, agent, tls)
        client.on_offer = arrived
        language = agent.split("-", 1)[0]
        await client.sign_in({language: 4}, capacity={contact_pb2.CHANNEL_CHAT: capacity})
        clients.append(client)

    async def work(client: SessionAgentClient) -> None:
        while True:
            offer = await client.offers.get()
            await client.accept(offer)
            if offer.contact.contact_id.startswith(ONE_AT_A_TIME):
                out.write(f"{offer.contact.contact_id} accepted\n")
                out.flush()

    print("ready", flush=True)
    await asyncio.gather(*(work(c) for c in clients))


if __name__ == "__main__":
    target, secret, tenant, capacity, *names = sys.argv[1:]
    service_loop.run(main(target, secret, tenant, int(capacity), names))
