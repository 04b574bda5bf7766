"""A service's one source of readiness: SERVING only while every condition it depends on holds.

Each part that knows something sets its own condition (the bus: "nats"; the router: "leader",
"journal", "consumer"; the email channel: "mailboxes"), and the gRPC health status of every
service name follows their conjunction. Nothing sets the status directly, so a generic event (a
NATS reconnect) cannot overwrite what a more specific one (a standby is not the leader) decided.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer

logger = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Readiness:
    def __init__(self, health: HealthServicer, names: Iterable[str], service: str = "") -> None:
        self.health = health
        self.names = ["", *[n for n in names if n]]
        self.service = service
        self._failing: dict[str, str] = {}  # condition -> why it does not hold
        self._published: bool | None = None

    @property
    def serving(self) -> bool:
        return not self._failing

    def reasons(self) -> dict[str, str]:
        """The conditions that do not hold now, with why."""
        return dict(self._failing)

    async def set(self, condition: str, ok: bool, why: str = "") -> None:
        """Record whether `condition` holds; the health status follows all conditions together."""
        if ok:
            self._failing.pop(condition, None)
        else:
            self._failing[condition] = why or "not ready"
        await self._publish()

    async def _publish(self) -> None:
        serving = self.serving
        if serving == self._published:
            return
        self._published = serving
        if serving:
            logger.info("%s is SERVING", self.service or "service")
        else:
            logger.warning("%s is NOT_SERVING: %s", self.service or "service", self._failing)
        status = SERVING if serving else NOT_SERVING
        for name in self.names:
            await self.health.set(name, status)
