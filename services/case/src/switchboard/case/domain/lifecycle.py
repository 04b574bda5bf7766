"""The case lifecycle: new → assigned → in progress → pending customer → resolved → closed.

A resolved case reopens (back to in progress) when the customer comes back or an agent reopens
it; a closed case is final, so a later contact opens a new case.
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

NAMES: dict[int, str] = {
    NEW: "new",
    ASSIGNED: "assigned",
    IN_PROGRESS: "in_progress",
    PENDING: "pending_customer",
    RESOLVED: "resolved",
    CLOSED: "closed",
}

TRANSITIONS: dict[int, frozenset[int]] = {
    NEW: frozenset({ASSIGNED, IN_PROGRESS, PENDING, RESOLVED}),
    ASSIGNED: frozenset({IN_PROGRESS, PENDING, RESOLVED}),
    IN_PROGRESS: frozenset({ASSIGNED, PENDING, RESOLVED}),
    PENDING: frozenset({IN_PROGRESS, RESOLVED}),
    RESOLVED: frozenset({IN_PROGRESS, CLOSED}),  # reopen, or confirm/time out
    CLOSED: frozenset(),
}

OPEN = frozenset({NEW, ASSIGNED, IN_PROGRESS, PENDING})


def name(status: int) -> str:
    return NAMES.get(status, f"status {status}")


def check(current: int, target: int) -> None:
    """Raise FailedPrecondition naming the transition unless current → target is allowed."""
    if target not in TRANSITIONS.get(current, frozenset()):
        raise FailedPrecondition(f"cannot go from {name(current)} to {name(target)}")


def is_reopen(current: int, target: int) -> bool:
    return current == RESOLVED and target == IN_PROGRESS
