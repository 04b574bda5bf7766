"""What every part of the routing engine shares: its state, declared once for the type checker.

`Engine` (``engine.py``) is assembled from mixins, one per concern (``index.py``, ``surge.py``,
``explain.py``, ``stats.py``), each a subclass of `_EngineState`. The state lives as attributes of
the one engine instance, so a snapshot pickles (and an old one loads) as before. The methods that
one part calls on another are declared here too, for the type checker only.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from switchboard.router.domain.config import RouterConfig
from switchboard.router.domain.model import (
    Agent,
    Attempt,
    Contact,
    Effect,
    Group,
    Offer,
    Offered,
    QueueStats,
    Req,
    TenantState,
    Why,
)

Clock = Callable[[], float]


class _EngineState:
    """The engine's attributes (set by `Engine.__init__`, or loaded from a snapshot)."""

    clock: Clock
    config: RouterConfig
    tenants: dict[str, TenantState]
    agents: dict[tuple[str, str], Agent]
    groups: dict[tuple[str, tuple[Any, ...], tuple[Any, ...]], Group]
    tenant_groups: dict[str, list[Group]]
    contacts: dict[str, Contact]
    offers: dict[str, Offer]
    expired_offers: OrderedDict[str, str]
    history: OrderedDict[str, tuple[Contact, str]]
    buckets: dict[Req, list[tuple[int, float, int, str, int]]]
    req_keys: dict[Req, Req]  # one instance of each Req, shared by its contacts
    tuples: dict[tuple[str, ...], tuple[str, ...]]  # one of each, e.g. skills
    bucket_size: dict[Req, int]
    bucket_sweep: dict[Req, int]  # where `_sweep` goes on in each bucket
    req_groups: dict[Req, tuple[int, list[tuple[int, Group, bool]]]]
    req_excluded: dict[Req, tuple[int, list[tuple[Group, tuple[Why, ...], str]]]]
    sticky_waiting: dict[tuple[str, str], dict[str, None]]
    timers: list[tuple[float, int, str, Any, int]]
    config_versions: dict[str, tuple[int, float]]  # tenant -> (version, applied at)
    file_texts: dict[str, str]  # tenant -> its section of the file last applied
    # tenant -> its last changes applied by someone: (version, applied at, actor, diff)
    config_changes: dict[str, list[tuple[int, float, str, str]]]
    _groups_version: int
    _reqs_version: int
    _seq: itertools.count[int]
    _offer_seq: int
    term: int  # the leader's term (see begin_term); part of every offer id
    history_minimal: bool  # history keeps no personal data (absent in older snapshots)
    bucket_layout: int  # the form of the buckets' entries (engine.BUCKET_LAYOUT)
    sticky_key: bytes  # keys the sticky map's identity hashes; never pickled

    if TYPE_CHECKING:
        # Implemented by `Engine` (engine.py).
        def tenant(self, name: str) -> TenantState: ...
        def _timer(self, due: float, kind: str, ident: Any, version: int) -> None: ...
        def _req(self, c: Contact) -> Req: ...
        def _bucket_head(self, req: Req, skip_agent: str) -> Contact | None: ...
        def _offer(
            self, agent: Agent, c: Contact, via_step: bool, attempt: Attempt | None
        ) -> Offered: ...

        # Implemented by `Index` (index.py).
        def _qualifying(self, req: Req) -> list[tuple[int, Group, bool]]: ...
        def _candidates(
            self, c: Contact, allow_declined: bool
        ) -> list[tuple[int, Agent, bool]]: ...
        def _match_contact(self, c: Contact, not_now: str = "") -> list[Effect]: ...

        # Implemented by `Surge` (surge.py).
        def _track_idle(self, agent: Agent) -> None: ...
        def _count_queued(self, c: Contact, delta: int) -> None: ...

        # Implemented by `Stats` (stats.py).
        def _prune(self, tenant: str, queue: str, qs: QueueStats) -> None: ...

        # Implemented by `Explain` (explain.py).
        def _attempt(
            self, c: Contact, ranked: list[tuple[int, Agent, bool]], sticky: bool = False
        ) -> Attempt: ...
