"""The case lifecycle: new → assigned → in progress → pending customer → resolved → closed.

A resolved case reopens (back to in progress) when the customer comes back or an agent reopens
it; a closed case is final, so a later contact opens a new case. Where the tenant's closure policy
asks for it, a resolved case waits in pending_review (a reviewer approves: closed; rejects: back
in progress) or pending_confirmation (the customer confirms or time passes: closed; disputes:
back in progress).
"""

from __future__ import annotations

from switchboard.core.errors import FailedPrecondition
from switchboard.v1 import case_pb2

NEW = case_pb2.CASE_STATUS_NEW
ASSIGNED = case_pb2.CASE_STATUS_ASSIGNED
IN_PROGRESS = case_pb2.CASE_STATUS_IN_PROGRESS
PENDING = case_pb2.CASE_STATUS_PENDING_CUSTOMER
RESOLVED = case_pb2.CASE_STATUS_RESOLVED
CLOSED = case_pb2.CASE_STATUS_CLOSED
PENDING_REVIEW = case_pb2.CASE_STATUS_PENDING_REVIEW
PENDING_CONFIRMATION = case_pb2.CASE_STATUS_PENDING_CONFIRMATION

NAMES: dict[int, str] = {
    NEW: "new",
    ASSIGNED: "assigned",
    IN_PROGRESS: "in_progress",
    PENDING: "pending_customer",
    RESOLVED: "resolved",
    CLOSED: "closed",
    PENDING_REVIEW: "pending_review",
    PENDING_CONFIRMATION: "pending_confirmation",
}

TRANSITIONS: dict[int, frozenset[int]] = {
    NEW: frozenset({ASSIGNED, IN_PROGRESS, PENDING, RESOLVED}),
    ASSIGNED: frozenset({IN_PROGRESS, PENDING, RESOLVED}),
    IN_PROGRESS: frozenset({ASSIGNED, PENDING, RESOLVED}),
    PENDING: frozenset({IN_PROGRESS, RESOLVED}),
    RESOLVED: frozenset({IN_PROGRESS, CLOSED, PENDING_REVIEW, PENDING_CONFIRMATION}),
    # Closed only through the review (ReviewClosure, ConfirmClosure, the scheduler's time-out).
    PENDING_REVIEW: frozenset({IN_PROGRESS, CLOSED}),
    PENDING_CONFIRMATION: frozenset({IN_PROGRESS, CLOSED}),
    CLOSED: frozenset(),
}

OPEN = frozenset({NEW, ASSIGNED, IN_PROGRESS, PENDING})
# Resolved, and waiting (or not) to be closed: a customer who writes again reopens it.
SETTLED = frozenset({RESOLVED, PENDING_REVIEW, PENDING_CONFIRMATION})
AWAITING_CLOSURE = frozenset({PENDING_REVIEW, PENDING_CONFIRMATION})


def name(status: int) -> str:
    return NAMES.get(status, f"status {status}")


def check(current: int, target: int) -> None:
    """Raise FailedPrecondition naming the transition unless current → target is allowed."""
    if target not in TRANSITIONS.get(current, frozenset()):
        raise FailedPrecondition(f"cannot go from {name(current)} to {name(target)}")


def is_reopen(current: int, target: int) -> bool:
    return current in SETTLED and target == IN_PROGRESS
