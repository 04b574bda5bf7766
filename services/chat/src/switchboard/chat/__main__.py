from __future__ import annotations

from switchboard.chat.bootstrap import bootstrap
from switchboard.chat.settings import ChatSettings
from switchboard.core import runtime


def main() -> None:
    # On uvloop, as every service (runtime.loop_factory): it carries thousands of sockets.
    runtime.main("chat", ChatSettings(), bootstrap)


if __name__ == "__main__":
    main()
