"""A batch's new rows, inserted with one Core executemany per table instead of ORM flushes.

While the case consumer applies a batch of events in one transaction without savepoints (see
CaseHandlers.batch), the rows its events create are staged here: plain rows (audit entries,
messages, identities) and new ORM objects (customers, cases, contacts) that later events of the
batch may still change. They are written in foreign key order before any other statement the
session runs (a query must see them, and an ORM flush may refer to them) and before the commit.
An object written before the end of the batch then joins the session as a persistent row, so a
later change to it is an ordinary ORM update.

Outside such a batch, `add` and `add_row` are `session.add`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, insert, inspect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapper, Session, make_transient_to_detached

from switchboard.case.adapters.orm import Base

KEY = "bulk_inserts"


class BulkInserts:
    def __init__(self) -> None:
        self._rows: dict[Table, list[dict[str, Any]]] = {}
        self._objects: dict[tuple[type, Any], Any] = {}

    def __bool__(self) -> bool:
        return bool(self._rows or self._objects)

    def add_row(self, table: Table, values: dict[str, Any]) -> None:
        """Stage a row; every row of a table names the same columns (one executemany)."""
        self._rows.setdefault(table, []).append(values)

    def add(self, obj: Any) -> None:
        """Stage a new ORM object (its primary key set), written with its attributes' values at
        the time of the write. An attribute not set takes its column's default (or None) now,
        as a flush would have given it."""
        mapper: Mapper[Any] = inspect(type(obj))
        _complete(mapper, obj)
        key = mapper.primary_key_from_instance(obj)
        self._objects[(type(obj), key[0] if len(key) == 1 else tuple(key))] = obj

    def get(self, model: type, key: Any) -> Any:
        """The staged, not yet written object of `model` with primary key `key`, if any."""
        return self._objects.get((model, key))

    def write(self, session: Session, attach: bool = True) -> None:
        """Insert everything staged, one statement per table; with `attach`, the written objects
        become persistent in `session` (locked: this transaction created them)."""
        if not self:
            return
        objects = list(self._objects.items())
        by_table: dict[Table, list[dict[str, Any]]] = dict(self._rows)
        for (model, _key), obj in objects:
            table = model.__table__  # type: ignore[attr-defined]
            by_table.setdefault(table, []).append(_values(inspect(model), obj))
        self._rows, self._objects = {}, {}
        connection = session.connection()
        for table in Base.metadata.sorted_tables:
            rows = by_table.get(table)
            if rows:
                connection.execute(insert(table), rows)
        if attach and objects:
            locked: set[tuple[Any, Any]] = session.info.setdefault("locked_rows", set())
            held: list[Any] = session.info.setdefault("held_rows", [])
            absent: set[tuple[Any, Any]] = session.info.setdefault("absent_rows", set())
            for key, obj in objects:
                make_transient_to_detached(obj)
                session.add(obj)
                locked.add(key)
                absent.discard(key)
                held.append(obj)


def _complete(mapper: Mapper[Any], obj: Any) -> None:
    state = obj.__dict__
    for prop in mapper.column_attrs:
        if prop.key in state:
            continue
        default = prop.columns[0].default
        if default is None:
            value = None
        elif default.is_callable:
            value = default.arg(None)  # type: ignore[attr-defined]
        else:
            value = default.arg  # type: ignore[attr-defined]
        setattr(obj, prop.key, value)


def _values(mapper: Mapper[Any], obj: Any) -> dict[str, Any]:
    state = obj.__dict__
    return {prop.columns[0].key: state[prop.key] for prop in mapper.column_attrs}


def staged(session: AsyncSession | Session) -> BulkInserts | None:
    bulk: BulkInserts | None = session.info.get(KEY)
    return bulk


def add(session: AsyncSession, obj: Any) -> None:
    """`session.add(obj)` for a new object, staged instead inside a bulk batch."""
    bulk = session.info.get(KEY)
    if bulk is None:
        session.add(obj)
    else:
        bulk.add(obj)


def add_row(session: AsyncSession, model: Any, values: dict[str, Any]) -> None:
    """Insert a row that nothing reads back as an object in this transaction: staged inside a
    bulk batch, else `session.add(model(**values))`."""
    bulk = session.info.get(KEY)
    if bulk is None:
        session.add(model(**values))
    else:
        bulk.add_row(model.__table__, values)
