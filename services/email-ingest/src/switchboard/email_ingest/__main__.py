from __future__ import annotations

from switchboard.core import runtime
from switchboard.email_ingest.bootstrap import bootstrap
from switchboard.email_ingest.settings import EmailIngestSettings


def main() -> None:
    runtime.main("email-ingest", EmailIngestSettings(), bootstrap)


if __name__ == "__main__":
    main()
