"""The event loop of the bench's own processes: the one the services run on
(`switchboard.core.runtime.loop_factory`, uvloop by default), so a raw transport measured here
and the services it is the baseline for are driven by the same loop. Like a service's, it leaves
out asyncio's notice at each NATS connection over TLS closing (`runtime.quiet_tls_eof_notice`)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from switchboard.core import runtime

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    runtime.quiet_tls_eof_notice()
    with asyncio.Runner(loop_factory=runtime.loop_factory()) as runner:
        return runner.run(main)
