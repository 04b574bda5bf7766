"""Tables of customer satisfaction and quality assurance (migration 0003_kb_reports)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Float, Index, Integer, String, Text
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
    comment: Mapped[str] = mapped_column(Text, default="")
    scored_at: Mapped[datetime] = mapped_column(UTCDateTime)
