"""The audit record a change carries into the store that keeps it (docs/admin.md).

A service that stores a change made from the admin console (the chat's agents, the case
service's policies) writes, in the same write, who made it, when and what it changed, as one
line of JSON in the stored entry's header ``Switchboard-Audit``: no change is stored without its
record, and no record exists of a change that was not stored. The chat publishes each stored
record to the audit stream (``ADMIN_AUDIT``) under a message id made of the change's kind, tenant
and version, so a record is published once however often it is tried.
"""

from __future__ import annotations

import difflib
import json
from typing import Any

HEADER = "Switchboard-Audit"


def header(actor: str, action: str, target: str, at: float, changes: dict[str, Any]) -> str:
    """The header value of a change's record (its version is the store's revision)."""
    body = {"at": at, "actor": actor, "action": action, "target": target, "changes": changes}
    return json.dumps(body, ensure_ascii=True)  # one line of ASCII: what a header holds


def diff(before: str, after: str) -> str:
    """The changed lines of a YAML text, with one line of context."""
    lines = list(
        difflib.unified_diff(
            before.splitlines(), after.splitlines(), "before", "after", lineterm="", n=1
        )
    )
    return "\n".join(lines[2:])
