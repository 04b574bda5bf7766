"""OPTIONS keepalives to registered phones (NAT-safe: sent to where each REGISTER came from);
the registrar decides when an unanswering phone is unregistered."""

from __future__ import annotations

import asyncio
import logging
import uuid

from switchboard.core import tasks
from switchboard.voice_gateway.sip.message import SipMessage
from switchboard.voice_gateway.sip.registrar import Binding, Registrar
from switchboard.voice_gateway.sip.transactions import TIMEOUT, TransactionLayer, new_tag

logger = logging.getLogger(__name__)


class Keepalive:
    """Every `interval` seconds, an OPTIONS to each registered phone, so an offer never rings a
    dead phone."""

    def __init__(self, sip: TransactionLayer, registrar: Registrar, interval: float) -> None:
        self.sip = sip
        self.registrar = registrar
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        await tasks.cancel_and_wait(self._task)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            bindings = list(self.registrar.bindings.values())
            await asyncio.gather(*(self.ping(b) for b in bindings), return_exceptions=True)

    async def ping(self, binding: Binding) -> None:
        """One OPTIONS to the phone of `binding`; a miss unless it answers within the interval
        (at most Timer F)."""
        ping = SipMessage(method="OPTIONS", uri=binding.contact)
        ping.add("From", f"<sip:gateway@{self.sip.advertised}>;tag={new_tag()}")
        ping.add("To", f"<sip:{binding.agent_id}@{self.sip.advertised}>")
        ping.add("Call-ID", uuid.uuid4().hex)
        ping.add("CSeq", "1 OPTIONS")
        ping.add("Max-Forwards", "70")
        ping.add("Contact", self.sip.contact(binding.peer))
        ping.add("Accept", "application/sdp")
        tx = self.sip.request(ping, binding.peer, timeout=min(TIMEOUT, self.interval))
        await tx.future
        if not tx.timed_out:
            self.registrar.ping_answered(binding)
            return
        unregistered = self.registrar.ping_missed(binding)
        logger.info(
            "%s of %s: phone missed keepalive %d",
            binding.agent_id,
            binding.tenant,
            binding.missed_pings,
        )
        if unregistered:
            logger.warning(
                "%s of %s: phone does not answer: unregistered", binding.agent_id, binding.tenant
            )
