"""`switchboard case verify`: recompute the case store's audit hash chains from the database."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

CASE_DATABASE_ENV = "CASE_DATABASE_URL"


def add_parser(sub: Any) -> None:
    c = sub.add_parser("case", help="the case store: verify its audit trail")
    actions = c.add_subparsers(dest="case_command", required=True)
    v = actions.add_parser(
        "verify",
        help="recompute every case's audit hash chain; exit 1 naming each broken case",
    )
    v.add_argument("--case", dest="case", default="", help="one case, by id or reference")
    v.add_argument(
        "--database-url", default="", help=f"default: ${CASE_DATABASE_ENV}, else .run/case.db"
    )


def database_url(directory: Path, given: str = "") -> str:
    """The case store `switchboard run` uses, unless told otherwise."""
    return (
        given or os.environ.get(CASE_DATABASE_ENV) or f"sqlite+aiosqlite:///{directory / 'case.db'}"
    )


async def verify(directory: Path, args: argparse.Namespace) -> int:
    # Imported here: the other commands need no database driver.
    from switchboard.cli import audit_chain

    engine = audit_chain.create_engine(database_url(directory, args.database_url))
    problems: list[str] = []
    try:
        async with engine.connect() as conn, conn.begin():
            rows = await audit_chain.find_cases(conn, args.case)
            if args.case and not rows:
                print(f"no case {args.case}")
                return 2
            with_entries = await audit_chain.entities_with_entries(conn, audit_chain.CASE)
            if args.case:
                checked, breaks = 0, []
                for case_id in rows:
                    n, found = await audit_chain.verify(conn, audit_chain.CASE, case_id)
                    checked += n
                    breaks += found
            else:
                checked, breaks = await audit_chain.verify(conn)
            for b in breaks:
                case = rows.get(b.entity_id) if b.entity == audit_chain.CASE else None
                name = f"{case.reference}, " if case is not None else ""
                problems.append(
                    f"BROKEN {b.entity} {b.entity_id} ({name}tenant {b.tenant}): "
                    f"entry {b.seq}: {b.reason}"
                )
            for case_id, case in sorted(rows.items()):
                if case_id not in with_entries:
                    problems.append(
                        f"BROKEN case {case_id} ({case.reference}, tenant {case.tenant}): "
                        "its audit trail is missing"
                    )
    finally:
        await engine.dispose()
    for line in problems:
        print(line)
    if problems:
        print(f"audit trail: {len(problems)} broken of {checked} chains checked")
        return 1
    print(f"audit trail intact: {checked} chains verified")
    return 0


async def run(directory: Path, args: argparse.Namespace) -> int:
    if args.case_command == "verify":
        return await verify(directory, args)
    return 2
