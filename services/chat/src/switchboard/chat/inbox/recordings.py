"""Call recordings played in the inbox: who may hear one, the short-lived ticket the page's
<audio> element plays it with (an element sends no Authorization header), and the byte ranges
served from the sealed recording in the `recordings` object store.

A recording is `<tenant>/<contact id>.wav`, sealed for that tenant and contact
(switchboard.core.recording_seal): the tenant always comes from the caller's token, so another
tenant's recording is never found. Supervisors, team leads, QA evaluators and admins of the tenant
hear any of its recordings; an agent only those of the contacts it handled (on its desk, or the
case service names it as the contact's agent). Every playback is logged (`PLAYBACK_LOGGER`) and
audited on the contact's case (inbox/http.py): a download when it is served, a player when its
audio is first asked for with its ticket (a player shown but never played is no playback), once
per ticket on every replica alike (the audit event's id is the ticket's)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

from switchboard.core import events, recording_seal, roles, signing, stores
from switchboard.core import grpc as sb_grpc
from switchboard.core.auth import Principal
from switchboard.core.errors import (
    DomainError,
    Erased,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from switchboard.core.service_client import call
from switchboard.core.tls import GrpcTls
from switchboard.v1 import case_pb2, case_pb2_grpc

logger = logging.getLogger(__name__)
# One line per playback (who, which tenant, which contact): the recordings' access log.
PLAYBACK_LOGGER = "switchboard.chat.recording_playback"
playback_log = logging.getLogger(PLAYBACK_LOGGER)

BUCKET = recording_seal.BUCKET
CHANNELS = ("customer", "agent")  # left, right: as the voice gateway records them
HEARS_ALL = (roles.SUPERVISOR, roles.TEAM_LEAD, roles.QA, roles.ADMIN)
TICKET_PREFIX = "rt1"
TICKET_SECONDS = 3600
PEAKS = 600  # waveform slices
CONTACT_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Recordings kept opened for the range requests of a playing recording: the last few, at most
# CACHE_BYTES of them together, each for CACHE_SECONDS after it was last asked for.
CACHED = 4
CACHE_BYTES = 256 * 1024 * 1024
CACHE_SECONDS = 120.0
# Tickets whose playback this replica has had audited, until they expire (at most this many).
AUDITED_KEPT = 10_000


object_name = recording_seal.object_name


def check_contact_id(contact_id: object) -> str:
    if not isinstance(contact_id, str) or not CONTACT_ID_RE.match(contact_id):
        raise InvalidArgument("contact_id", "is not a contact id")
    return contact_id


@dataclass(frozen=True)
class Ticket:
    tenant: str
    subject: str
    contact_id: str
    expires_at: int
    issued_at: int = 0  # of the token it was given for: revoking that token revokes the ticket
    roles: tuple[str, ...] = ()  # the holder's, for the audit trail
    nonce: str = ""  # tells apart two tickets given in the same second

    @property
    def principal(self) -> Principal:
        return Principal(self.tenant, self.subject, frozenset(self.roles), issued_at=self.issued_at)

    @cached_property
    def playback_id(self) -> str:
        """The id of the playback this ticket is for: its audit event's id, the same on every
        replica, so that the bus and the case store keep one entry however often, and wherever,
        the player's first requests are served."""
        return events.derived_id(
            self.tenant,
            self.subject,
            self.contact_id,
            str(self.expires_at),
            str(self.issued_at),
            self.nonce,
        )


def ranged_download_id(principal: Principal, contact_id: str) -> str:
    """The audit event id of a tool's ranged download of `contact_id` with one token: its
    requests from past the start are one playback (a request from the start is one of its own)."""
    return events.derived_id(
        principal.tenant, principal.subject, contact_id, str(principal.issued_at), "ranges"
    )


class Recordings:
    def __init__(
        self,
        objects: Callable[[], stores.ObjectStores],
        master_key: recording_seal.Keys,
        secret: str,
        case_target: str,
        tls: GrpcTls | None = None,
    ) -> None:
        self.objects = objects
        self.master_key = master_key
        self.case_target = case_target
        self.tls = tls
        self._tickets = signing.Sealer(
            signing.purpose_key(secret, "recording-ticket"), TICKET_PREFIX
        )
        self._opened: OrderedDict[tuple[str, str], tuple[float, recording_seal.SealedRecording]]
        self._opened = OrderedDict()
        self._audited: OrderedDict[str, int] = OrderedDict()  # playback id -> ticket expiry

    # ---- who may hear it ----------------------------------------------------------------------

    async def check_access(
        self, principal: Principal, token: str, contact_id: str, on_desk: bool
    ) -> None:
        """PermissionDenied unless `principal` may hear the recording of `contact_id`."""
        if principal.has_any(*HEARS_ALL):
            return
        if not principal.has_any(roles.AGENT):
            raise PermissionDenied("recordings are heard by supervisors, team leads, QA and agents")
        if on_desk or await self._handled_by(token, contact_id, principal.subject):
            return
        raise PermissionDenied("an agent hears only the recordings of the contacts it handled")

    async def _handled_by(self, token: str, contact_id: str, agent_id: str) -> bool:
        """The case service names `agent_id` as the agent of `contact_id` (asked as the agent)."""
        channel = sb_grpc.channel(self.case_target, token, 5.0, self.tls)
        try:
            stub = case_pb2_grpc.CaseServiceStub(channel)
            listed = await call(
                "ListCases",
                stub.ListCases(case_pb2.ListCasesRequest(contact_id=contact_id, page_size=1)),
            )
            if not listed.cases:
                return False
            found = await call(
                "GetCase", stub.GetCase(case_pb2.GetCaseRequest(case_id=listed.cases[0].case_id))
            )
            return any(
                k.contact_id == contact_id and k.agent_id == agent_id for k in found.contacts
            )
        except DomainError as exc:
            logger.info("who handled %s is not known: %s", contact_id, exc)
            return False
        finally:
            await channel.close()

    # ---- tickets ------------------------------------------------------------------------------

    def ticket(self, principal: Principal, contact_id: str, token_expires: int = 0) -> Ticket:
        """A ticket to play `contact_id`'s recording for an hour (no longer than the token)."""
        expires = int(time.time()) + TICKET_SECONDS
        if token_expires:
            expires = min(expires, token_expires)
        return Ticket(
            principal.tenant,
            principal.subject,
            contact_id,
            expires,
            principal.issued_at,
            tuple(sorted(principal.roles)),
            secrets.token_hex(8),
        )

    def seal_ticket(self, ticket: Ticket) -> str:
        body = {
            "t": ticket.tenant,
            "s": ticket.subject,
            "c": ticket.contact_id,
            "e": ticket.expires_at,
            "i": ticket.issued_at,
            "r": list(ticket.roles),
            "n": ticket.nonce,
        }
        return self._tickets.seal(json.dumps(body, separators=(",", ":")).encode())

    def open_ticket(self, text: str, contact_id: str) -> Ticket:
        """The ticket sealed in `text`, if it is genuine, unexpired and for `contact_id`."""
        try:
            body = json.loads(self._tickets.open(text))
            ticket = Ticket(
                str(body["t"]),
                str(body["s"]),
                str(body["c"]),
                int(body["e"]),
                int(body["i"]),
                tuple(str(r) for r in body.get("r", ())),
                str(body.get("n", "")),
            )
        except (signing.TokenError, ValueError, KeyError, TypeError):
            raise Unauthenticated("the recording's ticket is not valid") from None
        if ticket.expires_at < time.time():
            raise Unauthenticated("the recording's ticket has expired: open the player again")
        if ticket.contact_id != contact_id:
            raise PermissionDenied("the ticket is for another recording")
        return ticket

    def audited(self, ticket: Ticket) -> bool:
        """Whether this replica has had `ticket`'s playback audited already."""
        now = time.time()
        while self._audited and next(iter(self._audited.values())) < now:
            self._audited.popitem(last=False)
        return ticket.playback_id in self._audited

    def mark_audited(self, ticket: Ticket) -> None:
        self._audited[ticket.playback_id] = ticket.expires_at
        while len(self._audited) > AUDITED_KEPT:
            self._audited.popitem(last=False)

    # ---- the recording ------------------------------------------------------------------------

    async def open(self, tenant: str, contact_id: str) -> recording_seal.SealedRecording:
        """`tenant`'s recording of `contact_id`, opened; NotFound if that tenant has none."""
        key = (tenant, contact_id)
        now = time.monotonic()
        for k in [k for k, (at, _) in self._opened.items() if now - at > CACHE_SECONDS]:
            del self._opened[k]
        cached = self._opened.get(key)
        if cached is not None:
            self._opened[key] = (now, cached[1])
            self._opened.move_to_end(key)
            return cached[1]
        try:
            sealed = await self.objects().get(BUCKET, object_name(tenant, contact_id))
        except (NotFound, Erased):
            raise NotFound("recording", contact_id) from None
        try:
            opened = await asyncio.to_thread(
                recording_seal.SealedRecording, self.master_key, tenant, contact_id, sealed
            )
        except recording_seal.SealError as exc:
            logger.warning("recording of %s does not open for %s: %s", contact_id, tenant, exc)
            raise NotFound("recording", contact_id) from None
        self._opened[key] = (now, opened)
        while len(self._opened) > CACHED or (
            len(self._opened) > 1
            and sum(len(o.sealed) for _, o in self._opened.values()) > CACHE_BYTES
        ):
            self._opened.popitem(last=False)
        return opened

    async def waveform(self, tenant: str, contact_id: str) -> tuple[float, list[list[float]]]:
        """The recording's duration and its channels' peaks."""
        opened = await self.open(tenant, contact_id)
        try:
            return await asyncio.to_thread(recording_seal.peaks_of, opened.read, opened.size, PEAKS)
        except recording_seal.SealError as exc:
            logger.warning("recording of %s is no WAV: %s", contact_id, exc)
            return 0.0, [[] for _ in CHANNELS]

    @staticmethod
    def played(principal_or_ticket: Principal | Ticket, contact_id: str, how: str) -> None:
        p = principal_or_ticket
        who = p.subject
        what = ",".join(sorted(p.roles)) or "ticket"  # a ticket from before it held roles
        playback_log.info(
            "recording played: tenant=%s contact=%s by=%s (%s) via=%s",
            p.tenant,
            contact_id,
            who,
            what,
            how,
        )
