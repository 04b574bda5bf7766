"""The audit trail is a hash chain per case: it verifies, and `switchboard case verify` (which reads
the case store without the case service) names every case whose stored entries were edited by
hand, computing each entry's hash exactly as the case service does."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from switchboard.case import audit
from switchboard.case.adapters import orm
from switchboard.case.handlers import CaseHandlers
from switchboard.cli.__main__ import main as cli_main
from switchboard.core import events, hash_chain
from switchboard.testing.contacts import contact_created
from switchboard.v1 import contact_pb2, events_pb2


def created(contact_id: str, email: str) -> events_pb2.ContactCreated:
    return contact_created(
        contact_id, email=email, text="hello", at=datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    )


def verify(*args: str) -> tuple[int, str]:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        cli_main(["case", "verify", *args])
    return int(exit_.value.code or 0), out.getvalue()


async def test_editing_an_entry_by_hand_is_detected_and_named(
    sessions: async_sessionmaker[AsyncSession],
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    handlers = CaseHandlers(sessions, "case")
    for contact_id, email in (("c-1", "ana@example.com"), ("c-2", "bo@example.com")):
        await handlers.on_contact_created(created(contact_id, email))
    await handlers.on_contact_assigned(
        events_pb2.ContactAssigned(
            meta=events.new_meta("acme", contact_pb2.CHANNEL_CHAT, "test"),
            contact_id="c-1",
            agent_id="agent-1",
        )
    )
    async with sessions() as session:
        cases = {
            c.contact_id: (await session.get(orm.Case, c.case_id))
            for c in await session.scalars(select(orm.Contact))
        }
        checked, breaks = await audit.verify(session)
    tampered, untouched = cases["c-1"], cases["c-2"]
    assert tampered is not None and untouched is not None
    assert breaks == [] and checked >= 2

    monkeypatch.setenv("CASE_DATABASE_URL", database_url)
    code, out = await asyncio.to_thread(verify)
    assert code == 0, out
    assert "intact" in out

    # Someone rewrites who the case was assigned to, directly in the database (without the keys,
    # in the sealed data: here its last characters).
    async with sessions.begin() as session:
        entry = await session.scalar(
            select(orm.AuditEntry).where(
                orm.AuditEntry.entity_id == tampered.id, orm.AuditEntry.action == "assigned"
            )
        )
        assert entry is not None
        await session.execute(
            update(orm.AuditEntry)
            .where(
                orm.AuditEntry.entity == entry.entity,
                orm.AuditEntry.entity_id == entry.entity_id,
                orm.AuditEntry.seq == entry.seq,
            )
            .values(data=entry.data[:-4] + ("AAAA" if entry.data[-4:] != "AAAA" else "BBBB"))
        )

    code, out = await asyncio.to_thread(verify)
    assert code == 1
    assert tampered.id in out and tampered.reference in out
    assert untouched.id not in out
    assert f"entry {entry.seq}" in out

    code, out = await asyncio.to_thread(verify, "--case", untouched.reference)
    assert code == 0, out
    code, out = await asyncio.to_thread(verify, "--case", tampered.id)
    assert code == 1 and tampered.id in out

    # A whole entry deleted (not the last) also breaks the chain.
    async with sessions.begin() as session:
        await session.execute(
            orm.AuditEntry.__table__.delete().where(
                orm.AuditEntry.entity_id == untouched.id, orm.AuditEntry.seq == 1
            )
        )
    code, out = await asyncio.to_thread(verify)
    assert code == 1
    assert tampered.id in out and untouched.id in out


@settings(max_examples=200, deadline=None)
@given(
    prev=st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
    tenant=st.text(max_size=20),
    entity=st.sampled_from([audit.CASE, audit.CUSTOMER]),
    entity_id=st.text(max_size=40),
    seq=st.integers(min_value=1, max_value=2**31),
    at=st.datetimes(timezones=st.timezones()),
    actor=st.text(max_size=40),
    action=st.text(max_size=20),
    data=st.dictionaries(st.text(max_size=10), st.text(max_size=30) | st.integers(), max_size=5),
)
def test_an_entry_hashes_the_same_whatever_zone_its_time_is_read_in(
    prev: str,
    tenant: str,
    entity: str,
    entity_id: str,
    seq: int,
    at: datetime,
    actor: str,
    action: str,
    data: dict[str, object],
) -> None:
    """The case service hashes an entry with its time as written (aware); `switchboard case
    verify` reads it back from SQLite without an offset (naive UTC) or from PostgreSQL in the
    session's zone: one hash for all."""
    payload = audit.canonical(data)
    written = audit.entry_hash(prev, tenant, entity, entity_id, seq, at, actor, action, payload)
    naive_utc = at.astimezone(UTC).replace(tzinfo=None)
    for read in (naive_utc, at.astimezone(UTC), at.astimezone(timezone(timedelta(hours=9)))):
        args = (prev, tenant, entity, entity_id, seq, read, actor, action, payload)
        assert hash_chain.entry_hash(*args) == written
