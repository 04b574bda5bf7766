"""Which calls are recorded and for how long they are kept: voice.yaml's `recording` section.

```yaml
recording:
  demo:                      # a tenant
    mode: on                 # on (the default) | off | on_demand
    retention_days: 90       # recordings older than this are deleted (default 90)
    queues: {cards: on_demand, internal: off}   # a queue's mode overrides the tenant's
```

`on` records from the moment the agent is connected; `on_demand` only once the agent starts
it. In both the agent pauses (`*2`) and resumes (`*1`) from the phone's keypad, so a card
number read out is never recorded (PCI DSS). A tenant not named is recorded (`on`, 90 days)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import yaml

from switchboard.core.config import ConfigReader, is_null
from switchboard.core.events import TENANT_RE

DEFAULT_RETENTION_DAYS = 90


class Mode(enum.Enum):
    ON = "on"
    OFF = "off"
    ON_DEMAND = "on_demand"


@dataclass(frozen=True)
class TenantPolicy:
    mode: Mode = Mode.ON
    retention_days: int = DEFAULT_RETENTION_DAYS
    queues: dict[str, Mode] = field(default_factory=dict)


@dataclass(frozen=True)
class RecordingPolicy:
    tenants: dict[str, TenantPolicy] = field(default_factory=dict)

    def of(self, tenant: str) -> TenantPolicy:
        return self.tenants.get(tenant) or TenantPolicy()

    def mode(self, tenant: str, queue: str) -> Mode:
        """How a call of `tenant` answered from `queue` is recorded."""
        policy = self.of(tenant)
        return policy.queues.get(queue, policy.mode)

    def retention_days(self, tenant: str) -> int:
        return self.of(tenant).retention_days


def _mode(r: ConfigReader, node: yaml.Node, path: str) -> Mode:
    value = r.scalar(node, path)
    if isinstance(value, bool):  # YAML 1.1 reads a bare on/off as a boolean
        return Mode.ON if value else Mode.OFF
    try:
        return Mode(str(value))
    except ValueError:
        raise r.fail(node, path, f"{value!r} is not on, off or on_demand") from None


def parse(r: ConfigReader, node: yaml.Node | None, path: str = "recording") -> RecordingPolicy:
    """The `recording` section (absent or empty: every call recorded, kept 90 days)."""
    if node is None or is_null(node):
        return RecordingPolicy()
    tenants: dict[str, TenantPolicy] = {}
    for tenant, (knode, vnode) in r.mapping(node, path, set()).items():
        tpath = f"{path}.{tenant}"
        if not TENANT_RE.match(tenant):
            raise r.fail(knode, tpath, f"{tenant!r} is not a tenant name")
        fields = r.mapping(vnode, tpath, {"mode", "retention_days", "queues"})
        queues: dict[str, Mode] = {}
        if "queues" in fields and not is_null(fields["queues"][1]):
            for queue, (_, qnode) in r.mapping(
                fields["queues"][1], f"{tpath}.queues", set()
            ).items():
                queues[queue] = _mode(r, qnode, f"{tpath}.queues.{queue}")
        tenants[tenant] = TenantPolicy(
            mode=_mode(r, fields["mode"][1], f"{tpath}.mode") if "mode" in fields else Mode.ON,
            retention_days=r.integer(
                fields["retention_days"][1], f"{tpath}.retention_days", 1, 36500
            )
            if "retention_days" in fields
            else DEFAULT_RETENTION_DAYS,
            queues=queues,
        )
    return RecordingPolicy(tenants)
