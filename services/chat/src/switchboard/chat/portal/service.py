"""The customer portal's use cases: a one-time link by email, the session it opens, the
customer's own cases and replies to them, new requests, and the public knowledge base.

A customer's case calls go to the case service with a short token of role "customer" whose
subject is the customer, so the case service itself scopes them (ListMyCases, GetMyCase); the
link is minted and mailed by the case service, which knows which emails belong to a customer."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from switchboard.chat.domain.rate_limit import Budget, Limiter
from switchboard.chat.notifier import ChatNotifier
from switchboard.chat.portal.used_links import UsedLinks
from switchboard.core import auth, portal_tokens, roles
from switchboard.core import grpc as sb_grpc
from switchboard.core.errors import InvalidArgument, Unauthenticated
from switchboard.core.events import TENANT_RE
from switchboard.core.portal_tokens import PortalGrant
from switchboard.core.service_client import ServiceClient, call
from switchboard.core.tls import GrpcTls
from switchboard.v1 import case_pb2, case_pb2_grpc, contact_pb2

logger = logging.getLogger(__name__)

REFERENCE_RE = re.compile(r"^[A-Za-z0-9-]{1,16}$")
EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,190}\.[^@\s.]{1,63}$")
LANGUAGES = ("ko", "zh", "ja", "en")
MAX_SUBJECT = 200
MAX_TEXT = 4000
CUSTOMER_TOKEN_TTL = 300
# Sign-in mails: a few per address and per client address, then one every few minutes.
BUDGETS = {
    "portal-email": Budget(1 / 300, 3, "sign-in links for this address"),
    "portal-client": Budget(1 / 60, 10, "sign-in links from this address"),
    # Sign-in codes: a few per case and per client address; a few code checks per client.
    "portal-case": Budget(1 / 300, 3, "sign-in codes for this case"),
    "portal-verify": Budget(1 / 10, 20, "sign-in code checks from this address"),
    "portal-write": Budget(1 / 10, 10, "messages"),
    "portal-seen": Budget(1, 60, "suggestion views"),
    "portal-vote": Budget(1 / 5, 20, "votes"),
}


@dataclass(frozen=True)
class Session:
    token: str
    email: str
    expires_at: int


def _text(value: Any, field: str, limit: int, required: bool = True) -> str:
    text = value.strip() if isinstance(value, str) else ""
    if required and not text:
        raise InvalidArgument(field, "is required")
    if len(text) > limit:
        raise InvalidArgument(field, f"is longer than {limit} characters")
    return text


def language_of(value: Any) -> str:
    return value if value in LANGUAGES else "en"


class Portal:
    def __init__(
        self,
        secret: str,
        known_tenants: frozenset[str] | None,
        case_target: str,
        notifier: ChatNotifier,
        used: UsedLinks,
        tls: GrpcTls | None = None,
        limiter: Limiter | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._secret = secret
        self._known = known_tenants
        self._case_target = case_target
        self._notifier = notifier
        self._used = used
        self._tls = tls
        self.limiter = limiter or Limiter(BUDGETS)
        self._clock = clock
        self._service = ServiceClient(
            case_target, secret, "chat-portal", case_pb2_grpc.CaseServiceStub, tls=tls
        )
        self._background: set[asyncio.Task[None]] = set()

    def _tenant(self, tenant: Any) -> str:
        if not isinstance(tenant, str) or not TENANT_RE.match(tenant):
            raise InvalidArgument("tenant", "is not a tenant name")
        if self._known is not None and tenant not in self._known:
            raise InvalidArgument("tenant", "is not served here")
        return tenant

    # ---- signing in ---------------------------------------------------------------------------

    def request_link(
        self, tenant: Any, email: Any, language: Any, client: str, portal_url: str
    ) -> None:
        """Have a sign-in link mailed to `email` if it is a customer's of `tenant`. Returns at
        once, the same way whether or not it is (the case service decides, in the background)."""
        tenant = self._tenant(tenant)
        address = _text(email, "email", 254).lower()
        if not EMAIL_RE.match(address):
            raise InvalidArgument("email", "is not an email address")
        hashed = hashlib.sha256(f"{tenant}:{address}".encode()).hexdigest()
        self.limiter.take([("portal-email", hashed), ("portal-client", client)])
        request = case_pb2.SendPortalLinkRequest(
            email=address, portal_url=portal_url, language=language_of(language)
        )
        self._send_later("link", tenant, "SendPortalLink", request)

    def _send_later(self, what: str, tenant: str, method: str, request: Any) -> None:
        """Make the case-service call `method` in the background, logging (not raising) its
        failure: the caller's answer is the same either way."""
        task = asyncio.ensure_future(self._send(what, tenant, method, request))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _send(self, what: str, tenant: str, method: str, request: Any) -> None:
        try:
            await call("the case service", getattr(self._service.stub(tenant), method)(request))
        except Exception as exc:
            logger.warning("portal %s request (tenant %s) failed: %s", what, tenant, exc)

    def request_code(self, tenant: Any, reference: Any, language: Any, client: str) -> None:
        """Have a 6-digit code mailed to the customer of the case `reference`, if there is such
        a case. Returns at once, the same way whether or not there is."""
        tenant = self._tenant(tenant)
        ref = _text(reference, "reference", 16).upper()
        if not REFERENCE_RE.match(ref):
            raise InvalidArgument("reference", "is not a case reference")
        hashed = hashlib.sha256(f"{tenant}:{ref}".encode()).hexdigest()
        self.limiter.take([("portal-case", hashed), ("portal-client", client)])
        request = case_pb2.SendPortalCodeRequest(
            reference=ref, channel="email", language=language_of(language)
        )
        self._send_later("code", tenant, "SendPortalCode", request)

    async def sign_in_with_code(
        self, tenant: Any, reference: Any, code: Any, client: str
    ) -> Session:
        """A session for the customer of case `reference` from the code mailed for it. A wrong,
        expired, used or locked code and an unknown case are the same Unauthenticated."""
        tenant = self._tenant(tenant)
        ref = _text(reference, "reference", 16).upper()
        digits = _text(code, "code", 16)
        self.limiter.take([("portal-verify", client)])
        request = case_pb2.VerifyPortalCodeRequest(reference=ref, code=digits)
        verified = await call(
            "the sign-in code", self._service.stub(tenant).VerifyPortalCode(request)
        )
        return await self.sign_in(verified.link)

    async def sign_in(self, link: Any) -> Session:
        """Exchange a link for a session: a genuine, unexpired link, once."""
        grant = portal_tokens.open_link(self._secret, link)
        self._tenant(grant.tenant)
        if not await self._used.claim(grant.token_id):
            raise Unauthenticated("this sign-in link has been used already")
        token = portal_tokens.mint_session(
            self._secret, grant.tenant, grant.customer_id, grant.email
        )
        opened = portal_tokens.open_session(self._secret, token)
        logger.info("portal session opened for customer %s", grant.customer_id)
        return Session(token, grant.email, opened.expires_at)

    def session(self, token: str) -> PortalGrant:
        """The customer a session token names; Unauthenticated unless genuine and unexpired."""
        grant = portal_tokens.open_session(self._secret, token)
        self._tenant(grant.tenant)
        return grant

    # ---- the customer's cases -----------------------------------------------------------------

    def _as_customer(self, grant: PortalGrant) -> Any:
        token = auth.mint(
            self._secret, grant.tenant, grant.customer_id, [roles.CUSTOMER], CUSTOMER_TOKEN_TTL
        )
        return sb_grpc.channel(self._case_target, token, tls=self._tls)

    async def cases(self, grant: PortalGrant) -> list[case_pb2.Case]:
        async with self._as_customer(grant) as channel:
            stub = case_pb2_grpc.CaseServiceStub(channel)
            listed = await call("the case service", stub.ListMyCases(case_pb2.ListMyCasesRequest()))
        return list(listed.cases)

    async def case(self, grant: PortalGrant, case_id: str) -> case_pb2.Case:
        async with self._as_customer(grant) as channel:
            stub = case_pb2_grpc.CaseServiceStub(channel)
            return await call("the case", stub.GetMyCase(case_pb2.GetCaseRequest(case_id=case_id)))

    async def reply(self, grant: PortalGrant, case_id: str, text: Any) -> str:
        """The customer's answer in one of its own cases: a contact threaded into the case."""
        body = _text(text, "text", MAX_TEXT)
        self.limiter.take([("portal-write", grant.customer_id)])
        case = await self.case(grant, case_id)  # NOT_FOUND unless it is the customer's
        last = case.contacts[-1] if case.contacts else None
        contact_id = uuid.uuid4().hex
        await self._notifier.portal_contact(
            contact_id,
            grant.tenant,
            grant.email,
            case.customer.display_name,
            (last.language if last else "") or "en",
            case.subject,
            body,
            self._clock(),
            case_id=case.case_id,
            skills=list(last.skills) if last else [],
        )
        logger.info("portal reply %s in case %s", contact_id, case.case_id)
        return contact_id

    async def new_request(
        self, grant: PortalGrant, subject: Any, text: Any, language: Any, draft: Any = None
    ) -> str:
        """A new request: a contact routed like any other (the case service opens or joins
        the customer's case, as for an email). `draft` names the suggestions' draft, which is
        then counted as submitted."""
        title = _text(subject, "subject", MAX_SUBJECT)
        body = _text(text, "text", MAX_TEXT)
        self.limiter.take([("portal-write", grant.customer_id)])
        contact_id = uuid.uuid4().hex
        await self._notifier.portal_contact(
            contact_id,
            grant.tenant,
            grant.email,
            "",
            language_of(language),
            title,
            body,
            self._clock(),
        )
        logger.info("portal request %s (tenant %s)", contact_id, grant.tenant)
        if isinstance(draft, str) and draft:
            try:
                await self.suggestion_seen(grant, draft, "submitted", "")
            except Exception as exc:  # the request is sent; only its count is missing
                logger.warning("portal draft %s not counted as sent: %s", draft, exc)
        return contact_id

    async def suggestion_seen(
        self, grant: PortalGrant, draft: Any, event: Any, article_id: Any
    ) -> None:
        """What the customer did with the articles suggested for a draft request: shown, opened
        (one of them) or submitted (the request was sent)."""
        self.limiter.take([("portal-seen", grant.customer_id)])
        request = case_pb2.SuggestionViewRequest(
            draft_id=_text(draft, "draft_id", 64),
            event=_text(event, "event", 16),
            article_id=_text(article_id, "article_id", 64, required=False),
        )
        async with self._as_customer(grant) as channel:
            stub = case_pb2_grpc.CaseServiceStub(channel)
            await call("the suggestion counts", stub.RecordSuggestionView(request))

    # ---- the service catalogue ----------------------------------------------------------------

    async def catalogue(self, grant: PortalGrant) -> list[case_pb2.CatalogueItem]:
        """The request forms of the customer's tenant."""
        async with self._as_customer(grant) as channel:
            stub = case_pb2_grpc.CaseServiceStub(channel)
            listed = await call(
                "the catalogue", stub.ListCatalogue(case_pb2.ListCatalogueRequest())
            )
        return list(listed.items)

    async def catalogue_request(
        self, grant: PortalGrant, template: Any, fields: Any, language: Any
    ) -> str:
        """A filled catalogue form: checked by the case service (a wrong field is
        InvalidArgument "fields.<name>: ..."), then a contact naming the template, routed by its
        skills, queue and priority; the case service opens a case of the template's kind."""
        name = _text(template, "template", 100)
        if not isinstance(fields, dict):
            raise InvalidArgument("fields", "must be an object of field names to texts")
        values = {}
        for key, value in fields.items():
            if not isinstance(value, str):
                raise InvalidArgument(f"fields.{key}", "must be a text")
            values[str(key)[:100]] = value[:MAX_TEXT]
        language = language_of(language)
        self.limiter.take([("portal-write", grant.customer_id)])
        request = case_pb2.CatalogueRequest(template=name, values=values, language=language)
        async with self._as_customer(grant) as channel:
            stub = case_pb2_grpc.CaseServiceStub(channel)
            checked = await call("the catalogue form", stub.CheckCatalogueRequest(request))
        contact_id = uuid.uuid4().hex
        await self._notifier.portal_contact(
            contact_id,
            grant.tenant,
            grant.email,
            "",
            language,
            checked.subject,
            checked.text,
            self._clock(),
            skills=list(checked.skills),
            queue=checked.queue,
            priority=checked.contact_priority,
            template=name,
            form=dict(checked.values),
        )
        logger.info("portal catalogue request %s (%s, tenant %s)", contact_id, name, grant.tenant)
        return contact_id

    # ---- the knowledge base -------------------------------------------------------------------

    async def search(self, tenant: Any, query: Any, language: Any) -> list[case_pb2.KnowledgeHit]:
        tenant = self._tenant(tenant)
        text = _text(query, "q", 200)
        request = case_pb2.SearchKnowledgeRequest(
            query=text, limit=10, language=language if language in LANGUAGES else ""
        )
        found = await call(
            "the knowledge base", self._service.stub(tenant).SearchKnowledge(request)
        )
        return list(found.hits)

    async def suggest(self, tenant: Any, text: Any) -> list[case_pb2.KnowledgeHit]:
        tenant = self._tenant(tenant)
        body = _text(text, "text", MAX_TEXT, required=False)
        if len(body) < 2:
            return []
        request = case_pb2.SuggestArticlesRequest(text=body, limit=5)
        found = await call(
            "the knowledge base", self._service.stub(tenant).SuggestArticles(request)
        )
        return list(found.hits)

    async def vote(
        self, tenant: Any, voter: str, article_id: Any, helpful: Any
    ) -> case_pb2.KnowledgeArticle:
        """One vote per voter (a signed-in customer, else the client address, hashed)."""
        tenant = self._tenant(tenant)
        article = _text(article_id, "article_id", 64)
        if not isinstance(helpful, bool):
            raise InvalidArgument("helpful", "must be true or false")
        self.limiter.take([("portal-vote", voter)])
        token = auth.mint(self._secret, tenant, voter, [roles.CUSTOMER], CUSTOMER_TOKEN_TTL)
        async with sb_grpc.channel(self._case_target, token, tls=self._tls) as channel:
            stub = case_pb2_grpc.CaseServiceStub(channel)
            return await call(
                "the knowledge base",
                stub.VoteArticle(case_pb2.VoteArticleRequest(article_id=article, helpful=helpful)),
            )

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await self._service.close()


_CHANNELS: dict[int, str] = {
    contact_pb2.CHANNEL_VOICE: "voice",
    contact_pb2.CHANNEL_EMAIL: "email",
    contact_pb2.CHANNEL_FAX: "fax",
    contact_pb2.CHANNEL_CHAT: "chat",
}


def visible_channel(channel: int) -> str:
    """A channel's name as the portal shows it."""
    return _CHANNELS.get(channel, "other")
