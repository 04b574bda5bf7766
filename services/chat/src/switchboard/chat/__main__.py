from __future__ import annotations

from switchboard.chat.bootstrap import bootstrap
from switchboard.chat.settings import ChatSettings
from switchboard.core import runtime


def main() -> None:
    runtime.main("chat", ChatSettings(), bootstrap)


if __name__ == "__main__":
    main()
