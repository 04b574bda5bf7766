"""0002_case_lifecycle upgrades a store with data in it (references and contact customers are
filled in) and downgrades cleanly, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import Connection

from switchboard.case.adapters import database
from switchboard.case.domain.reference import looks_like_reference
from switchboard.case.migrate import alembic_config


def _to(revision: str, down: bool = False):  # type: ignore[no-untyped-def]
    def run(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, revision)

    return run


async def test_upgrade_with_data_and_downgrade(database_url: str) -> None:
    engine = database.create_engine(database_url)
    now = datetime(2025, 1, 1, tzinfo=UTC)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_to("0001"))
            for i in range(3):
                await conn.execute(
                    text(
                        "INSERT INTO customers (id, tenant, display_name, created_at) "
                        "VALUES (:id, 'acme', '', :t)"
                    ),
                    {"id": f"cu{i}", "t": now},
                )
                await conn.execute(
                    text(
                        "INSERT INTO cases (id, tenant, customer_id, status, subject, "
                        "assigned_agent_id, created_at, updated_at) "
                        "VALUES (:id, 'acme', :cu, 1, '', '', :t, :t)"
                    ),
                    {"id": f"case{i}", "cu": f"cu{i}", "t": now},
                )
                await conn.execute(
                    text(
                        "INSERT INTO contacts (contact_id, tenant, case_id, channel, language, "
                        "skills, queue, subject, agent_id, status, created_at) "
                        "VALUES (:id, 'acme', :case, 4, '', '[]', '', '', '', 'queued', :t)"
                    ),
                    {"id": f"c{i}", "case": f"case{i}", "t": now},
                )
        async with engine.begin() as conn:
            await conn.run_sync(_to("0002_case_lifecycle"))
        async with engine.connect() as conn:
            refs = [r[0] for r in await conn.execute(text("SELECT reference FROM cases"))]
            owners = dict(
                (r[0], r[1])
                for r in await conn.execute(text("SELECT contact_id, customer_id FROM contacts"))
            )
            priorities = {r[0] for r in await conn.execute(text("SELECT priority FROM cases"))}
        assert len(set(refs)) == 3 and all(looks_like_reference(r) for r in refs)
        assert owners == {"c0": "cu0", "c1": "cu1", "c2": "cu2"}
        assert priorities == {2}
        async with engine.begin() as conn:
            await conn.run_sync(_to("0001", down=True))
        async with engine.connect() as conn:
            count = (await conn.execute(text("SELECT count(*) FROM cases"))).scalar_one()
        assert count == 3
        async with engine.begin() as conn:
            await conn.run_sync(_to("head"))
    finally:
        await engine.dispose()
