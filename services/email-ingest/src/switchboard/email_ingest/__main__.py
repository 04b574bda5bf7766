from __future__ import annotations

from switchboard.core import runtime
from switchboard.email_ingest.bootstrap import bootstrap
from switchboard.email_ingest.settings import EmailIngestSettings


def main() -> None:
    settings = EmailIngestSettings()

    async def factory() -> runtime.Service:
        return bootstrap(settings)

    runtime.run(factory, "email-ingest", settings.log_level, settings.metrics_port)


if __name__ == "__main__":
    main()
