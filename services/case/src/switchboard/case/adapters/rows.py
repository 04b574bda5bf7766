"""Rows read with one Core SELECT and written back with one executemany UPDATE per table and set
of changed columns, instead of ORM objects: for the contacts a batch's routing events (queued,
offered, assigned) change, and their cases.

A `PlainRow` has an attribute per column of its table (sealed personal data left unread), so
the code that changes a contact or a case through the ORM changes it the same way; what differs
from the row as read is written at the end of the batch.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, bindparam, inspect, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapper, Session

from switchboard.case.adapters import bulk, crypto


class PlainRow:
    """One row's columns as attributes, and the values it was read with."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)
        self._read = values

    if TYPE_CHECKING:

        def __getattr__(self, name: str) -> Any: ...  # a column

    def changes(self) -> dict[str, Any]:
        now = self.__dict__
        return {k: now[k] for k, v in self._read.items() if now[k] != v}


@cache
def columns(model: Any) -> tuple[tuple[str, Any], ...]:
    """(attribute key, column) of each column of `model` a plain row holds: all but sealed ones."""
    mapper: Mapper[Any] = inspect(model)
    return tuple(
        (p.key, p.columns[0])
        for p in mapper.column_attrs
        if not isinstance(p.columns[0].type, crypto.SealedText)
    )


async def load_with_parent(
    session: AsyncSession,
    model: Any,
    keys: set[Any],
    parent: Any,
    foreign_key: str,
    extra: tuple[Any, ...] = (),
) -> tuple[dict[Any, PlainRow], dict[Any, PlainRow], dict[Any, tuple[Any, ...]]]:
    """The rows of `model` by `keys` and the `parent` rows they refer to by `foreign_key`, read
    (and locked) with one joined Core SELECT in key order, before the batch changes anything, as
    plain rows by primary key; with the columns `extra` (correlated with the parent), by parent
    key."""
    own, theirs = columns(model), columns(parent)
    pk = model.__mapper__.primary_key[0]
    # On the session's connection: plain rows, without the ORM's handling of a result (or its
    # autoflush: this reads before the batch changed or staged anything).
    connection = await session.connection()
    result = await connection.execute(
        _with_parent(model, parent, foreign_key, extra), {"keys": sorted(keys)}
    )
    rows: dict[Any, PlainRow] = {}
    parents: dict[Any, PlainRow] = {}
    values: dict[Any, tuple[Any, ...]] = {}
    n, m = len(own), len(own) + len(theirs)
    for r in result:
        row = PlainRow({k: r[i] for i, (k, _) in enumerate(own)})
        rows[getattr(row, pk.key)] = row
        key = getattr(row, foreign_key)
        if key not in parents:
            parents[key] = PlainRow({k: r[n + i] for i, (k, _) in enumerate(theirs)})
            values[key] = tuple(r[m:])
    return rows, parents, values


@cache
def _with_parent(model: Any, parent: Any, foreign_key: str, extra: tuple[Any, ...]) -> Select[Any]:
    """The SELECT of `load_with_parent`, of the rows whose keys are bound as `keys` (built once:
    a batch runs it with each)."""
    pk = model.__mapper__.primary_key[0]
    parent_pk = parent.__mapper__.primary_key[0]
    return (
        select(*(c for _, c in columns(model)), *(c for _, c in columns(parent)), *extra)
        .join_from(
            model.__table__, parent.__table__, parent_pk == model.__mapper__.columns[foreign_key]
        )
        .where(pk.in_(bindparam("keys", expanding=True)))
        .order_by(pk)
        .with_for_update()
    )


def also_in_session(session: Session, model: Any, keys: Any) -> bool:
    """Whether an ORM object of `model` with one of `keys` is in the session too (two copies of
    one row in a transaction: which one wins is not the rules')."""
    # The session holds few objects in a batch of plain rows: look through them.
    return any(k[0] is model and k[1][0] in keys for k in session.identity_map.keys())


def write(session: Session, model: Any, rows: dict[Any, PlainRow]) -> None:
    """UPDATE what changed in `rows`, one executemany per set of changed columns."""
    mapper: Mapper[Any] = inspect(model)
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for pk, row in sorted(rows.items()):
        values = row.changes()
        if values:
            values["pk_0"] = pk
            groups.setdefault(tuple(sorted(k for k in values if k != "pk_0")), []).append(values)
    connection = session.connection()
    for changed, group in groups.items():
        bulk.executemany(connection, bulk.update_statement(mapper, changed), group)
