"""Which router group serves which tenant, and where each group answers (docs/routing.md).

One map, read by every component from the same two settings (one ConfigMap in Kubernetes):

- ``ROUTER_GROUPS="g1=demo,acme;g2=korea"``: each group's tenants. A router of group ``g1``
  (``ROUTER_GROUP=g1``) consumes only demo's and acme's contact events and refuses RPCs for any
  other tenant, naming the group that serves it.
- ``ROUTER_ENDPOINTS="g1=router-g1:50051;g2=router-g2:50051"``: where each group's gRPC answers,
  for the components that call the router (chat, voice gateway, CLI).

Neither set: one group serves every tenant at the single router address, as before.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from switchboard.core.events import TENANT_RE

GROUP_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")
DEFAULT_GROUP = "default"


def durable(group: str) -> str:
    """A router group's durable consumer of contact events: `router` for the group `default`
    (as before groups), `router-<group>` for another."""
    return "router" if group == DEFAULT_GROUP else f"router-{group}"


def journal_stream(group: str) -> tuple[str, str]:
    """A router group's journal: its stream and subject."""
    return f"ROUTER_{group.upper().replace('-', '_')}", f"router.journal.{group}"


class RouterGroupsError(ValueError):
    """A tenant-to-group map or endpoint list that cannot be used as written."""


def _pairs(text: str, setting: str) -> list[tuple[str, str]]:
    """`name=value;name=value` (spaces around either ignored; empty items skipped)."""
    pairs: list[tuple[str, str]] = []
    for item in text.split(";"):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise RouterGroupsError(f"{setting}: {item.strip()!r} is not <group>=<value>")
        if not GROUP_RE.match(name):
            raise RouterGroupsError(f"{setting}: {name!r} is not a group name ([a-z0-9-], ≤ 31)")
        if name in (n for n, _ in pairs):
            raise RouterGroupsError(f"{setting}: group {name!r} is named twice")
        pairs.append((name, value))
    return pairs


@dataclass(frozen=True)
class RouterGroups:
    """Each group's tenants (empty: not partitioned, one group serves all) and gRPC address."""

    tenants: Mapping[str, frozenset[str]] = field(default_factory=dict)
    endpoints: Mapping[str, str] = field(default_factory=dict)
    _group_of: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, groups: str = "", endpoints: str = "") -> RouterGroups:
        """The map ROUTER_GROUPS and ROUTER_ENDPOINTS describe; RouterGroupsError says what is
        wrong (a malformed item, a tenant in two groups, an endpoint of an unknown group)."""
        tenants: dict[str, frozenset[str]] = {}
        group_of: dict[str, str] = {}
        for group, listed in _pairs(groups, "ROUTER_GROUPS"):
            names = [t.strip() for t in listed.split(",") if t.strip()]
            for tenant in names:
                if not TENANT_RE.match(tenant):
                    raise RouterGroupsError(f"ROUTER_GROUPS: {tenant!r} is not a tenant name")
                if tenant in group_of:
                    raise RouterGroupsError(
                        f"ROUTER_GROUPS: tenant {tenant!r} is in groups "
                        f"{group_of[tenant]!r} and {group!r}; a tenant has one group"
                    )
                group_of[tenant] = group
            if not names:
                raise RouterGroupsError(f"ROUTER_GROUPS: group {group!r} names no tenant")
            tenants[group] = frozenset(names)
        addresses = dict(_pairs(endpoints, "ROUTER_ENDPOINTS"))
        unknown = sorted(set(addresses) - set(tenants))
        if unknown:
            raise RouterGroupsError(
                f"ROUTER_ENDPOINTS: {', '.join(unknown)} not in ROUTER_GROUPS"
                if tenants
                else "ROUTER_ENDPOINTS is set but ROUTER_GROUPS is not"
            )
        return cls(tenants, addresses, group_of)

    @property
    def partitioned(self) -> bool:
        return bool(self.tenants)

    @property
    def groups(self) -> list[str]:
        """Every group's name (`default` alone when not partitioned)."""
        return sorted(self.tenants) if self.partitioned else [DEFAULT_GROUP]

    def group_of(self, tenant: str) -> str | None:
        """The group serving `tenant`; None when no group of a partitioned map lists it."""
        return self._group_of.get(tenant)

    def tenants_of(self, group: str) -> frozenset[str] | None:
        """The tenants `group` serves; None: every tenant (the map is not partitioned)."""
        if not self.partitioned:
            return None
        if group not in self.tenants:
            raise RouterGroupsError(
                f"ROUTER_GROUP {group!r} is not in ROUTER_GROUPS "
                f"({', '.join(sorted(self.tenants))})"
            )
        return self.tenants[group]

    def check_endpoints(self) -> None:
        """For a component that calls the router: with a partitioned map, every group needs an
        address (a call for a tenant would otherwise go to a group that refuses it)."""
        missing = sorted(set(self.tenants) - set(self.endpoints))
        if self.partitioned and missing:
            raise RouterGroupsError(f"ROUTER_ENDPOINTS has no address for {', '.join(missing)}")

    def target(self, tenant: str, default: str) -> str:
        """The router address for calls on behalf of `tenant`: its group's endpoint, or
        `default` (the single router address) when the map is not partitioned or names no
        group for it (the router there then says which group serves it, or that none does)."""
        group = self._group_of.get(tenant)
        if group is None:
            return default
        return self.endpoints.get(group, default)

    def refusal(self, tenant: str, group: str) -> str | None:
        """Why router group `group` does not serve `tenant`, or None when it does."""
        if not self.partitioned:
            return None
        serving = self._group_of.get(tenant)
        if serving == group:
            return None
        if serving is None:
            return (
                f"tenant {tenant!r} is served by no router group "
                f"(ROUTER_GROUPS lists {', '.join(sorted(self.tenants))}); "
                f"this is router group {group!r}"
            )
        where = self.endpoints.get(serving)
        at = f" at {where}" if where else ""
        return (
            f"tenant {tenant!r} is served by router group {serving!r}{at}, "
            f"not by this router group {group!r}"
        )
