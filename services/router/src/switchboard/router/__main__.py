from __future__ import annotations

import os

# Each snapshot is serialised by a forked child that touches nothing of gRPC
# (`handlers._fork_serialiser`). gRPC's own fork handlers, on by default in grpcio, made about
# half of those children abort in its poller while RPCs were in flight (the snapshot failed, and
# the journal kept its entries longer); without them none did. gRPC reads this when it is first
# imported: set before anything imports it.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

from switchboard.core import runtime
from switchboard.router.bootstrap import bootstrap
from switchboard.router.settings import RouterSettings


def main() -> None:
    runtime.main("router", RouterSettings(), bootstrap)


if __name__ == "__main__":
    main()
