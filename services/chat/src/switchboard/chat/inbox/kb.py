"""The knowledge-base authoring screen's HTTP API: ``POST /api/kb/<action>`` with a JSON body and
``Authorization: Bearer <inbox token>`` (from ``POST /api/agent/login``).

Every action is one case-service call made with the caller's own token, so the case service's
rules decide who may do what (agents write drafts and propose them for review; reviewers publish,
retire, or send a version back to draft with a comment) and which tenant's articles exist.

- ``list`` {state, language, category} -> {articles, categories} (the latest version of each)
- ``get`` {article_id, version} -> article; ``versions`` {article_id} -> {versions}
- ``create`` {title, body, language, category, tags} -> article (version 1, a draft)
- ``update`` {article_id, title, body, language, category, tags} -> the new draft version
- ``state`` {article_id, version, state, comment} -> article (state: draft, review, published,
  retired)
- ``attach`` {article_id, filename, content_type, data: base64} -> article;
  ``attachment`` {article_id, attachment_id} -> {attachment, data: base64}
- ``from_case`` {case_id or reference, language} -> a new draft from a resolved case

Times are milliseconds since the epoch.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from switchboard.chat.inbox import wire
from switchboard.chat.inbox.actions import CaseActions, int_arg, str_arg
from switchboard.core.errors import InvalidArgument
from switchboard.core.service_client import call
from switchboard.v1 import case_pb2

PREFIX = "/api/kb/"
# A 3 MiB file as base64 with the rest of the body.
MAX_BODY = 4_300_000 + 16 * 1024
STATES = {
    "draft": case_pb2.ARTICLE_STATE_DRAFT,
    "review": case_pb2.ARTICLE_STATE_REVIEW,
    "published": case_pb2.ARTICLE_STATE_PUBLISHED,
    "retired": case_pb2.ARTICLE_STATE_RETIRED,
}
STATE_NAMES = {v: k for k, v in STATES.items()}


def _tags(data: dict[str, Any]) -> list[str]:
    tags = data.get("tags", [])
    if isinstance(tags, str):
        tags = [t for t in (s.strip() for s in tags.split(",")) if t]
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise InvalidArgument("tags", "must be a list of words")
    return tags


def _state(data: dict[str, Any]) -> int:
    name = str_arg(data, "state")
    if name and name not in STATES:
        raise InvalidArgument("state", f"must be one of {', '.join(STATES)}")
    return STATES.get(name, case_pb2.ARTICLE_STATE_UNSPECIFIED)


def attachment(f: case_pb2.ArticleAttachment) -> dict[str, Any]:
    return {
        "attachment_id": f.attachment_id,
        "filename": f.filename,
        "content_type": f.content_type,
        "size_bytes": f.size_bytes,
        "sha256": f.sha256,
        "added_by": f.added_by,
        "added_at": wire.ms(f.added_at),
    }


def article(a: case_pb2.KnowledgeArticle) -> dict[str, Any]:
    return {
        "article_id": a.article_id,
        "version": a.version,
        "title": a.title,
        "body": a.body,
        "language": a.language,
        "category": a.category,
        "tags": list(a.tags),
        "state": STATE_NAMES.get(a.state, ""),
        "author": a.author,
        "created_at": wire.ms(a.created_at),
        "latest_version": a.latest_version,
        "published_version": a.published_version,
        "helpful": a.helpful_votes,
        "not_helpful": a.not_helpful_votes,
        "review_comment": a.review_comment,
        "state_changed_by": a.state_changed_by,
        "state_changed_at": wire.ms(a.state_changed_at),
        "attachments": [attachment(f) for f in a.attachments],
        "source_case_id": a.source_case_id,
        "source_case_reference": a.source_case_reference,
    }


class KbApi(CaseActions):
    what = "knowledge-base action"

    async def _list(self, case: Any, data: dict[str, Any]) -> dict[str, Any]:
        request = case_pb2.ListArticlesRequest(
            state=_state(data),  # type: ignore[arg-type]
            language=str_arg(data, "language"),
            category=str_arg(data, "category"),
        )
        found = await call("ListArticles", case.ListArticles(request))
        return {
            "articles": [article(a) for a in found.articles],
            "categories": list(found.categories),
        }

    async def _get(self, case: Any, data: dict[str, Any]) -> dict[str, Any]:
        request = case_pb2.GetArticleRequest(
            article_id=str_arg(data, "article_id"), version=int_arg(data, "version")
        )
        return article(await call("GetArticle", case.GetArticle(request)))

    async def _versions(self, case: Any, data: dict[str, Any]) -> dict[str, Any]:
        request = case_pb2.GetArticleRequest(article_id=str_arg(data, "article_id"))
        found = await call("ListArticleVersions", case.ListArticleVersions(request))
        return {"versions": [article(a) for a in found.articles]}

    async def _create(self, case: Any, data: dict[str, Any]) -> dict[str, Any]:
        request = case_pb2.CreateArticleRequest(
            title=str_arg(data, "title"),
            body=str_arg(data, "body"),
            language=str_arg(data, "language"),
            category=str_arg(data, "category"),
            tags=_tags(data),
        )
        return article(await call("CreateArticle", case.CreateArticle(request)))

    async def _update(self, case: Any, data: dict[str, Any]) -> dict[str, Any]:
        request = case_pb2.UpdateArticleRequest(
            article_id=str_arg(data, "article_id"),
            title=str_arg(data, "title"),
            body=str_arg(data, "body"),
            language=str_arg(data, "language"),
            category=str_arg(data, "category"),
            tags=_tags(data),
        )
        return article(await call("UpdateArticle", case.UpdateArticle(request)))

    async def _state(self, case: Any, data: dict[str, Any]) -> dict[str, Any]:
        request = case_pb2.SetArticleStateRequest(
            article_id=str_arg(data, "article_id"),
            version=int_arg(data, "version"),
            state=_state(data),  # type: ignore[arg-type]
            comment=str_arg(data, "comment"),
        )
        return article(await call("SetArticleState", case.SetArticleState(request)))

    async def _attach(self, case: Any, data: dict[str, Any]) -> dict[str, Any]:
        try:
            raw = base64.b64decode(str_arg(data, "data"), validate=True)
        except (binascii.Error, ValueError):
            raise InvalidArgument("data", "must be base64") from None
        request = case_pb2.AddArticleAttachmentRequest(
            article_id=str_arg(data, "article_id"),
            filename=str_arg(data, "filename"),
            content_type=str_arg(data, "content_type"),
            data=raw,
        )
        return article(await call("AddArticleAttachment", case.AddArticleAttachment(request)))

    async def _attachment(self, case: Any, data: dict[str, Any]) -> dict[str, Any]:
        request = case_pb2.GetArticleAttachmentRequest(
            article_id=str_arg(data, "article_id"), attachment_id=str_arg(data, "attachment_id")
        )
        found = await call("GetArticleAttachment", case.GetArticleAttachment(request))
        return {
            "attachment": attachment(found.attachment),
            "data": base64.b64encode(found.data).decode("ascii"),
        }

    async def _from_case(self, case: Any, data: dict[str, Any]) -> dict[str, Any]:
        request = case_pb2.DraftArticleFromCaseRequest(
            case_id=str_arg(data, "case_id"),
            reference=str_arg(data, "reference"),
            language=str_arg(data, "language"),
        )
        return article(await call("DraftArticleFromCase", case.DraftArticleFromCase(request)))
