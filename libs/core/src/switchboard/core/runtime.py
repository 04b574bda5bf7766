"""Process runtime: logging, and running a service until SIGTERM/SIGINT, then draining it."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from switchboard.core import metrics
from switchboard.core.settings import ServiceSettings, UnsafeSettings

logger = logging.getLogger(__name__)


class Service(Protocol):
    """What a composition root returns: started once, stopped once (drain, then exit)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


TLS_EOF_NOTICE = "returning true from eof_received() has no effect when using ssl"


class _TlsEofNotice(logging.Filter):
    """Drops asyncio's warning that a stream protocol's `eof_received` answer has no effect over
    TLS, logged each time a NATS connection over TLS is closed: nats-py upgrades its stream with
    `loop.start_tls` without telling the stream's protocol that it now runs over TLS
    (nats-io/nats.py#574), so the protocol answers an EOF as over plain TCP, which asyncio then
    ignores as it should. Nothing is wrong with the connection; the line would only alarm."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != TLS_EOF_NOTICE


def quiet_tls_eof_notice() -> None:
    """Install `_TlsEofNotice` on asyncio's logger (once)."""
    asyncio_logger = logging.getLogger("asyncio")
    if not any(isinstance(f, _TlsEofNotice) for f in asyncio_logger.filters):
        asyncio_logger.addFilter(_TlsEofNotice())


def configure_logging(level: str = "INFO") -> None:
    quiet_tls_eof_notice()
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Per-request chatter from libraries is not useful at INFO.
    for noisy in ("engineio", "socketio", "uvicorn.access", "aiosqlite", "nats"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


async def serve_until_signalled(service: Service, name: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await service.start()
    logger.info("%s started", name)
    await stop.wait()
    logger.info("%s stopping: draining", name)
    await service.stop()
    logger.info("%s stopped", name)


EVENT_LOOP_ENV = "SWITCHBOARD_EVENT_LOOP"


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop a service runs on: uvloop where it is installed (a service's work is
    mostly the loop's: NATS frames, gRPC calls, sockets, which uvloop carries on less CPU than
    asyncio's own loop), unless `SWITCHBOARD_EVENT_LOOP=asyncio` asks for the standard
    library's (None), for instance to debug with asyncio's debug mode."""
    chosen = os.environ.get(EVENT_LOOP_ENV, "uvloop").strip().lower() or "uvloop"
    if chosen == "asyncio":
        return None
    if chosen != "uvloop":
        raise ValueError(f"{EVENT_LOOP_ENV} must be uvloop or asyncio, not {chosen!r}")
    try:
        import uvloop
    except ImportError:  # not built for this platform (Windows): asyncio's own loop
        return None
    return uvloop.new_event_loop


def run(
    factory: Callable[[], Awaitable[Service]],
    name: str,
    log_level: str = "INFO",
    metrics_port: int = 0,
) -> None:
    """Build the service with `factory` inside the event loop and run it until signalled,
    serving Prometheus metrics on `metrics_port` (0: none)."""
    configure_logging(log_level)
    try:
        new_loop = loop_factory()
    except ValueError as exc:
        logger.critical("%s refuses to start: %s", name, exc)
        sys.exit(2)
    bound = metrics.serve(metrics_port)
    if bound:
        logger.info("%s metrics on :%d/metrics", name, bound)

    async def main() -> None:
        await serve_until_signalled(await factory(), name)

    with asyncio.Runner(loop_factory=new_loop) as runner:
        runner.run(main())
    exit_when_stopped(name)


def exit_when_stopped(name: str, patience: float = 3.0) -> None:
    """Make sure a stopped service's process ends. A library thread that was never told to stop
    (a database connection whose task was cancelled mid-transaction keeps its driver thread)
    would otherwise keep the interpreter alive after the service has drained, and an
    orchestrator would wait out its grace period and SIGKILL it."""
    deadline = time.monotonic() + patience
    for thread in threading.enumerate():
        if thread is threading.main_thread() or thread.daemon:
            continue
        thread.join(max(0.0, deadline - time.monotonic()))
    left = [
        t.name for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon
    ]
    if left:
        logger.warning("%s exits with threads still running: %s", name, ", ".join(left))
        logging.shutdown()
        os._exit(0)


def main(name: str, settings: ServiceSettings, bootstrap: Callable[[Any], Service]) -> None:
    """A service's whole main(): build it from `settings` with `bootstrap`, run it until
    SIGTERM or SIGINT, with its log level and metrics port. A production deployment with unsafe
    settings (the public development secret) does not start: it says why and exits with 2."""
    try:
        settings.refuse_unsafe_production()
    except UnsafeSettings as exc:
        configure_logging(settings.log_level)
        logger.critical("%s refuses to start: %s", name, exc)
        sys.exit(2)

    async def factory() -> Service:
        return bootstrap(settings)

    run(factory, name, settings.log_level, settings.metrics_port)
