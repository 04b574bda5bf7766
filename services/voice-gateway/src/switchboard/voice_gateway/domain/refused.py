"""A SIP request the gateway turns down."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Refused:
    """The final response to send instead of acting on the request."""

    status: int
    reason: str
    retry_after: int = 0  # seconds, sent with a 503 at the call limit
