from __future__ import annotations

import asyncio
import contextlib

from switchboard.chat.bootstrap import bootstrap
from switchboard.chat.settings import ChatSettings
from switchboard.core import runtime


def use_uvloop() -> bool:
    """Run the chat's event loop on uvloop where it is installed (it carries thousands of
    sockets; asyncio's own loop spends several times the CPU per event)."""
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        return True
    return False


def main() -> None:
    use_uvloop()
    runtime.main("chat", ChatSettings(), bootstrap)


if __name__ == "__main__":
    main()
