from __future__ import annotations

from switchboard.chat.bootstrap import bootstrap
from switchboard.chat.settings import ChatSettings
from switchboard.core import runtime


def main() -> None:
    settings = ChatSettings()

    async def factory() -> runtime.Service:
        return bootstrap(settings)

    runtime.run(factory, "chat", settings.log_level, settings.metrics_port)


if __name__ == "__main__":
    main()
