"""Token buckets: who spends them may send `burst` events at once and `rate` per second after.

A `Limiter` keeps buckets by who is spending (a visitor with all their sockets, a client
address, a tenant, an agent), so opening more sockets buys no more budget. Replicas share their
spending: each spend is handed to `share` (the chat publishes it on NATS), and what the other
replicas spent is taken from the same buckets here (`spent_elsewhere`), so a visitor whose
sockets land on different replicas has one budget, give or take what is in flight."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from switchboard.core.errors import ResourceExhausted


class Throttled(ResourceExhausted):
    """Sent faster than the limit; `retry_after` seconds until one more is allowed."""

    code = "rate_limited"

    def __init__(self, what: str, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(f"too many {what}: slow down (retry in {retry_after:.1f} s)")


@dataclass(frozen=True)
class Budget:
    rate: float  # per second
    burst: int
    what: str  # named in the refusal: "too many <what>"


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

    def refill(self) -> float:
        """The tokens there are now."""
        now = self.clock()
        self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        return self.tokens


Charge = tuple[str, str]  # (budget name, who)


class Limiter:
    def __init__(
        self,
        budgets: Mapping[str, Budget],
        clock: Callable[[], float] = time.monotonic,
        share: Callable[[str, str, float], None] | None = None,
        keep: int = 100_000,
    ) -> None:
        self.budgets = dict(budgets)
        self.clock = clock
        self.share = share
        self.keep = keep
        self._buckets: OrderedDict[Charge, TokenBucket] = OrderedDict()

    def _bucket(self, charge: Charge) -> TokenBucket:
        bucket = self._buckets.pop(charge, None)
        if bucket is None:
            budget = self.budgets[charge[0]]
            bucket = TokenBucket(budget.rate, budget.burst, self.clock)
        self._buckets[charge] = bucket  # the most recently used last
        while len(self._buckets) > self.keep:
            self._buckets.popitem(last=False)  # a full bucket (long unused) is not missed
        return bucket

    def take(self, charges: Iterable[Charge], cost: float = 1.0) -> None:
        """Spend `cost` from every charge's bucket, or, if one of them has too little, raise
        Throttled naming it and spend nothing."""
        pairs = [(charge, self._bucket(charge)) for charge in charges]
        for (name, _), bucket in pairs:
            if bucket.refill() < cost:
                raise Throttled(self.budgets[name].what, (cost - bucket.tokens) / bucket.rate)
        for (name, who), bucket in pairs:
            bucket.tokens -= cost
            if self.share is not None:
                self.share(name, who, cost)

    def spent_elsewhere(self, name: str, who: str, cost: float) -> None:
        """Another replica spent `cost` of `who`'s `name` budget (going below zero is allowed:
        it is paid back before the next event)."""
        if name not in self.budgets:
            return
        bucket = self._bucket((name, who))
        bucket.refill()
        bucket.tokens = max(bucket.tokens - cost, -float(bucket.burst))
