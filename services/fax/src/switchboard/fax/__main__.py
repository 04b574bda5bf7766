from __future__ import annotations

from switchboard.core import runtime
from switchboard.fax.bootstrap import bootstrap
from switchboard.fax.settings import FaxSettings


def main() -> None:
    settings = FaxSettings()

    async def factory() -> runtime.Service:
        return bootstrap(settings)

    runtime.run(factory, "fax", settings.log_level, settings.metrics_port)


if __name__ == "__main__":
    main()
