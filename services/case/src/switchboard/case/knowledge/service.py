"""The knowledge base: versioned articles, the draft -> review -> published workflow, votes,
search and suggestions. Every method is scoped to one tenant; another tenant's article does not
exist for the caller."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm.attributes import flag_modified

from switchboard.case.adapters import keyring
from switchboard.case.adapters.database import insert_ignore
from switchboard.case.adapters.orm import EXTERNAL_ID, Case, new_id, utc_now
from switchboard.case.knowledge import search as fts
from switchboard.case.knowledge import tokens
from switchboard.case.knowledge.orm import (
    DRAFT,
    PUBLISHED,
    RETIRED,
    REVIEW,
    KbArticle,
    KbArticleVersion,
    KbAttachment,
    KbSearchDocument,
    KbVote,
)
from switchboard.core.errors import FailedPrecondition, InvalidArgument, NotFound

logger = logging.getLogger(__name__)

MAX_TITLE = 500
MAX_BODY = 200_000
MAX_TAGS = 32
MAX_RESULTS = 50
MAX_LIST = 200
MAX_CATEGORY = 64
MAX_ATTACHMENT = 3 * 1024 * 1024  # under gRPC's 4 MiB message limit
BUCKET = "kb_files"
# Which state a version may move to from which; publishing retires the previously published one.
TRANSITIONS: dict[str, frozenset[str]] = {
    DRAFT: frozenset({REVIEW}),
    REVIEW: frozenset({DRAFT, PUBLISHED}),
    PUBLISHED: frozenset({RETIRED}),
    RETIRED: frozenset({REVIEW}),
}
STATES = frozenset(TRANSITIONS)


class Objects(Protocol):
    """Where attachments' bytes are kept (switchboard.core.stores.ObjectStores)."""

    async def put(self, bucket: str, name: str, data: bytes, description: str = "") -> None: ...

    async def get(self, bucket: str, name: str) -> bytes: ...


@dataclass(frozen=True)
class AttachmentView:
    attachment_id: str
    filename: str
    content_type: str
    size_bytes: int
    sha256: str
    added_by: str
    added_at: datetime


@dataclass(frozen=True)
class ArticleView:
    article_id: str
    version: int
    title: str
    body: str
    language: str
    tags: list[str]
    state: str
    author: str
    created_at: datetime
    latest_version: int
    published_version: int | None
    helpful: int = 0
    not_helpful: int = 0
    category: str = ""
    review_comment: str = ""
    state_changed_by: str = ""
    state_changed_at: datetime | None = None
    attachments: tuple[AttachmentView, ...] = ()
    source_case_id: str = ""
    source_case_reference: str = ""


@dataclass(frozen=True)
class SearchResult:
    article: ArticleView
    score: float
    snippet: str


@dataclass(frozen=True)
class Draft:
    title: str
    body: str
    language: str = ""
    tags: Sequence[str] = field(default_factory=tuple)
    category: str = ""

    def validated(self) -> Draft:
        title = self.title.strip()
        if not title:
            raise InvalidArgument("title")
        if len(title) > MAX_TITLE:
            raise InvalidArgument("title", f"is longer than {MAX_TITLE} characters")
        if not self.body.strip():
            raise InvalidArgument("body")
        if len(self.body) > MAX_BODY:
            raise InvalidArgument("body", f"is longer than {MAX_BODY} characters")
        if len(self.language) > 35:
            raise InvalidArgument("language", "is not a BCP 47 tag")
        tags = [t.strip() for t in self.tags if t.strip()]
        if len(tags) > MAX_TAGS or any(len(t) > 64 for t in tags):
            raise InvalidArgument("tags", f"at most {MAX_TAGS} tags of up to 64 characters")
        category = self.category.strip()
        if len(category) > MAX_CATEGORY:
            raise InvalidArgument("category", f"is longer than {MAX_CATEGORY} characters")
        return Draft(title, self.body, self.language, tuple(dict.fromkeys(tags)), category)


def snippet(body: str, query: str, width: int = 160) -> str:
    """A stretch of `body` around the first query word found in it, on one line."""
    flat = " ".join(body.split())
    folded = tokens.normalise(flat)
    at = -1
    for term in tokens.query_terms(query):
        word = term[0] if len(term) == 1 else term[0] + "".join(t[-1] for t in term[1:])
        at = folded.find(word)
        if at >= 0:
            break
    start = max(0, at - width // 3) if at >= 0 else 0
    piece = flat[start : start + width]
    return ("…" if start else "") + piece + ("…" if start + width < len(flat) else "")


class KnowledgeBase:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        clock: Callable[[], datetime] = utc_now,
        objects: Objects | None = None,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._objects = objects

    async def _article(self, session: AsyncSession, tenant: str, article_id: str) -> KbArticle:
        row = await session.get(KbArticle, article_id, with_for_update=True) if article_id else None
        if row is None or row.tenant != tenant:
            raise NotFound("article", article_id)
        return row

    async def _owner(self, session: AsyncSession, tenant: str, source_case_id: str) -> str:
        """Whose key seals an article's unpublished text: the customer of the case it was
        drafted from (erased with them), else the tenant (keyring.TENANT)."""
        source = await session.get(Case, source_case_id) if source_case_id else None
        if source is None or source.tenant != tenant:
            return keyring.TENANT
        return source.customer_id

    async def _votes(self, session: AsyncSession, ids: Sequence[str]) -> dict[str, tuple[int, int]]:
        if not ids:
            return {}
        rows = await session.execute(
            select(
                KbVote.article_id,
                func.sum(case((KbVote.helpful.is_(True), 1), else_=0)),
                func.sum(case((KbVote.helpful.is_(True), 0), else_=1)),
            )
            .where(KbVote.article_id.in_(ids))
            .group_by(KbVote.article_id)
        )
        return {a: (int(h or 0), int(n or 0)) for a, h, n in rows}

    async def _attachments(
        self, session: AsyncSession, article_id: str
    ) -> tuple[AttachmentView, ...]:
        rows = await session.scalars(
            select(KbAttachment)
            .where(KbAttachment.article_id == article_id)
            .order_by(KbAttachment.added_at, KbAttachment.id)
        )
        return tuple(
            AttachmentView(
                r.id, r.filename, r.content_type, r.size_bytes, r.sha256, r.added_by, r.added_at
            )
            for r in rows
        )

    def _view(
        self,
        a: KbArticle,
        v: KbArticleVersion,
        votes: tuple[int, int] = (0, 0),
        attachments: tuple[AttachmentView, ...] = (),
    ) -> ArticleView:
        return ArticleView(
            article_id=a.id,
            version=v.version,
            title=v.title,
            body=v.body,
            language=v.language,
            tags=list(v.tags or []),
            state=v.state,
            author=v.author,
            created_at=v.created_at,
            latest_version=a.latest_version,
            published_version=a.published_version,
            helpful=votes[0],
            not_helpful=votes[1],
            category=v.category or "",
            review_comment=v.review_comment or "",
            state_changed_by=v.state_changed_by,
            state_changed_at=v.state_changed_at,
            attachments=attachments,
            source_case_id=a.source_case_id or "",
            source_case_reference=a.source_case_reference or "",
        )

    async def create(
        self,
        tenant: str,
        author: str,
        draft: Draft,
        source_case_id: str = "",
        source_case_reference: str = "",
    ) -> ArticleView:
        """A new article whose version 1 is a draft."""
        d = draft.validated()
        now = self._clock()
        async with self._sessions.begin() as session:
            article = KbArticle(
                id=new_id(),
                tenant=tenant,
                created_by=author[:EXTERNAL_ID],
                created_at=now,
                updated_at=now,
                latest_version=1,
                published_version=None,
                source_case_id=source_case_id,
                source_case_reference=source_case_reference,
            )
            session.add(article)
            await session.flush()
            owner = await self._owner(session, tenant, source_case_id)
            version = self._new_version(session, tenant, owner, article.id, 1, author, d, now)
            session.add(version)
        logger.info("article %s created", article.id)
        return self._view(article, version)

    def _new_version(
        self,
        session: AsyncSession,
        tenant: str,
        owner: str,
        article_id: str,
        number: int,
        author: str,
        d: Draft,
        now: datetime,
    ) -> KbArticleVersion:
        keys = keyring.of(session)
        return KbArticleVersion(
            article_id=article_id,
            version=number,
            tenant=tenant,
            title=keys.seal(session, tenant, owner, d.title),
            body=keys.seal(session, tenant, owner, d.body),
            language=d.language,
            tags=list(d.tags),
            category=d.category,
            review_comment="",
            state=DRAFT,
            author=author[:EXTERNAL_ID],
            created_at=now,
            state_changed_at=now,
            state_changed_by=author[:EXTERNAL_ID],
        )

    async def update(self, tenant: str, author: str, article_id: str, draft: Draft) -> ArticleView:
        """A new draft version of the article; the published version stays live until the new
        one is reviewed and published."""
        d = draft.validated()
        now = self._clock()
        async with self._sessions.begin() as session:
            article = await self._article(session, tenant, article_id)
            article.latest_version += 1
            article.updated_at = now
            owner = await self._owner(session, tenant, article.source_case_id)
            number = article.latest_version
            version = self._new_version(session, tenant, owner, article.id, number, author, d, now)
            session.add(version)
            attachments = await self._attachments(session, article.id)
        return self._view(article, version, attachments=attachments)

    async def set_state(
        self, tenant: str, actor: str, article_id: str, version: int, state: str, comment: str = ""
    ) -> ArticleView:
        """Move one version through the workflow (TRANSITIONS). Publishing a version makes it the
        one search finds and retires the version published before it. Sending a version in
        review back to draft needs the reviewer's `comment`, kept with the version."""
        if state not in STATES:
            raise InvalidArgument("state", f"{state!r} is not one of {', '.join(sorted(STATES))}")
        comment = comment.strip()
        if len(comment) > 10_000:
            raise InvalidArgument("comment", "is longer than 10000 characters")
        now = self._clock()
        async with self._sessions.begin() as session:
            article = await self._article(session, tenant, article_id)
            number = version or article.latest_version
            row = await session.get(KbArticleVersion, (article.id, number), with_for_update=True)
            if row is None:
                raise NotFound("article version", f"{article_id}@{number}")
            if state not in TRANSITIONS[row.state]:
                raise FailedPrecondition(
                    f"article {article_id} version {number}: {row.state} -> {state} is not "
                    f"allowed (from {row.state}: {', '.join(sorted(TRANSITIONS[row.state]))})"
                )
            if state == PUBLISHED:
                if article.published_version and article.published_version != number:
                    old = await session.get(
                        KbArticleVersion, (article.id, article.published_version)
                    )
                    if old is not None:
                        old.state, old.state_changed_at, old.state_changed_by = RETIRED, now, actor
                article.published_version = number
                await self._index(session, article, row)
                self._seal_public(session, tenant, row)
            elif row.state == PUBLISHED:  # retired: no longer found
                article.published_version = None
                doc = await session.scalar(
                    select(KbSearchDocument).where(KbSearchDocument.article_id == article.id)
                )
                if doc is not None:
                    await session.delete(doc)
            if row.state == REVIEW and state == DRAFT:
                if not comment:
                    raise InvalidArgument("comment", "say why the version goes back to draft")
                owner = await self._owner(session, tenant, article.source_case_id)
                row.review_comment = keyring.of(session).seal(session, tenant, owner, comment)
            elif state == REVIEW:
                row.review_comment = ""
            row.state, row.state_changed_at, row.state_changed_by = state, now, actor
            article.updated_at = now
            votes = (await self._votes(session, [article.id])).get(article.id, (0, 0))
            attachments = await self._attachments(session, article.id)
        logger.info("article %s version %d is %s", article_id, number, state)
        return self._view(article, row, votes, attachments)

    def _seal_public(self, session: AsyncSession, tenant: str, row: KbArticleVersion) -> None:
        """A published version is public text: sealed again with the tenant's key, so that the
        erasure of the customer whose case it was drafted from leaves it readable."""
        keys = keyring.of(session)
        for attribute in ("title", "body", "review_comment"):
            value = getattr(row, attribute)
            if value:
                setattr(row, attribute, keys.seal(session, tenant, keyring.TENANT, value))
                flag_modified(row, attribute)  # the same text: written again, under a new key

    async def _index(self, session: AsyncSession, article: KbArticle, v: KbArticleVersion) -> None:
        doc = await session.scalar(
            select(KbSearchDocument).where(KbSearchDocument.article_id == article.id)
        )
        body = v.body + "\n" + " ".join(v.tags or [])
        if doc is None:
            doc = KbSearchDocument(article_id=article.id, tenant=article.tenant)
            session.add(doc)
        doc.version = v.version
        doc.language = v.language
        doc.title_tokens = tokens.document(v.title)
        doc.body_tokens = tokens.document(body)

    async def get(self, tenant: str, article_id: str, version: int = 0) -> ArticleView:
        """One version of an article (default: the published one, else the latest)."""
        async with self._sessions() as session:
            article = await session.get(KbArticle, article_id) if article_id else None
            if article is None or article.tenant != tenant:
                raise NotFound("article", article_id)
            number = version or article.published_version or article.latest_version
            row = await session.get(KbArticleVersion, (article.id, number))
            if row is None:
                raise NotFound("article version", f"{article_id}@{number}")
            votes = (await self._votes(session, [article.id])).get(article.id, (0, 0))
            return self._view(article, row, votes, await self._attachments(session, article.id))

    async def list_articles(
        self,
        tenant: str,
        state: str = "",
        language: str = "",
        category: str = "",
        limit: int = 100,
    ) -> tuple[list[ArticleView], list[str]]:
        """The latest version of each article (newest first), filtered by its state, language
        or category; and every category the tenant's latest versions use."""
        if state and state not in STATES:
            raise InvalidArgument("state", f"{state!r} is not one of {', '.join(sorted(STATES))}")
        limit = max(1, min(limit or 100, MAX_LIST))
        latest = (KbArticleVersion.article_id == KbArticle.id) & (
            KbArticleVersion.version == KbArticle.latest_version
        )
        query = (
            select(KbArticle, KbArticleVersion)
            .join(KbArticleVersion, latest)
            .where(KbArticle.tenant == tenant)
        )
        if state:
            query = query.where(KbArticleVersion.state == state)
        if language:
            query = query.where(KbArticleVersion.language == language)
        if category:
            query = query.where(KbArticleVersion.category == category)
        query = query.order_by(KbArticle.updated_at.desc(), KbArticle.id).limit(limit)
        async with self._sessions() as session:
            rows = [(a, v) for a, v in await session.execute(query)]
            votes = await self._votes(session, [a.id for a, _ in rows])
            categories = await session.scalars(
                select(KbArticleVersion.category)
                .join(KbArticle, latest)
                .where(KbArticle.tenant == tenant, KbArticleVersion.category != "")
                .distinct()
            )
            names = sorted(set(categories))
        return [self._view(a, v, votes.get(a.id, (0, 0))) for a, v in rows], names

    async def versions(self, tenant: str, article_id: str) -> list[ArticleView]:
        """Every version of an article, newest first."""
        async with self._sessions() as session:
            article = await session.get(KbArticle, article_id) if article_id else None
            if article is None or article.tenant != tenant:
                raise NotFound("article", article_id)
            rows = await session.scalars(
                select(KbArticleVersion)
                .where(KbArticleVersion.article_id == article.id)
                .order_by(KbArticleVersion.version.desc())
            )
            return [self._view(article, v) for v in rows]

    async def attach(
        self,
        tenant: str,
        actor: str,
        article_id: str,
        filename: str,
        content_type: str,
        data: bytes,
    ) -> ArticleView:
        """Keep a file in the object store and link it from the article."""
        if self._objects is None:
            raise FailedPrecondition("attachments are not available: no object store")
        name = filename.replace("\\", "/").rsplit("/", 1)[-1].strip()
        if not name or len(name) > 255:
            raise InvalidArgument("filename")
        if not data:
            raise InvalidArgument("data", "the file is empty")
        if len(data) > MAX_ATTACHMENT:
            raise InvalidArgument("data", f"is larger than {MAX_ATTACHMENT // (1024 * 1024)} MiB")
        ctype = content_type.strip()[:255] or "application/octet-stream"
        async with self._sessions() as session:
            article = await session.get(KbArticle, article_id) if article_id else None
            if article is None or article.tenant != tenant:
                raise NotFound("article", article_id)
        attachment_id = new_id()
        object_name = f"{tenant}/{article_id}/{attachment_id}"
        await self._objects.put(BUCKET, object_name, data)
        async with self._sessions.begin() as session:
            article = await self._article(session, tenant, article_id)
            session.add(
                KbAttachment(
                    id=attachment_id,
                    article_id=article.id,
                    tenant=tenant,
                    filename=name,
                    content_type=ctype,
                    size_bytes=len(data),
                    sha256=hashlib.sha256(data).hexdigest(),
                    bucket=BUCKET,
                    object_name=object_name,
                    added_by=actor[:EXTERNAL_ID],
                    added_at=self._clock(),
                )
            )
            article.updated_at = self._clock()
        logger.info("article %s: attachment %s added", article_id, attachment_id)
        return await self.get(tenant, article_id, 0)

    async def attachment(
        self, tenant: str, article_id: str, attachment_id: str
    ) -> tuple[AttachmentView, bytes]:
        """One attachment of an article with its bytes."""
        async with self._sessions() as session:
            row = await session.get(KbAttachment, attachment_id) if attachment_id else None
            if row is None or row.tenant != tenant or row.article_id != article_id:
                raise NotFound("attachment", attachment_id)
        if self._objects is None:
            raise FailedPrecondition("attachments are not available: no object store")
        data = await self._objects.get(row.bucket, row.object_name)
        view = AttachmentView(
            row.id, row.filename, row.content_type, row.size_bytes, row.sha256, row.added_by,
            row.added_at,
        )  # fmt: skip
        return view, data

    async def vote(self, tenant: str, voter: str, article_id: str, helpful: bool) -> ArticleView:
        """Record one voter's vote on a published article; voting again replaces the vote."""
        if not voter:
            raise InvalidArgument("voter")
        now = self._clock()
        async with self._sessions.begin() as session:
            article = await self._article(session, tenant, article_id)
            if article.published_version is None:
                raise FailedPrecondition(f"article {article_id} is not published")
            values = {
                "article_id": article.id,
                "voter": voter[:EXTERNAL_ID],
                "tenant": tenant,
                "helpful": helpful,
                "voted_at": now,
            }
            if not await insert_ignore(session, KbVote, values, ["article_id", "voter"]):
                existing = await session.get(KbVote, (article.id, voter[:EXTERNAL_ID]))
                if existing is not None:
                    existing.helpful, existing.voted_at = helpful, now
            await session.flush()
            row = await session.get(KbArticleVersion, (article.id, article.published_version))
            assert row is not None
            votes = (await self._votes(session, [article.id])).get(article.id, (0, 0))
        return self._view(article, row, votes)

    async def search(
        self,
        tenant: str,
        query: str,
        limit: int = 10,
        language: str = "",
        match: fts.Match = "all",
    ) -> list[SearchResult]:
        """Published articles matching `query`, best first; ties favour helpful votes."""
        if not query.strip():
            raise InvalidArgument("query")
        if len(query) > 10_000:
            raise InvalidArgument("query", "is longer than 10000 characters")
        limit = max(1, min(limit or 10, MAX_RESULTS))
        async with self._sessions() as session:
            hits = await fts.search(session, tenant, query, limit, match, language)
            if not hits:
                return []
            ids = [h.article_id for h in hits]
            articles = {
                a.id: a
                for a in await session.scalars(select(KbArticle).where(KbArticle.id.in_(ids)))
            }
            versions = {
                v.article_id: v
                for v in await session.scalars(
                    select(KbArticleVersion).where(
                        KbArticleVersion.article_id.in_(ids), KbArticleVersion.state == PUBLISHED
                    )
                )
            }
            votes = await self._votes(session, ids)
        results = []
        for h in hits:
            a, v = articles.get(h.article_id), versions.get(h.article_id)
            if a is None or v is None:
                continue
            view = self._view(a, v, votes.get(a.id, (0, 0)))
            results.append(SearchResult(view, h.rank, snippet(v.body, query)))
        # The engines' ranks are exact ties for similar articles; votes break them.
        results.sort(key=lambda r: (-round(r.score, 6), r.article.not_helpful - r.article.helpful))
        return results

    async def suggest(
        self, tenant: str, text: str, limit: int = 5, language: str = ""
    ) -> list[SearchResult]:
        """Articles for a case, from its text: any of its words may match; more matching words
        and rarer words rank higher."""
        if not text.strip():
            raise InvalidArgument("text")
        return await self.search(tenant, text[:10_000], limit, language, match="any")
