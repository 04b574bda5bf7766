"""The case store's unit of work beside a raw ceiling measured in the same run.

Contacts' lifecycles (created, queued, offered, assigned, an agent's reply, ended), interleaved
as the bus delivers them, go through CaseHandlers in batches of CASE_CONSUMER_BATCH's default
(1,024 on SQLite, 256 on PostgreSQL), exactly as the case service's consumer drives a backlog (one transaction per batch,
claims and preloads up front). The ceiling is SQLAlchemy Core inserting the very rows that run left behind, executemany, in one transaction,
on a fresh database of the same kind. Figures: events/s of each, their
ratio, CPU ms and SQL statements per contact, and of that CPU what sealing personal data took
(AES-256-GCM, key wrapping and blind indexes, timed around the case store's own crypto calls).
Each kind runs BENCH_CASE_ROUNDS times (3) on fresh databases; the figures are those of the round
with the median ratio, beside the lowest and highest ratio of the rounds.
SQLite always; PostgreSQL too when
SWITCHBOARD_TEST_POSTGRES_URL is set (in a scratch database created and dropped here).
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import Text, insert, select, text, type_coerce
from sqlalchemy import event as sa_event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from switchboard.case.adapters import crypto, database, orm
from switchboard.case.adapters.crypto import SealedText
from switchboard.case.entrypoints.nats_consumer import handlers_by_type
from switchboard.case.handlers import CaseHandlers
from switchboard.case.migrate import migrate
from switchboard.case.settings import SHARED_BATCH, SQLITE_BATCH
from switchboard.core import events
from switchboard.v1 import contact_pb2, events_pb2

CONTACTS = int(os.environ.get("BENCH_CASE_CONTACTS", "1000"))
# Each database kind is measured this many times, each round on fresh databases, its ceiling right
# after it: the machine's speed swings within minutes, and one round's ratio swings with it.
ROUNDS = int(os.environ.get("BENCH_CASE_ROUNDS", "3"))
TENANT = "bench"


def lifecycles(n: int) -> list[Any]:
    """The events of `n` contacts, step by step across all of them (as a burst arrives)."""

    def meta() -> events_pb2.EventMeta:
        return events.new_meta(TENANT, contact_pb2.CHANNEL_CHAT, "bench")  # type: ignore[no-any-return]

    steps: list[list[Any]] = [[] for _ in range(6)]
    for i in range(n):
        cid = f"c{i}"
        steps[0].append(
            events_pb2.ContactCreated(
                meta=meta(),
                contact=contact_pb2.Contact(
                    contact_id=cid,
                    tenant=TENANT,
                    channel=contact_pb2.CHANNEL_CHAT,
                    language="ko",
                    queue="chat",
                    identities=[
                        contact_pb2.CustomerIdentity(
                            kind=contact_pb2.IDENTITY_KIND_CHAT_VISITOR, value=f"visitor-{cid}"
                        )
                    ],
                    content=[contact_pb2.ContentPart(content_type="text/plain", text="안녕하세요")],
                ),
            )
        )
        steps[1].append(events_pb2.ContactQueued(meta=meta(), contact_id=cid, queue="chat"))
        steps[2].append(
            events_pb2.ContactOffered(meta=meta(), contact_id=cid, agent_id="a1", offer_id=f"o{i}")
        )
        steps[3].append(
            events_pb2.ContactAssigned(
                meta=meta(), contact_id=cid, agent_id="a1", offer_id=f"o{i}", queue="chat"
            )
        )
        steps[4].append(
            events_pb2.MessageAdded(
                meta=meta(),
                message=contact_pb2.Message(
                    message_id=f"m{i}",
                    contact_id=cid,
                    author=contact_pb2.AUTHOR_AGENT,
                    agent_id="a1",
                    parts=[
                        contact_pb2.ContentPart(content_type="text/plain", text="네, 도와드릴게요")
                    ],
                ),
            )
        )
        steps[5].append(
            events_pb2.ContactEnded(
                meta=meta(),
                contact_id=cid,
                agent_id="a1",
                wrap_up_code="done",
                reason=events_pb2.END_REASON_COMPLETED,
            )
        )
    return [e for step in steps for e in step]


CRYPTO_CALLS = ("seal", "open_", "wrap", "unwrap", "new_key", "blind_index", "index_key")


class CryptoTimer:
    """Times every call of the case store's crypto functions while it is entered."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0
        self._saved: dict[str, Any] = {}

    def __enter__(self) -> CryptoTimer:
        for name in CRYPTO_CALLS:
            real = self._saved[name] = getattr(crypto, name)
            setattr(crypto, name, self._timed(real))
        return self

    def __exit__(self, *_exc: object) -> None:
        for name, real in self._saved.items():
            setattr(crypto, name, real)

    def _timed(self, real: Any) -> Any:
        def timed(*args: Any) -> Any:
            started = time.process_time()
            try:
                return real(*args)
            finally:
                self.seconds += time.process_time() - started
                self.calls += 1

        return timed


async def measure(url: str, scratch_url: str, n: int) -> dict[str, float]:
    await migrate(url)
    engine = database.create_engine(url)
    statements = [0]

    @sa_event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _count(*_args: Any) -> None:
        statements[0] += 1

    sessions = database.sessionmaker(engine)
    batch = SQLITE_BATCH if engine.dialect.name == "sqlite" else SHARED_BATCH  # the default
    h = CaseHandlers(sessions, "case")
    by_type = handlers_by_type(h)
    evs = lifecycles(n)
    ridden = database.ridden_statements[0]  # run in SQLite's thread beside the statements above
    with CryptoTimer() as sealing:
        wall, cpu = time.perf_counter(), time.process_time()
        for k in range(0, len(evs), batch):
            chunk = evs[k : k + batch]
            async with h.batch(chunk, isolate=False):
                for e in chunk:
                    await by_type[type(e)](e)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    statements[0] += database.ridden_statements[0] - ridden
    # What the run left behind, table by table, for the ceiling to write again.
    rows: dict[Any, list[dict[str, Any]]] = {}
    async with engine.connect() as conn:
        for table in orm.Base.metadata.sorted_tables:
            # Sealed columns as stored (ciphertext), which the ceiling writes again as they are.
            columns = [
                type_coerce(c, Text).label(c.name) if isinstance(c.type, SealedText) else c
                for c in table.c
            ]
            result = await conn.execute(select(*columns))
            rows[table] = [dict(r._mapping) for r in result]
    await engine.dispose()

    await migrate(scratch_url)
    raw_engine = database.create_engine(scratch_url)
    written = sum(len(r) for r in rows.values())
    raw = time.perf_counter()
    async with raw_engine.begin() as conn:
        for table, table_rows in rows.items():  # in foreign key order
            if table_rows:
                await conn.execute(insert(table), table_rows)
    raw = time.perf_counter() - raw
    await raw_engine.dispose()
    return {
        "contacts": float(n),
        "events_per_s": len(evs) / wall,
        "contacts_per_s": n / wall,
        "cpu_ms_per_contact": cpu / n * 1000,
        "sql_statements_per_contact": statements[0] / n,
        "sealing_cpu_ms_per_contact": sealing.seconds / n * 1000,
        "sealing_calls_per_contact": sealing.calls / n,
        "sealing_share_of_cpu": sealing.seconds / cpu,
        "raw_core_executemany_events_per_s": len(evs) / raw,
        "raw_rows_written": float(written),
        "ratio_events_per_s_over_raw": (len(evs) / wall) / (len(evs) / raw),
    }


def median_round(rounds: list[dict[str, float]]) -> dict[str, float]:
    """The figures of the round whose ratio to its ceiling is the median, with the lowest and
    highest ratio of all rounds beside them."""
    ranked = sorted(rounds, key=lambda r: r["ratio_events_per_s_over_raw"])
    return ranked[len(ranked) // 2] | {
        "rounds": float(len(ranked)),
        "ratio_lowest": ranked[0]["ratio_events_per_s_over_raw"],
        "ratio_highest": ranked[-1]["ratio_events_per_s_over_raw"],
    }


async def run(work: Path, nats_url: str) -> dict[str, float]:
    sqlite = [
        await measure(f"sqlite:///{work}/case{i}.db", f"sqlite:///{work}/raw{i}.db", CONTACTS)
        for i in range(ROUNDS)
    ]
    out = {f"sqlite_{k}": v for k, v in median_round(sqlite).items()}
    pg = os.environ.get("SWITCHBOARD_TEST_POSTGRES_URL", "")
    if pg:
        admin = create_async_engine(database.async_url(pg), isolation_level="AUTOCOMMIT")
        names = [f"sb_bench_{uuid.uuid4().hex[:8]}" for _ in range(2 * ROUNDS)]
        try:
            async with admin.connect() as conn:
                for name in names:
                    await conn.execute(text(f'CREATE DATABASE "{name}"'))
            base = make_url(pg)
            urls = [base.set(database=name).render_as_string(hide_password=False) for name in names]
            rounds = [await measure(urls[2 * i], urls[2 * i + 1], CONTACTS) for i in range(ROUNDS)]
            out |= {f"postgresql_{k}": v for k, v in median_round(rounds).items()}
        finally:
            async with admin.connect() as conn:
                for name in names:
                    await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            await admin.dispose()
    return out
