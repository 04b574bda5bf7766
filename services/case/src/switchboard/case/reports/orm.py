"""Tables of customer satisfaction and quality assurance (migration 0003_kb_reports), and of the
customer portal: sign-in codes and what was done with suggested articles
(migration 0009_portal_codes_deflection), and of agents' state changes (migration
0010_agent_state_changes)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, Float, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from switchboard.case.adapters.crypto import SealedText
from switchboard.case.adapters.orm import EXTERNAL_ID, ID, Base, UTCDateTime, new_id, utc_now


class CsatSurvey(Base):
    """A survey sent after a case was resolved: at most one per case."""

    __tablename__ = "csat_surveys"

    tenant: Mapped[str] = mapped_column(String(63), primary_key=True)
    case_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    command_id: Mapped[str] = mapped_column(String(EXTERNAL_ID), default="")
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)


class CsatRating(Base):
    """A customer's rating of a contact (or of a case); the latest one given counts."""

    __tablename__ = "csat_ratings"
    __table_args__ = (Index("ix_csat_ratings_tenant_rated", "tenant", "rated_at"),)

    tenant: Mapped[str] = mapped_column(String(63), primary_key=True)
    case_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    contact_id: Mapped[str] = mapped_column(String(EXTERNAL_ID), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(EXTERNAL_ID))
    score: Mapped[int] = mapped_column(Integer)
    comment: Mapped[str] = mapped_column(SealedText, default="")
    # Copied from the contact when rated, so a report needs no join and a later transfer does
    # not move the rating to another agent.
    queue: Mapped[str] = mapped_column(String(EXTERNAL_ID), default="")
    channel: Mapped[str] = mapped_column(String(16), default="")
    agent_id: Mapped[str] = mapped_column(String(EXTERNAL_ID), default="")
    rated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class QaEvaluation(Base):
    """A QA evaluator's scoring of one handled contact on a scoring form."""

    __tablename__ = "qa_evaluations"
    __table_args__ = (
        Index("ix_qa_evaluations_tenant_scored", "tenant", "scored_at"),
        Index("ix_qa_evaluations_tenant_contact", "tenant", "contact_id", unique=True),
        Index("ix_qa_evaluations_tenant_agent", "tenant", "agent_id", "scored_at"),
    )

    id: Mapped[str] = mapped_column(String(ID), primary_key=True, default=new_id)
    tenant: Mapped[str] = mapped_column(String(63))
    contact_id: Mapped[str] = mapped_column(String(EXTERNAL_ID))
    agent_id: Mapped[str] = mapped_column(String(EXTERNAL_ID))
    queue: Mapped[str] = mapped_column(String(EXTERNAL_ID), default="")
    channel: Mapped[str] = mapped_column(String(16), default="")
    form_id: Mapped[str] = mapped_column(String(64))
    evaluator: Mapped[str] = mapped_column(String(EXTERNAL_ID))
    score: Mapped[float] = mapped_column(Float)  # 0..100
    fatal_errors: Mapped[int] = mapped_column(Integer)
    non_fatal_errors: Mapped[int] = mapped_column(Integer)
    answers: Mapped[dict[str, bool]] = mapped_column(JSON, default=dict)  # item id -> passed
    # The free text may quote the customer: sealed with the key of the contact's customer
    # (docs/security.md), so the customer's erasure reaches it.
    comment: Mapped[str] = mapped_column(SealedText, default="")
    scored_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The version of the form it was scored on (migration 0007), and its dispute: scored ->
    # disputed (by the agent) -> upheld or changed (by a second evaluator).
    form_version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    status: Mapped[str] = mapped_column(String(16), default="scored", server_default="scored")
    dispute_reason: Mapped[str] = mapped_column(SealedText, default="", server_default="")
    disputed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    decided_by: Mapped[str] = mapped_column(String(EXTERNAL_ID), default="", server_default="")
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    decision_note: Mapped[str] = mapped_column(SealedText, default="", server_default="")
    original_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    original_fatal_errors: Mapped[int | None] = mapped_column(Integer, nullable=True)


class QaForm(Base):
    """One version of a tenant's scoring form, as the YAML it was put with (migration 0007)."""

    __tablename__ = "qa_forms"

    tenant: Mapped[str] = mapped_column(String(63), primary_key=True)
    form_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    definition: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(EXTERNAL_ID))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PortalCode(Base):
    """The sign-in code last sent for a case (one at a time): its HMAC, expiry, wrong tries."""

    __tablename__ = "portal_codes"

    tenant: Mapped[str] = mapped_column(String(63), primary_key=True)
    reference: Mapped[str] = mapped_column(String(16), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(ID))
    code_hash: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    used: Mapped[bool] = mapped_column(Boolean, default=False)


class SuggestionDraft(Base):
    """A new request written in the portal that was shown suggested articles: how many were
    opened, and whether it was sent (a deflection when opened and not sent)."""

    __tablename__ = "portal_suggestion_drafts"
    __table_args__ = (Index("ix_portal_suggestion_drafts_tenant_shown", "tenant", "shown_at"),)

    tenant: Mapped[str] = mapped_column(String(63), primary_key=True)
    draft_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(ID))
    shown_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    opened: Mapped[int] = mapped_column(Integer, default=0)
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class AgentStateChange(Base):
    """An agent's presence as the router changed it (AgentStateChanged): signed in, available,
    wrap-up, on a break (with its reason), not responding, signed out; for the agent-states
    report. Each lasts until the agent's next change."""

    __tablename__ = "agent_state_changes"
    __table_args__ = (
        Index("ix_agent_state_changes_tenant_at", "tenant", "changed_at"),
        Index("ix_agent_state_changes_tenant_agent_at", "tenant", "agent_id", "changed_at"),
    )

    event_id: Mapped[str] = mapped_column(String(EXTERNAL_ID), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(63))
    agent_id: Mapped[str] = mapped_column(String(EXTERNAL_ID))
    presence: Mapped[str] = mapped_column(String(16))  # available, break, offline, ...
    reason: Mapped[str] = mapped_column(String(EXTERNAL_ID), default="")
    # Who made the change when it was neither the agent nor the router (a supervisor).
    changed_by: Mapped[str] = mapped_column(String(EXTERNAL_ID), default="")
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime)
