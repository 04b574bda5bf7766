"""Supervision of live calls from the wallboard: the voice contacts in progress of the
supervisor's tenant, and listening to one through the voice gateway's VoiceService (monitor,
whisper, barge), which rings the supervisor's own registered SIP phone.

The calls in progress are the router's agents' active contacts that were assigned as voice
contacts: the replica whose consumer takes a ``ContactAssigned`` (or a call's ``ContactEnded``)
shares it with every replica on the chat's own plain subject, so each knows the calls assigned
since it started. Every VoiceService call is made with the supervisor's own token, so the
gateway checks the role and the tenant and audits the supervisor. A call lives on one gateway
replica: ``Supervise`` asks each gateway in turn until one answers other than NOT_FOUND (or
UNAVAILABLE: a replica going away), and the supervision's later calls go to that one. The
gateways are the configured addresses, and every address the gateways' Service name resolves
to at that moment (a headless Service: one per replica).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from switchboard.chat.inbox.supervision import check_supervisor
from switchboard.core import auth as sb_auth
from switchboard.core import grpc as sb_grpc
from switchboard.core.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
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


@dataclass(frozen=True)
class Endpoint:
    """A gateway's gRPC address; `server_name`: the name its certificate is checked against
    when `target` is an address found by resolving that name."""

    target: str
    server_name: str = ""


Resolver = Callable[[str, int], Awaitable[list[str]]]


async def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (A and AAAA records), in the resolver's order."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass
class Listening:
    """One supervision this socket holds: the gateway that has it and its call."""

    supervision_id: str
    endpoint: Endpoint
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
        service: str = "",
        resolver: Resolver = resolve,
    ) -> None:
        self.inbox = inbox
        self.endpoints = endpoints
        self.service = service  # host:port resolving to every replica (or "")
        self._resolve = resolver
        # Supervise waits for the supervisor to answer: longer than the gateway's ring timeout.
        self.supervise_timeout = supervise_timeout
        self.tls = tls
        self.assigned: dict[str, Assigned] = {}
        self._subs: list[Any] = []
        self._nc: NATS | None = None
        self._subject = ""

    # ---- which calls are in progress -------------------------------------------------------------

    async def follow(self, nc: NATS, subject: str) -> None:
        """Share what this replica's consumer sees with every replica, on `subject` (the
        chat's own plain subjects), and follow what they share."""
        self._nc, self._subject = nc, subject
        self._subs.append(await nc.subscribe(subject, cb=self._shared))

    async def stop(self) -> None:
        for sub in self._subs:
            try:
                await sub.unsubscribe()
            except Exception:
                logger.debug("unsubscribe failed", exc_info=True)
        self._subs = []
        self._nc = None

    async def _share(self, update: dict[str, Any]) -> None:
        if self._nc is None:
            self._apply(update)
            return
        await self._nc.publish(self._subject, json.dumps(update).encode())

    async def _shared(self, msg: Msg) -> None:
        try:
            update = json.loads(msg.data)
        except ValueError:
            return
        if isinstance(update, dict):
            self._apply(update)

    def _apply(self, update: dict[str, Any]) -> None:
        contact_id = str(update.get("contact_id", ""))
        if update.get("op") == "assigned":
            self.assigned[contact_id] = Assigned(
                str(update.get("tenant", "")),
                str(update.get("agent_id", "")),
                str(update.get("agent_name", "")),
                int(update.get("since") or 0),
            )
        elif update.get("op") == "ended":
            self.assigned.pop(contact_id, None)

    async def on_contact_assigned(self, event: events_pb2.ContactAssigned) -> None:
        """A voice contact connected to its agent (the chat's consumer, one replica)."""
        if event.meta.channel != contact_pb2.CHANNEL_VOICE:
            return
        at = event.meta.occurred_at
        await self._share(
            {
                "op": "assigned",
                "tenant": event.meta.tenant,
                "contact_id": event.contact_id,
                "agent_id": event.agent_id,
                "agent_name": event.agent_name,
                "since": at.seconds * 1000 + at.nanos // 1_000_000,
            }
        )

    async def on_contact_ended(self, event: events_pb2.ContactEnded) -> None:
        if event.meta.channel == contact_pb2.CHANNEL_VOICE:
            await self._share({"op": "ended", "contact_id": event.contact_id})

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
        active = {c for a in agents.agents for c in a.active_contact_ids}
        # Ended (its end may have gone unseen); a minute old, so as not to race an assignment
        # the router's answer did not include yet.
        stale = time.time() * 1000 - 60_000
        for contact_id, old in list(self.assigned.items()):
            if old.tenant == principal.tenant and contact_id not in active and old.since_ms < stale:
                del self.assigned[contact_id]
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
        self, endpoint: Endpoint, token: str, timeout: float
    ) -> tuple[grpc.aio.Channel, voice_pb2_grpc.VoiceServiceStub]:
        channel = sb_grpc.channel(endpoint.target, token, timeout, self.tls, endpoint.server_name)
        return channel, voice_pb2_grpc.VoiceServiceStub(channel)

    async def gateways(self) -> list[Endpoint]:
        """The configured gateways, then the replicas the Service name resolves to now."""
        found = [Endpoint(target) for target in self.endpoints]
        if self.service:
            host, _, port = self.service.rpartition(":")
            try:
                addresses = await self._resolve(host, int(port))
            except OSError as exc:  # no replica is ready (no record), or DNS is down
                logger.warning("voice gateways %s not resolved: %s", self.service, exc)
                addresses = []
            for address in addresses:
                literal = f"[{address}]" if ":" in address else address
                found.append(Endpoint(f"{literal}:{port}", host))
        return found

    async def listen(
        self, principal: sb_auth.Principal, token: str, contact_id: Any, mode: Any
    ) -> Listening:
        """Ring the supervisor's phone and join the call once it is answered."""
        check_supervisor(principal)
        name = parse_mode(mode)
        if not isinstance(contact_id, str) or not contact_id or len(contact_id) > 200:
            raise InvalidArgument("contact_id", "names no call")
        if not self.endpoints and not self.service:
            raise FailedPrecondition(
                "no voice gateway is configured (CHAT_VOICE_ENDPOINTS, CHAT_VOICE_SERVICE)"
            )
        request = voice_pb2.SuperviseRequest(contact_id=contact_id, mode=MODES[name])  # type: ignore[arg-type]
        unavailable = ""
        for endpoint in await self.gateways():
            channel, stub = self._stub(endpoint, token, self.supervise_timeout)
            try:
                resp = await stub.Supervise(request)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    continue  # the call lives on another replica
                if exc.code() == grpc.StatusCode.UNAVAILABLE:
                    # Unreachable (a replica going away), or the one with the call whose phone
                    # did not answer (the others then say NOT_FOUND): said once all answered.
                    unavailable = exc.details() or "unreachable"
                    logger.info("voice gateway %s: %s", endpoint.target, unavailable)
                    continue
                raise domain_error(exc.code(), exc.details() or "", "Supervise") from None
            finally:
                await channel.close()
            logger.info("%s listens to call %s (%s)", principal.subject, contact_id, name)
            return Listening(
                resp.supervision_id, endpoint, contact_id, MODE_NAMES.get(resp.mode, name)
            )
        if unavailable:
            raise Unavailable(unavailable)
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
