"""`switchboard case verify` on a store of its own making (the CLI's own tables, no case service):
an intact chain, a rewritten entry, a missing entry and a case with no trail, named each time."""

from __future__ import annotations

import asyncio
import contextlib
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from switchboard.cli import audit_chain
from switchboard.cli.__main__ import main
from switchboard.core import hash_chain

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


async def store(url: str, chains: dict[str, int]) -> None:
    """Cases C-<id> with `n` hash-linked entries each, written with the CLI's own hash."""
    engine = audit_chain.create_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(audit_chain._metadata.create_all)
        for case_id, n in chains.items():
            await conn.execute(
                audit_chain.cases.insert().values(
                    id=case_id, tenant="acme", reference=f"C-{case_id.upper()}"
                )
            )
            prev = hash_chain.GENESIS
            for seq in range(1, n + 1):
                at = T0 + timedelta(minutes=seq)
                data = '{"agent_id":"agent-1"}'
                row = dict(
                    entity="case", entity_id=case_id, seq=seq, tenant="acme", at=at,
                    actor="agent-1", action="assigned", data=data, prev_hash=prev,
                )  # fmt: skip
                row["hash"] = hash_chain.entry_hash(
                    prev, "acme", "case", case_id, seq, at, "agent-1", "assigned", data
                )
                await conn.execute(audit_chain.audit_entries.insert().values(**row))
                prev = row["hash"]
    await engine.dispose()


async def change(url: str, case_id: str, seq: int, delete: bool = False) -> None:
    engine = audit_chain.create_engine(url)
    t = audit_chain.audit_entries
    where = (t.c.entity_id == case_id) & (t.c.seq == seq)
    async with engine.begin() as conn:
        await conn.execute(t.delete().where(where) if delete else update(t).where(where).values(
            data='{"agent_id":"agent-9"}'
        ))  # fmt: skip
    await engine.dispose()


def verify(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        main(["case", "verify", *args])
    return int(exit_.value.code or 0), out.getvalue()


async def test_verify_names_each_broken_case_and_why(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'case.db'}"
    await store(url, {"a1": 3, "b2": 2, "c3": 0})
    code, out = await asyncio.to_thread(verify, "--database-url", url, "--case", "C-A1")
    assert (code, out) == (0, "audit trail intact: 1 chains verified\n")
    code, out = await asyncio.to_thread(verify, "--database-url", url)
    assert code == 1
    assert "BROKEN case c3 (C-C3, tenant acme): its audit trail is missing" in out

    await change(url, "a1", 2)
    await change(url, "b2", 1, delete=True)
    code, out = await asyncio.to_thread(verify, "--database-url", url)
    assert code == 1
    assert "BROKEN case a1 (C-A1, tenant acme): entry 2: hash does not match the entry" in out
    assert "BROKEN case b2 (C-B2, tenant acme): entry 2: entry 1 is missing" in out
    assert out.splitlines()[-1] == "audit trail: 3 broken of 2 chains checked"
    assert await asyncio.to_thread(verify, "--database-url", url, "--case", "nope") == (
        2,
        "no case nope\n",
    )
