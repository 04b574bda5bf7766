"""The knowledge base's tables (migrations 0003_kb_reports and 0008_kb_authoring create them)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from switchboard.case.adapters.crypto import SealedText
from switchboard.case.adapters.orm import EXTERNAL_ID, ID, Base, UTCDateTime, new_id, utc_now

DRAFT, REVIEW, PUBLISHED, RETIRED = "draft", "review", "published", "retired"


class KbArticle(Base):
    __tablename__ = "kb_articles"
    __table_args__ = (Index("ix_kb_articles_tenant_updated", "tenant", "updated_at"),)

    id: Mapped[str] = mapped_column(String(ID), primary_key=True, default=new_id)
    tenant: Mapped[str] = mapped_column(String(63))
    created_by: Mapped[str] = mapped_column(String(EXTERNAL_ID), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    latest_version: Mapped[int] = mapped_column(Integer, default=1)
    published_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    source_case_id: Mapped[str] = mapped_column(String(ID), default="")
    source_case_reference: Mapped[str] = mapped_column(String(16), default="")


class KbArticleVersion(Base):
    """One version of an article's text; versions are never edited, only moved through states.

    Its text is sealed (docs/security.md, "Personal data at rest"): a draft made from a case may
    hold what the customer wrote, so until it is published it is sealed with that customer's
    key (the tenant's for other articles); publishing seals it again with the tenant's key, as
    public text whose search tokens (KbSearchDocument) are kept in clear."""

    __tablename__ = "kb_article_versions"

    article_id: Mapped[str] = mapped_column(ForeignKey("kb_articles.id"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant: Mapped[str] = mapped_column(String(63))
    title: Mapped[str] = mapped_column(SealedText)
    body: Mapped[str] = mapped_column(SealedText)
    language: Mapped[str] = mapped_column(String(35), default="")
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    state: Mapped[str] = mapped_column(String(16))  # draft, review, published, retired
    author: Mapped[str] = mapped_column(String(EXTERNAL_ID), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    state_changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    state_changed_by: Mapped[str] = mapped_column(String(EXTERNAL_ID), default="")
    category: Mapped[str] = mapped_column(String(64), default="")
    review_comment: Mapped[str] = mapped_column(SealedText, default="")  # why it was sent back


class KbVote(Base):
    """One voter's helpful / not-helpful vote on an article; voting again changes it."""

    __tablename__ = "kb_votes"

    article_id: Mapped[str] = mapped_column(ForeignKey("kb_articles.id"), primary_key=True)
    voter: Mapped[str] = mapped_column(String(EXTERNAL_ID), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(63))
    helpful: Mapped[bool] = mapped_column(Boolean)
    voted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)


class KbSearchDocument(Base):
    """The published version of an article as search tokens (see knowledge.tokens). SQLite
    indexes it in the FTS5 table kb_fts (kept in step by triggers), PostgreSQL with a GIN index
    on its tsvector; the integer id is the FTS5 rowid, which VACUUM never renumbers."""

    __tablename__ = "kb_search_documents"
    __table_args__ = (Index("ix_kb_search_documents_tenant", "tenant"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    article_id: Mapped[str] = mapped_column(ForeignKey("kb_articles.id"), unique=True)
    tenant: Mapped[str] = mapped_column(String(63))
    version: Mapped[int] = mapped_column(Integer)
    language: Mapped[str] = mapped_column(String(35), default="")
    title_tokens: Mapped[str] = mapped_column(Text)
    body_tokens: Mapped[str] = mapped_column(Text)


class KbAttachment(Base):
    """A file linked from an article (every version); its bytes are in the object store."""

    __tablename__ = "kb_attachments"
    __table_args__ = (Index("ix_kb_attachments_article", "article_id"),)

    id: Mapped[str] = mapped_column(String(ID), primary_key=True, default=new_id)
    article_id: Mapped[str] = mapped_column(ForeignKey("kb_articles.id"))
    tenant: Mapped[str] = mapped_column(String(63))
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(255))
    size_bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    bucket: Mapped[str] = mapped_column(String(64))
    object_name: Mapped[str] = mapped_column(String(255))
    added_by: Mapped[str] = mapped_column(String(EXTERNAL_ID))
    added_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
