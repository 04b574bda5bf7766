from __future__ import annotations

from switchboard.core import runtime
from switchboard.fax.bootstrap import bootstrap
from switchboard.fax.settings import FaxSettings


def main() -> None:
    runtime.main("fax", FaxSettings(), bootstrap)


if __name__ == "__main__":
    main()
