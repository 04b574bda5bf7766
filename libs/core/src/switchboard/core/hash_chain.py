"""Append-only hash chains (the case store's audit trail), computed and checked the same way by
the service that writes them and the operator's tool that verifies them offline.

Each entry's hash covers the previous entry's hash and the entry's own canonical JSON (tenant,
entity, sequence number, time, actor, action, data), so editing, deleting or reordering any
stored entry breaks the chain from there on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

GENESIS = "0" * 64

# json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False), without building
# an encoder per call.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
# The C encoder `_CANONICAL.encode` makes on every call (with the same settings), made once; it
# does not look for circular references, which no entry's data holds (one would recurse until
# RecursionError rather than raise ValueError).
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
_C_CANONICAL = (
    _c_make_encoder(
        None,
        _CANONICAL.default,
        json.encoder.encode_basestring,  # type: ignore[attr-defined]
        None,
        ":",
        ",",
        True,  # sort_keys
        False,  # skipkeys
        True,  # allow_nan
    )
    if _c_make_encoder is not None
    else None
)


def canonical(value: Any) -> str:
    if _C_CANONICAL is None:
        return _CANONICAL.encode(value)
    return "".join(_C_CANONICAL(value, 0))


def utc(at: datetime) -> datetime:
    """A stored time as UTC (SQLite keeps no offset, and it is UTC)."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def entry_hash(
    prev_hash: str,
    tenant: str,
    entity: str,
    entity_id: str,
    seq: int,
    at: datetime,
    actor: str,
    action: str,
    data: str,
) -> str:
    """SHA-256 over the previous hash and the entry's canonical JSON: `canonical` of {"tenant":
    tenant, "entity": entity, "entity_id": entity_id, "seq": seq, "at": at in UTC (ISO 8601, in
    microseconds), "actor": actor, "action": action, "data": data}, written here key by key in
    sorted order (the same text, without walking a dict)."""
    q = _string
    body = (
        f'{{"action":{q(action)},"actor":{q(actor)},'
        f'"at":{q(utc(at).isoformat(timespec="microseconds"))},"data":{q(data)},'
        f'"entity":{q(entity)},"entity_id":{q(entity_id)},"seq":{int(seq)!r},'
        f'"tenant":{q(tenant)}}}'
    )
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


# A string as `canonical` writes it (JSON, not ASCII-escaped).
_string = json.encoder.encode_basestring  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Break:
    """Where a chain stops verifying."""

    entity: str
    entity_id: str
    tenant: str
    seq: int
    reason: str


def check_chain(entries: Iterable[Any]) -> Break | None:
    """The first break in one entity's entries (objects or rows with entity, entity_id, tenant,
    seq, at, actor, action, data, prev_hash and hash, in seq order), or None if it is intact."""
    prev = GENESIS
    for expected, e in enumerate(entries, start=1):
        if e.seq != expected:
            return Break(e.entity, e.entity_id, e.tenant, e.seq, f"entry {expected} is missing")
        if e.prev_hash != prev:
            return Break(e.entity, e.entity_id, e.tenant, e.seq, "prev_hash does not link")
        computed = entry_hash(
            prev, e.tenant, e.entity, e.entity_id, e.seq, e.at, e.actor, e.action, e.data
        )
        if computed != e.hash:
            return Break(e.entity, e.entity_id, e.tenant, e.seq, "hash does not match the entry")
        prev = e.hash
    return None


async def chains(rows: AsyncIterable[Any]) -> AsyncIterator[list[Any]]:
    """The chains in `rows` (entries ordered by entity, entity_id, seq), one list each."""
    current: list[Any] = []
    async for e in rows:
        if current and (current[0].entity, current[0].entity_id) != (e.entity, e.entity_id):
            yield current
            current = []
        current.append(e)
    if current:
        yield current


async def verify(rows: AsyncIterable[Any]) -> tuple[int, list[Break]]:
    """Check every chain in `rows` (ordered by entity, entity_id, seq): the number of chains
    checked and every break found."""
    checked, breaks = 0, []
    async for chain in chains(rows):
        checked += 1
        found = check_chain(chain)
        if found is not None:
            breaks.append(found)
    return checked, breaks
