"""Engines for the case store: SQLite (the embedded default) or PostgreSQL (production)."""

from __future__ import annotations

import asyncio
import collections
import functools
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, event, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.sqlite import aiosqlite as sa_aiosqlite
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction, UOWTransaction, defer
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_

from switchboard.case.adapters import bulk, crypto, keyring

SQLITE_BUSY_TIMEOUT_MS = 5000

# What a transaction has learnt about rows it holds (the rows it has locked, by model and key; the
# head of each audit chain it extends) lives in session.info under these keys, and is forgotten
# when any transaction or savepoint of the session ends (a rollback may have undone it).
TRANSACTION_CACHES = (
    "locked_rows",
    "audit_heads",
    "sla_timers",
    "absent_rows",
    "new_customers",
    "claims",
    "identities",
    "message_ids",
    "free_references",
    "open_cases",
    bulk.KEY,
    keyring.PENDING,
    keyring.ERASING,
    "outbox_staged",  # outbox.STAGED: a rolled-back savepoint's events are not published
    "outbox_marks",  # outbox.MARKS
    "outbox_deleting",  # outbox.DELETING
    "object_erasures_staged",  # object_erasure.STAGED
    "outbox_mail_staged",  # mail_outbox.STAGED
)


@event.listens_for(Session, "after_transaction_end")
def _forget_at_the_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is not None:
        return  # a flush's or a savepoint's; one rolled back is handled below
    for key in TRANSACTION_CACHES:
        session.info.pop(key, None)


# Kept when a savepoint rolls back: the batch's claims were made before it (and the event's own
# claim is withdrawn by the caller); the outbox takes back only what the savepoint staged.
SAVEPOINT_AWARE = frozenset(
    {"claims", "outbox_staged", "outbox_marks", "outbox_mail_staged", "object_erasures_staged"}
)


@event.listens_for(Session, "after_soft_rollback")
def _forget_after_a_rollback(session: Session, _previous: SessionTransaction) -> None:
    # A savepoint rolled back undid its audit entries, rows and locks: what was learnt is
    # learnt again.
    for key in TRANSACTION_CACHES:
        if key not in SAVEPOINT_AWARE:
            session.info.pop(key, None)


def data_refused(exc: DBAPIError) -> bool:
    """The database refused a value as such (SQLSTATE class 22, a data exception: a NUL in text,
    a number out of range…): the same statement fails the same way every time it is tried."""
    return str(getattr(exc.orig, "sqlstate", "") or "").startswith("22")


@event.listens_for(Session, "do_orm_execute")
def _staged_rows_before_a_statement(state: ORMExecuteState) -> None:
    # Rows staged for a bulk insert are written first, so that the statement sees them.
    staged = state.session.info.get(bulk.KEY)
    if staged:
        staged.write(state.session)


@event.listens_for(Session, "before_flush")
def _staged_rows_before_a_flush(session: Session, _flush: UOWTransaction, _objects: Any) -> None:
    # A flushed object may refer to a staged row (an SLA timer to its new case).
    staged = session.info.get(bulk.KEY)
    if staged:
        staged.write(session)


def async_url(url: str) -> str:
    """Accept plain postgresql:// and sqlite:// URLs too, choosing the async driver."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    if parsed.drivername == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    return url


def _run_statement(
    connection: sqlite3.Connection, operation: str, parameters: Any, many: bool
) -> tuple[Any, int, int | None, list[Any]]:
    # In the connection's own thread: the statement, its rows and its cursor's end at once.
    cursor = connection.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        rows = cursor.fetchall() if cursor.description else []
        return cursor.description, cursor.rowcount, cursor.lastrowid, rows
    finally:
        cursor.close()


Held = list[tuple[str, Any, bool]]  # (operation, parameters, many)


class Rider:
    """Work on the raw SQLite connection that goes to the driver's thread with the connection's
    next statement (or its commit), after the writes held back and before that statement, in
    the same hop (see `ride`). `value` is what the work returned, once `done`."""

    __slots__ = ("done", "statements", "value", "work")

    def __init__(self, work: Callable[[sqlite3.Connection], tuple[Any, int]]) -> None:
        self.work = work
        self.done = False
        self.value: Any = None
        self.statements = 0  # the SQL statements the work ran


# SQL statements run by riders, which SQLAlchemy's statement events do not see (for counts).
ridden_statements = [0]


def _run_statements(
    connection: sqlite3.Connection,
    held: Held,
    riders: list[Rider],
    operation: Any,
    parameters: Any,
    many: bool,
) -> tuple[Any, int, int | None, list[Any]]:
    # The writes held back (see `hold_writes`) and the riders, then the statement, in one hop.
    _run_held(connection, held)
    _run_riders(connection, riders)
    return _run_statement(connection, operation, parameters, many)


def _run_riders(connection: sqlite3.Connection, riders: list[Rider]) -> None:
    for rider in riders:
        rider.value, rider.statements = rider.work(connection)
        rider.done = True
        ridden_statements[0] += rider.statements


def _run_held(connection: sqlite3.Connection, held: Held) -> None:
    for operation, parameters, many in held:
        cursor = connection.cursor()
        try:
            if many:
                cursor.executemany(operation, parameters)
            else:
                cursor.execute(operation, parameters or ())
        finally:
            cursor.close()


def _commit_after(connection: sqlite3.Connection, held: Held, riders: list[Rider]) -> None:
    _run_held(connection, held)
    _run_riders(connection, riders)
    connection.commit()


def _holdable(operation: str) -> bool:
    verb = operation.lstrip()[:6].upper()
    return verb in ("INSERT", "UPDATE") and "RETURNING" not in operation.upper()


def _begins(operation: str, parameters: Any) -> bool:
    return not parameters and operation.lstrip()[:5].upper() == "BEGIN"


class _OneHopCursor(sa_aiosqlite.AsyncAdapt_aiosqlite_cursor):
    """A cursor that runs each statement, fetches its rows and closes in one hop to aiosqlite's
    thread; SQLAlchemy's own makes four (open, execute, fetch, close), and under load every hop
    waits for the thread to be scheduled."""

    __slots__ = ("_result_description", "_result_lastrowid", "_result_rowcount")

    def __init__(self, adapt_connection: Any) -> None:
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()
        self._result_description: Any = None
        self._result_rowcount = -1
        self._result_lastrowid: int | None = None

    @property
    def description(self) -> Any:
        return self._result_description

    @property
    def rowcount(self) -> int:
        return self._result_rowcount

    @property
    def lastrowid(self) -> Any:
        return self._result_lastrowid

    @property
    def arraysize(self) -> int:
        return 1

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        pass

    async def _async_soft_close(self) -> None:
        return None

    def close(self) -> None:
        self._rows.clear()

    def _run(self, operation: Any, parameters: Any, many: bool) -> None:
        adapted: _OneHopConnection = self._adapt_connection  # type: ignore[assignment]
        if (many and adapted._holding and _holdable(operation)) or (
            not many and _begins(operation, parameters)
        ):
            # Sent with the next statement: a BEGIN always (the transaction's first statement
            # follows it at once, the after_begin look at the data keys), the bulk writes of a
            # transaction that holds them.
            adapted._held.append((operation, parameters, many))
            self._result_description = None
            self._result_rowcount = len(parameters) if many else -1
            self._result_lastrowid = None
            self._rows = collections.deque()
            return
        held, adapted._held = adapted._held, []
        riders, adapted._riders = adapted._riders, []
        adapted._idle = False
        connection = self._connection
        try:
            done = await_(
                connection._execute(
                    _run_statements, connection._conn, held, riders, operation, parameters, many
                )
            )
        except Exception as error:
            adapted._handle_exception(error)
        (
            self._result_description,
            self._result_rowcount,
            self._result_lastrowid,
            rows,
        ) = done
        self._rows = collections.deque(rows)

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        self._run(operation, parameters, False)

    def executemany(self, operation: Any, seq_of_parameters: Sequence[Any]) -> Any:
        self._run(operation, seq_of_parameters, True)


class _OneHopConnection(sa_aiosqlite.AsyncAdapt_aiosqlite_connection):
    """With `_holding` (see `hold_writes`), an executemany INSERT or UPDATE is held back and sent
    with the connection's next statement, or its commit, in the same hop; until the transaction
    ends. `_riders` (see `ride`) go the same way."""

    __slots__ = ("_held", "_holding", "_idle", "_riders")
    _cursor_cls = _OneHopCursor

    def __init__(self, dbapi: Any, connection: Any) -> None:
        super().__init__(dbapi, connection)
        self._holding = False
        self._held: Held = []
        self._riders: list[Rider] = []
        # No statement has run since the last commit or rollback: there is nothing to roll back
        # (the pool's reset of a connection returned after its commit costs no hop).
        self._idle = True

    def commit(self) -> None:
        held, self._held, self._holding = self._held, [], False
        riders, self._riders = self._riders, []
        idle, self._idle = self._idle, True
        if idle and not riders and all(not many for _, _, many in held):
            return  # at most a BEGIN held: no transaction began on the database
        if not held and not riders:
            super().commit()
            return
        try:
            await_(self._connection._execute(_commit_after, self._connection._conn, held, riders))
        except Exception as error:
            self._handle_exception(error)

    def rollback(self) -> None:
        self._held, self._holding, self._riders = [], False, []
        idle, self._idle = self._idle, True
        if not idle:
            super().rollback()

    def close(self) -> None:
        self._held, self._holding, self._riders = [], False, []
        super().close()


class _OneHopDBAPI(sa_aiosqlite.AsyncAdapt_aiosqlite_dbapi):
    def connect(self, *arg: Any, **kw: Any) -> Any:
        adapted = super().connect(*arg, **kw)
        return _OneHopConnection(self, adapted._connection)


async def hold_writes(session: AsyncSession) -> None:
    """On SQLite, until the session's transaction ends, its executemany INSERTs and UPDATEs (the
    rows a batch writes in bulk) go to the driver's thread with the next statement or the commit,
    in one hop, rather than one hop each. A failure of a held write is then raised by the
    statement (or the commit) it went with: only for a transaction that any failure rolls back
    whole (the consumer's batch without savepoints). Elsewhere, nothing changes."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    adapted = raw.dbapi_connection
    if isinstance(adapted, _OneHopConnection):
        adapted._holding = True


async def ride(
    session: AsyncSession, work: Callable[[sqlite3.Connection], tuple[Any, int]]
) -> Rider | None:
    """On SQLite, `work(connection)` (returning its value and the number of statements it ran)
    goes to the driver's thread with the transaction's next statement or its commit, in that
    hop rather than one of its own; None elsewhere (the caller runs its statements itself). A
    caller that needs the value before any other statement runs calls `settle`."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    adapted = raw.dbapi_connection
    if not isinstance(adapted, _OneHopConnection):
        return None
    rider = Rider(work)
    adapted._riders.append(rider)
    return rider


async def settle(session: AsyncSession, rider: Rider) -> Any:
    """The value of `rider`, running it now (in a hop of its own) if no statement took it yet."""
    if not rider.done:
        await session.execute(text("SELECT 1"))
    assert rider.done
    return rider.value


def create_engine(url: str) -> AsyncEngine:
    """An async engine for `url`; for a SQLite file, its directory is created and every connection
    gets WAL (readers never block the consumer's writes), a busy timeout and foreign keys."""
    url = async_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_async_engine(url, pool_pre_ping=True)
    database = parsed.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(
        url,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        module=_OneHopDBAPI(__import__("aiosqlite"), sqlite3),
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        # Left to itself, Python's sqlite3 begins a transaction only before the first write, so
        # every read before it is a snapshot of its own; `_begin` below begins them all.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
            # A commit is on disk when it returns: the batch it holds is acknowledged to
            # JetStream next (in WAL mode NORMAL syncs only at checkpoints).
            cursor.execute("PRAGMA synchronous=FULL")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(connection: Connection) -> None:
        # A reader's BEGIN fixes its snapshot at its first statement. A writer takes the write
        # lock at once (waiting up to the busy timeout for another process's writer): a reader
        # turned writer would fail at its first write, busy timeout or not, if another process
        # had committed since it read.
        if connection.get_execution_options().get(_READ):
            connection.exec_driver_sql("BEGIN")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


# The execution options of a read session's connection: one snapshot for all its statements.
_READ = "switchboard_read"
_READ_OPTIONS: dict[str, dict[str, Any]] = {
    "sqlite": {_READ: True},
    "postgresql": {"isolation_level": "REPEATABLE READ", "postgresql_readonly": True},
}


class Sessions(async_sessionmaker[AsyncSession]):
    """The case store's sessions, in two kinds.

    - `sessions()` reads. Each read session is one consistent snapshot (SQLite's deferred
      BEGIN, PostgreSQL's REPEATABLE READ READ ONLY), so a view that reads a case in several
      statements never shows half of a batch committed in between. Reads never wait: WAL gives
      SQLite's readers their snapshot beside the writer.
    - `sessions.begin()` writes, in one transaction committed at the end. SQLite takes one
      writer at a time, and a second one waits in the driver for the busy timeout, then fails
      with "database is locked" (seen under load: the outbox relay against the consumer's
      batch). In one process, SQLite's write transactions queue here instead, in order and
      without a timeout.
    """

    def __init__(self, engine: AsyncEngine, keys: keyring.Keyring) -> None:
        options = _READ_OPTIONS.get(engine.dialect.name, {})
        super().__init__(
            engine.execution_options(**options), expire_on_commit=False, info={keyring.KEY: keys}
        )
        self.keyring = keys
        self.engine = engine  # its write sessions' (the read sessions' has other options)
        self._write = engine
        self._writer = asyncio.Lock() if engine.dialect.name == "sqlite" else None

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncSession]:  # type: ignore[override]
        async with AsyncExitStack() as stack:
            if self._writer is not None:
                await stack.enter_async_context(self._writer)
            session = await stack.enter_async_context(self(bind=self._write))
            await stack.enter_async_context(session.begin())
            yield session


def sessionmaker(engine: AsyncEngine, keys: keyring.Keyring | None = None) -> Sessions:
    """The store's sessions, sealing personal data with `keys` (by default: the development
    master key's)."""
    # Rows are turned into messages after commit; expiring them would force lazy reloads.
    return Sessions(engine, keys or keyring.Keyring(keyring.MasterKeys(keyring.DEV_MASTER_KEY)))


def _insert(session: AsyncSession) -> Any:
    return _insert_of(session.get_bind().dialect.name)


def _insert_of(dialect: str) -> Any:
    if dialect == "postgresql":
        return postgresql.insert
    if dialect == "sqlite":
        return sqlite.insert
    raise RuntimeError(f"unsupported database dialect {dialect!r}")


async def insert_ignore(
    session: AsyncSession, model: Any, values: dict[str, Any], keys: Iterable[str]
) -> bool:
    """INSERT unless a row with the same `keys` exists; True when this call inserted it."""
    keys = list(keys)
    stmt = (
        _insert(session)(model)
        .values(**values)
        .on_conflict_do_nothing(index_elements=keys)
        .returning(model.__table__.c[keys[0]])
    )
    return (await session.execute(stmt)).first() is not None


async def preload_locked(
    session: AsyncSession, model: Any, keys: set[Any], unsealed: bool = False
) -> list[Any]:
    """Read and lock many rows by primary key in one query (in key order, so that two writers
    lock in the same order); `get_locked` and `get_row` then answer from the session, including
    for the keys that have no row. With `unsealed`, the sealed columns are not read (see
    `_unsealed`)."""
    if not keys:
        return []
    pk = model.__mapper__.primary_key[0]
    rows = list(await session.scalars(_locked(model, unsealed), {"keys": sorted(keys)}))
    # The session's identity map holds rows weakly: these references keep them for the
    # transaction.
    locked: dict[tuple[Any, Any], Any] = session.info.setdefault("locked_rows", {})
    absent: set[tuple[Any, Any]] = session.info.setdefault("absent_rows", set())
    for row in rows:
        locked[(model, getattr(row, pk.key))] = row
    absent.update((model, k) for k in keys if (model, k) not in locked)
    return rows


async def preload_locked_with(
    session: AsyncSession,
    model: Any,
    keys: set[Any],
    parent: Any,
    foreign_key: str,
    extra: Sequence[Any] = (),
) -> tuple[list[Any], list[Any], dict[Any, tuple[Any, ...]]]:
    """`preload_locked` of `model`'s rows by `keys` and of the `parent` rows they refer to by
    their column `foreign_key` (not null): on SQLite in one joined query (its write transaction
    locks the whole database, so the order rows are read in locks nothing), which also reads the
    columns `extra` (correlated with the parent), by parent key; elsewhere in two queries, each in
    key order, and without `extra` (an empty dict: the caller reads them itself)."""
    if session.get_bind().dialect.name != "sqlite":
        rows = await preload_locked(session, model, keys, unsealed=True)
        parents = await preload_locked(
            session, parent, {getattr(r, foreign_key) for r in rows}, unsealed=True
        )
        return rows, parents, {}
    if not keys:
        return [], [], {}
    pk = model.__mapper__.primary_key[0]
    parent_pk = parent.__mapper__.primary_key[0]
    result = await session.execute(
        _locked_with(model, parent, foreign_key, tuple(extra)), {"keys": sorted(keys)}
    )
    locked: dict[tuple[Any, Any], Any] = session.info.setdefault("locked_rows", {})
    absent: set[tuple[Any, Any]] = session.info.setdefault("absent_rows", set())
    rows = []
    found: dict[Any, Any] = {}
    values: dict[Any, tuple[Any, ...]] = {}
    for row, of, *more in result:
        rows.append(row)
        locked[(model, getattr(row, pk.key))] = row
        key = getattr(of, parent_pk.key)
        found[key] = of
        values[key] = tuple(more)
    for key, of in found.items():
        locked[(parent, key)] = of
        absent.discard((parent, key))
    absent.update((model, k) for k in keys if (model, k) not in locked)
    return rows, list(found.values()), values


@functools.cache
def _locked(model: Any, unsealed: bool) -> Any:
    """The SELECT of `preload_locked`, of the rows whose keys are bound as `keys` (built once: a
    batch runs it with each)."""
    pk = model.__mapper__.primary_key[0]
    stmt = (
        select(model)
        .where(pk.in_(bindparam("keys", expanding=True)))
        .order_by(pk)
        .with_for_update()
    )
    return stmt.options(*_unsealed(model)) if unsealed else stmt


@functools.cache
def _locked_with(model: Any, parent: Any, foreign_key: str, extra: tuple[Any, ...]) -> Any:
    """The joined SELECT of `preload_locked_with` on SQLite, of the rows whose keys are bound as
    `keys` (built once: a batch runs it with each)."""
    pk = model.__mapper__.primary_key[0]
    parent_pk = parent.__mapper__.primary_key[0]
    return (
        select(model, parent, *extra)
        .join(parent, parent_pk == getattr(model, foreign_key))
        .where(pk.in_(bindparam("keys", expanding=True)))
        .order_by(pk)
        .options(*_unsealed(model), *_unsealed(parent))
    )


@functools.cache
def _unsealed(model: Any) -> tuple[Any, ...]:
    """Loader options leaving `model`'s sealed columns (personal data) unread: a batch's events
    write them but do not read them, and opening each one loaded is an AES-GCM decryption. A
    later query of the transaction that selects the whole row fills them in."""
    return tuple(
        defer(getattr(model, c.key))
        for c in model.__mapper__.column_attrs
        if isinstance(c.columns[0].type, crypto.SealedText)
    )


async def get_row(session: AsyncSession, model: Any, key: Any) -> Any:
    """`session.get(model, key)`, without a query for a key a preload found no row for."""
    staged = session.info.get(bulk.KEY)
    if staged is not None and (row := staged.get(model, key)) is not None:
        return row
    if (model, key) in session.info.get("absent_rows", ()):
        return None
    return await session.get(model, key)


async def peek_locked(session: AsyncSession, model: Any, key: Any) -> Any:
    """The row if this transaction holds it already (locked by a preload or created here), else
    None, without a query."""
    staged = session.info.get(bulk.KEY)
    if staged is not None and (row := staged.get(model, key)) is not None:
        return row
    return session.info.get("locked_rows", {}).get((model, key))


def row_added(session: AsyncSession, model: Any, key: Any) -> None:
    """A row inserted in this transaction is no longer absent."""
    absent = session.info.get("absent_rows")
    if absent is not None:
        absent.discard((model, key))


async def get_locked(session: AsyncSession, model: Any, key: Any) -> Any:
    """`session.get(model, key, with_for_update=True)`, once per row and transaction: the lock is
    held until the transaction ends, so later reads of the row in it come from the session's
    identity map instead of another SELECT … FOR UPDATE (a batch touches a contact and its case
    several times). A key a preload found no row for stays absent (unless this transaction
    added it): a row another writer committed since is not the batch's to see."""
    staged = session.info.get(bulk.KEY)
    if staged is not None and (row := staged.get(model, key)) is not None:
        return row
    if (model, key) in session.info.get("absent_rows", ()):
        return None
    locked: dict[tuple[Any, Any], Any] = session.info.setdefault("locked_rows", {})
    row = locked.get((model, key))
    if row is not None:
        return row
    row = await session.get(model, key, with_for_update=True)
    if row is not None:
        locked[(model, key)] = row
    return row


async def insert_ignore_many(
    session: AsyncSession, model: Any, rows: list[dict[str, Any]], keys: Iterable[str]
) -> list[Any]:
    """INSERT every row unless one with the same `keys` exists, in one statement; the first key
    of each row this call inserted. (An executemany of one cached statement: the driver sends
    the rows as one multi-row INSERT … RETURNING, without compiling a new one per batch.)"""
    stmt = _insert_ignoring(session.get_bind().dialect.name, model, tuple(keys))
    return list((await session.execute(stmt, rows)).scalars())


@functools.cache
def _insert_ignoring(dialect: str, model: Any, keys: tuple[str, ...]) -> Any:
    """The statement of `insert_ignore_many` (built once per model and keys)."""
    table = model.__table__
    return (
        _insert_of(dialect)(table)
        .on_conflict_do_nothing(index_elements=list(keys))
        .returning(table.c[keys[0]])
    )
