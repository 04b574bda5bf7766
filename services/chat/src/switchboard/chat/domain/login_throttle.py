"""Sign-in throttling that slows guessing without letting a stranger lock an agent out.

Failures are counted per (client address, account) and per client address:

- after `pair_allowed` failures of one account from one address, that address waits before it
  may try that account again (30 s, doubling with each further failure, at most 15 minutes);
- after `client_allowed` failures from one address, whatever the accounts (password spraying),
  that address waits likewise before any sign-in.

An account is never locked as such: the agent, signing in from their own address, is not held
back by what another address did. A success clears the pair's count (not the address's: one
right password does not excuse a spray)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from switchboard.core.errors import ResourceExhausted

PAIR_ALLOWED = 5
CLIENT_ALLOWED = 20
PAUSE_SECONDS = 30.0
PAUSE_MAX_SECONDS = 15 * 60.0
KEEP = 10_000  # entries of each kind, at most (the oldest are forgotten)


@dataclass
class _Count:
    failures: int = 0
    until: float = 0.0


class LoginThrottle:
    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        pair_allowed: int = PAIR_ALLOWED,
        client_allowed: int = CLIENT_ALLOWED,
    ) -> None:
        self.clock = clock
        self.pair_allowed = pair_allowed
        self.client_allowed = client_allowed
        self._pairs: OrderedDict[tuple[str, str, str], _Count] = OrderedDict()
        self._clients: OrderedDict[str, _Count] = OrderedDict()

    def check(self, client: str, tenant: str, account: str) -> None:
        """Raise ResourceExhausted if `client` must wait before trying `account` again."""
        now = self.clock()
        for count, allowed in (
            (self._pairs.get((client, tenant, account)), self.pair_allowed),
            (self._clients.get(client), self.client_allowed),
        ):
            if count is not None and count.failures >= allowed and count.until > now:
                wait = max(1, round(count.until - now))
                raise ResourceExhausted(f"too many failed sign-ins: try again in {wait} s")

    def failed(self, client: str, tenant: str, account: str) -> None:
        now = self.clock()
        _fail(self._pairs, (client, tenant, account), self.pair_allowed, now)
        _fail(self._clients, client, self.client_allowed, now)

    def succeeded(self, client: str, tenant: str, account: str) -> None:
        self._pairs.pop((client, tenant, account), None)


def _fail(table: OrderedDict[Any, _Count], key: Any, allowed: int, now: float) -> None:
    count = table.pop(key, None) or _Count()
    count.failures += 1
    extra = count.failures - allowed + 1  # the allowed-th failure starts the first pause
    if extra > 0:
        count.until = now + min(PAUSE_MAX_SECONDS, PAUSE_SECONDS * 2 ** (extra - 1))
    table[key] = count  # the most recent last
    while len(table) > KEEP:
        table.popitem(last=False)
