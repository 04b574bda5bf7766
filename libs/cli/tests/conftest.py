"""Helpers for the `switchboard` command's tests."""

from __future__ import annotations

import asyncio

from switchboard.cli.__main__ import main


async def cli(*argv: str) -> int:
    """Run `switchboard …` as a user would (main() runs its own event loop, so in a thread)."""

    def call() -> int:
        try:
            main(list(argv))
        except SystemExit as exc:
            return int(exc.code or 0)
        return 0

    return await asyncio.to_thread(call)
