from __future__ import annotations

import asyncio
import sys

from switchboard.case.bootstrap import bootstrap
from switchboard.case.migrate import migrate
from switchboard.case.settings import CaseSettings
from switchboard.core import runtime


def main() -> None:
    settings = CaseSettings()
    if sys.argv[1:2] == ["migrate"]:
        # For a deployment's init step: bring the schema up to date, then exit.
        runtime.configure_logging(settings.log_level)
        asyncio.run(migrate(settings.database_url))
        return
    runtime.main("case", settings, bootstrap)


if __name__ == "__main__":
    main()
