"""The case store's data keys: a tenant's key wrapped by the master key, a customer's key wrapped
by its tenant's, in the `data_keys` table (docs/security.md, "Personal data at rest").

Every transaction begins by reading the keys added since this process last looked (one indexed
query, usually answering nothing), so sealed values written by another replica open here. A
transaction's new keys are its own until it commits: a rolled back customer leaves no key behind
and, more to the point, no key is used that was never stored.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Select, bindparam, delete, event, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, SessionTransaction

from switchboard.case.adapters import bulk, crypto
from switchboard.case.adapters.orm import DataKey, new_id, utc_now

logger = logging.getLogger(__name__)

KEY = "keyring"
PENDING = "new_data_keys"  # session.info: this transaction's keys, by owner
ERASING = "erased_data_keys"  # session.info: the keys this transaction destroys, and owners
TENANT = ""  # the customer_id of a tenant's own key
# A number skipped is watched for this long (longer than any transaction adding a key stays
# open), and only the last GAP_SPAN below the newest: older ones were erasures or rollbacks.
GAP_SECONDS, GAP_SPAN = 600.0, 100

# Without a master key of its own a development setup uses this one; production refuses it.
DEV_MASTER_KEY = hashlib.sha256(b"switchboard development master key").digest()


def _master_id(key: bytes) -> str:
    return "m-" + hashlib.sha256(b"switchboard master key id" + key).hexdigest()[:16]


def read_master_key(text: str) -> bytes:
    """A master key as written in a file or a variable: base64 (or hex) of 32 random bytes."""
    text = text.strip()
    try:
        key = bytes.fromhex(text) if len(text) == 64 else base64.b64decode(text, validate=True)
    except ValueError:
        raise ValueError("a master key is base64 or hex of 32 bytes") from None
    if len(key) != crypto.KEY_BYTES:
        raise ValueError("a master key is base64 or hex of 32 bytes")
    return key


def master_keys_from(key: str, key_file: str, previous_files: str) -> MasterKeys:
    """The master keys a service is configured with (a variable, else a file; files of previous
    keys, comma-separated, for rotation); the development key if none is given."""
    if key_file and not key:
        key = Path(key_file).read_text()
    previous = [read_master_key(Path(p).read_text()) for p in previous_files.split(",") if p]
    return MasterKeys(read_master_key(key) if key else DEV_MASTER_KEY, previous)


@dataclass
class MasterKeys:
    """The master key new tenant keys are wrapped with, and older ones that may still wrap some."""

    current: bytes
    previous: list[bytes] = field(default_factory=list)

    @property
    def current_id(self) -> str:
        return _master_id(self.current)

    @property
    def is_development(self) -> bool:
        return self.current == DEV_MASTER_KEY

    def by_id(self, key_id: str) -> bytes | None:
        for key in (self.current, *self.previous):
            if _master_id(key) == key_id:
                return key
        return None


Owner = tuple[str, str]  # (tenant, customer_id or TENANT)


class Keyring:
    """Finds, creates and destroys the data keys of one case store."""

    def __init__(self, masters: MasterKeys) -> None:
        self.masters = masters
        self._owners: dict[Owner, str] = {}  # key id by owner
        self._tenant_keys: dict[str, bytes] = {}  # unwrapped, by key id (they unwrap others)
        self._index_keys: dict[str, bytes] = {}  # by tenant
        self._erased: set[Owner] = set()  # customers whose key was destroyed
        self._seq = 0
        # Numbers below _seq not seen yet, and since when: a transaction that took its number
        # before another one committed may still commit (or was rolled back: given up later).
        self._gaps: dict[int, float] = {}

    # Reading the table.

    def refresh(self, connection: Connection) -> None:
        """Learn the keys added (or destroyed) since the last look, in the order they were."""
        now = time.monotonic()
        self._gaps = {s: t for s, t in self._gaps.items() if now - t < GAP_SECONDS}
        if self._gaps:
            rows = connection.execute(
                _keys_newer_or_in(), {"seq": self._seq, "gaps": sorted(self._gaps)}
            )
        else:
            rows = connection.execute(_keys_newer(), {"seq": self._seq})
        for seq, key_id, tenant, customer_id, wrapped, wrapped_by in rows:
            if seq > self._seq:
                skipped = range(max(self._seq + 1, seq - GAP_SPAN), seq)
                self._gaps.update((s, now) for s in skipped)
                self._seq = seq
            self._gaps.pop(seq, None)
            self._learn(key_id, tenant, customer_id, wrapped, wrapped_by)

    def _learn(
        self, key_id: str, tenant: str, customer_id: str, wrapped: bytes | None, wrapped_by: str
    ) -> None:
        if wrapped is None:
            crypto.forget(key_id)
            self._owners.pop((tenant, customer_id), None)
            self._erased.add((tenant, customer_id))
            return
        if self._owners.get((tenant, customer_id)) == key_id:
            return  # made and committed here: its key is known already, no need to unwrap it
        if customer_id == TENANT:
            kek = self.masters.by_id(wrapped_by)
        else:
            kek = self._tenant_keys.get(wrapped_by)
        if kek is None:
            logger.error("data key %s: its wrapping key %s is not known here", key_id, wrapped_by)
            return
        key = crypto.unwrap(kek, wrapped, _aad(tenant, customer_id, key_id))
        if customer_id == TENANT:
            self._tenant_keys[key_id] = key
            self._index_keys[tenant] = crypto.index_key(key)
        crypto.remember(key_id, key)
        self._owners[(tenant, customer_id)] = key_id

    # Using and creating keys, inside a write transaction.

    def key_id(self, session: AsyncSession, tenant: str, customer_id: str = TENANT) -> str:
        """The id of the owner's data key, created (with its tenant's) if it has none yet. What
        is written for an erased customer is sealed with its tenant's key."""
        if (tenant, customer_id) in self._erased:
            customer_id = TENANT
        owner = (tenant, customer_id)
        known = self._owners.get(owner)
        if known is not None:
            return known
        pending: dict[Owner, tuple[str, bytes]] = session.info.setdefault(PENDING, {})
        if owner in pending:
            return pending[owner][0]
        if customer_id == TENANT:
            kek, kek_id = self.masters.current, self.masters.current_id
        else:
            kek_id = self.key_id(session, tenant)
            kek = self._tenant_key(session, kek_id)
        key_id, key = new_id(), crypto.new_key()
        bulk.add_row(
            session,
            DataKey,
            {
                "id": key_id,
                "tenant": tenant,
                "customer_id": customer_id,
                "wrapped": crypto.wrap(kek, key, _aad(tenant, customer_id, key_id)),
                "wrapped_by": kek_id,
                "created_at": utc_now(),
            },
        )
        crypto.remember(key_id, key)
        pending[owner] = (key_id, key)
        return key_id

    def _tenant_key(self, session: AsyncSession, key_id: str) -> bytes:
        key = self._tenant_keys.get(key_id)
        if key is not None:
            return key
        for pending_id, pending_key in session.info.get(PENDING, {}).values():
            if pending_id == key_id:
                return pending_key  # type: ignore[no-any-return]
        raise LookupError(f"tenant key {key_id} is not known")

    def seal(self, session: AsyncSession, tenant: str, customer_id: str, text: str) -> str:
        """`text`, to be written sealed with the customer's key (the tenant's for TENANT)."""
        if not text:
            return text
        return crypto.Sealable(text, self.key_id(session, tenant, customer_id))

    def index(self, session: AsyncSession, tenant: str, value: str) -> str:
        """The blind index of an identity value of `tenant` (customer_identities.value)."""
        key = self._index_keys.get(tenant)
        if key is None:
            key = crypto.index_key(self._tenant_key(session, self.key_id(session, tenant)))
        return crypto.blind_index(key, value)

    def _committed(
        self, pending: dict[Owner, tuple[str, bytes]], erased: list[tuple[str, Owner]]
    ) -> None:
        for key_id, owner in erased:
            crypto.forget(key_id)
            self._owners.pop(owner, None)
            self._erased.add(owner)
        for (tenant, customer_id), (key_id, key) in pending.items():
            self._owners[(tenant, customer_id)] = key_id
            if customer_id == TENANT:
                self._tenant_keys[key_id] = key
                self._index_keys[tenant] = crypto.index_key(key)

    # Erasure and rotation.

    async def erase(self, session: AsyncSession, tenant: str, customer_ids: Iterable[str]) -> int:
        """Destroy the customers' keys: once committed, everything sealed with them reads as
        crypto.ERASED, here and (at their next transaction) in every other replica. The number
        destroyed."""
        rows = list(
            await session.scalars(
                select(DataKey).where(
                    DataKey.tenant == tenant,
                    DataKey.customer_id.in_(list(customer_ids)),
                    DataKey.wrapped.is_not(None),
                )
            )
        )
        for row in rows:
            # Deleted and added again as a tombstone: a new seq, so replicas learn of it.
            await session.execute(delete(DataKey).where(DataKey.seq == row.seq))
            session.expunge(row)
            session.add(
                DataKey(
                    id=row.id,
                    tenant=tenant,
                    customer_id=row.customer_id,
                    wrapped=None,
                    wrapped_by=row.wrapped_by,
                    created_at=row.created_at,
                    erased_at=utc_now(),
                )
            )
            session.info.setdefault(ERASING, []).append((row.id, (tenant, row.customer_id)))
        await session.flush()
        return len(rows)

    async def rotate(self, sessions: async_sessionmaker[AsyncSession]) -> int:
        """Wrap again with the current master key every tenant key wrapped with a previous one.
        Sealed values and customer keys are untouched; the number of keys wrapped again."""
        current, current_id = self.masters.current, self.masters.current_id
        async with sessions.begin() as session:
            rows = list(
                await session.scalars(
                    select(DataKey).where(
                        DataKey.customer_id == TENANT,
                        DataKey.wrapped.is_not(None),
                        DataKey.wrapped_by != current_id,
                    )
                )
            )
            for row in rows:
                old = self.masters.by_id(row.wrapped_by)
                if old is None or row.wrapped is None:
                    raise LookupError(f"tenant key {row.id}: master key {row.wrapped_by} not given")
                aad = _aad(row.tenant, TENANT, row.id)
                key = crypto.unwrap(old, row.wrapped, aad)
                await session.execute(
                    update(DataKey)
                    .where(DataKey.seq == row.seq)
                    .values(wrapped=crypto.wrap(current, key, aad), wrapped_by=current_id)
                )
        if rows:
            logger.info("%d tenant keys wrapped with master key %s", len(rows), current_id)
        return len(rows)


_KEY_COLUMNS = (
    DataKey.seq,
    DataKey.id,
    DataKey.tenant,
    DataKey.customer_id,
    DataKey.wrapped,
    DataKey.wrapped_by,
)


@functools.cache
def _keys_newer() -> Select[int, str, str, str, bytes | None, str]:
    """The keys after number `seq` (built once: every transaction begins with it)."""
    return select(*_KEY_COLUMNS).where(DataKey.seq > bindparam("seq")).order_by(DataKey.seq)


@functools.cache
def _keys_newer_or_in() -> Select[int, str, str, str, bytes | None, str]:
    """The keys after number `seq`, and those numbered in `gaps`."""
    return (
        select(*_KEY_COLUMNS)
        .where(
            or_(DataKey.seq > bindparam("seq"), DataKey.seq.in_(bindparam("gaps", expanding=True)))
        )
        .order_by(DataKey.seq)
    )


def _aad(tenant: str, customer_id: str, key_id: str) -> bytes:
    # A wrapped key opens only as the key of its owner.
    return f"{tenant}\x00{customer_id}\x00{key_id}".encode()


def of(session: AsyncSession) -> Keyring:
    keyring: Keyring = session.info[KEY]
    return keyring


@event.listens_for(Session, "after_begin")
def _refresh_at_begin(session: Session, _transaction: SessionTransaction, connection: Any) -> None:
    keyring: Keyring | None = session.info.get(KEY)
    if keyring is not None:
        keyring.refresh(connection)


@event.listens_for(Session, "after_commit")
def _keep_committed_keys(session: Session) -> None:
    keyring: Keyring | None = session.info.get(KEY)
    pending, erased = session.info.pop(PENDING, None), session.info.pop(ERASING, None)
    if keyring is not None and (pending or erased):
        keyring._committed(pending or {}, erased or [])
