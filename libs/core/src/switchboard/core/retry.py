"""How long a consumer keeps redelivering an event before it parks it, derived from its ack wait.

An event that cannot be applied yet waits for another event. At worst that one was fetched by a
consumer that died: JetStream hands it out again only once its ack wait has run out, and that
redelivery may be cut short the same way, so the wait is two ack waits. Add the longest back-off
(the waiting event may have just gone to sleep) and a margin for handling the dependency, and the
patience is covered by counting deliveries, since each one is at least its back-off later.

JetStream's own delivery limit is set well above ours: the server stops redelivering at it
without telling anyone, so it must never be the one that gives up.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

# Past 2**40 the doubling is far beyond any cap, and floats would overflow long before a
# delivery count could get there.
_MAX_DOUBLINGS = 40


@dataclass(frozen=True)
class RetryPolicy:
    """When to redeliver a failed event, and when to give up on it (park it)."""

    ack_wait: float = 30.0
    first_delay: float = 0.1
    max_delay: float = 5.0
    margin: float = 5.0
    # A replica that cannot serve now (a standby router) is left for the other one: come back
    # soon, but from the same budget of deliveries.
    unavailable_delay: float = 1.0
    # A consumer whose handler is costly to run again (OCR, sending mail) may give up on crashes
    # sooner; None gives a crashing handler the same deliveries as a not-ready event.
    crash_attempts: int | None = None

    def __post_init__(self) -> None:
        if self.ack_wait <= 0 or self.first_delay <= 0 or self.max_delay < self.first_delay:
            raise ValueError(f"unusable retry policy {self!r}")
        if self.margin < 0 or self.unavailable_delay <= 0:
            raise ValueError(f"unusable retry policy {self!r}")
        if self.crash_attempts is not None and self.crash_attempts < 1:
            raise ValueError("crash_attempts must be at least 1")

    @property
    def patience(self) -> float:
        """Seconds a not-ready event is retried for, at least."""
        return 2 * self.ack_wait + self.max_delay + self.margin

    def delay(self, delivered: int) -> float:
        """The back-off after the `delivered`-th delivery failed: doubling, capped."""
        doublings = min(max(delivered, 1) - 1, _MAX_DOUBLINGS)
        return min(self.first_delay * 2**doublings, self.max_delay)

    def unavailable(self, delivered: int) -> float:
        """The back-off after a delivery the replica could not serve."""
        return min(self.delay(delivered), self.unavailable_delay)

    @cached_property
    def attempts(self) -> int:
        """Deliveries a not-ready event gets: the first one whose back-offs before it add up to
        the patience is the last."""
        waited, delivered = 0.0, 1
        while waited < self.patience:
            waited += self.delay(delivered)
            delivered += 1
        return delivered

    def waited_before(self, delivered: int) -> float:
        """The sum of the back-offs before the `delivered`-th delivery (a lower bound on time)."""
        return sum(self.delay(n) for n in range(1, delivered))

    def gives_up(self, delivered: int, crashed: bool = False) -> bool:
        """True when the `delivered`-th delivery, having failed, is the last one we allow."""
        limit = self.attempts
        if crashed and self.crash_attempts is not None:
            limit = min(limit, self.crash_attempts)
        return delivered >= limit

    @property
    def server_max_deliver(self) -> int:
        """JetStream's limit: twice ours, so deliveries that end with no verdict of ours (a killed
        consumer, an ack wait run out) still leave our code the last word."""
        return 2 * self.attempts
