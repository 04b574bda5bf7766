"""Token buckets: each socket may send `burst` events at once and `rate` per second after."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from switchboard.core.errors import ResourceExhausted


class Throttled(ResourceExhausted):
    """The socket sent faster than its limit; `retry_after` seconds until one more is allowed."""

    code = "rate_limited"

    def __init__(self, what: str, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(f"too many {what}: slow down (retry in {retry_after:.1f} s)")


@dataclass
class TokenBucket:
    rate: float
    burst: int
    clock: Callable[[], float]
    tokens: float = field(init=False)
    stamp: float = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = float(self.burst)
        self.stamp = self.clock()

    def take(self, what: str, cost: float = 1.0) -> None:
        """Spend `cost` tokens or raise Throttled (spending nothing)."""
        now = self.clock()
        self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < cost:
            raise Throttled(what, (cost - self.tokens) / self.rate)
        self.tokens -= cost
