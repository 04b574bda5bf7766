"""The other gateway replicas, over plain NATS: a call lives on one replica, so a replica asked
for an agent's call it does not hold asks them all which one holds it (as the chat asks every
replica over gRPC before it listens to a call). Only the replica holding it answers, with its SIP
address; the question goes unanswered when none does.

A question is JSON `{"tenant", "agent_id"}` on `switchboard.voice.agent_call`; the answer is
JSON `{"host", "port", "tls_port"}` on the reply subject the question names, under
`switchboard.voice.>` as well (the gateways' NATS user publishes and subscribes only there and
on its own channel's events)."""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable
from typing import Any, Protocol

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout

from switchboard.voice_gateway.domain.supervision import SipAddress

logger = logging.getLogger(__name__)

SUBJECT = "switchboard.voice.agent_call"
ANSWERS = "switchboard.voice.agent_call_answer"

Where = Callable[[str, str], SipAddress | None]


class Replicas(Protocol):
    async def find(self, tenant: str, agent_id: str) -> SipAddress | None:
        """The SIP address of the replica holding `tenant`'s agent's call (None: no replica
        answered in time)."""
        ...


class NatsReplicas:
    def __init__(self, nc: NATS, timeout: float) -> None:
        self.nc = nc
        self.timeout = timeout

    async def find(self, tenant: str, agent_id: str) -> SipAddress | None:
        reply = f"{ANSWERS}.{secrets.token_hex(8)}"
        sub = await self.nc.subscribe(reply, max_msgs=1)
        try:
            question = json.dumps({"tenant": tenant, "agent_id": agent_id}).encode()
            await self.nc.publish(SUBJECT, question, reply=reply)
            try:
                msg = await sub.next_msg(timeout=self.timeout)
            except NatsTimeout:
                return None
        finally:
            await sub.unsubscribe()
        return _address(msg.data)

    async def answer(self, where: Where) -> None:
        """Answer the other replicas' questions with `where(tenant, agent_id)`, the address of
        this replica when it holds that call (None: it does not, and stays silent)."""

        async def asked(msg: Msg) -> None:
            try:
                question = json.loads(msg.data)
                tenant, agent_id = str(question["tenant"]), str(question["agent_id"])
            except (ValueError, KeyError, TypeError):
                logger.warning("a malformed question on %s", SUBJECT)
                return
            here = where(tenant, agent_id)
            if here is None or not msg.reply.startswith(f"{ANSWERS}."):
                return
            answer = {"host": here.host, "port": here.port, "tls_port": here.tls_port}
            await self.nc.publish(msg.reply, json.dumps(answer).encode())

        await self.nc.subscribe(SUBJECT, cb=asked)


def _address(data: bytes) -> SipAddress | None:
    try:
        found: Any = json.loads(data)
        address = SipAddress(str(found["host"]), int(found["port"]), int(found["tls_port"]))
    except (ValueError, KeyError, TypeError):
        logger.warning("a malformed answer to %s", SUBJECT)
        return None
    return address if address.host and 0 < address.port < 65536 else None
