"""What a channel quarantined (kept without a contact: mail it could not decode, a fax it could
not read), indexed by sender so that erasing a customer reaches it, and bounded by retention.

The index is a key-value bucket with one key per (sender, item): `<sender key>.<item id>`, the
sender key being switchboard.core.sender_keys' keyed hash (never the address or number), or
`none` for an item whose sender could not be parsed. Its value says the item's tenant, when it was
quarantined, and where the channel kept it (object names, an IMAP location), for the channel to
delete. CustomerErased names the erased identities by sender key, so a channel reads only that
sender's keys (a subject filter on the bucket's stream, not a scan); the retention sweep reads
the whole index, which holds only what is quarantined.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from switchboard.core import stores

NO_SENDER = "none"  # the sender key of an item whose sender could not be parsed
RETENTION_DAYS = 30.0  # the default: a quarantined item is deleted this long after it came
_TENANT = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


@dataclass(frozen=True)
class Retention:
    """How long each tenant's quarantined items are kept."""

    default: timedelta = timedelta(days=RETENTION_DAYS)
    tenants: Mapping[str, timedelta] = field(default_factory=dict)

    def of(self, tenant: str) -> timedelta:
        return self.tenants.get(tenant, self.default)


def parse_retention(default_days: float, by_tenant: str, setting: str) -> Retention:
    """`by_tenant` as `tenant=days,tenant=days` over `default_days`; ValueError naming `setting`
    and the fault."""
    if default_days <= 0:
        raise ValueError(f"{setting}: the default retention must be more than 0 days")
    tenants: dict[str, timedelta] = {}
    for item in filter(None, (part.strip() for part in by_tenant.split(","))):
        tenant, _, days = (part.strip() for part in item.partition("="))
        if not _TENANT.match(tenant):
            raise ValueError(f"{setting}: {tenant!r} is not a tenant name")
        try:
            value = float(days)
        except ValueError:
            raise ValueError(f"{setting}: {item!r} is not tenant=days") from None
        if value <= 0 or tenant in tenants:
            raise ValueError(f"{setting}: {item!r}: days must be more than 0, once a tenant")
        tenants[tenant] = timedelta(days=value)
    return Retention(timedelta(days=default_days), tenants)


@dataclass(frozen=True)
class Kept:
    """One quarantined item, as the index names it."""

    tenant: str
    item: str
    at: datetime
    objects: tuple[str, ...] = ()  # names in the channel's quarantine object store
    where: Mapping[str, str | int] = field(default_factory=dict)  # e.g. an IMAP location
    senders: tuple[str, ...] = ()

    def keys(self) -> list[str]:
        return [f"{s}.{self.item}" for s in self.senders or (NO_SENDER,)]

    def encode(self) -> bytes:
        return json.dumps(
            {
                "tenant": self.tenant,
                "item": self.item,
                "at": self.at.isoformat(),
                "objects": list(self.objects),
                "where": dict(self.where),
                "senders": list(self.senders),
            },
            sort_keys=True,
        ).encode()

    @staticmethod
    def decode(data: bytes) -> Kept | None:
        try:
            v = json.loads(data)
            return Kept(
                v["tenant"],
                v["item"],
                datetime.fromisoformat(v["at"]),
                tuple(v.get("objects", ())),
                dict(v.get("where", {})),
                tuple(v.get("senders", ())),
            )
        except (ValueError, KeyError, TypeError):
            return None


class QuarantineIndex:
    """A channel's quarantine index (see the module's docstring)."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext, bucket: str, replicas: int = 1) -> QuarantineIndex:
        return cls(await stores.key_value(js, bucket, replicas=replicas))

    async def add(self, kept: Kept) -> None:
        """Index `kept` under each of its senders (or `none`); written again, it is the same."""
        data = kept.encode()
        for key in dict.fromkeys(kept.keys()):
            await self.kv.put(key, data)

    async def _matching(self, pattern: str) -> list[Kept]:
        found = (Kept.decode(e.value or b"") for e in await stores.matching(self.kv, pattern))
        return [kept for kept in found if kept is not None]

    async def of_senders(self, tenant: str, senders: Iterable[str]) -> list[Kept]:
        """`tenant`'s items from any of `senders` (sender keys), each once."""
        items: dict[str, Kept] = {}
        for sender in dict.fromkeys(senders):
            if not sender.isalnum() or sender == NO_SENDER:
                continue  # not a sender key (a pattern, or the `none` of the unparsed)
            for kept in await self._matching(f"{sender}.*"):
                if kept.tenant == tenant:
                    items.setdefault(kept.item, kept)
        return list(items.values())

    async def expired(self, retention: Retention, now: datetime | None = None) -> list[Kept]:
        """Every item kept longer than its tenant's retention, each once."""
        now = now or datetime.now(UTC)
        items: dict[str, Kept] = {}
        for kept in await self._matching(">"):
            if now - kept.at >= retention.of(kept.tenant):
                items.setdefault(f"{kept.tenant}/{kept.item}", kept)
        return list(items.values())

    async def forget(self, kept: Kept) -> None:
        """Purge the item's keys, with their history: the index no longer names its senders."""
        for key in dict.fromkeys(kept.keys()):
            await self.kv.purge(key)
