from __future__ import annotations

from pydantic import Field, model_validator

from switchboard.core import router_groups
from switchboard.core.settings import RouterGroupSettings


class RouterSettings(RouterGroupSettings):
    grpc_port: int = Field(50051, alias="ROUTER_GRPC_PORT")
    # The YAML configuration (tenants, queues, steps, surge); empty: the embedded demo default.
    config_file: str = Field("", alias="ROUTER_CONFIG_FILE")
    # Overrides every channel's accept timeout when > 0 (tests, demos).
    accept_timeout_seconds: float = Field(0.0, alias="ROUTER_ACCEPT_TIMEOUT_SECONDS")
    # The durable consumer of contact events; empty: "router" for the group "default",
    # "router-<group>" for another, so that each group has its own.
    consumer_name: str = Field("", alias="ROUTER_CONSUMER")
    # Tenants served by one leader; the journal, snapshots and lease are per group. With
    # ROUTER_GROUPS set (the tenant-to-group map every component reads), the group serves the
    # tenants the map gives it, and only those; unset, it serves every tenant.
    group: str = Field("default", alias="ROUTER_GROUP", pattern=r"^[a-z0-9][a-z0-9-]{0,30}$")
    lease_ttl_seconds: float = Field(3.0, alias="ROUTER_LEASE_TTL_SECONDS", gt=0.5)
    snapshot_interval_seconds: float = Field(30.0, alias="ROUTER_SNAPSHOT_INTERVAL_SECONDS", gt=0)
    # ...or sooner, after this many journal entries, so a recovery never replays more.
    snapshot_entries: int = Field(5000, alias="ROUTER_SNAPSHOT_ENTRIES", gt=0)
    # A journal write with no ack within this is in doubt: the leader steps down and re-reads.
    journal_write_timeout_seconds: float = Field(
        2.0, alias="ROUTER_JOURNAL_WRITE_TIMEOUT_SECONDS", gt=0
    )
    # A leader whose consumer has not moved for this long while events wait steps down.
    watchdog_seconds: float = Field(5.0, alias="ROUTER_WATCHDOG_SECONDS", gt=0)
    # Events the leader fetched but never settled (it died) come back after this.
    consumer_ack_wait_seconds: float = Field(10.0, alias="ROUTER_CONSUMER_ACK_WAIT_SECONDS", gt=0)

    @model_validator(mode="after")
    def _group_in_map(self) -> RouterSettings:
        self.router_map().tenants_of(self.group)  # a group the map does not name cannot start
        return self

    @property
    def durable(self) -> str:
        """The group's durable consumer name."""
        return self.consumer_name or router_groups.durable(self.group)

    @property
    def served_tenants(self) -> frozenset[str] | None:
        """The tenants this group serves; None: every tenant (no ROUTER_GROUPS)."""
        return self.router_map().tenants_of(self.group)
