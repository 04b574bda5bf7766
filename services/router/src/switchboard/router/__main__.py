from __future__ import annotations

from switchboard.core import runtime
from switchboard.router.bootstrap import bootstrap
from switchboard.router.settings import RouterSettings


def main() -> None:
    settings = RouterSettings()

    async def factory() -> runtime.Service:
        return bootstrap(settings)

    runtime.run(factory, "router", settings.log_level, settings.metrics_port)


if __name__ == "__main__":
    main()
