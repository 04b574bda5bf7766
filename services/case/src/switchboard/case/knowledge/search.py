"""Full-text search over published articles: SQLite FTS5 or a PostgreSQL tsvector index.

Both hold the token stream of knowledge.tokens (CJK bigrams, lower-cased words), so a query means
the same on both: every query word must occur (a CJK word as its bigrams in a row, a phrase)
for `match="all"`, any of them for `match="any"` (suggestions from a case's text). Ranking is the
engine's own (FTS5 bm25, PostgreSQL ts_rank), with the title weighted above the body.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from switchboard.case.knowledge import tokens

FTS_TABLE = "kb_fts"  # SQLite only; not a model (FTS5 keeps shadow tables named kb_fts_*)
# The expression PostgreSQL's GIN index is built on; queries must use exactly this expression.
PG_DOCUMENT = (
    "(setweight(to_tsvector('simple'::regconfig, title_tokens), 'A') || "
    "setweight(to_tsvector('simple'::regconfig, body_tokens), 'B'))"
)

Match = Literal["all", "any"]


PG_INDEX = "ix_kb_search_documents_fts"


def not_search_index(name: str | None, type_: str, parent_names: object) -> bool:
    """Alembic's include_name: leave the backend-specific search index out of schema
    comparisons (SQLite's FTS5 table with its kb_fts_* shadow tables, PostgreSQL's GIN
    expression index); they are not models."""
    if name is None:
        return True
    if type_ == "table":
        return not name.startswith(FTS_TABLE)
    return not (type_ == "index" and name == PG_INDEX)


@dataclass(frozen=True)
class Hit:
    article_id: str
    rank: float  # higher is better


def _fts5_query(terms: list[list[str]], match: Match) -> str:
    parts = []
    for term in terms:
        if tokens.is_single_cjk(term):
            parts.append(f'"{term[0]}"*')  # a bigram starting with it, or the lone character
        else:
            parts.append('"' + " ".join(term) + '"')  # tokens are \w only: nothing to escape
    return (" AND " if match == "all" else " OR ").join(parts)


def _pg_query(terms: list[list[str]], match: Match) -> str:
    parts = []
    for term in terms:
        if tokens.is_single_cjk(term):
            parts.append(f"'{term[0]}':*")
        else:
            parts.append("(" + " <-> ".join(f"'{t}'" for t in term) + ")")
    return (" & " if match == "all" else " | ").join(parts)


async def search(
    session: AsyncSession,
    tenant: str,
    query: str,
    limit: int,
    match: Match = "all",
    language: str = "",
) -> list[Hit]:
    """The tenant's published articles matching `query`, best first."""
    terms = tokens.query_terms(query, phrases=match == "all")
    if not terms:
        return []
    params: dict[str, object] = {"tenant": tenant, "limit": limit, "language": language}
    language_filter = "AND (:language = '' OR d.language = :language)"
    if session.get_bind().dialect.name == "postgresql":
        params["q"] = _pg_query(terms, match)
        sql = f"""
            SELECT d.article_id, ts_rank({PG_DOCUMENT}, q.query) AS rank
            FROM kb_search_documents AS d, to_tsquery('simple', :q) AS q(query)
            WHERE d.tenant = :tenant AND {PG_DOCUMENT} @@ q.query {language_filter}
            ORDER BY rank DESC, d.article_id
            LIMIT :limit
        """
    else:
        params["q"] = _fts5_query(terms, match)
        sql = f"""
            SELECT d.article_id, -bm25({FTS_TABLE}, 4.0, 1.0) AS rank
            FROM {FTS_TABLE} JOIN kb_search_documents AS d ON d.id = {FTS_TABLE}.rowid
            WHERE {FTS_TABLE} MATCH :q AND d.tenant = :tenant {language_filter}
            ORDER BY rank DESC, d.article_id
            LIMIT :limit
        """
    rows = await session.execute(text(sql), params)
    return [Hit(article_id, float(rank)) for article_id, rank in rows]
