"""Which replica reads which mailbox: rendezvous hashing with bounded loads.

Every replica computes the same answer from the same heartbeats, so no one coordinates: each
mailbox goes to the replica that ranks highest for it among those that have it in their
configuration, unless that replica already reads its share (at most ceil(mailboxes / replicas)),
then to the next one. A mailbox only full replicas know still goes to the first of them: during
a rollout that adds a mailbox, it is read by a replica that knows it, never by none.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Collection, Mapping


def owners(readers: Mapping[str, Collection[str]]) -> dict[str, str]:
    """mailbox -> the replica that should read it, from replica -> the mailboxes it has."""
    live = sorted(r for r, boxes in readers.items() if boxes)
    boxes = sorted({box for r in live for box in readers[r]})
    if not live:
        return {}
    share = math.ceil(len(boxes) / len(live))
    load: Counter[str] = Counter()
    chosen: dict[str, str] = {}
    for box in boxes:
        candidates = sorted(
            (r for r in live if box in readers[r]),
            key=lambda r: (_score(box, r), r),
            reverse=True,
        )
        replica = next((r for r in candidates if load[r] < share), candidates[0])
        chosen[box] = replica
        load[replica] += 1
    return chosen


def _score(mailbox: str, replica: str) -> int:
    digest = hashlib.sha256(f"{mailbox}\0{replica}".encode()).digest()
    return int.from_bytes(digest[:8], "big")
