"""The email channel's own Prometheus metrics (next to those every service exports)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

MAILBOXES_HELD = Gauge(
    "switchboard_email_mailboxes_held",
    "IMAP mailboxes whose lease this replica holds (the mailboxes it reads).",
)
LEASE_CHANGES = Counter(
    "switchboard_email_mailbox_lease_changes_total",
    "Mailbox leases this replica took (acquired), gave to another replica (handed_over), or "
    "lost (another replica took it after it expired, or it could not be renewed in time).",
    ["change"],
)
