"""Composition root. The email-ingest channel is not built yet: the service starts, joins the bus and
reports healthy, and does nothing else."""

from __future__ import annotations

from switchboard.core.idle import IdleServiceApp
from switchboard.email_ingest.settings import EmailIngestSettings


def bootstrap(settings: EmailIngestSettings | None = None) -> IdleServiceApp:
    return IdleServiceApp("email-ingest", settings or EmailIngestSettings())
