from __future__ import annotations

from switchboard.core import runtime
from switchboard.router.bootstrap import bootstrap
from switchboard.router.settings import RouterSettings


def main() -> None:
    runtime.main("router", RouterSettings(), bootstrap)


if __name__ == "__main__":
    main()
