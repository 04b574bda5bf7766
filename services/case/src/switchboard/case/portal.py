"""The customer portal's side of the case store: finding a customer by email for a sign-in link,
or by a case's reference for a sign-in code, what customers did with suggested articles, and a
customer's own cases as the customer may see them (its messages and the agents' replies;
no internal notes, SLA timers, agent ids or audit detail)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from switchboard.case import customers
from switchboard.case.adapters import keyring, orm
from switchboard.case.adapters.mailer import Mailer
from switchboard.case.adapters.orm import utc_now
from switchboard.case.catalogue import pick
from switchboard.case.pagination import CaseQuery
from switchboard.case.reports.orm import PortalCode, SuggestionDraft
from switchboard.case.sla.policy import Policies
from switchboard.case.views import CaseViews
from switchboard.core import portal_tokens
from switchboard.core.errors import InvalidArgument, NotFound, Unauthenticated
from switchboard.v1 import case_pb2, contact_pb2

logger = logging.getLogger(__name__)

# The sign-in mail in the portal's languages: subject, then the text around the link.
MAIL = {
    "ko": (
        "로그인 링크",
        "아래 링크를 열면 고객 포털에 로그인됩니다. 링크는 15분 동안 한 번만 쓸 수 있습니다.\n\n"
        "{link}\n\n요청하지 않으셨다면 이 메일을 무시하세요.",
    ),
    "zh": (
        "登录链接",
        "打开以下链接即可登录客户门户。该链接 15 分钟内有效，只能使用一次。\n\n"
        "{link}\n\n如果这不是您的请求，请忽略此邮件。",
    ),
    "ja": (
        "ログインリンク",
        "次のリンクを開くとカスタマーポータルにログインします。リンクは15分間、一度だけ有効です。\n\n"
        "{link}\n\nお心当たりがない場合は、このメールを無視してください。",
    ),
    "en": (
        "Your sign-in link",
        "Open this link to sign in to the customer portal. It works once, within 15 minutes.\n\n"
        "{link}\n\nIf you did not ask for it, ignore this mail.",
    ),
}
# The sign-in code mail: subject, then the text around the code and the case's reference.
CODE_MAIL = {
    "ko": (
        "로그인 코드",
        "{reference} 건으로 고객 포털에 로그인하는 코드입니다: {code}\n\n"
        "코드는 10분 동안 한 번만 쓸 수 있습니다. 요청하지 않으셨다면 이 메일을 무시하세요.",
    ),
    "zh": (
        "登录验证码",
        "使用工单 {reference} 登录客户门户的验证码：{code}\n\n"
        "验证码 10 分钟内有效，只能使用一次。如果这不是您的请求，请忽略此邮件。",
    ),
    "ja": (
        "ログインコード",
        "お問い合わせ {reference} でカスタマーポータルにログインするコード: {code}\n\n"
        "コードは10分間、一度だけ有効です。お心当たりがない場合は、このメールを無視してください。",
    ),
    "en": (
        "Your sign-in code",
        "Your code to sign in to the customer portal with request {reference}: {code}\n\n"
        "It works once, within 10 minutes. If you did not ask for it, ignore this mail.",
    ),
}
CODE_TTL = timedelta(minutes=10)
CODE_ATTEMPTS = 5  # wrong codes before the case's code is refused even when right
CODE_RE = re.compile(r"^[0-9]{6}$")
REFERENCE_RE = re.compile(r"^[A-Za-z0-9-]{1,16}$")
DRAFT_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
WRONG_CODE = "this code is wrong, expired or used"
VISIBLE_AUTHORS = (contact_pb2.AUTHOR_CUSTOMER, contact_pb2.AUTHOR_AGENT)


def for_customer(case: case_pb2.Case) -> case_pb2.Case:
    """What a customer sees of its case: status, subject, dates, and the conversation."""
    seen = case_pb2.Case(
        case_id=case.case_id,
        tenant=case.tenant,
        status=case.status,
        subject=case.subject,
        reference=case.reference,
        customer=case_pb2.Customer(
            customer_id=case.customer.customer_id, display_name=case.customer.display_name
        ),
    )
    for field in ("created_at", "updated_at", "resolved_at", "closed_at"):
        if case.HasField(field):
            getattr(seen, field).CopyFrom(getattr(case, field))
    for k in case.contacts:
        contact = seen.contacts.add(
            contact_id=k.contact_id,
            channel=k.channel,
            language=k.language,
            skills=list(k.skills),  # the topic, which a reply is routed by as well
            subject=k.subject,
            status=k.status,
        )
        if k.HasField("created_at"):
            contact.created_at.CopyFrom(k.created_at)
        for m in k.messages:
            if m.author in VISIBLE_AUTHORS:
                shown = contact.messages.add()
                shown.CopyFrom(m)
                shown.agent_id = ""
    return seen


class Portal:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        views: CaseViews,
        mailer: Mailer,
        secret: str,
        policies: Policies | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._clock = clock
        self._sessions = sessions
        self._views = views
        self._mailer = mailer
        self._secret = secret
        self._policies = policies or Policies()

    async def customer_by_email(self, tenant: str, email: str) -> str | None:
        """The customer whose email identity this is (following merges), if any."""
        wanted = contact_pb2.CustomerIdentity(kind=contact_pb2.IDENTITY_KIND_EMAIL, value=email)
        normalised = customers.normalise_identities([wanted], "", strict=False)
        if not normalised:
            return None
        [(kind, value)] = normalised
        async with self._sessions() as session:
            index = keyring.of(session).index(session, tenant, value)
            owner = await session.scalar(
                select(orm.CustomerIdentity.customer_id).where(
                    orm.CustomerIdentity.tenant == tenant,
                    orm.CustomerIdentity.kind == kind,
                    orm.CustomerIdentity.value == index,
                )
            )
            if owner is None:
                return None
            return (await customers.get(session, tenant, owner)).id

    async def send_link(self, tenant: str, email: str, portal_url: str, language: str) -> bool:
        """Mail a sign-in link to the customer known by `email`; False (and no mail) when no
        customer has it or the mail could not be sent."""
        if not portal_url.startswith(("https://", "http://")):
            raise InvalidArgument("portal_url", "must be an http(s) address")
        customer_id = await self.customer_by_email(tenant, email)
        if customer_id is None:
            logger.info("portal link asked for an unknown email (tenant %s)", tenant)
            return False
        email = email.strip().lower()
        token = portal_tokens.mint_link(self._secret, tenant, customer_id, email)
        subject, text = MAIL.get(language, MAIL["en"])
        link = f"{portal_url}#login={token}"
        try:
            await self._mailer.send([email], subject, text.format(link=link), f"portal:{token}")
        except Exception as exc:  # the customer asks again; the answer does not tell
            logger.warning("portal link for customer %s not sent: %s", customer_id, exc)
            return False
        logger.info("portal link sent to customer %s", customer_id)
        return True

    # ---- sign-in by case reference and code --------------------------------------------------

    def _code_hash(self, tenant: str, reference: str, code: str) -> str:
        message = f"portal-code:{tenant}:{reference}:{code}".encode()
        return hmac.new(self._secret.encode(), message, hashlib.sha256).hexdigest()

    async def send_code(self, tenant: str, reference: str, language: str) -> bool:
        """Mail a new 6-digit code to the email of the customer of the case `reference` (the
        previous code no longer works); False (and no mail) when there is no such case or its
        customer has no email."""
        reference = reference.strip().upper()
        if not REFERENCE_RE.match(reference):
            return False
        try:
            case = await self._views.get_case(tenant, reference)
        except NotFound:
            logger.info("portal code asked for an unknown case (tenant %s)", tenant)
            return False
        if case.reference != reference:  # found by id, not by reference
            return False
        emails = [
            i.value
            for i in case.customer.identities
            if i.kind == contact_pb2.IDENTITY_KIND_EMAIL and i.value
        ]
        if not emails:
            logger.info("portal code asked for case %s, whose customer has no email", reference)
            return False
        code = f"{secrets.randbelow(1_000_000):06d}"
        customer_id = case.customer.customer_id
        async with self._sessions.begin() as session:
            row = await session.get(PortalCode, (tenant, reference))
            if row is None:
                row = PortalCode(tenant=tenant, reference=reference)
                session.add(row)
            row.customer_id = customer_id
            row.code_hash = self._code_hash(tenant, reference, code)
            row.expires_at = self._clock() + CODE_TTL
            row.attempts = 0
            row.used = False
        subject, text = CODE_MAIL.get(language, CODE_MAIL["en"])
        try:
            await self._mailer.send(
                [emails[0]],
                subject,
                text.format(code=code, reference=reference),
                f"portal-code:{tenant}:{reference}:{secrets.token_hex(8)}",
            )
        except Exception as exc:  # the customer asks again; the answer does not tell
            logger.warning("portal code for case %s not sent: %s", reference, exc)
            return False
        logger.info("portal code sent for case %s", reference)
        return True

    async def verify_code(self, tenant: str, reference: str, code: str) -> str:
        """A sign-in link token for the customer of case `reference` when `code` is its current
        code: unexpired, unused and fewer than CODE_ATTEMPTS wrong codes before it. Any other
        answer is the same Unauthenticated, whether or not the case exists."""
        reference = reference.strip().upper()
        code = code.strip()
        if not REFERENCE_RE.match(reference) or not CODE_RE.match(code):
            raise Unauthenticated(WRONG_CODE)
        hashed = self._code_hash(tenant, reference, code)
        c = PortalCode
        current = (c.tenant == tenant, c.reference == reference, c.used.is_(False))
        async with self._sessions.begin() as session:
            # One statement each, so two checks of the same code cannot both succeed.
            accepted = await session.execute(
                update(c)
                .where(
                    *current,
                    c.attempts < CODE_ATTEMPTS,
                    c.expires_at > self._clock(),
                    c.code_hash == hashed,
                )
                .values(used=True)
            )
            if not accepted.rowcount:  # type: ignore[attr-defined]
                await session.execute(
                    update(c).where(*current, c.code_hash != hashed).values(attempts=c.attempts + 1)
                )
                customer_id = None
            else:
                customer_id = await session.scalar(
                    select(c.customer_id).where(c.tenant == tenant, c.reference == reference)
                )
        if customer_id is None:  # committed: the wrong try counts
            logger.info("portal code refused for case %s", reference)
            raise Unauthenticated(WRONG_CODE)
        async with self._sessions() as session:
            customer = await customers.get(session, tenant, customer_id)
        case = await self._views.get_case(tenant, reference)
        email = next(
            (
                i.value
                for i in case.customer.identities
                if i.kind == contact_pb2.IDENTITY_KIND_EMAIL and i.value
            ),
            "",
        )
        logger.info("portal code accepted for case %s", reference)
        return portal_tokens.mint_link(self._secret, tenant, customer.id, email.lower())

    # ---- what customers did with suggested articles (deflection) -------------------------------

    async def record_suggestion(
        self, tenant: str, customer_id: str, draft_id: str, event: str, article_id: str
    ) -> None:
        """A draft's suggestions were shown, one was opened, or the draft was sent. A draft is
        counted once it was shown; opening and sending record nothing for a draft never shown."""
        if not DRAFT_RE.match(draft_id):
            raise InvalidArgument("draft_id", "must be 8 to 64 letters, digits, - or _")
        if event not in ("shown", "opened", "submitted"):
            raise InvalidArgument("event", "must be shown, opened or submitted")
        if event == "opened" and not article_id:
            raise InvalidArgument("article_id", "is required")
        now = self._clock()
        async with self._sessions.begin() as session:
            row = await session.get(SuggestionDraft, (tenant, draft_id), with_for_update=True)
            if row is not None and row.customer_id != customer_id:
                raise NotFound("draft", draft_id)
            if row is None:
                if event != "shown":
                    return
                session.add(
                    SuggestionDraft(
                        tenant=tenant,
                        draft_id=draft_id,
                        customer_id=customer_id,
                        shown_at=now,
                        opened=0,
                    )
                )
            elif event == "opened" and row.submitted_at is None:
                row.opened += 1
                row.opened_at = row.opened_at or now
            elif event == "submitted" and row.submitted_at is None:
                row.submitted_at = now

    async def _current(self, tenant: str, customer_id: str) -> str:
        async with self._sessions() as session:
            return (await customers.get(session, tenant, customer_id)).id

    async def my_cases(self, tenant: str, customer_id: str, page_size: int) -> list[case_pb2.Case]:
        """The customer's cases, newest first, without their messages."""
        current = await self._current(tenant, customer_id)
        cases, _ = await self._views.list_cases(
            CaseQuery(tenant, customer_id=current), page_size, None
        )
        return [for_customer(c) for c in cases]

    async def my_case(self, tenant: str, customer_id: str, case_id: str) -> case_pb2.Case:
        """One of the customer's cases with its conversation; any other case is NOT_FOUND."""
        current = await self._current(tenant, customer_id)
        case = await self._views.get_case(tenant, case_id)
        if case.customer.customer_id != current:
            raise NotFound("case", case_id)
        return for_customer(case)

    # ---- the service catalogue ----------------------------------------------------------------

    def catalogue(self, tenant: str) -> list[case_pb2.CatalogueItem]:
        """The request forms the tenant offers (its templates with a catalogue entry)."""
        return [
            case_pb2.CatalogueItem(
                template=t.name,
                name=dict(t.catalogue.name),
                description=dict(t.catalogue.description),
                fields=[f.to_proto() for f in t.catalogue.fields],
            )
            for t in self._policies.catalogue(tenant)
            if t.catalogue is not None
        ]

    def check_request(
        self, tenant: str, template: str, values: dict[str, str], language: str
    ) -> case_pb2.CheckedCatalogueRequest:
        """A filled form checked against its template: the first wrong field raises
        InvalidArgument("fields.<name>", ...); a template the tenant does not offer is NOT_FOUND."""
        t = self._policies.template(tenant, template)
        if t is None or t.catalogue is None:
            raise NotFound("catalogue form", template)
        checked = t.catalogue.check(values)
        return case_pb2.CheckedCatalogueRequest(
            subject=pick(t.catalogue.name, language) or t.subject or t.name,
            text=t.catalogue.text(checked, language),
            skills=list(t.skills),
            queue=t.queue,
            contact_priority=t.contact_priority,
            values=checked,
        )
