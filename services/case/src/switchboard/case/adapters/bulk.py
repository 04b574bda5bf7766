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

from functools import cache
from operator import itemgetter
from typing import Any, TypeVar

from sqlalchemy import Connection, Table, bindparam, insert, inspect, update
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstanceState, Mapper, Session, make_transient_to_detached
from sqlalchemy.orm.base import NO_VALUE
from sqlalchemy.sql.dml import Insert, Update

from switchboard.case.adapters.orm import Base

KEY = "bulk_inserts"
T = TypeVar("T")


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
        model: Any = type(obj)
        mapper = _mapper(model)
        _complete(mapper, obj)
        state = obj.__dict__  # the primary key's attributes, as the ORM would read them
        keys = _primary_key(mapper)
        key = state[keys[0]] if len(keys) == 1 else tuple(state[k] for k in keys)
        self._objects[(model, key)] = obj

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
            by_table.setdefault(table, []).append(_values(_mapper(model), obj))
        self._rows, self._objects = {}, {}
        connection = session.connection()
        for table in _sorted_tables(len(Base.metadata.tables)):
            rows = by_table.get(table)
            if rows:
                executemany(connection, _insert(table), rows)
        if attach and objects:
            locked: dict[tuple[Any, Any], Any] = session.info.setdefault("locked_rows", {})
            absent: set[tuple[Any, Any]] = session.info.setdefault("absent_rows", set())
            for key, obj in objects:
                make_transient_to_detached(obj)
                session.add(obj)
                locked[key] = obj
                absent.discard(key)


def executemany(
    connection: Connection, statement: Insert | Update, rows: list[dict[str, Any]]
) -> None:
    """`connection.execute(statement, rows)`: one INSERT or UPDATE, executemany, of rows that all
    name the same keys. The statement is compiled once for those keys (per dialect) and each
    row's parameters are taken from it positionally here, through the columns' bind processors,
    and handed to the driver as they are: SQLAlchemy's own handling of an executemany builds
    every row's parameters afresh (defaults, escaping, each bind name looked up), which costs
    more per row than SQLite's insert itself, and about twice what this does on PostgreSQL. A
    statement whose rows need Python-side defaults filled in (a column none of them names) goes
    SQLAlchemy's way. `statement` is built once (its plan is kept for it)."""
    if len(rows) < 2:
        connection.execute(statement, rows)
        return
    if isinstance(statement, Update) and statement in _keyed and _arrays(connection.dialect):
        _update_from_arrays(connection, statement, tuple(rows[0]), rows)
        return
    plan = _plan(statement, tuple(rows[0]), connection.dialect)
    if plan is None:
        connection.execute(statement, rows)
        return
    sql, get, processors = plan
    if not processors:
        params: list[Any] = [get(r) for r in rows]
    else:
        params = []
        for r in rows:
            values = list(get(r))
            for i, process in processors:
                values[i] = process(values[i])
            params.append(tuple(values))
    connection.exec_driver_sql(sql, params)


_plans: dict[tuple[Any, tuple[str, ...], tuple[str, str, str]], Any] = {}

# A table's column (sqlalchemy.Column, or a mapper's column of its table).
_Column = Any

# UPDATEs of one row by its primary key, every changed column set to a parameter of its own
# (`keyed_update`): the parameter naming each key column, and each set column.
_keyed: dict[Update, tuple[dict[str, _Column], dict[str, _Column]]] = {}


def keyed_update(table: Table, keys: dict[str, _Column], values: dict[str, _Column]) -> Update:
    """`UPDATE table SET column = :param ... WHERE key = :param ...` with the parameters named
    as in `keys` and `values` (parameter -> column). `executemany` sends many rows of it to
    PostgreSQL as one statement over arrays of their values, not one statement per row."""
    stmt = update(table)
    for name, column in keys.items():
        stmt = stmt.where(column == bindparam(name, type_=column.type))
    stmt = stmt.values({c.key: bindparam(name, type_=c.type) for name, c in values.items()})
    _keyed[stmt] = (dict(keys), dict(values))
    return stmt


def _arrays(dialect: Dialect) -> bool:
    """Whether `executemany` sends a keyed UPDATE's rows as arrays (asyncpg on PostgreSQL)."""
    return dialect.name == "postgresql" and dialect.driver == "asyncpg"


def _update_from_arrays(
    connection: Connection, statement: Update, names: tuple[str, ...], rows: list[dict[str, Any]]
) -> None:
    """Many rows of a keyed UPDATE as one statement: `UPDATE t SET c = v.c ... FROM unnest(the
    columns' values as arrays) AS v WHERE t.key = v.key`. PostgreSQL runs an executemany as one
    statement per row (about 25 us each); this is one. Of rows naming the same key, the last
    is written, as it would be if they were run one after another (each sets its columns to
    its own values, none reads them). Values go through the columns' bind processors first,
    as they would for the statement itself."""
    sql, keys, params = _array_update(statement, names, connection.dialect)
    last = {tuple(r[k] for k in keys): r for r in rows}
    columns: list[list[Any]] = []
    for name, process in params:
        column = [r[name] for r in last.values()]
        columns.append(column if process is None else [process(v) for v in column])
    connection.exec_driver_sql(sql, tuple(columns))


@cache
def _array_update(
    statement: Update, names: tuple[str, ...], dialect: Dialect
) -> tuple[str, tuple[str, ...], tuple[tuple[str, Any], ...]]:
    """What `_update_from_arrays` sends for rows naming `names`: the SQL, the key parameters, and
    each array's parameter with its column's bind processor (None: none), in the SQL's order."""
    keys, values = _keyed[statement]
    if set(names) != set(keys) | set(values):
        raise ValueError(f"rows name {sorted(names)}, the UPDATE binds {sorted(keys | values)}")
    quote = dialect.identifier_preparer.quote
    columns = {**keys, **values}
    order = (*keys, *(n for n in names if n not in keys))
    arrays = ", ".join(
        f"${i}::{columns[n].type.compile(dialect=dialect)}[]" for i, n in enumerate(order, 1)
    )
    aliases = ", ".join(f"p{i}" for i in range(len(order)))
    table = dialect.identifier_preparer.format_table(statement.table)  # type: ignore[arg-type]
    sets = ", ".join(
        f"{quote(values[n].name)} = v.p{i}" for i, n in enumerate(order) if n in values
    )
    where = " AND ".join(
        f"{table}.{quote(keys[n].name)} = v.p{i}" for i, n in enumerate(order) if n in keys
    )
    sql = f"UPDATE {table} SET {sets} FROM unnest({arrays}) AS v({aliases}) WHERE {where}"
    params = tuple((n, columns[n].type._cached_bind_processor(dialect)) for n in order)
    return sql, tuple(keys), params


def _plan(
    statement: Insert | Update, keys: tuple[str, ...], dialect: Dialect
) -> tuple[str, Any, tuple[tuple[int, Any], ...]] | None:
    """The SQL of `statement` for rows naming `keys`, a getter of a row's parameters in its
    order, and the bind processors to apply (by position); None if SQLAlchemy must fill in
    defaults or the statement binds anything but the rows' keys."""
    key = (statement, keys, (dialect.name, dialect.driver, dialect.paramstyle))
    found = _plans.get(key, False)
    if found is not False:
        return found  # type: ignore[no-any-return]
    compiled: Any = statement.compile(dialect=dialect, column_keys=list(keys))
    names: list[str] = list(compiled.positiontup or ())
    plan = None
    if (
        names
        and not compiled.insert_prefetch
        and not compiled.update_prefetch
        and not compiled.literal_execute_params
        and not compiled.post_compile_params
        and set(names) == set(keys)
        and len(names) == len(set(names))
    ):
        processors = compiled._bind_processors
        get = itemgetter(*names)
        plan = (
            compiled.string,
            get if len(names) > 1 else (lambda row: (get(row),)),
            tuple((i, processors[n]) for i, n in enumerate(names) if n in processors),
        )
    _plans[key] = plan
    return plan


@cache
def _insert(table: Table) -> Insert:
    return insert(table)


@cache
def _mapper(model: Any) -> Mapper[Any]:
    mapper: Mapper[Any] = inspect(model)
    return mapper


@cache
def _sorted_tables(_count: int) -> list[Table]:
    """The tables in foreign key order (sorted once per number of tables registered)."""
    return Base.metadata.sorted_tables


def _complete(mapper: Mapper[Any], obj: Any) -> None:
    # Straight into the instance's dict: the object is transient, so there is no history to
    # keep, and its row is read from this dict.
    state = obj.__dict__
    for key, default, call in _defaults(mapper):
        if key not in state:
            state[key] = default(None) if call else default


@cache
def _primary_key(mapper: Mapper[Any]) -> tuple[str, ...]:
    """The attribute keys of `mapper`'s primary key columns, in order."""
    return tuple(mapper.get_property_by_column(c).key for c in mapper.primary_key)


@cache
def _defaults(mapper: Mapper[Any]) -> tuple[tuple[str, Any, bool], ...]:
    """Each column attribute's Python-side default: (key, value or callable, whether called)."""
    out = []
    for prop in mapper.column_attrs:
        default = prop.columns[0].default
        if default is None:
            out.append((prop.key, None, False))
        else:
            out.append((prop.key, default.arg, bool(default.is_callable)))  # type: ignore[attr-defined]
    return tuple(out)


def _values(mapper: Mapper[Any], obj: Any) -> dict[str, Any]:
    state = obj.__dict__
    return {column: state[key] for key, column in _columns(mapper)}


@cache
def _columns(mapper: Mapper[Any]) -> tuple[tuple[str, str], ...]:
    return tuple((prop.key, prop.columns[0].key) for prop in mapper.column_attrs)


def write_changes(session: Session) -> None:
    """At the end of a batch, UPDATE the changed columns of the session's modified rows with one
    executemany per table and set of changed columns, instead of a flush's per-object work; the
    rows written leave the session (the transaction commits next, and nothing reads them after).
    Rows of a kind this cannot write (see `_updatable`) are left to the commit's flush."""
    groups: dict[tuple[Mapper[Any], tuple[str, ...]], list[dict[str, Any]]] = {}
    written: list[Any] = []
    dirty = list(session.dirty)
    for obj in dirty:
        state: InstanceState[Any] = inspect(obj)
        mapper = state.mapper
        columns = _updatable(mapper)
        before = state.committed_state
        if columns is None or state.key is None or not all(k in columns for k in before):
            continue
        now = state.dict
        # Like a flush, only what differs from the row as loaded.
        changed = tuple(sorted(k for k, v in before.items() if v is NO_VALUE or v != now[k]))
        values = {k: now[k] for k in changed}
        written.append(obj)
        if not changed:
            continue
        for i, pk in enumerate(state.key[1]):
            values[f"pk_{i}"] = pk
        groups.setdefault((mapper, changed), []).append(values)
    connection = session.connection()
    for (mapper, changed), rows in groups.items():
        executemany(connection, _update(mapper, changed), rows)
    if len(written) == len(dirty) and not session.new and not session.deleted:
        session.expunge_all()  # nothing is left for the flush: one call, not one per row
    else:
        for obj in written:
            session.expunge(obj)


@cache
def _updatable(mapper: Mapper[Any]) -> frozenset[str] | None:
    """The attribute keys `write_changes` may write for a mapper: plain columns of one table,
    none of them a primary key or updated by the database or by an onupdate default."""
    if mapper.version_id_col is not None or len(mapper.tables) != 1:
        return None
    keys = set()
    for prop in mapper.column_attrs:
        column = prop.columns[0]
        if len(prop.columns) != 1 or column.onupdate is not None or column.server_onupdate:
            return None
        if not column.primary_key:
            keys.add(prop.key)
    return frozenset(keys)


@cache
def _update(mapper: Mapper[Any], changed: tuple[str, ...]) -> Update:
    table = mapper.local_table
    assert isinstance(table, Table)
    keys = {f"pk_{i}": pk for i, pk in enumerate(mapper.primary_key)}
    values = {key: mapper.column_attrs[key].columns[0] for key in changed}
    return keyed_update(table, keys, values)


def update_statement(mapper: Mapper[Any], changed: tuple[str, ...]) -> Update:
    """The UPDATE of the attributes `changed` of one row of `mapper`'s table, its primary key
    bound as `pk_0` (`pk_1`, ...) and each value by its attribute key: for an executemany."""
    return _update(mapper, changed)


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


def new(session: AsyncSession, model: type[T], values: dict[str, Any]) -> T:
    """A new object of `model` with `values` (its primary key among them), added to the session;
    inside a bulk batch, staged, and made without the ORM's per-attribute bookkeeping (a new
    object has no history to keep, and its row is read from its attributes when written)."""
    bulk = session.info.get(KEY)
    if bulk is None:
        obj = model(**values)
        session.add(obj)
        return obj
    obj = _manager(model).new_instance()
    obj.__dict__.update(values)
    bulk.add(obj)
    return obj


def _manager(model: Any) -> Any:
    return _mapper(model).class_manager


def add_row(session: AsyncSession, model: Any, values: dict[str, Any]) -> None:
    """Insert a row that nothing reads back as an object in this transaction: staged inside a
    bulk batch, else `session.add(model(**values))`."""
    bulk = session.info.get(KEY)
    if bulk is None:
        session.add(model(**values))
    else:
        bulk.add_row(model.__table__, values)
