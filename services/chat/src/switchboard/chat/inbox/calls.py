"""Supervision of live calls from the wallboard: the voice contacts in progress of the
supervisor's tenant, and listening to one through the voice gateway's VoiceService (monitor,
whisper, barge), which rings the supervisor's own registered SIP phone.

The calls in progress are the router's agents' active contacts that this replica saw assigned
as voice contacts (``ContactAssigned`` on the bus, every replica following it; a call's end or
transfer drops it). Every VoiceService call is made with the supervisor's own token, so the
gateway checks the role and the tenant and audits the supervisor. A call lives on one gateway
replica: ``Supervise`` asks each configured gateway in turn until one answers other than
NOT_FOUND, and the supervision's later calls go to that one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from switchboard.chat.inbox.supervision import check_supervisor
from switchboard.core import auth as sb_auth
from switchboard.core import grpc as sb_grpc
from switchboard.core.bus import decode
from switchboard.core.errors import FailedPrecondition, InvalidArgument, NotFound
from switchboard.core.service_client import call, domain_error
from switchboard.core.tls import GrpcTls
from switchboard.v1 import contact_pb2, events_pb2, router_pb2, voice_pb2, voice_pb2_grpc

if TYPE_CHECKING:
    from switchboard.chat.inbox.service import Inbox

logger = logging.getLogger(__name__)

MODES = {
    "monitor": events_pb2.SUPERVISION_MODE_MONITOR,
    "whisper": events_pb2.SUPERVISION_MODE_WHISPER,
    "barge": events_pb2.SUPERVISION_MODE_BARGE,
}
MODE_NAMES = {v: k for k, v in MODES.items()}
CALL_TIMEOUT_SECONDS = 10.0  # changing mode, leaving


@dataclass
class Assigned:
    tenant: str
    agent_id: str
    agent_name: str
    since_ms: int


@dataclass
class Listening:
    """One supervision this socket holds: the gateway that has it and its call."""

    supervision_id: str
    endpoint: str
    contact_id: str
    mode: str


def parse_mode(value: Any) -> str:
    if value is None or value == "":
        return "monitor"
    if not isinstance(value, str) or value not in MODES:
        raise InvalidArgument("mode", "must be monitor, whisper or barge")
    return value


class CallSupervision:
    def __init__(
        self,
        inbox: Inbox,
        endpoints: list[str],
        supervise_timeout: float = 60.0,
        tls: GrpcTls | None = None,
    ) -> None:
        self.inbox = inbox
        self.endpoints = endpoints
        # Supervise waits for the supervisor to answer: longer than the gateway's ring timeout.
        self.supervise_timeout = supervise_timeout
        self.tls = tls
        self.assigned: dict[str, Assigned] = {}
        self._subs: list[Any] = []

    # ---- which calls are in progress -------------------------------------------------------------

    async def follow(self, nc: NATS) -> None:
        """Follow voice assignments and ends on the bus (every replica, no durable)."""
        for subject in (
            "routing.*.assigned",
            "contact.*.voice.ended",
            "contact.*.voice.abandoned",
            "contact.*.voice.transferred",
        ):
            self._subs.append(await nc.subscribe(subject, cb=self._seen))

    async def stop(self) -> None:
        for sub in self._subs:
            try:
                await sub.unsubscribe()
            except Exception:
                logger.debug("unsubscribe failed", exc_info=True)
        self._subs = []

    async def _seen(self, msg: Msg) -> None:
        try:
            event = decode(msg)
        except Exception:
            return
        if isinstance(event, events_pb2.ContactAssigned):
            if event.meta.channel != contact_pb2.CHANNEL_VOICE:
                return
            at = event.meta.occurred_at
            since = at.seconds * 1000 + at.nanos // 1_000_000 if at.seconds else None
            self.assigned[event.contact_id] = Assigned(
                event.meta.tenant, event.agent_id, event.agent_name, since or 0
            )
        elif isinstance(
            event,
            events_pb2.ContactEnded | events_pb2.ContactAbandoned | events_pb2.ContactTransferred,
        ):
            self.assigned.pop(event.contact_id, None)

    async def live_calls(self, principal: sb_auth.Principal, token: str) -> list[dict[str, Any]]:
        """The tenant's calls in progress: each agent's active contacts (the router's) that are
        voice contacts, with the agent and since when they talk."""
        check_supervisor(principal)
        backends = self.inbox._backends(token, principal.tenant)
        try:
            agents = await call(
                "ListAgents", backends.router.ListAgents(router_pb2.ListAgentsRequest())
            )
        finally:
            await backends.close()
        live: list[dict[str, Any]] = []
        for a in agents.agents:
            for contact_id in a.active_contact_ids:
                seen = self.assigned.get(contact_id)
                if seen is None or seen.tenant != principal.tenant or seen.agent_id != a.agent_id:
                    continue
                live.append(
                    {
                        "contact_id": contact_id,
                        "agent_id": a.agent_id,
                        "agent_name": a.display_name or seen.agent_name or a.agent_id,
                        "started_at": seen.since_ms or None,
                    }
                )
        live.sort(key=lambda c: c["started_at"] or 0)
        return live

    # ---- listening -----------------------------------------------------------------------------

    def _stub(
        self, endpoint: str, token: str, timeout: float
    ) -> tuple[grpc.aio.Channel, voice_pb2_grpc.VoiceServiceStub]:
        channel = sb_grpc.channel(endpoint, token, timeout, self.tls)
        return channel, voice_pb2_grpc.VoiceServiceStub(channel)

    async def listen(
        self, principal: sb_auth.Principal, token: str, contact_id: Any, mode: Any
    ) -> Listening:
        """Ring the supervisor's phone and join the call once it is answered."""
        check_supervisor(principal)
        name = parse_mode(mode)
        if not isinstance(contact_id, str) or not contact_id or len(contact_id) > 200:
            raise InvalidArgument("contact_id", "names no call")
        if not self.endpoints:
            raise FailedPrecondition("no voice gateway is configured (CHAT_VOICE_ENDPOINTS)")
        request = voice_pb2.SuperviseRequest(contact_id=contact_id, mode=MODES[name])  # type: ignore[arg-type]
        for endpoint in self.endpoints:
            channel, stub = self._stub(endpoint, token, self.supervise_timeout)
            try:
                resp = await stub.Supervise(request)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    continue  # the call lives on another replica
                raise domain_error(exc.code(), exc.details() or "", "Supervise") from None
            finally:
                await channel.close()
            logger.info("%s listens to call %s (%s)", principal.subject, contact_id, name)
            return Listening(
                resp.supervision_id, endpoint, contact_id, MODE_NAMES.get(resp.mode, name)
            )
        raise NotFound("call", contact_id)

    async def set_mode(self, token: str, listening: Listening, mode: Any) -> str:
        name = parse_mode(mode)
        channel, stub = self._stub(listening.endpoint, token, CALL_TIMEOUT_SECONDS)
        try:
            resp = await call(
                "SetSupervisionMode",
                stub.SetSupervisionMode(
                    voice_pb2.SetSupervisionModeRequest(
                        supervision_id=listening.supervision_id,
                        mode=MODES[name],  # type: ignore[arg-type]
                    )
                ),
            )
        finally:
            await channel.close()
        listening.mode = MODE_NAMES.get(resp.mode, name)
        return listening.mode

    async def leave(self, token: str, listening: Listening) -> None:
        channel, stub = self._stub(listening.endpoint, token, CALL_TIMEOUT_SECONDS)
        try:
            await call(
                "EndSupervision",
                stub.EndSupervision(
                    voice_pb2.EndSupervisionRequest(supervision_id=listening.supervision_id)
                ),
            )
        finally:
            await channel.close()
