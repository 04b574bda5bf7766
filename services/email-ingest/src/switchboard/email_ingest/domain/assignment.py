"""Which replica reads which mailbox: rendezvous hashing with bounded loads.

Every replica computes the same answer from the same live replicas and mailboxes, so no one
coordinates: each mailbox goes to the replica that ranks highest for it, unless that replica
already reads its share (at most ceil(mailboxes / replicas)), then to the next one. A replica
joining or leaving moves only the mailboxes it takes or gives up, mostly.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Iterable


def owners(mailboxes: Iterable[str], replicas: Iterable[str]) -> dict[str, str]:
    """mailbox -> the replica that should read it (empty when there is no replica)."""
    boxes = sorted(set(mailboxes))
    live = sorted(set(replicas))
    if not live:
        return {}
    share = math.ceil(len(boxes) / len(live))
    load: Counter[str] = Counter()
    chosen: dict[str, str] = {}
    for box in boxes:
        for replica in sorted(live, key=lambda r: (_score(box, r), r), reverse=True):
            if load[replica] < share:
                chosen[box] = replica
                load[replica] += 1
                break
    return chosen


def _score(mailbox: str, replica: str) -> int:
    digest = hashlib.sha256(f"{mailbox}\0{replica}".encode()).digest()
    return int.from_bytes(digest[:8], "big")
