"""Composition root. The fax channel is not built yet: the service starts, joins the bus and
reports healthy, and does nothing else."""

from __future__ import annotations

from switchboard.core.idle import IdleServiceApp
from switchboard.fax.settings import FaxSettings


def bootstrap(settings: FaxSettings | None = None) -> IdleServiceApp:
    return IdleServiceApp("fax", settings or FaxSettings())
