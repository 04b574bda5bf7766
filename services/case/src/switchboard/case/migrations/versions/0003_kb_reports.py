"""Knowledge base (versioned articles, votes, a CJK-aware full-text index), customer
satisfaction surveys and ratings, quality-assurance evaluations.

The search index differs by backend: SQLite gets an FTS5 table (kb_fts) kept in step with
kb_search_documents by triggers; PostgreSQL a GIN index on the documents' weighted tsvector.
Both index the same tokens (switchboard.case.knowledge.tokens).

Revision ID: 0003_kb_reports
Revises: 0002_case_lifecycle
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_kb_reports"
down_revision: str | None = "0002_case_lifecycle"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = sa.DateTime(timezone=True)

# Kept literally here (a migration must not change when the code does); equal to
# switchboard.case.knowledge.search.PG_DOCUMENT.
_PG_DOCUMENT = (
    "(setweight(to_tsvector('simple'::regconfig, title_tokens), 'A') || "
    "setweight(to_tsvector('simple'::regconfig, body_tokens), 'B'))"
)

_SQLITE_FTS = [
    "CREATE VIRTUAL TABLE kb_fts USING fts5(title_tokens, body_tokens, "
    "content='kb_search_documents', content_rowid='id', tokenize='unicode61 remove_diacritics 2')",
    "CREATE TRIGGER kb_search_documents_ai AFTER INSERT ON kb_search_documents BEGIN "
    "INSERT INTO kb_fts(rowid, title_tokens, body_tokens) "
    "VALUES (new.id, new.title_tokens, new.body_tokens); END",
    "CREATE TRIGGER kb_search_documents_ad AFTER DELETE ON kb_search_documents BEGIN "
    "INSERT INTO kb_fts(kb_fts, rowid, title_tokens, body_tokens) "
    "VALUES ('delete', old.id, old.title_tokens, old.body_tokens); END",
    "CREATE TRIGGER kb_search_documents_au AFTER UPDATE ON kb_search_documents BEGIN "
    "INSERT INTO kb_fts(kb_fts, rowid, title_tokens, body_tokens) "
    "VALUES ('delete', old.id, old.title_tokens, old.body_tokens); "
    "INSERT INTO kb_fts(rowid, title_tokens, body_tokens) "
    "VALUES (new.id, new.title_tokens, new.body_tokens); END",
]


def upgrade() -> None:
    op.create_table(
        "kb_articles",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
        sa.Column("latest_version", sa.Integer(), nullable=False),
        sa.Column("published_version", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_kb_articles"),
    )
    op.create_index("ix_kb_articles_tenant_updated", "kb_articles", ["tenant", "updated_at"])

    op.create_table(
        "kb_article_versions",
        sa.Column("article_id", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("language", sa.String(35), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("author", sa.String(255), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("state_changed_at", UTC, nullable=False),
        sa.Column("state_changed_by", sa.String(255), nullable=False),
        sa.ForeignKeyConstraint(
            ["article_id"], ["kb_articles.id"], name="fk_kb_article_versions_article_id_kb_articles"
        ),
        sa.PrimaryKeyConstraint("article_id", "version", name="pk_kb_article_versions"),
    )

    op.create_table(
        "kb_votes",
        sa.Column("article_id", sa.String(32), nullable=False),
        sa.Column("voter", sa.String(255), nullable=False),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("helpful", sa.Boolean(), nullable=False),
        sa.Column("voted_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["article_id"], ["kb_articles.id"], name="fk_kb_votes_article_id_kb_articles"
        ),
        sa.PrimaryKeyConstraint("article_id", "voter", name="pk_kb_votes"),
    )

    op.create_table(
        "kb_search_documents",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("article_id", sa.String(32), nullable=False),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("language", sa.String(35), nullable=False),
        sa.Column("title_tokens", sa.Text(), nullable=False),
        sa.Column("body_tokens", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["article_id"], ["kb_articles.id"], name="fk_kb_search_documents_article_id_kb_articles"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_kb_search_documents"),
        sa.UniqueConstraint("article_id", name="uq_kb_search_documents_article_id"),
    )
    op.create_index("ix_kb_search_documents_tenant", "kb_search_documents", ["tenant"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"CREATE INDEX ix_kb_search_documents_fts ON kb_search_documents "
            f"USING gin ({_PG_DOCUMENT})"
        )
    else:
        for statement in _SQLITE_FTS:
            op.execute(statement)

    op.create_table(
        "csat_surveys",
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("case_id", sa.String(32), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("command_id", sa.String(255), nullable=False),
        sa.Column("sent_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("tenant", "case_id", name="pk_csat_surveys"),
    )
    op.create_table(
        "csat_ratings",
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("case_id", sa.String(32), nullable=False),
        sa.Column("contact_id", sa.String(255), nullable=False),
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("queue", sa.String(255), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("agent_id", sa.String(255), nullable=False),
        sa.Column("rated_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("tenant", "case_id", "contact_id", name="pk_csat_ratings"),
    )
    op.create_index("ix_csat_ratings_tenant_rated", "csat_ratings", ["tenant", "rated_at"])

    op.create_table(
        "qa_evaluations",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("contact_id", sa.String(255), nullable=False),
        sa.Column("agent_id", sa.String(255), nullable=False),
        sa.Column("queue", sa.String(255), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("form_id", sa.String(64), nullable=False),
        sa.Column("evaluator", sa.String(255), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("fatal_errors", sa.Integer(), nullable=False),
        sa.Column("non_fatal_errors", sa.Integer(), nullable=False),
        sa.Column("answers", sa.JSON(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("scored_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_qa_evaluations"),
    )
    op.create_index("ix_qa_evaluations_tenant_scored", "qa_evaluations", ["tenant", "scored_at"])
    op.create_index(
        "ix_qa_evaluations_tenant_contact", "qa_evaluations", ["tenant", "contact_id"], unique=True
    )


def downgrade() -> None:
    op.drop_table("qa_evaluations")
    op.drop_table("csat_ratings")
    op.drop_table("csat_surveys")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX ix_kb_search_documents_fts")
    else:
        for trigger in ("ai", "ad", "au"):
            op.execute(f"DROP TRIGGER kb_search_documents_{trigger}")
        op.execute("DROP TABLE kb_fts")
    op.drop_table("kb_search_documents")
    op.drop_table("kb_votes")
    op.drop_table("kb_article_versions")
    op.drop_table("kb_articles")
