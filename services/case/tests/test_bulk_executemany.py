"""`bulk.executemany`, the case store's executemany of a batch's new and changed rows, writes what
SQLAlchemy's own executemany writes, on every configured database (it builds the rows' parameters
itself); and on SQLite a UTC time is written as SQLAlchemy's DATETIME text and read back as
SQLAlchemy reads it."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import DateTime, Text, insert, select, type_coerce
from sqlalchemy import event as sa_event
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from switchboard.case.adapters import bulk, keyring, orm
from switchboard.case.adapters.orm import AuditEntry, Customer

T0 = datetime(2025, 3, 4, 9, 0, tzinfo=UTC)
KST = timezone(timedelta(hours=9))


def test_sqlite_utc_time_is_sqlalchemys_datetime_text() -> None:
    dialect = sqlite.dialect()
    ours = orm.UTCDateTime().bind_processor(dialect)
    theirs = DateTime(timezone=True).dialect_impl(dialect).bind_processor(dialect)
    assert ours is not None and theirs is not None
    pick = random.Random(7)
    for _ in range(2000):
        at = datetime(
            pick.randint(2, 9998),
            pick.randint(1, 12),
            pick.randint(1, 28),
            pick.randint(0, 23),
            pick.randint(0, 59),
            pick.randint(0, 59),
            pick.choice([0, pick.randint(0, 999_999)]),
            tzinfo=pick.choice([UTC, KST, timezone(timedelta(hours=-5, minutes=-30))]),
        )
        assert ours(at) == theirs(at.astimezone(UTC))
    assert ours(datetime(2025, 3, 4, 18, 0, tzinfo=KST)) == "2025-03-04 09:00:00.000000"
    assert ours(None) is None
    with pytest.raises(ValueError, match="naive"):
        ours(datetime(2025, 3, 4, 9, 0))


def test_sqlite_utc_time_reads_back_as_sqlalchemy_reads_it() -> None:
    dialect = sqlite.dialect()
    ours = orm.UTCDateTime().result_processor(dialect, None)
    parse = DateTime(timezone=True).dialect_impl(dialect).result_processor(dialect, None)
    assert ours is not None and parse is not None
    for text in (
        "2025-03-04 09:00:00.000000",
        "2025-03-04 09:00:00.123456",
        "2025-03-04 09:00:00",  # CURRENT_TIMESTAMP's form
        "0999-12-31 23:59:59.999999",
    ):
        assert ours(text) == parse(text).replace(tzinfo=UTC)
        assert ours(text).tzinfo is UTC
    assert ours(None) is None


def _customers(session: AsyncSession, prefix: str) -> list[dict[str, Any]]:
    keys = keyring.of(session)
    return [
        {
            "id": f"{prefix}{i}",
            "tenant": "acme",
            "display_name": keys.seal(
                session, "acme", keyring.TENANT, f"이름 {i}" if i % 2 else ""
            ),
            "created_at": T0 + timedelta(seconds=i, microseconds=i * 7) if i % 3 else T0,
            "merged_into": None,
        }
        for i in range(5)
    ]


def _entries(prefix: str) -> list[dict[str, Any]]:
    return [
        {
            "entity": "case",
            "entity_id": f"{prefix}-case",
            "seq": i + 1,
            "tenant": "acme",
            "at": (T0 + timedelta(minutes=i)).astimezone(KST),
            "actor": "system",
            "action": "noted",
            "data": f'{{"n":{i}}}',
            "prev_hash": "0" * 64,
            "hash": f"{i:064d}",
        }
        for i in range(4)
    ]


async def test_executemany_writes_what_sqlalchemy_writes(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions.begin() as session:
        ours, theirs = _customers(session, "ours-"), _customers(session, "theirs-")
        mine, others = _entries("ours"), _entries("theirs")

        def write(sync: Session) -> None:
            connection = sync.connection()
            bulk.executemany(connection, bulk._insert(Customer.__table__), ours)  # type: ignore[arg-type]
            bulk.executemany(connection, bulk._insert(AuditEntry.__table__), mine)  # type: ignore[arg-type]
            # Built here, not by SQLAlchemy.
            keys = tuple(ours[0])
            assert bulk._plan(bulk._insert(Customer.__table__), keys, connection.dialect)  # type: ignore[arg-type]
            connection.execute(insert(Customer.__table__), theirs)  # type: ignore[arg-type]
            connection.execute(insert(AuditEntry.__table__), others)  # type: ignore[arg-type]
            # And an UPDATE of changed columns, by primary key.
            changed = bulk.update_statement(Customer.__mapper__, ("created_at", "merged_into"))
            rows = [
                {"created_at": T0 + timedelta(days=1), "merged_into": f"{p}0", "pk_0": f"{p}{i}"}
                for p in ("ours-", "theirs-")
                for i in (1, 2)
            ]
            bulk.executemany(connection, changed, rows[:2])
            connection.execute(changed, rows[2:])

        await session.run_sync(write)

    async with sessions() as session:
        table = Customer.__table__
        found = {
            c.id: (c.tenant, c.display_name, c.created_at, c.merged_into)
            for c in await session.scalars(select(Customer))
        }
        # As stored: the same text, but for the sealed names (each sealed with its own nonce).
        stored = {
            r.id: r
            for r in await session.execute(
                select(table.c.id, type_coerce(table.c.created_at, Text).label("at"))  # type: ignore[attr-defined]
            )
        }
        entries = {
            (e.entity_id.removeprefix("ours").removeprefix("theirs"), e.seq): (
                e.tenant,
                e.at,
                e.actor,
                e.action,
                e.data,
                e.prev_hash,
                e.hash,
            )
            for e in await session.scalars(select(AuditEntry))
        }
    for i in range(5):
        mine_, theirs_ = found[f"ours-{i}"], found[f"theirs-{i}"]
        assert mine_[:3] == theirs_[:3]
        assert (mine_[3] or "").removeprefix("ours-") == (theirs_[3] or "").removeprefix("theirs-")
        assert stored[f"ours-{i}"].at == stored[f"theirs-{i}"].at
    assert found["ours-1"][1] == "이름 1" and found["ours-1"][2] == T0 + timedelta(days=1)
    assert found["ours-1"][3] == "ours-0" and found["ours-3"][3] is None
    assert len(entries) == 4
    assert entries[("-case", 2)][1] == T0 + timedelta(minutes=1)


async def test_executemany_leaves_defaults_to_sqlalchemy(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Rows that leave a column with a Python-side default unnamed get it, as from SQLAlchemy."""
    async with sessions.begin() as session:

        def write(sync: Session) -> None:
            rows = [{"id": f"d{i}", "tenant": "acme"} for i in range(3)]
            bulk.executemany(sync.connection(), bulk._insert(Customer.__table__), rows)  # type: ignore[arg-type]

        await session.run_sync(write)
    async with sessions() as session:
        made = list(await session.scalars(select(Customer).order_by(Customer.id)))
    assert [c.id for c in made] == ["d0", "d1", "d2"]
    assert all(c.created_at is not None and c.display_name == "" for c in made)


async def test_a_keyed_update_of_many_rows_writes_the_last_row_of_each_key(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Rows of one UPDATE by primary key, some naming the same key: each row ends as the last of
    its rows set it, as if they ran one after another. On PostgreSQL they go as one statement
    over arrays of their values (an executemany there is one statement per row)."""
    sent: list[str] = []

    async with sessions.begin() as session:
        rows = _customers(session, "k-")
        # Sealed (personal data) and time columns through their bind processors; NULLs kept.
        changes = [
            {
                "pk_0": f"k-{i % 3}",
                "display_name": keyring.of(session).seal(
                    session, "acme", keyring.TENANT, f"바뀐 이름 {i}"
                ),
                "created_at": (T0 + timedelta(hours=i)).astimezone(KST),
                "merged_into": None if i % 2 else f"k-{i}",
            }
            for i in range(7)
        ]

        def write(sync: Session) -> None:
            connection = sync.connection()
            bulk.executemany(connection, bulk._insert(Customer.__table__), rows)  # type: ignore[arg-type]
            changed = bulk.update_statement(
                Customer.__mapper__, ("created_at", "display_name", "merged_into")
            )

            def seen(_c: Any, _cursor: Any, statement: str, *_args: Any) -> None:
                sent.append(statement)

            sa_event.listen(connection, "before_cursor_execute", seen)
            try:
                bulk.executemany(connection, changed, changes)
            finally:
                sa_event.remove(connection, "before_cursor_execute", seen)
            dialect = connection.dialect.name

            assert len(sent) == 1
            if dialect == "postgresql":
                assert "unnest(" in sent[0]
            else:
                assert "unnest(" not in sent[0]

        await session.run_sync(write)

    async with sessions() as session:
        found = {c.id: c for c in await session.scalars(select(Customer))}
    # k-0 was last set by row 6, k-1 by row 4, k-2 by row 5; k-3 and k-4 untouched.
    for key, last in (("k-0", 6), ("k-1", 4), ("k-2", 5)):
        assert found[key].display_name == f"바뀐 이름 {last}"
        assert found[key].created_at == T0 + timedelta(hours=last)
        assert found[key].merged_into == (None if last % 2 else f"k-{last}")
    assert found["k-3"].display_name == "이름 3" and found["k-3"].merged_into is None
    assert found["k-4"].created_at == T0 + timedelta(seconds=4, microseconds=28)


def test_a_keyed_update_names_every_column_it_sets() -> None:
    """Rows that leave out a column of the UPDATE are refused before anything is sent."""
    from sqlalchemy.dialects import postgresql

    changed = bulk.update_statement(Customer.__mapper__, ("created_at", "merged_into"))
    with pytest.raises(ValueError, match="the UPDATE binds"):
        bulk._array_update(changed, ("pk_0", "created_at"), postgresql.asyncpg.dialect())
