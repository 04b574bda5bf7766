"""The switchboard command-line tool (`switchboard`, `python -m switchboard.cli`).

Ctrl-C ends any command with status 130 and no traceback, also while the commands are still
loading (which takes a moment): the commands are imported only once that is in place."""

from __future__ import annotations

import signal
import sys
from types import FrameType
from typing import Any

INTERRUPTED = 128 + signal.SIGINT
_signalled: list[int] = []  # the Ctrl-C received while the commands load


def _interrupted(signum: int, frame: FrameType | None) -> None:
    _signalled.append(signum)
    raise SystemExit(INTERRUPTED)


def main(argv: list[str] | None = None) -> None:
    try:
        signal.signal(signal.SIGINT, _interrupted)
        ours = True
    except ValueError:  # not the main thread: signals are not ours to handle
        ours = False
    try:
        from switchboard.cli import app
    except BaseException:
        # An extension module interrupted while it initialises (gRPC's, a Cython module) turns
        # the interrupt into an ImportError of its own: still an interrupt.
        if _signalled:
            sys.exit(INTERRUPTED)
        raise
    finally:
        if ours:  # Python's own again: KeyboardInterrupt, which asyncio.run knows
            signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        app.main(argv)
    except KeyboardInterrupt:
        sys.exit(INTERRUPTED)


def __getattr__(name: str) -> Any:
    """`parser`, as before the commands moved to switchboard.cli.app."""
    if name == "parser":
        from switchboard.cli.app import parser

        return parser
    raise AttributeError(name)


if __name__ == "__main__":
    main()
